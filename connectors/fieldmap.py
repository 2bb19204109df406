"""One schema for what every connector maps: fields, states, priorities, record types, security.

A tool's options schema declares its defaults (``MapDefaults``) and inherits the mapping keys
from ``MappedOptionsSchema``::

    field_map:      {canonical field: tool field, or null to switch a default off}
    state_map:      {tool state: canonical state}
    priority_map:   {tool priority: canonical severity}
    record_type:    {field, values, categories, default, <containers>}
    is_security:    {field, categories, <containers>}

``<containers>`` is what records of the tool live in (ServiceNow tables, Jira issue types, RT
queues): a tool's schema names it through ``MapDefaults.container``. ``MappedValues`` applies
the maps to one record's values, the same way for every tool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .canonical import FIELDS, RECORD_TYPES, SEVERITIES, STATES

DEFAULT_SECURITY_CATEGORIES = ("security", "malware", "phishing", "data_breach", "unauthorized_access", "denial_of_service")
# a reported weakness is filed under these categories (or subcategories)
DEFAULT_WEAKNESS_CATEGORIES: Mapping[str, str] = {"vulnerability": "weakness", "weakness": "weakness"}
# identity and bookkeeping fields the connector fills itself
NOT_MAPPABLE = frozenset({"source", "external_id", "url", "is_security", "record_type", "enrichment_fingerprint"})
# how tools write a flag (a checkbox, a yes/no field, a custom field's text)
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off", ""})


def flag_value(text: str) -> bool | None:
    """A flag as a tool writes it: True, False, or None when empty; ValueError naming any other text."""
    text = text.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False if text else None
    raise ValueError(f"not a boolean: {text!r}")


def flag_text(value: Any) -> str:
    """A value as a tool's text field takes it: a flag as true/false, nothing as empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class MapDefaults:
    """A tool's defaults for the mapping keys, and what its records live in."""

    field_map: Mapping[str, str]
    state_map: Mapping[str, str]
    priority_map: Mapping[str, str]
    container: str  # the key naming the tool's containers in record_type and is_security: tables, issue_types, queues
    security_categories: Sequence[str] = DEFAULT_SECURITY_CATEGORIES
    security_containers: Sequence[str] = ()
    record_type_categories: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_WEAKNESS_CATEGORIES))
    record_type_containers: Mapping[str, str] = field(default_factory=dict)
    field_name: Callable[[Any], Any] | None = None  # validates one of the tool's field names (raises ValidationError)


class MappedOptionsSchema(Schema):
    """Base of a connector's options schema: the mapping keys, validated, with the tool's defaults filled in.

    A subclass sets ``map_defaults``; ``default_state_map(data)`` may choose by other options
    (ServiceNow's state codes depend on the table).
    """

    class Meta:
        unknown = RAISE

    map_defaults: ClassVar[MapDefaults]

    field_map = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True), load_default=dict)
    state_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(STATES)), load_default=None)
    priority_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(SEVERITIES)), load_default=None)
    record_type = fields.Dict(load_default=dict)
    is_security = fields.Dict(load_default=dict)

    def default_state_map(self, data: Mapping[str, Any]) -> Mapping[str, str]:
        return self.map_defaults.state_map

    @validates_schema
    def _maps(self, data: dict[str, Any], **_: Any) -> None:
        problems: dict[str, Any] = {}
        names = self.map_defaults.field_name
        bad: dict[str, Any] = {}
        for canonical, tool_field in (data.get("field_map") or {}).items():
            if canonical not in FIELDS or canonical in NOT_MAPPABLE:
                bad[canonical] = [f"not a canonical incident field (one of: {', '.join(sorted(set(FIELDS) - NOT_MAPPABLE))})"]
            elif tool_field is not None and names is not None:
                try:
                    names(tool_field)
                except ValidationError as exc:
                    # the shape marshmallow gives a bad value of a Dict field
                    bad[canonical] = {"value": list(exc.messages) if isinstance(exc.messages, list) else [str(exc.messages)]}
        if bad:
            problems["field_map"] = bad
        for key, schema in (("record_type", _record_type_schema(self.map_defaults)), ("is_security", _security_schema(self.map_defaults))):
            try:
                schema().load(data.get(key) or {})
            except ValidationError as exc:
                problems[key] = exc.messages
        if problems:
            raise ValidationError(problems)

    @post_load
    def _effective_maps(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        defaults = self.map_defaults
        mapped = {**defaults.field_map, **data["field_map"]}
        data["field_map"] = {k: v for k, v in mapped.items() if v}
        if data["state_map"] is None:
            data["state_map"] = dict(self.default_state_map(data))
        if data["priority_map"] is None:
            data["priority_map"] = dict(defaults.priority_map)
        data["record_type"] = _record_type_schema(defaults)().load(data["record_type"] or {})
        data["is_security"] = _security_schema(defaults)().load(data["is_security"] or {})
        return data


def _record_type_schema(defaults: MapDefaults) -> type[Schema]:
    """What each record is (event, incident, weakness, request): the first rule that matches decides.

    ``field``: a tool field whose value names the record type, through ``values`` (or already
    canonical); ``<containers>``: by the record's container; ``categories``: by category, then
    subcategory; else ``default``.
    """
    one_of = validate.OneOf(RECORD_TYPES)
    return Schema.from_dict({
        "field": fields.String(load_default=None, validate=defaults.field_name),
        "values": fields.Dict(keys=fields.String(), values=fields.String(validate=one_of), load_default=dict),
        defaults.container: fields.Dict(keys=fields.String(), values=fields.String(validate=one_of),
                                        load_default=lambda: dict(defaults.record_type_containers)),
        "categories": fields.Dict(keys=fields.String(), values=fields.String(validate=one_of),
                                  load_default=lambda: dict(defaults.record_type_categories)),
        "default": fields.String(load_default="incident", validate=one_of),
    }, name="RecordTypeSchema")


def _security_schema(defaults: MapDefaults) -> type[Schema]:
    """Whether a record is a security incident: a true ``field``, a security container, or a security category."""
    return Schema.from_dict({
        "field": fields.String(load_default=None, validate=defaults.field_name),
        "categories": fields.List(fields.String(), load_default=lambda: list(defaults.security_categories)),
        defaults.container: fields.List(fields.String(), load_default=lambda: list(defaults.security_containers)),
    }, name="IsSecuritySchema")


class MappedValues:
    """The loaded maps of one connector instance, applied to one record's values."""

    def __init__(self, options: Mapping[str, Any], container: str) -> None:
        self.state_map: Mapping[str, str] = options["state_map"]
        self.priority_map: Mapping[str, str] = options["priority_map"]
        self._state_lower = {k.lower(): v for k, v in self.state_map.items()}
        self._priority_lower = {k.lower(): v for k, v in self.priority_map.items()}
        types, security = options["record_type"], options["is_security"]
        self.record_type_field: str | None = types["field"]
        self.security_field: str | None = security["field"]
        self._type_values = {k.lower(): v for k, v in types["values"].items()}
        self._type_containers = {k.lower(): v for k, v in types[container].items()}
        self._type_categories = {k.lower(): v for k, v in types["categories"].items()}
        self._type_default: str = types["default"]
        self._security_categories = frozenset(c.lower() for c in security["categories"])
        self._security_containers = frozenset(c.lower() for c in security[container])

    def state(self, code: Any) -> str:
        """The canonical state of a tool state (case-insensitive); ValueError names the map."""
        text = "" if code is None else str(code).strip()
        if not text:
            raise ValueError("no state")
        try:
            return self.state_map[text] if text in self.state_map else self._state_lower[text.lower()]
        except KeyError:
            raise ValueError(f"state {text!r} is not in state_map ({', '.join(self.state_map)})") from None

    def severity(self, code: Any) -> str | None:
        """The canonical severity of a tool priority; None when the record has none."""
        text = "" if code is None else str(code).strip()
        if not text:
            return None
        try:
            return self.priority_map[text] if text in self.priority_map else self._priority_lower[text.lower()]
        except KeyError:
            raise ValueError(f"{text!r} is not in priority_map ({', '.join(self.priority_map)})") from None

    def is_security(self, *, flag: Any = None, container: str | None = None, category: str | None = None,
                    labels: Sequence[str] = ()) -> bool:
        if flag is True or (flag is not None and str(flag).strip().lower() in _TRUE):
            return True
        if container and container.lower() in self._security_containers:
            return True
        return any((c or "").lower() in self._security_categories for c in (category, *labels))

    def record_type(self, *, value: Any = None, container: str | None = None, category: str | None = None,
                    subcategory: str | None = None) -> str:
        if value not in (None, ""):
            text = str(value).strip().lower()
            found = self._type_values.get(text) or (text if text in RECORD_TYPES else None)
            if found:
                return found
        if container and container.lower() in self._type_containers:
            return self._type_containers[container.lower()]
        for name in (category, subcategory):
            found = self._type_categories.get((name or "").lower())
            if found:
                return found
        return self._type_default
