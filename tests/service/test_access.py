"""Who may do what at intake's HTTP front (shared.access), with the real service, broker and
databases: every route refuses a request without a key (401) and every role a route is not
for (403, naming who may); each scope rule refuses what lies outside it; keys are revoked at
once; rates, page sizes and bodies are capped; personal data is masked for the roles that
need none; and every state change — and every refusal of a known key — is in the audit
log, which the database itself keeps append-only."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import requests
from sqlalchemy import delete, func, select, text, update

from services.intake.service import IntakeService
from services.intake.store import audit_log
from services.routing.service import RoutingService
from shared import access
from shared.db import make_engine, service_database_url
from shared.extensions.http import JsonHttpHandler
from support import DEMO_CELL, bearer, report, wait_for

COMMUNITY = "511802001001"  # 桐梓林社区
AREA = "5118020010011"  # DEMO_CELL's area
OTHER_AREA = "5118020010012"
OTHER_CELL = "511802001001201"  # in OTHER_AREA
OPERATOR_BY = {"name": "王主任", "tier": "community", "code": COMMUNITY}


@pytest.fixture
def intake(run_services: Any) -> Any:
    return run_services(IntakeService, RoutingService)["intake"]


def _routed(api: Any, report_id: str, **extra: Any) -> str:
    """A new case (blocked fire lane: fire leads, police and urban_mgmt assist), routed."""
    r = api.post("/api/v1/reports", json=report(report_id, **extra))
    assert r.status_code == 201, r.text
    case_id = r.json()["case_id"]
    wait_for(lambda: api.get(f"/api/v1/cases/{case_id}").json()["assignments"] or None,
             what="routing")
    return case_id


def _routes(container: Any) -> list[tuple[str, str, str | None, bool]]:
    return sorted((ep.method, ep.url, ep.action, ep.public) for ep in container.entrypoints
                  if isinstance(ep, JsonHttpHandler))


def _url(rule: str, case_id: str) -> str:
    values = {"case_id": case_id, "department": "fire", "extension_id": "1", "task_id": "1",
              "key_id": "0123456789ab"}
    return re.sub(r"<(?:int:)?(\w+)>", lambda m: values[m.group(1)], rule)


def _call(method: str, url: str, headers: dict[str, Any], port: int) -> requests.Response:
    return requests.request(method, f"http://127.0.0.1:{port}{url}", headers=headers,
                            json={} if method == "POST" else None, timeout=10)


def _reason(r: requests.Response) -> str:
    return r.json()["errors"]["_auth"][0]


# -- every route, every role ----------------------------------------------------------------
def test_every_route_but_health_needs_a_key(intake: Any, api: Any, http_port: int) -> None:
    case_id = _routed(api, "k-1")
    routes = _routes(intake)
    assert len(routes) >= 30
    for method, rule, action, public in routes:
        if public:
            # /metrics: the scraper's token; Open311: public by its spec, and its POST
            # checks the api_key of its form (tests/service/test_open311.py)
            assert rule in ("/health", "/metrics", "/api/v1/openapi.json", "/api/v1/docs") \
                or rule.startswith("/open311/v2/"), rule  # the OpenAPI document and its page
            continue
        assert action in access.ACTIONS, (rule, action)
        for headers in ({}, {"Authorization": "Basic Zm9vOmJhcg=="},
                        {"Authorization": "Bearer not-a-key"},
                        {"Authorization": "Bearer gfk_0123456789ab_" + "x" * 43}):
            r = _call(method, _url(rule, case_id), headers, http_port)
            assert r.status_code == 401, (method, rule, headers, r.text)
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
            assert _reason(r)


def test_every_role_is_refused_what_its_role_may_not_do(
    intake: Any, api: Any, http_port: int
) -> None:
    case_id = _routed(api, "k-2")
    tokens = {"patrol_app": api.key("patrol_app"), "operator": api.key("operator"),
              "department": api.key("department", department="fire"),
              "admin": api.key("admin")}
    refused = 0
    for method, rule, action, public in _routes(intake):
        if public:
            continue
        _, roles = access.ACTIONS[action]
        for role, token in tokens.items():
            r = _call(method, _url(rule, case_id), bearer(token), http_port)
            if role in roles:
                assert r.status_code not in (401, 403), (role, method, rule, r.text)
            else:
                assert r.status_code == 403, (role, method, rule, r.text)
                assert f"({action}: " in _reason(r) and role in _reason(r)
                refused += 1
    assert refused >= 40


# -- scopes ---------------------------------------------------------------------------------
def test_a_patrol_app_works_only_in_its_grid(intake: Any, api: Any) -> None:
    inside = _routed(api, "k-3")
    outside = _routed(api, "k-4", grid_code=OTHER_CELL)
    patrol = bearer(api.key("patrol_app", grid=AREA))

    r = api.post("/api/v1/reports", json=report("k-5", grid_code=OTHER_CELL), headers=patrol)
    assert r.status_code == 403 and OTHER_CELL in _reason(r) and AREA in _reason(r)
    assert api.post("/api/v1/reports", json=report("k-6"), headers=patrol).status_code == 201

    assert api.get(f"/api/v1/cases/{inside}", headers=patrol).status_code == 200
    r = api.get(f"/api/v1/cases/{outside}", headers=patrol)
    assert r.status_code == 403 and outside in _reason(r)
    r = api.post(f"/api/v1/cases/{outside}/rating", json={"score": 5}, headers=patrol)
    assert r.status_code == 403

    listed = api.get("/api/v1/cases", headers=patrol).json()
    assert {c["case_id"] for c in listed["items"]} >= {inside}
    assert outside not in {c["case_id"] for c in listed["items"]}
    assert api.get(f"/api/v1/cases?grid={OTHER_AREA}", headers=patrol).status_code == 403

    r = api.get("/api/v1/tasks", headers=patrol)
    assert r.status_code == 403 and "assignee" in _reason(r)
    assert api.get(f"/api/v1/tasks?assignee={OTHER_CELL}", headers=patrol).status_code == 403
    assert api.get(f"/api/v1/tasks?assignee={DEMO_CELL}", headers=patrol).status_code == 200


def test_a_department_acts_only_on_its_own_assignments(intake: Any, api: Any) -> None:
    case_id = _routed(api, "k-7")  # fire leads, police and urban_mgmt assist
    other = _routed(api, "k-8", category="C0101")  # no fire assignment on it
    fire = bearer(api.key("department", department="fire"))
    assert "fire" not in {a["department"] for a in
                          api.get(f"/api/v1/cases/{other}").json()["assignments"]}

    for action in ("ack", "resolve", "progress", "return", "pause", "resume", "extensions"):
        r = api.post(f"/api/v1/cases/{case_id}/assignments/police/{action}", json={},
                     headers=fire)
        assert r.status_code == 403, (action, r.text)
        assert "fire, not police" in _reason(r)
    r = api.post(f"/api/v1/cases/{case_id}/assignments/fire/ack", json={}, headers=fire)
    assert r.status_code == 200, r.text

    r = api.get(f"/api/v1/cases/{other}", headers=fire)
    assert r.status_code == 403 and "no assignment for department fire" in _reason(r)
    assert api.get("/api/v1/cases?department=police", headers=fire).status_code == 403
    listed = {c["case_id"] for c in api.get("/api/v1/cases", headers=fire).json()["items"]}
    assert case_id in listed and other not in listed

    r = api.post(f"/api/v1/cases/{case_id}/assignments", headers=fire,
                 json={"department": "housing", "by_department": "police"})
    assert r.status_code == 403
    r = api.post(f"/api/v1/cases/{case_id}/assignments", headers=fire,
                 json={"department": "housing", "by": OPERATOR_BY})
    assert r.status_code == 403 and "by_department" in _reason(r)


def test_an_operator_speaks_only_for_its_own_subtree(intake: Any, api: Any) -> None:
    case_id = _routed(api, "k-9")
    elsewhere = _routed(api, "k-10", grid_code=OTHER_CELL)
    area_op = bearer(api.key("operator", grid=AREA))
    community_op = bearer(api.key("operator", grid=COMMUNITY))
    whistle = {"level": "routine", "departments": ["police"], "by": OPERATOR_BY,
               "reason": "堵塞严重"}

    r = api.post(f"/api/v1/cases/{case_id}/whistle", json=whistle, headers=area_op)
    assert r.status_code == 403 and COMMUNITY in _reason(r)
    r = api.post(f"/api/v1/cases/{elsewhere}/whistle", json=whistle, headers=area_op)
    assert r.status_code == 403 and elsewhere in _reason(r)
    r = api.post(f"/api/v1/cases/{case_id}/whistle", json=whistle, headers=community_op)
    assert r.status_code == 202, r.text

    assert api.get(f"/api/v1/stats/measures?grid={OTHER_AREA}",
                   headers=area_op).status_code == 403
    assert api.get("/api/v1/stats/funnel", headers=area_op).json()["node"]["code"] == AREA
    assert api.get(f"/api/v1/supervision?grid={OTHER_AREA}", headers=area_op).status_code == 403


# -- keys -----------------------------------------------------------------------------------
def test_keys_are_issued_listed_and_revoked_by_an_admin_and_stop_at_once(
    intake: Any, api: Any
) -> None:
    r = api.post("/api/v1/keys", json={"client": "消防支队系统", "role": "department",
                                       "department": "fire"})
    assert r.status_code == 201, r.text
    token, key_id = r.json()["token"], r.json()["key"]["key_id"]
    assert token.startswith(f"gfk_{key_id}_")
    listing = api.get("/api/v1/keys").json()["keys"]
    assert key_id in {k["key_id"] for k in listing}
    assert not any("hash" in field or token in str(v) for k in listing for field, v in k.items())
    assert api.get("/api/v1/categories", headers=bearer(token)).status_code == 200

    assert api.post(f"/api/v1/keys/{key_id}/revoke").status_code == 200
    r = api.get("/api/v1/categories", headers=bearer(token))
    assert r.status_code == 401 and "revoked" in _reason(r)
    assert api.post("/api/v1/keys/ffffffffffff/revoke").status_code == 404

    for bad, field in (({"client": "x", "role": "department"}, "department"),
                       ({"client": "x", "role": "patrol_app", "grid": "999"}, "grid"),
                       ({"client": "x", "role": "department", "department": "nope"},
                        "department"),
                       ({"client": "x", "role": "root"}, "role")):
        r = api.post("/api/v1/keys", json=bad)
        assert r.status_code == 422 and field in r.json()["errors"], (bad, r.text)


def test_a_key_over_its_rate_waits(intake: Any, api: Any) -> None:
    slow = bearer(api.key("patrol_app", rate_per_min=3))
    got = [api.get("/api/v1/categories", headers=slow).status_code for _ in range(4)]
    assert got == [200, 200, 200, 429]
    r = api.get("/api/v1/categories", headers=slow)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "3 requests a minute" in _reason(r)
    assert api.get("/api/v1/categories").status_code == 200  # another key's own bucket


def test_bodies_and_pages_are_capped(intake: Any, api: Any) -> None:
    r = api.post("/api/v1/reports", data=b"{" + b" " * 300_000 + b"}",
                 headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    for url in ("/api/v1/cases?per_page=1000", "/api/v1/tasks?per_page=1000",
                "/api/v1/audit?per_page=1000", "/api/v1/supervision?per_page=1000"):
        r = api.get(url)
        assert r.status_code == 422 and "per_page" in r.json()["errors"], url


def test_metrics_need_the_scrapers_token(intake: Any, http_port: int) -> None:
    url = f"http://127.0.0.1:{http_port}/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers=bearer("wrong"), timeout=10).status_code == 401
    token = intake.config["GRIDFLOW_METRICS_TOKEN"]
    assert requests.get(url, headers=bearer(token), timeout=10).status_code == 200


# -- personal data --------------------------------------------------------------------------
def test_reporters_are_masked_for_roles_that_need_no_personal_data(
    intake: Any, api: Any
) -> None:
    case_id = _routed(api, "k-11")
    seen = {role: api.get(f"/api/v1/cases/{case_id}", headers=bearer(token)).json()
            for role, token in (("patrol_app", api.key("patrol_app")),
                                ("department", api.key("department", department="fire")),
                                ("operator", api.key("operator")))}
    assert seen["patrol_app"]["reporter"]["phone"] == "138****0001"
    assert seen["patrol_app"]["reporter"]["name"] == "邓**"
    assert "13800000001" not in str(seen["patrol_app"])
    for role in ("department", "operator"):
        assert seen[role]["reporter"]["phone"] == "13800000001", role
    public = api.get(f"/api/v1/public/cases/{case_id}").text
    assert "13800000001" not in public and "邓海燕" not in public


# -- the audit log --------------------------------------------------------------------------
def test_every_change_and_every_refusal_is_audited_with_who_what_when_where(
    intake: Any, api: Any
) -> None:
    case_id = _routed(api, "k-12")
    fire_token = api.key("department", department="fire", client="消防支队系统")
    fire = bearer(fire_token)
    fire_id = fire_token.split("_")[1]
    assert api.post(f"/api/v1/cases/{case_id}/assignments/fire/ack", json={"note": "到"},
                    headers={**fire, "X-Forwarded-For": "10.1.2.3"}).status_code == 200
    assert api.post(f"/api/v1/cases/{case_id}/assignments/police/ack", json={},
                    headers=fire).status_code == 403
    assert api.post(f"/api/v1/cases/{case_id}/assignments/fire/ack", json={},
                    headers=fire).status_code == 409  # acked already: nothing changed
    api.get(f"/api/v1/cases/{case_id}", headers=fire)  # reads are not audited

    got = api.get(f"/api/v1/audit?key_id={fire_id}").json()
    entries = got["entries"]
    assert got["total"] == 2, entries
    denied, done = entries  # newest first
    assert (done["action"], done["outcome"], done["actor"], done["role"], done["target"]) == \
        ("ack", "done", "消防支队系统", "department", case_id)
    assert done["via"] == "http" and "10.1.2.3" in done["source"]
    assert done["route"] == f"POST /api/v1/cases/{case_id}/assignments/fire/ack"
    assert (denied["outcome"], denied["status"]) == ("denied", 403)
    assert "fire, not police" in denied["detail"]["reason"]
    reports = api.get("/api/v1/audit?action=post_report").json()["entries"]
    assert {e["actor"] for e in reports} == {"tests"} and len(reports) == 1
    assert api.get("/api/v1/audit?outcome=denied&target=" + case_id).json()["total"] == 1


def test_the_database_refuses_to_change_or_delete_audit_rows(
    intake: Any, api: Any, service_config: dict[str, Any]
) -> None:
    api.post("/api/v1/keys", json={"client": "x", "role": "admin"})
    engine = make_engine(service_database_url("intake", service_config["DATABASE_URL"],
                                              service_config["GRIDFLOW_VAR_DIR"]),
                         schema="intake", pool_size=1)
    try:
        for change in (update(audit_log).values(actor="someone else"), delete(audit_log)):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(change)
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(audit_log)) >= 1
            if engine.dialect.name == "postgresql":
                with pytest.raises(Exception, match="append-only"):
                    conn.execute(text('TRUNCATE "intake".audit_log'))
    finally:
        engine.dispose()


def test_the_command_line_issues_lists_revokes_and_reads_the_audit(
    tmp_path: Any, database_url: str | None
) -> None:
    env = {"GRIDFLOW_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           **({"DATABASE_URL": database_url} if database_url else {})}

    def gridflow(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "gridflow.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "--department" in gridflow("keys", "issue", "--help")
    out = gridflow("keys", "issue", "--client", "草坝镇巡查", "--role", "patrol_app",
                   "--grid", AREA)
    token = re.search(r"gfk_[0-9a-f]{12}_\S+", out)
    assert token is not None, out
    key_id = token.group(0).split("_")[1]
    assert key_id in gridflow("keys", "list") and "草坝镇巡查" in gridflow("keys", "list")
    assert "revoked" in gridflow("keys", "revoke", key_id)
    assert key_id not in gridflow("keys", "list") and key_id in gridflow("keys", "list", "--all")
    audit = gridflow("audit", "--target", key_id)
    assert "issue_key" in audit and "revoke_key" in audit and "cli" in audit
    bad = subprocess.run([sys.executable, "-m", "gridflow.cli", "keys", "issue", "--client",
                          "x", "--role", "department"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "needs its department" in bad.stderr
