"""The connector contract suite (connectors.testing) run for the ServiceNow connector, over the ServiceNow double.

Two set-ups: basic auth with the fingerprint in the newest work note's marker, and OAuth (tokens
refreshed) with a fingerprint column, enrichment fields and display_value false.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.testing import ConnectorContract
from connectors.testing.servicenow import ServiceNowDouble


@pytest.fixture(params=["basic", "oauth"])
def tool_double(request: pytest.FixtureRequest) -> Iterator[ServiceNowDouble]:
    if request.param == "basic":
        double = ServiceNowDouble("basic")
    else:
        double = ServiceNowDouble("oauth_password", fingerprint_column=True, display_value="false")
    yield double
    double.close()


class TestServiceNowContract(ConnectorContract):
    pass
