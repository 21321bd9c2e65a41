"""An internal event naming a department the catalogue lacks is poison for escalation and
notify: dead-lettered at once with the reason, no clock started and nothing dispatched
(found by the chaos run: both services used to keep it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kombu
import pytest
from sqlalchemy import func, select

from services.escalation.service import EscalationService
from services.escalation.store import Clock
from services.notify.service import NotifyService
from services.notify.store import Delivery
from services.routing.rules import route_with
from shared.amqp import topology as topo
from shared.catalogue import Catalogue
from shared.config import PROJECT_ROOT
from shared.events import make_event
from shared.extensions.store import Store
from shared.failures import PoisonEvent
from shared.reference import load_reference
from support import DEMO_CELL, get_messages, queue_depth, wait_for

REF = load_reference(PROJECT_ROOT / "deploy" / "demo")


def _routed(case_id: str, department: str | None = None) -> Any:
    from services.intake.reports import ReportBody, summarise

    now = datetime.now(UTC)
    body = ReportBody().load({"report_id": case_id, "category": "E0402", "grid_code": DEMO_CELL,
                              "description": "消防通道堵塞",
                              "reporter": {"kind": "resident", "id": "r-1"}})
    payload = route_with(REF, summarise(body, REF, now), now)
    if department:
        payload["assignments"][1]["department"] = department
    return make_event("case.routed", case_id, payload, producer="routing", at=now)


def test_catalogue_refuses_assignments_for_unknown_departments() -> None:
    catalogue: Catalogue = REF.catalogue
    catalogue.check_assignments([{"department": "fire"}, {"department": "police"}])
    with pytest.raises(PoisonEvent, match="not in the catalogue: ghosts, nobody"):
        catalogue.check_assignments([{"department": "nobody"}, {"department": "fire"},
                                     {"department": "ghosts"}])


def test_routed_event_naming_an_unknown_department_is_dead_lettered_by_both(
    run_services: Any, rabbit_config: dict[str, Any]
) -> None:
    containers = run_services(EscalationService, NotifyService)
    amqp = rabbit_config["AMQP_URI"]
    bad, good = _routed("20261123-900001", "no_such_department"), _routed("20261123-900002")
    with kombu.Connection(amqp) as conn:
        producer = conn.Producer()
        for ev in (bad, good):
            producer.publish(ev.to_json(), exchange=topo.EVENTS_EXCHANGE, routing_key=ev.type,
                             message_id=ev.event_id, delivery_mode=2,
                             content_type="application/json")

    for service in ("escalation", "notify"):
        dlq = topo.dead_letter_queue(topo.service_queue(service))
        wait_for(lambda dlq=dlq: queue_depth(amqp, dlq) == 1, timeout=30,
                 what=f"{dlq} has the poison")
        [dead] = get_messages(amqp, dlq)
        assert dead.properties["message_id"] == bad.event_id
        assert "not in the catalogue: no_such_department" in dead.headers[topo.H_REASON]
    # the good case went through; the bad one left nothing behind
    wait_for(lambda: queue_depth(amqp, "dispatch.fire") == 1, timeout=30,
             what="the good case dispatched")
    assert {m.properties["message_id"] for m in get_messages(amqp, "dispatch.fire")}
    for name, model in (("escalation", Clock), ("notify", Delivery)):
        store = next(e for e in containers[name].extensions if isinstance(e, Store))
        with store.engine.connect() as conn:
            cases = set(conn.scalars(select(model.case_id).group_by(model.case_id)))
            assert cases == {good.case_id}, (name, cases)
            assert conn.scalar(select(func.count()).select_from(model)) > 0
