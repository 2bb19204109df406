"""The connector contract's import surface: everything a connector needs, from one module.

The parts live in their own modules: ``contract`` (Connector, Stream, Capabilities, Page,
Enrichment, WriteResult), ``errors`` (the error tree), ``http`` (the shared HTTP session,
status mapping, rate limits), ``auth`` (OAuth 2.0, bearer and token schemes), ``pagination``
(keyset, cursor token, offset, page number, Link header), ``fieldmap`` (the shared mapping
schema), ``registry`` (connector types by entry-point name) and ``canonical`` (the incident
every connector produces). See ``contract`` for how GapBridge calls a connector.

These modules may import the standard library, ``requests`` and ``marshmallow`` only.
"""

from __future__ import annotations

from .auth import OAuth2TokenAuth, SchemeTokenAuth
from .contract import ENRICHMENT_FIELDS, READ_ONLY, WRITE_CAPABILITIES, Capabilities, Connector, Enrichment, Page, Stream, WriteResult
from .errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectorError,
    FatalConnectorError,
    GoneError,
    InvalidResponseError,
    NormalizationError,
    NotFoundError,
    PausedError,
    PermissionDeniedError,
    PreconditionFailedError,
    RateLimitedError,
    RecordRateLimitedError,
    RetriableConnectorError,
    ServerError,
    TransportError,
    error_text,
)
from .fieldmap import MapDefaults, MappedOptionsSchema, MappedValues
from .http import (
    IDEMPOTENT_METHODS,
    RETRIABLE_STATUSES,
    HttpSession,
    RateLimit,
    parse_rate_limit_reset,
    parse_retry_after,
    raise_for_response,
)
from .options import ServiceUrl
from .pagination import (
    CursorTokenPaginator,
    KeysetPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    Paginator,
    next_link,
    offset_pages,
)
from .redact import redact_urls, redacted_traceback
from .registry import ENTRY_POINT_GROUP, ConnectorLoadError, available_connectors, connector_class, connector_types

__all__ = [
    "ENRICHMENT_FIELDS", "ENTRY_POINT_GROUP", "IDEMPOTENT_METHODS", "READ_ONLY", "RETRIABLE_STATUSES", "WRITE_CAPABILITIES",
    "AuthenticationError", "BadRequestError", "Capabilities", "ConfigurationError", "Connector", "ConnectorError", "ConnectorLoadError",
    "CursorTokenPaginator", "Enrichment", "FatalConnectorError", "GoneError", "HttpSession", "InvalidResponseError", "KeysetPaginator",
    "LinkHeaderPaginator", "MapDefaults", "MappedOptionsSchema", "MappedValues", "NormalizationError", "NotFoundError",
    "OAuth2TokenAuth", "OffsetPaginator", "Page", "PageNumberPaginator", "Paginator", "PausedError",
    "PermissionDeniedError", "PreconditionFailedError", "RateLimit", "RateLimitedError", "RecordRateLimitedError", "RetriableConnectorError", "SchemeTokenAuth", "ServerError",
    "ServiceUrl", "Stream", "TransportError", "WriteResult", "available_connectors", "connector_class", "connector_types",
    "error_text", "next_link", "offset_pages", "parse_rate_limit_reset", "parse_retry_after", "raise_for_response",
    "redact_urls", "redacted_traceback",
]
