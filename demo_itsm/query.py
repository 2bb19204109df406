"""ServiceNow encoded queries (a strict subset) translated to SQLite.

    a=1^b>2^ORc=3^NQd=4^ORDERBYe^ORDERBYDESCf

``^`` is AND, ``^OR`` ORs a condition with the previous one (so the line above is
``(a=1 AND (b>2 OR c=3)) OR d=4``), ``^NQ`` starts a new query ORed with the others,
``ORDERBY``/``ORDERBYDESC`` sort in the order given. Anything not understood raises
``QueryError``: a demo that silently ignored a condition would hide connector bugs.

A condition on a field the table does not have is what a real instance treats differently:
it drops the condition and answers as if it were not there, unless the system property
``glide.invalid_query.returns_no_rows`` is true (then nothing matches). ``unknown_fields``
chooses: ``error`` (the demo's strict default), ``ignore`` or ``no_rows``.
"""

from __future__ import annotations

import re
from collections.abc import Collection

OPERATORS = ("ISNOTEMPTY", "ISEMPTY", "NOT IN", "IN", "NOT LIKE", "LIKE", "STARTSWITH", "ENDSWITH", "!=", ">=", "<=", "=", ">", "<")
_CONDITION = re.compile(r"^([a-z_][a-z0-9_]*)(" + "|".join(re.escape(o) for o in OPERATORS) + r")(.*)$", re.DOTALL)
_ORDER = re.compile(r"^ORDERBY(DESC)?([a-z_][a-z0-9_]*)$")
_NUMBER = re.compile(r"^-?\d+$")


class QueryError(ValueError):
    pass


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


UNKNOWN_FIELD_MODES = ("error", "ignore", "no_rows")


def _condition(text: str, columns: Collection[str], integers: Collection[str], unknown_fields: str = "error") -> tuple[str, list[str | int]]:
    m = _CONDITION.match(text)
    if not m:
        raise QueryError(f"cannot parse condition {text!r}")
    field, op, value = m.groups()
    if field not in columns:
        if unknown_fields == "ignore":
            return "1", []
        if unknown_fields == "no_rows":
            return "0", []
        raise QueryError(f"unknown field {field!r}")
    col = f'"{field}"'
    if op in ("ISEMPTY", "ISNOTEMPTY"):
        if value:
            raise QueryError(f"{op} takes no value in {text!r}")
        return (f"{col} = ''" if op == "ISEMPTY" else f"{col} != ''"), []
    if op in ("IN", "NOT IN"):
        items: list[str | int] = list(value.split(","))
        sql = f"{col} {'NOT IN' if op == 'NOT IN' else 'IN'} ({', '.join('?' * len(items))})"
        return sql, items
    if op in ("LIKE", "NOT LIKE", "STARTSWITH", "ENDSWITH"):
        if not value:
            raise QueryError(f"{op} needs a value in {text!r}")
        pattern = {"STARTSWITH": "{}%", "ENDSWITH": "%{}"}.get(op, "%{}%").format(_like(value))
        return f"{col} {'NOT LIKE' if op == 'NOT LIKE' else 'LIKE'} ? ESCAPE '\\'", [pattern]
    if op in (">", ">=", "<", "<=") and field in integers:
        if not _NUMBER.match(value):
            raise QueryError(f"{field} compares with a number, got {value!r}")
        # integer columns are stored as text; compare numerically so that 10 > 9
        return f"({col} != '' AND CAST({col} AS INTEGER) {op} ?)", [int(value)]
    return f"{col} {op} ?", [value]


def translate(query: str, columns: Collection[str], integers: Collection[str] = (), tiebreak: str = "sys_id",
              unknown_fields: str = "error") -> tuple[str, list[str | int], str]:
    """(WHERE clause, parameters, ORDER BY clause) for an encoded query.

    ``tiebreak`` ends the order, in the direction of the last ORDERBY, so that pages are stable.
    """
    groups: list[str] = []
    params: list[str | int] = []
    order: list[str] = []
    for group in query.split("^NQ") if query else []:
        ands: list[list[str]] = []  # each entry ORs its conditions
        tokens = group.split("^")
        while len(tokens) > 1 and tokens[-1] == "":  # a trailing '^' is harmless
            tokens.pop()
        for token in tokens:
            if token == "EQ":  # end-of-query marker some clients append
                continue
            if token == "":
                raise QueryError("empty condition")
            m = _ORDER.match(token)
            if m:
                if m.group(2) not in columns:
                    raise QueryError(f"unknown field {m.group(2)!r} in {token!r}")
                order.append(f'"{m.group(2)}" {"DESC" if m.group(1) else "ASC"}')
                continue
            if token.startswith("OR"):
                if not ands:
                    raise QueryError(f"{token!r} has no condition before it to OR with")
                sql, p = _condition(token[2:], columns, integers, unknown_fields)
                ands[-1].append(sql)
            else:
                sql, p = _condition(token, columns, integers, unknown_fields)
                ands.append([sql])
            params.extend(p)
        if ands:  # a group of only ORDERBY adds no condition
            groups.append(" AND ".join(f"({' OR '.join(ors)})" for ors in ands))
    where = " OR ".join(f"({g})" for g in groups) if groups else "1"
    if not any(o.startswith(f'"{tiebreak}" ') for o in order):
        order.append(f'"{tiebreak}" {order[-1].rsplit(" ", 1)[1] if order else "ASC"}')
    return where, params, ", ".join(order)
