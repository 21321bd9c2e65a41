"""Operators sign in to the monitor with their API keys (intake's ``authenticate`` over
RPC, on the real broker) and see and act only within their scope: their grid subtree for
cases, measures and the ledger; their own tier and the tiers below for dead letters."""

from __future__ import annotations

import json
from typing import Any

import kombu
import pytest
import requests

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.monitor.service import MonitorService
from services.routing.service import RoutingService
from support import BaseUrlSession as Page
from support import report, wait_for

FAST = {"GRIDFLOW_MONITOR_COLLECT_S": 0.2, "GRIDFLOW_MONITOR_SAMPLE_S": 0.3,
        "GRIDFLOW_HEARTBEAT_S": 0.3, "GRIDFLOW_MONITOR_KEY_CHECK_S": 0}
COMMUNITY = "511802001001"
AREA = "5118020010011"
OTHER_CELL = "511802001001201"


@pytest.fixture
def system(run_services: Any, service_config: dict[str, Any]) -> str:
    """intake (with routing and escalation, for cases and the ledger) on the API port, and
    the monitor on its own; the monitor's base URL."""
    run_services(IntakeService, RoutingService, EscalationService)
    monitor = run_services(MonitorService, config={**service_config, **FAST})["monitor"]
    return f"http://{monitor.config['WEB_SERVER_ADDRESS']}"  # a port of its own


def _signed_in(base: str, token: str) -> Page:
    page = Page(base)
    r = page.post("/api/login", json={"key": token})
    assert r.status_code == 200, r.text
    return page


def _reason(r: requests.Response) -> str:
    return r.json()["errors"]["_auth"][0]


def test_operators_and_admins_sign_in_with_keys_others_are_turned_away(
    system: str, api: Any
) -> None:
    page = _signed_in(system, api.key("operator", grid=COMMUNITY, client="桐梓林社区值班"))
    me = page.get("/api/me").json()
    assert (me["operator"], me["role"], me["grid"]) == ("桐梓林社区值班", "operator", COMMUNITY)
    _signed_in(system, api.key("admin"))

    for token, status, words in (
        (api.key("patrol_app"), 403, "not a patrol_app key"),
        (api.key("department", department="fire"), 403, "not a department key"),
        ("gfk_0123456789ab_" + "x" * 43, 401, "unknown API key"),
        ("nonsense", 401, "not a gridflow API key"),
    ):
        r = Page(system).post("/api/login", json={"key": token})
        assert r.status_code == status and words in _reason(r), r.text
    r = Page(system).post("/api/login", json={"key": "k", "name": "operator"})
    assert r.status_code == 422 and "key" in r.json()["errors"]
    audit = [(a["action"], a["operator"]) for a in page.get("/api/audit").json()["items"]]
    assert ("login", "桐梓林社区值班") in audit and ("login_failed", "(a key)") in audit


def test_a_revoked_key_ends_its_session(system: str, api: Any) -> None:
    r = api.post("/api/v1/keys", json={"client": "夜班", "role": "operator"})
    page = _signed_in(system, r.json()["token"])
    assert page.get("/api/queues").status_code == 200
    api.post(f"/api/v1/keys/{r.json()['key']['key_id']}/revoke")
    r = page.get("/api/queues")
    assert r.status_code == 401 and "revoked" in _reason(r)


def test_a_scoped_operator_sees_only_its_subtree(system: str, api: Any) -> None:
    inside = api.post("/api/v1/reports", json=report("m-1")).json()["case_id"]
    outside = api.post("/api/v1/reports",
                       json=report("m-2", grid_code=OTHER_CELL)).json()["case_id"]
    page = _signed_in(system, api.key("operator", grid=AREA))

    assert page.get(f"/api/cases/{inside}").status_code == 200
    r = page.get(f"/api/cases/{outside}")
    assert r.status_code == 403 and outside in _reason(r)
    listed = {c["case_id"] for c in page.get("/api/cases").json()["items"]}
    assert inside in listed and outside not in listed
    assert page.get("/api/funnel").json()["node"]["code"] == AREA
    for url in (f"/api/funnel?grid={COMMUNITY}", f"/api/measures?grid={COMMUNITY}",
                f"/api/cases?grid={COMMUNITY}", f"/api/ledger?grid={COMMUNITY}"):
        r = page.get(url)
        assert r.status_code == 403 and AREA in _reason(r), url


def _dead_letter(amqp_uri: str, routing_key: str, queue: str, message_id: str) -> None:
    """A message on ``queue`` that its consumer rejects: RabbitMQ dead-letters it."""
    with kombu.Connection(amqp_uri) as conn:
        conn.Producer().publish(json.dumps({"type": "case.escalated"}), routing_key=routing_key,
                                exchange="gridflow.dispatch", message_id=message_id,
                                delivery_mode=2, content_type="application/json")
        channel = conn.channel()
        msg = wait_for(lambda: channel.basic_get(queue, no_ack=False), what=queue)
        channel.basic_reject(msg.delivery_tag, requeue=False)


def test_a_scoped_operator_replays_and_discards_only_its_tiers_dead_letters(
    system: str, api: Any, rabbit_config: dict[str, Any]
) -> None:
    uri = rabbit_config["AMQP_URI"]
    _dead_letter(uri, f"tier.area.{AREA}.case.escalated", "dispatch.tier.area", "dl-area")
    _dead_letter(uri, "tier.street.5118020.case.escalated", "dispatch.tier.street", "dl-st")
    _dead_letter(uri, "fire.case.assigned", "dispatch.fire", "dl-fire")
    community = _signed_in(system, api.key("operator", grid=COMMUNITY))
    letters = wait_for(lambda: (lambda items: items if len(items) == 3 else None)(
        community.get("/api/dead-letters").json()["items"]), what="three letters collected")
    by_queue = {d["queue"]: d["id"] for d in letters}

    for queue in ("dispatch.tier.street", "dispatch.fire"):
        r = community.post("/api/dead-letters/replay", json={"ids": [by_queue[queue]]})
        assert r.status_code == 403 and "not from this key's tiers" in _reason(r), queue
        r = community.post("/api/dead-letters/discard", json={"all": True, "queue": queue,
                                                               "reason": "not mine"})
        assert r.status_code == 403 and queue in _reason(r)
    r = community.post("/api/dead-letters/replay", json={"all": True})
    assert r.status_code == 200 and r.json()["replayed"] == [by_queue["dispatch.tier.area"]]
    parked = {d["queue"] for d in community.get("/api/dead-letters").json()["items"]}
    assert parked == {"dispatch.tier.street", "dispatch.fire"}  # the others' stay parked

    district = _signed_in(system, api.key("operator"))
    r = district.post("/api/dead-letters/discard", json={"all": True, "reason": "tested"})
    assert sorted(r.json()["discarded"]) == sorted([by_queue["dispatch.tier.street"],
                                                   by_queue["dispatch.fire"]])
    entry = district.get("/api/audit").json()["items"][0]
    assert entry["action"] == "discard" and "[key " in entry["operator"]
