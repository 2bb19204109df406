"""The connector contract suite (connectors.testing) run for the Jira connector, over the Jira double.

Two set-ups: Jira Cloud (REST v3, nextPageToken, email and API token, ADF) and Data Center (REST v2,
startAt, a personal access token, wiki markup). Both answer in the API user's time zone (Europe/Berlin).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.testing import ConnectorContract
from connectors.testing.jira import JiraDouble


@pytest.fixture(params=["cloud", "data_center"])
def tool_double(request: pytest.FixtureRequest) -> Iterator[JiraDouble]:
    double = JiraDouble(request.param)
    yield double
    double.close()


class TestJiraContract(ConnectorContract):
    pass
