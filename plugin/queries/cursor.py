"""Opaque cursors for keyset pages: the sort values of the last row, bound to the query they came from.

A cursor is base64url JSON ``{"q": <digest of endpoint, sort and filters>, "v": [values]}``. Used with other
filters it is refused by name instead of returning a page of some other list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from marshmallow import ValidationError

MAX_INT = 2**31 - 1


def query_key(name: str, args: Mapping[str, Any]) -> str:
    stable = {k: str(v) for k, v in sorted(args.items()) if k not in ("cursor", "limit")}
    return hashlib.sha256(orjson.dumps([name, stable])).hexdigest()[:12]


def encode(key: str, values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"q": key, "v": values})).decode().rstrip("=")


def decode(cursor: str, key: str, types: tuple[type, ...]) -> list[Any]:
    """The values of ``cursor``, each of the given type; a 400 naming ``cursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ValidationError({"cursor": ["not a cursor this API issued"]}) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("v"), list) or len(doc["v"]) != len(types):
        raise ValidationError({"cursor": ["not a cursor this API issued"]})
    if doc.get("q") != key:
        raise ValidationError({"cursor": ["belongs to a query with other filters or another sort; start again without it"]})
    values = doc["v"]
    for i, (value, kind) in enumerate(zip(values, types, strict=True)):
        if kind is datetime:  # a time travels as ISO 8601 text
            try:
                values[i] = datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise ValidationError({"cursor": ["not a cursor this API issued"]}) from None
            continue
        ok = (value is None or isinstance(value, kind)) and not (kind is int and isinstance(value, bool))
        if not ok or (kind is int and value is not None and not -MAX_INT <= value <= MAX_INT):
            raise ValidationError({"cursor": ["not a cursor this API issued"]})
    return values


def page_list(items: list[Any], ident: Any, name: str, args: Mapping[str, Any]) -> tuple[list[Any], str | None]:
    """A page of a list held in memory (the catalogue, the checks): keyed on the last item's id, in the list's order."""
    key = query_key(name, args)
    start = 0
    if args.get("cursor"):
        (last,) = decode(args["cursor"], key, (str,))
        ids = [str(ident(i)) for i in items]
        if last not in ids:
            raise ValidationError({"cursor": ["points at an item the loaded mappings no longer have; start again without it"]})
        start = ids.index(last) + 1
    page = items[start:start + args["limit"]]
    more = start + args["limit"] < len(items)
    return page, encode(key, [str(ident(page[-1]))]) if more and page else None
