"""The connector contract suite (connectors.testing) run for the RT connector, over the RT double.

Two set-ups: basic auth with a user whose time zone preference is set (counts visible), and RT's token auth without a
user name (the zone measured; counts hidden, as RT 5.0.3 answers an account without the right to see them).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.testing import ConnectorContract
from connectors.testing.rt import RTDouble


@pytest.fixture(params=["basic", "token"])
def tool_double(request: pytest.FixtureRequest) -> Iterator[RTDouble]:
    double = RTDouble(request.param)
    yield double
    double.close()


class TestRTContract(ConnectorContract):
    pass
