"""Request Tracker 5: tickets through REST2, selected by TicketSQL."""

from .connector import RTConnector
from .schema import RTOptionsSchema

__all__ = ["RTConnector", "RTOptionsSchema"]
