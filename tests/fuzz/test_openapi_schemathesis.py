"""schemathesis against intake's own OpenAPI document (``GET /api/v1/openapi.json``), on the
live service (intake, routing and escalation — the ledger — in this process; the real broker
and database).

Every operation of the document gets requests generated from its schemas — path values,
query strings, bodies — sent with an admin key, and every answer must be: not a 5xx; of a
status the document lists for the operation; of a content type it lists; and, where it
gives a schema, a body that conforms to it. Some path values are the ids of real cases
and departments, so the answers include cases, not only 404s.

Then requests that break the schemas (schemathesis' negative mode): never a 5xx, always a
documented status.

The budget is small (``GRIDFLOW_SCHEMATHESIS_EXAMPLES`` examples per operation, default
12, and half as many breaking ones; derandomized, no shrinking): some 10 s on each
database. ``GRIDFLOW_SCHEMATHESIS_RANDOM=1`` draws new examples each run, to explore.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.escalation.service import EscalationService
from services.intake.openapi_api import NOT_NATIVE
from services.intake.service import IntakeService
from services.routing.service import RoutingService
from shared.openapi import container_routes, path_of
from support import bearer, report, wait_for

EXAMPLES = int(os.environ.get("GRIDFLOW_SCHEMATHESIS_EXAMPLES", "12"))
# set to explore: new examples each run instead of the same ones
RANDOM = bool(os.environ.get("GRIDFLOW_SCHEMATHESIS_RANDOM"))
POSITIVE = [not_a_server_error, status_code_conformance, content_type_conformance,
            response_schema_conformance]
# Bodies, query strings and path values that break the schemas: never a 5xx, and always a
# documented status. (Not their content type: a path value that matches no route, such as
# a task id "-1", is nameko's HTML 404, not ours.)
NEGATIVE = [not_a_server_error, status_code_conformance]
DEPARTMENTS = ("fire", "police", "urban_mgmt")


@pytest.fixture
def intake(run_services: Any) -> Any:
    return run_services(IntakeService, RoutingService, EscalationService)["intake"]


def _cases(api: Any) -> list[str]:
    """Two routed cases (fire leads, police and urban_mgmt assist) and a duplicate."""
    ids = []
    for n, extra in enumerate(({}, {"category": "C0101"}, {})):
        r = api.post("/api/v1/reports", json=report(f"st-{n}", **extra))
        assert r.status_code == 201, r.text
        ids.append(r.json()["case_id"])
    wait_for(lambda: all(api.get(f"/api/v1/cases/{c}").json()["assignments"] for c in ids[:2]),
             what="routing")
    return ids


def _with_known_ids(case: Any, known: dict[str, Any], pick: Any) -> Any:
    """Half the time, path values that name something: a case, one of its departments."""
    for name, values in known.items():
        if name in (case.path_parameters or {}) and pick(st.booleans()):
            case.path_parameters[name] = pick(st.sampled_from(values))
    return case


def _fuzzer(operation: Any, negative: bool, base: str, session: requests.Session,
            auth: dict[str, str], known: dict[str, Any], counts: dict[str, Counter[int]]) -> Any:
    """A hypothesis test of one operation: requests from its schemas (or breaking them),
    answers checked."""
    mode = schemathesis.GenerationMode.NEGATIVE if negative else \
        schemathesis.GenerationMode.POSITIVE
    label = f"{operation.label} (negative)" if negative else operation.label

    @settings(max_examples=max(1, EXAMPLES // 2) if negative else EXAMPLES, deadline=None,
              database=None, derandomize=not RANDOM, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def fuzz(case: Any, data: Any) -> None:
        case = _with_known_ids(case, known, data.draw)
        response = case.call_and_validate(base_url=base, session=session, headers=auth,
                                          checks=NEGATIVE if negative else POSITIVE,
                                          timeout=10)
        counts.setdefault(label, Counter())[response.status_code] += 1

    return fuzz


def test_intake_answers_as_its_openapi_document_says(
    intake: Any, api: Any, http_port: int
) -> None:
    base = f"http://127.0.0.1:{http_port}"
    known = {"case_id": _cases(api), "department": list(DEPARTMENTS)}
    auth = bearer(api.key("admin", rate_per_min=0))
    r = requests.get(f"{base}/api/v1/openapi.json", timeout=10)
    assert r.status_code == 200 and "Authorization" not in r.request.headers
    served = {(path_of(rt.url)[0], rt.method) for rt in container_routes(intake)
              if not rt.url.startswith(NOT_NATIVE)}
    documented = {(p, m.upper()) for p, item in r.json()["paths"].items() for m in item}
    assert documented == served

    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    schema.validate()
    failures: dict[str, str] = {}
    counts: dict[str, Counter[int]] = {}
    started = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for negative in (False, True):
                fuzz = _fuzzer(operation, negative, base, session, auth, known, counts)
                try:
                    fuzz()
                except Unsatisfiable:  # nothing to break: no parameters, no body
                    assert negative, operation.label
                except (Exception, BaseExceptionGroup) as exc:  # every operation's findings
                    failures[operation.label] = f"{type(exc).__name__}: {exc}"[:3000]
    elapsed = time.monotonic() - started
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    # schemathesis leaves out the document's own operation: fetched above
    untested = {f"{m} {p}" for p, m in documented} - set(counts) - {"GET /api/v1/openapi.json"}
    assert not untested, f"no request made: {sorted(untested)}"
    print(f"\nschemathesis: {sum(c.total() for c in counts.values())} requests over "
          f"{len(counts)} operations in {elapsed:.1f} s")
    for label, statuses in sorted(counts.items()):
        print(f"  {label}: {dict(sorted(statuses.items()))}")


def test_the_ledger_without_escalation_is_a_503_not_a_500(
    run_services: Any, api: Any
) -> None:
    """schemathesis' first finding: escalation's RPC queue missing (it never ran on this
    broker) made the ledger a 500."""
    run_services(IntakeService)
    for path in ("/api/v1/supervision", "/api/v1/supervision.csv"):
        r = api.get(path)
        assert r.status_code == 503, r.text
        assert "escalation" in r.json()["errors"]["_request"][0]
