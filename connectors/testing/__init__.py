"""The contract suite every GapBridge connector passes, shipped so that a third-party connector runs it too.

The suite (``connectors.testing.suite.ConnectorContract``) drives a connector the way GapBridge's
core does, through the contract only (no database): it fetches pages and stores each page's
bookmark as the core would, resumes from the bookmark after a kill at every page, normalizes
each record (a record ``normalize`` refuses is rejected under ``record_id`` and the sync goes
on), and writes back as the outbox does (read the fingerprint the ticket carries, write only
when it differs). Its cases:

* pagination to the end, every visible record exactly once, including short and empty pages
  mid-stream (records the integration user may not see, filtered after the page limit);
* a kill after every page, resumed by a fresh connector from the last stored bookmark: no record
  lost; bookmarks never move back, within a run or across runs; an edit comes in the next run;
* 429 with Retry-After (waited, then the sync completes), 5xx, a timeout, a connection closed
  mid-body: retried on reads; when they persist, a retriable error is raised, never a silent end;
* 401 (an AuthenticationError, not retried over and over) and an expired token (refreshed once,
  the sync goes on); a 200 body that is not JSON (an InvalidResponseError, never a crash or a
  silent end);
* a record that cannot be normalized: rejected under its id, the records after it still come;
* write-back: what is written lands once; written twice (a retried outbox item), nothing the
  second time; a write whose answer was lost is not repeated; a newer fingerprint replaces it;
* no secret (password, client secret, token) in any error message, log line, warning or result.

A tool's author implements one ``ToolDouble`` (``connectors.testing.double``) for their tool and
runs the suite in their own test module::

    import pytest
    from connectors.testing import ConnectorContract
    from mytool_tests.double import MyToolDouble   # a ToolDouble subclass

    @pytest.fixture(params=["basic", "oauth"])     # one double per way the connector is set up
    def tool_double(request):
        double = MyToolDouble(auth=request.param)
        yield double
        double.close()

    class TestMyToolContract(ConnectorContract):   # the Test prefix makes pytest collect it
        pass

and runs ``pytest path/to/that_module.py``. pytest (GapBridge's ``test`` extra:
``pip install 'gapbridge[test]'``) is needed for the suite only; ``ToolDouble`` and its data
classes import without it. GapBridge's own doubles: ``connectors.testing.servicenow``, ``.jira`` and ``.rt``.

A case a double cannot produce for its tool (an expired token where the tool has no token
auth) is declared in ``ToolDouble.unsupported`` with the reason, and the suite skips it with that
reason. A read-only connector skips the write-back cases.
"""

from __future__ import annotations

from typing import Any

from .double import DATA_FEATURES, FAULT_KINDS, STATES, Fault, FaultKind, FaultTarget, RecordSpec, TicketWrites, ToolDouble

__all__ = ["DATA_FEATURES", "FAULT_KINDS", "STATES", "ConnectorContract", "Fault", "FaultKind", "FaultTarget", "RecordSpec",
           "TicketWrites", "ToolDouble"]


def __getattr__(name: str) -> Any:
    # the suite needs pytest, the double does not: import it only when asked for
    if name == "ConnectorContract":
        from .suite import ConnectorContract

        return ConnectorContract
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
