"""GapBridge configuration: loaded once, validated once, every fault named with its place.

The file is YAML. Any string value may be ``${ENV_VAR}`` so that secrets come from the
environment instead of the file; an unset variable is a configuration error.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from connectors.base import ConfigurationError, ConnectorLoadError, connector_class, redact_urls

from .errors import GapBridgeError
from .rules.yamlsource import LocatedDict, LocatedList, Location, MappingError, load_yaml

log = logging.getLogger(__name__)
# in a connector instance's options when its type is registered but cannot be loaded: the reason
UNLOADABLE = "_unloadable"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SECRET_KEYS = frozenset({"password", "client_secret", "token", "api_token", "secret", "access_token", "refresh_token", "secret_key"})


class ConfigError(GapBridgeError):
    """A fault in the user's configuration; the message names file, key and expectation."""


class MappingsSchema(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(load_default=None)
    overrides = fields.String(load_default=None)
    # overlay ids; which exist is the mappings folder's to say (rules.loader.available_overlays), checked when it loads
    regulatory = fields.List(fields.String(validate=validate.Regexp(r"^[a-z0-9][a-z0-9_-]*$", error="an overlay id, such as gdpr")),
                             load_default=list)
    time_sensitive_interval_minutes = fields.Integer(load_default=60, validate=validate.Range(min=1))


class OutboxSchema(Schema):
    class Meta:
        unknown = RAISE

    max_attempts = fields.Integer(load_default=12, validate=validate.Range(min=1, max=1000))
    backoff_base_seconds = fields.Float(load_default=30.0, validate=validate.Range(min=0))
    backoff_max_seconds = fields.Float(load_default=6 * 3600.0, validate=validate.Range(min=0))
    batch_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=10000))


class SyncSchema(Schema):
    class Meta:
        unknown = RAISE

    write_back_after_sync = fields.Boolean(load_default=True)
    lease_seconds = fields.Integer(load_default=900, validate=validate.Range(min=30))
    # fetch, normalize and evaluate in a second process while this one stores (plugin.services.sync)
    worker_process = fields.String(load_default="auto", validate=validate.OneOf(["auto", "always", "never"]),
                                   error_messages={"invalid": "Must be one of: auto, always, never (YAML reads on and off as booleans)."})


class ApiSchema(Schema):
    class Meta:
        unknown = RAISE

    # the API under /api (every endpoint needs a token); false leaves only /healthz
    enabled = fields.Boolean(load_default=True)
    # per token and per process (plugin.web.auth); the burst defaults to ten seconds' worth
    rate_limit_per_minute = fields.Integer(load_default=600, validate=validate.Range(min=1, max=1_000_000))
    rate_limit_burst = fields.Integer(load_default=None, validate=validate.Range(min=1, max=1_000_000))
    # the longest a token may live: a forgotten token should run out on its own
    token_max_days = fields.Integer(load_default=365, validate=validate.Range(min=1, max=3650))


class RiskSchema(Schema):
    class Meta:
        unknown = RAISE

    # an accepted risk is reviewed at least this often: no acceptance may run longer from when it is given or amended
    max_acceptance_days = fields.Integer(load_default=365, validate=validate.Range(min=1, max=3650))


class DatabaseSchema(Schema):
    class Meta:
        unknown = RAISE

    # every process (each gunicorn worker too) brings the schema to head on start, one at a time under a lock;
    # false: only `gapbridge db upgrade` migrates, and /healthz answers 503 while the schema is behind
    migrate_on_start = fields.Boolean(load_default=True)
    migrate_lock_timeout_seconds = fields.Integer(load_default=600, validate=validate.Range(min=1))


def _host_port(value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError(f"expected HOST:PORT with a port from 1 to 65535, such as 127.0.0.1:9464; got {value!r}")


class MetricsSchema(Schema):
    class Meta:
        unknown = RAISE

    # /metrics for Prometheus (plugin.metrics); it always needs a token: any API token, or the one below
    enabled = fields.Boolean(load_default=True)
    # a bearer token for the scraper alone, best given as ${ENV}; short ones are guessable
    token = fields.String(load_default=None, validate=validate.Length(min=16, error="at least 16 characters (a guessable token protects nothing)"))
    # HOST:PORT of a metrics-only listener started by serve and worker; the web app then serves no /metrics
    bind = fields.String(load_default=None, validate=_host_port)


class DashboardSchema(Schema):
    """The signed-in ISMS dashboard under /dashboard (plugin.web.dashboard)."""

    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(load_default=True)
    # signs the session cookies, best given as ${ENV} (GAPBRIDGE_SECRET_KEY also works); unset: made once and kept in
    # the instance folder (mode 0600), which serves one host. Several hosts behind one address need the same key here
    secret_key = fields.String(load_default=None, validate=validate.Length(min=32, error="at least 32 characters"))
    # false only for plain http to a host other than localhost: browsers keep Secure cookies on http://localhost and
    # http://127.0.0.1 (checked in Chromium), elsewhere only over https
    cookie_secure = fields.Boolean(load_default=True)
    idle_timeout_minutes = fields.Integer(load_default=30, validate=validate.Range(min=1, max=24 * 60))
    # from sign-in, however active the session: then the password is asked again
    session_lifetime_hours = fields.Integer(load_default=12, validate=validate.Range(min=1, max=24 * 7))


class ScheduleSchema(Schema):
    """The jobs ``gapbridge serve`` (in-process) and ``gapbridge worker`` run, each once across the instances sharing a database."""

    class Meta:
        unknown = RAISE

    # false: serve runs no jobs and worker refuses to start (syncs then come from cron or by hand)
    enabled = fields.Boolean(load_default=True)
    tick_seconds = fields.Integer(load_default=10, validate=validate.Range(min=1, max=3600))
    # held by the instance running a job, renewed while it runs: a killed instance's job is taken over once it runs out
    job_lease_seconds = fields.Integer(load_default=300, validate=validate.Range(min=30))
    sync_interval_seconds = fields.Integer(load_default=300, validate=validate.Range(min=10))
    # per connector instance, instead of sync_interval_seconds: {servicenow: 120}
    sync_intervals = fields.Dict(keys=fields.String(), values=fields.Integer(validate=validate.Range(min=10)), load_default=dict)
    writeback_interval_seconds = fields.Integer(load_default=60, validate=validate.Range(min=10))
    # open incidents whose clocks run, pending deadlines fallen due, changed mappings
    reassess_interval_seconds = fields.Integer(load_default=300, validate=validate.Range(min=10))
    risk_expiry_interval_seconds = fields.Integer(load_default=300, validate=validate.Range(min=10))
    audit_verify_interval_seconds = fields.Integer(load_default=3600, validate=validate.Range(min=60))


class ConnectorInstanceSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # the connector's own schema validates the rest

    type = fields.String(required=True)


class ConfigSchema(Schema):
    class Meta:
        unknown = RAISE

    database_url = fields.String(load_default=None)
    database = fields.Nested(DatabaseSchema, load_default=lambda: DatabaseSchema().load({}))
    instance_path = fields.String(load_default=None)
    log_level = fields.String(load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))
    # text: timestamped lines; json: one JSON object a line, with source, run id and incident (plugin.logs)
    log_format = fields.String(load_default="text", validate=validate.OneOf(["text", "json"]))
    mappings = fields.Nested(MappingsSchema, load_default=lambda: MappingsSchema().load({}))
    connectors = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[a-z][a-z0-9_-]{0,63}$", error="connector names are lowercase letters, digits, - and _")),
                             values=fields.Dict(), load_default=dict)
    outbox = fields.Nested(OutboxSchema, load_default=lambda: OutboxSchema().load({}))
    sync = fields.Nested(SyncSchema, load_default=lambda: SyncSchema().load({}))
    api = fields.Nested(ApiSchema, load_default=lambda: ApiSchema().load({}))
    risk = fields.Nested(RiskSchema, load_default=lambda: RiskSchema().load({}))
    schedule = fields.Nested(ScheduleSchema, load_default=lambda: ScheduleSchema().load({}))
    metrics = fields.Nested(MetricsSchema, load_default=lambda: MetricsSchema().load({}))
    dashboard = fields.Nested(DashboardSchema, load_default=lambda: DashboardSchema().load({}))

    @validates_schema
    def _connector_types(self, data: Mapping[str, Any], **_: Any) -> None:
        for name, options in (data.get("connectors") or {}).items():
            if not isinstance(options, Mapping) or not options.get("type"):
                raise ValidationError({"connectors": {name: {"type": ["Missing data for required field."]}}})

    @validates_schema
    def _scheduled_sources(self, data: Mapping[str, Any], **_: Any) -> None:
        known = sorted(data.get("connectors") or {})
        unknown = {name: [f"no connector named {name!r} (configured: {', '.join(known) or 'none'})"]
                   for name in (data.get("schedule") or {}).get("sync_intervals", {}) if name not in known}
        if unknown:
            raise ValidationError({"schedule": {"sync_intervals": unknown}})


def expand_env(node: Any, path: str, where: Any, env: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` in strings; raise ConfigError naming the key if VAR is unset."""
    if isinstance(node, dict):
        out = {k: expand_env(v, f"{path}.{k}" if path else str(k), node, env) for k, v in node.items()}
        if isinstance(node, LocatedDict):
            located = LocatedDict(out)
            located.location, located.key_locations = node.location, node.key_locations
            return located
        return out
    if isinstance(node, list):
        return [expand_env(v, f"{path}[{i}]", node, env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            value = env.get(m.group(1))
            if value is None:
                loc = _key_loc(where, path)
                raise ConfigError(f"{loc}: {path}: environment variable {m.group(1)} is not set")
            return value
        return _ENV_REF.sub(sub, node)
    return node


def _key_loc(node: Any, path: str) -> str:
    key = path.rsplit(".", 1)[-1]
    if isinstance(node, LocatedDict):
        return str(node.loc(key))
    if isinstance(node, LocatedList):
        return str(node.location)
    return "configuration"


def _locate(doc: Any, keys: list[str]) -> Location | None:
    """Line of the deepest existing key along a path of the raw document."""
    node, loc = doc, getattr(doc, "location", None)
    for k in keys:
        if isinstance(node, LocatedDict) and k in node:
            loc, node = node.loc(k), node[k]
        elif isinstance(node, LocatedList) and k.isdigit() and int(k) < len(node):
            loc, node = node.loc(int(k)), node[int(k)]
        else:
            break
    return loc


def _flatten(messages: Any, prefix: list[str]) -> list[tuple[list[str], str]]:
    out: list[tuple[list[str], str]] = []
    if isinstance(messages, dict):
        for k, v in messages.items():
            out.extend(_flatten(v, prefix if k == "_schema" else prefix + [str(k)]))
    elif isinstance(messages, list):
        for m in messages:
            out.extend(_flatten(m, prefix))
    else:
        out.append((prefix, str(messages)))
    return out


def _errors(doc: Any, messages: Any, name: str, prefix: list[str]) -> list[str]:
    lines = []
    for keys, msg in _flatten(messages, prefix):
        loc = _locate(doc, keys)
        where = str(loc) if loc else name
        if msg == "Unknown field.":
            msg = "unknown key"
        lines.append(f"{where}: {'.'.join(keys) or '(top level)'}: {msg}")
    return lines


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read, expand and validate a config file (or the defaults when path is None)."""
    env = os.environ if env is None else env
    doc: Any = {}
    name = str(path) if path else "defaults"
    if path is not None:
        if not path.exists():
            raise ConfigError(f"{path}: configuration file not found")
        try:
            doc = load_yaml(path, str(path))
        except MappingError as exc:
            raise ConfigError(str(exc)) from None
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}:1: expected a mapping of settings at the top level")
    expanded = expand_env(doc, "", doc, env)
    try:
        config = ConfigSchema().load(expanded)
    except ValidationError as exc:
        raise ConfigError("\n".join(_errors(doc, exc.messages, name, []))) from None
    problems: list[str] = []
    validated: dict[str, Any] = {}
    for cname, options in config["connectors"].items():
        try:
            cls = connector_class(options["type"])
        except ConnectorLoadError as exc:
            # a broken plugin fails its own instances only: each use of this one says why, the others run
            log.error("connectors.%s cannot be used: %s", cname, exc)
            validated[cname] = {"type": options["type"], UNLOADABLE: str(exc)}
            continue
        except ConfigurationError as exc:
            problems.append(f"{_locate(doc, ['connectors', cname, 'type']) or name}: connectors.{cname}.type: {exc}")
            continue
        try:
            validated[cname] = cls.config_schema().load(options)
        except ValidationError as exc:
            problems.extend(_errors(doc, exc.messages, name, ["connectors", cname]))
    if problems:
        raise ConfigError("\n".join(problems))
    config["connectors"] = validated
    origin = f"{_locate(doc, ['database_url']) or name}: database_url"
    for var in ("DATABASE_URL", "GAPBRIDGE_DATABASE_URL"):  # the last one set wins
        if env.get(var):
            config["database_url"], origin = env[var], f"environment variable {var}"
    if config["database_url"]:
        check_database_url(config["database_url"], origin)
    return config


EXPECTED_URL = "expected sqlite:///PATH or postgresql://user:password@host:port/database"


def normalize_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs given in the common short forms."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def check_database_url(url: str, origin: str) -> None:
    """A URL GapBridge cannot use is a configuration error here, not a traceback when the engine is made.

    The value is never repeated: SQLAlchemy's own errors may quote it, password and all.
    """
    try:
        parsed = make_url(normalize_database_url(url))
    except (ArgumentError, ValueError):
        raise ConfigError(f"{origin}: not a database URL ({EXPECTED_URL})") from None
    # the migrations are written and tested for these two only
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"{origin}: unsupported database {parsed.get_backend_name()!r} ({EXPECTED_URL})")
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ConfigError(f"{origin}: unknown database driver {parsed.drivername!r} ({EXPECTED_URL})") from None
    except ImportError as exc:
        raise ConfigError(f"{origin}: the driver for {parsed.drivername!r} is not installed ({exc.name or exc})") from None


def redact(value: Any) -> Any:
    """A copy of a config tree with every secret replaced, for logs and API answers.

    Secret keys are masked whole; any other string loses URL credentials (database_url may carry a password).
    """
    if isinstance(value, Mapping):
        return {k: ("***" if k in SECRET_KEYS and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_urls(value)
    return value


def demo_config(itsm_url: str, workdir: Path, tool: str = "servicenow") -> dict[str, Any]:
    """The configuration the demo runs with: the demo ITSM through the real ServiceNow connector (or the demo
    Jira, ``tool="jira"``, through the real Jira connector)."""
    cfg = load_config(None, env={})
    cfg["instance_path"] = str(workdir)
    cfg["database_url"] = os.environ.get("GAPBRIDGE_DATABASE_URL") or f"sqlite:///{workdir / 'gapbridge-demo.db'}"
    from connectors.servicenow import ServiceNowConnector

    from .rules.loader import available_overlays
    from .state import shipped_mappings

    cfg["mappings"]["regulatory"] = sorted(available_overlays(shipped_mappings()))  # every check the demo data exercises
    if tool == "jira":
        if not os.environ.get("GAPBRIDGE_DATABASE_URL"):  # its own: the two demo tools' tickets never mix under one source
            cfg["database_url"] = f"sqlite:///{workdir / 'gapbridge-demo-jira.db'}"
        cfg["connectors"] = {"demo": _demo_jira_options(itsm_url)}
        return cfg
    if tool == "rt":
        if not os.environ.get("GAPBRIDGE_DATABASE_URL"):
            cfg["database_url"] = f"sqlite:///{workdir / 'gapbridge-demo-rt.db'}"
        cfg["connectors"] = {"demo": demo_rt_options(itsm_url)}
        return cfg
    if tool != "servicenow":
        raise ValueError(f"the demo runs over servicenow, jira or rt, not {tool!r}")

    cfg["connectors"] = {"demo": ServiceNowConnector.config_schema().load({
        "type": "servicenow",
        "instance_url": itsm_url,
        "auth": {"method": "basic", "username": "admin", "password": "admin"},
        "table": "incident",
        "page_size": 200,
        "display_value": "all",
        "is_security": {"field": "u_security_incident"},
        "write_back": {
            "work_note": True,
            "fingerprint_field": "u_gapbridge_fingerprint",
            "fields": {"controls_2022": "u_iso27001_controls", "open_gaps": "u_gapbridge_open_gaps"},
        },
    })}
    return cfg


def demo_rt_auth() -> dict[str, Any]:
    """The credentials of the running RT the demo uses: GAPBRIDGE_RT_TOKEN, or GAPBRIDGE_RT_USER and GAPBRIDGE_RT_PASSWORD
    (by default those of the test server, ``python -m tests.rt_server start``)."""
    token = os.environ.get("GAPBRIDGE_RT_TOKEN")
    user = os.environ.get("GAPBRIDGE_RT_USER") or "root"
    if token:
        return {"method": "token", "token": token, "username": user}
    return {"method": "basic", "username": user, "password": os.environ.get("GAPBRIDGE_RT_PASSWORD") or "gapbridge-rt-pw"}


def demo_rt_options(url: str) -> dict[str, Any]:
    """A running Request Tracker 5 through the RT connector, comments written back.

    With the demo queue there (``demo_itsm.rt_seed``): its tickets (or GAPBRIDGE_RT_QUERY), its custom fields mapped
    (those it has: the connector refuses a name RT does not know), the fingerprint and fields written back. Without
    it: every ticket (or GAPBRIDGE_RT_QUERY) with the connector's default mapping.
    """
    from connectors.rt import RTConnector
    from demo_itsm import rt_seed

    auth = demo_rt_auth()
    raw: dict[str, Any] = {"type": "rt", "url": url, "auth": auth, "query": os.environ.get("GAPBRIDGE_RT_QUERY", ""),
                           "write_back": {"comment": True}}
    try:
        queue = rt_seed.demo_queue(url, auth)
    except rt_seed.SeedError as exc:
        log.warning("the demo could not look for the RT queue %r (%s): it syncs with the default mapping",
                    rt_seed.DEMO_QUEUE, exc)
        queue = None
    if queue is not None:
        raw.update(rt_seed.connector_options(queue.fields))
        raw["query"] = os.environ.get("GAPBRIDGE_RT_QUERY", f"Queue = '{rt_seed.DEMO_QUEUE}'")
    options: dict[str, Any] = RTConnector.config_schema().load(raw)
    return options


def _demo_jira_options(url: str) -> dict[str, Any]:
    """The demo Jira (demo_itsm.jira: its account, project and custom field names) through the Jira connector."""
    from connectors.jira import JiraConnector

    names = {"category": "Category", "subcategory": "Subcategory", "business_unit": "Business unit",
             "assignment_group": "Assignment group", "reported_via": "Reported via", "affected_ci": "Affected CI",
             "problem_ref": "Problem", "root_cause": "Root cause", "lessons_learned": "Lessons learned",
             "resolution_notes": "Resolution notes", "assessed_at": "Assessed at", "acknowledged_at": "Acknowledged at",
             "contained_at": "Contained at", "major_declared_at": "Major incident declared at", "closed_at": "Closed at",
             "major_incident": "Major incident", "personal_data_breach": "Personal data breach", "legal_hold": "Legal hold",
             "maintenance_ref": "Maintenance ref", "capacity_ref": "Capacity ref", "related_refs": "Related incidents",
             "weakness_refs": "Weakness refs", "vulnerability_refs": "Vulnerability refs", "log_refs": "Log refs",
             "evidence": "Evidence", "notifications": "Notifications", "escalations": "Escalations"}
    options: dict[str, Any] = JiraConnector.config_schema().load({
        "type": "jira",
        "url": url,
        "auth": {"method": "api_token", "email": "gapbridge@demo.example", "token": "demo-jira-token"},
        "jql": "project = INC",
        "page_size": 200,
        "field_map": names,
        "is_security": {"field": "Security incident"},
        "write_back": {"fields": {"controls_2022": "ISO 27001 controls", "open_gaps": "GapBridge open gaps"}},
    })
    return options
