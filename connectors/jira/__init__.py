"""Jira Service Management (Cloud REST v3, Data Center REST v2): issues selected by JQL."""

from .connector import JiraConnector
from .schema import JiraOptionsSchema

__all__ = ["JiraConnector", "JiraOptionsSchema"]
