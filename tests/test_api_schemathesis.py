"""Generated requests against the OpenAPI document: no 5xx, and every answer matches what the document says.

Schemathesis derives valid and invalid requests for every operation from /api/openapi.json; with an admin token
each reaches its view (and writes, for the risk acceptance operations). At least 1,000 requests are sent per run,
on SQLite and, in CI, on PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from plugin import create_app
from plugin.extensions import db
from plugin.models import RiskAcceptance, utcnow
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import token_for
from .conftest import NOW, empty_tables, make_config
from .fakes import FakeConnector
from .test_api import varied_tool

EXAMPLES_PER_OPERATION = 45
# a request can match the document and still be refused for what only the data can tell (an opaque cursor,
# a control id no edition has, a check the mappings lack): those 400s are right, not a failure of the document
SEMANTIC = [schemathesis.checks.positive_data_acceptance]
sent: list[int] = []


@pytest.fixture(scope="module")
def fuzzed_app(_migrated, tmp_path_factory):
    # no rate limit to speak of: the point is what each request gets, not the throttle
    app = create_app(gapbridge_config=make_config(_migrated, tmp_path_factory.mktemp("fuzz"), mappings={"regulatory": ["gdpr", "nis2"]},
                                                  api={"rate_limit_per_minute": 1_000_000, "rate_limit_burst": 1_000_000}))
    app.config["TESTING"] = True
    with app.app_context():
        sync_source(FakeConnector(varied_tool(30)))
        assess(gapbridge(app).ruleset, now=NOW)
        db.session.add(RiskAcceptance(check_id="EVID-001", scope_source="fake", justification="Evidence kept by the outsourced SOC",
                                      approver="CISO", created_by="test", expires_at=utcnow() + timedelta(days=90)))
        db.session.commit()
    app.after_request(lambda response: (sent.append(response.status_code), response)[1])
    app.config["FUZZ_TOKEN"] = token_for(app, "admin")
    yield app
    empty_tables(app)
    with app.app_context():
        db.engine.dispose()


def test_generated_requests_get_no_server_error_and_match_the_document(fuzzed_app) -> None:
    """Each operation in turn, so a failure names its method and path (the pytest plugin of schemathesis 4 predates pytest 9)."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)
    headers = {"Authorization": f"Bearer {fuzzed_app.config['FUZZ_TOKEN']}"}
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, excluded_checks=SEMANTIC)

        try:
            exercise()
        except Exception as exc:  # collect them all: one run shows every operation that breaks
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)


def test_enough_requests_were_sent(fuzzed_app) -> None:
    assert len(sent) >= 1000, f"only {len(sent)} generated requests"
    assert not [s for s in sent if s >= 500]
    assert len({s for s in sent}) > 2  # successes and refusals, not one answer to everything
