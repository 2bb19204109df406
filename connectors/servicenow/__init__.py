"""ServiceNow: incidents from the Table API (``incident`` or ``sn_si_incident``)."""

from .connector import ServiceNowConnector
from .schema import ServiceNowOptionsSchema

__all__ = ["ServiceNowConnector", "ServiceNowOptionsSchema"]
