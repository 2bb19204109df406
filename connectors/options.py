"""Fields that every connector's ``options`` schema shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from .redact import has_userinfo


class ServiceUrl(fields.Url):
    """The base URL of a tool: http or https, without credentials, query or fragment; no trailing slash.

    Connectors build every ticket link and error text from it, so a password pasted into it
    would be stored and logged everywhere: it is refused at load. The messages never repeat
    the value, which would print the password they refuse.
    """

    default_error_messages = {
        "credentials": "must not contain a user name or password: put credentials under auth:, not in the URL",
        "query": "must be the base URL, without a query string or fragment: put credentials under auth:, not in the URL",
    }

    def __init__(self, *, schemes: set[str] | None = None, require_tld: bool = False, **kwargs: Any) -> None:
        super().__init__(schemes=schemes or {"http", "https"}, require_tld=require_tld, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        url = str(super()._deserialize(value, attr, data, **kwargs))
        # checked before the URL validator (which runs after this), whose "Not a valid URL." would hide why
        if has_userinfo(url):
            raise self.make_error("credentials")
        if "?" in url or "#" in url:
            raise self.make_error("query")
        return url.rstrip("/")


class TimeoutSchema(Schema):
    """Seconds to wait for a connection and for an answer, on every call to the tool."""

    class Meta:
        unknown = RAISE

    connect = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=300))
    read = fields.Float(load_default=60.0, validate=validate.Range(min=0.1, max=3600))


def require_for_method(data: Mapping[str, Any], needs: Mapping[str, Sequence[str]]) -> None:
    """An ``auth`` block's keys that its ``method`` needs, each missing one named (``ValidationError``)."""
    missing = {k: [f"required for method {data['method']}"] for k in needs[data["method"]] if not data.get(k)}
    if missing:
        raise ValidationError(missing)
