"""The case aggregate: assignments, derived case states, the timeline and queued events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.intake.cases import AssignmentState, Case, CaseState, TransitionError
from shared.events import make_event
from support import event_types, kinds

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
REPORT_IN_DUE = T0 + timedelta(minutes=30)
RESOLVE_DUE = T0 + timedelta(hours=6)
DEPARTMENTS = ("fire", "police", "urban_mgmt")
TIER = {
    "tier": "community",
    "code": "511802001001",
    "name": "桐梓林社区",
    "owner": {"id": "cm-0001", "name": "胡涛", "role": "社区党委书记", "phone": "13900000003"},
}
REPORTER = {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": "13800000001"}


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def assignments(*departments: str) -> list[dict[str, Any]]:
    return [
        {
            "department": d,
            "role": "lead" if i == 0 else "assist",
            "report_in_due": REPORT_IN_DUE,
            "resolve_due": RESOLVE_DUE,
            "report_in": "30m",
            "resolve": "4wh",
        }
        for i, d in enumerate(departments)
    ]


def new_case(**overrides: Any) -> Case:
    kwargs: dict[str, Any] = {
        "category": "E0402",
        "grid_code": "511802001001101",
        "description": "消防通道被私家车堵塞",
        "reporter": REPORTER,
        "reported_at": T0,
    }
    kwargs.update(overrides)
    return Case("20261123-000001", **kwargs)


def routed_case(*departments: str) -> Case:
    case = new_case()
    case.routed(TIER, assignments(*(departments or DEPARTMENTS)), minutes(1))
    return case


def dispatched_case(*departments: str) -> Case:
    case = routed_case(*departments)
    for a in case.assignments:
        case.dispatched(
            a.department, minutes(2), f"{a.department}.case.assigned", f"m-{a.department}"
        )
    return case


def acknowledged_case(*departments: str) -> Case:
    case = dispatched_case(*departments)
    for a in case.assignments:
        case.acknowledge(a.department, actor="", note="", at=minutes(10))
    return case


def resolve(case: Case, department: str, at: datetime | None = None) -> None:
    case.resolve(department, actor="", note="", media_urls=[], at=at or minutes(60))




# -- a new case -------------------------------------------------------------------------------


def test_new_case_is_reported_with_one_timeline_entry():
    case = new_case()
    assert case.state == CaseState.REPORTED == "reported"
    assert case.assignments == []
    assert case.tier is None and case.tier_code is None
    assert case.escalations == 0
    assert case.updated_at == T0
    [entry] = case.new_entries
    assert (entry.at, entry.kind, entry.actor, entry.reason) == (
        T0,
        "reported",
        "grid_worker:gw-0001",
        "report received",
    )
    assert entry.data == {}
    assert case.pending_events == []


def test_reporter_without_id_is_named_by_kind_alone():
    case = new_case(reporter={"kind": "hotline"})
    assert case.new_entries[0].actor == "hotline"


def test_case_keeps_its_location_and_media():
    case = new_case(
        building_code="511802001001101001",
        lat=29.9735,
        lng=102.9985,
        media_urls=["https://m.example.com/1.jpg"],
        occurred_at=T0 - timedelta(hours=1),
    )
    assert case.building_code == "511802001001101001"
    assert (case.lat, case.lng) == (29.9735, 102.9985)
    assert case.media_urls == ["https://m.example.com/1.jpg"]
    assert case.occurred_at == T0 - timedelta(hours=1)
    assert new_case().media_urls == []


def test_pending_events_exist_on_instances_loaded_without_init():
    loaded = Case.__new__(Case)  # what the ORM does
    assert loaded.pending_events == []
    loaded.pending_events.append(("x", {}))
    assert loaded.pending_events == [("x", {})]


# -- routed -----------------------------------------------------------------------------------


def test_routed_creates_pending_assignments_and_sets_the_tier():
    case = routed_case()
    assert case.state == CaseState.ROUTED
    assert (case.tier, case.tier_code) == ("community", "511802001001")
    assert [(a.department, a.role, a.state) for a in case.assignments] == [
        ("fire", "lead", "pending"),
        ("police", "assist", "pending"),
        ("urban_mgmt", "assist", "pending"),
    ]
    fire = case.assignment("fire")
    assert (fire.report_in_due, fire.resolve_due) == (REPORT_IN_DUE, RESOLVE_DUE)
    assert fire.dispatched_at is fire.acknowledged_at is fire.resolved_at is None


def test_routed_timeline_entry_names_tier_and_lead_and_keeps_plain_data():
    case = routed_case()
    entry = case.new_entries[-1]
    assert (entry.kind, entry.actor, entry.at) == ("routed", "routing", minutes(1))
    assert entry.reason == "starts at community 桐梓林社区; lead fire"
    assert entry.data["tier"] == TIER
    assert entry.data["assignments"][0]["report_in_due"] == "2026-11-23T01:30:00+00:00"
    assert entry.data["assignments"][0]["resolve_due"] == "2026-11-23T07:00:00+00:00"
    assert case.updated_at == minutes(1)


def test_routed_twice_does_not_duplicate_assignments():
    case = routed_case()
    case.routed(TIER, assignments(*DEPARTMENTS), minutes(2))
    assert [a.department for a in case.assignments] == list(DEPARTMENTS)


def test_routing_queues_no_event():
    assert routed_case().pending_events == []


def test_assignment_lookup_by_department():
    case = routed_case()
    assert case.assignment("police").role == "assist"
    assert case.assignment("gas") is None


# -- dispatched -------------------------------------------------------------------------------


def test_case_is_dispatched_once_every_assignment_is():
    case = routed_case()
    case.dispatched("fire", minutes(2), "fire.case.assigned", "m-1")
    case.dispatched("police", minutes(2), "police.case.assigned", "m-2")
    assert case.state == CaseState.ROUTED
    case.dispatched("urban_mgmt", minutes(3), "urban_mgmt.case.assigned", "m-3")
    assert case.state == CaseState.DISPATCHED
    assert all(a.state == AssignmentState.DISPATCHED for a in case.assignments)


def test_dispatched_records_time_routing_key_and_message_id():
    case = routed_case("sanitation")
    case.dispatched("sanitation", minutes(2), "sanitation.case.assigned", "m-42")
    assert case.assignment("sanitation").dispatched_at == minutes(2)
    entry = case.new_entries[-1]
    assert (entry.kind, entry.actor, entry.reason) == ("dispatched", "notify", "sent to sanitation")
    assert entry.data == {
        "department": "sanitation",
        "routing_key": "sanitation.case.assigned",
        "message_id": "m-42",
    }
    assert case.pending_events == []


def test_dispatched_to_a_department_without_assignment_is_refused():
    case = routed_case()
    with pytest.raises(TransitionError, match=r"^no assignment for gas$"):
        case.dispatched("gas", minutes(2), "gas.case.assigned", "m-1")
    assert kinds(case) == ["reported", "routed"]


def test_dispatched_after_acknowledge_does_not_regress_the_assignment():
    case = routed_case("sanitation")
    case.acknowledge("sanitation", actor="", note="", at=minutes(2))
    case.dispatched("sanitation", minutes(3), "sanitation.case.assigned", "m-1")
    a = case.assignment("sanitation")
    assert a.state == AssignmentState.ACKNOWLEDGED
    assert a.dispatched_at == minutes(3)
    assert case.state == CaseState.ACKNOWLEDGED


def test_dispatched_after_resolve_keeps_the_case_resolved():
    case = routed_case("sanitation")
    case.acknowledge("sanitation", actor="", note="", at=minutes(2))
    resolve(case, "sanitation", minutes(3))
    case.dispatched("sanitation", minutes(4), "sanitation.case.assigned", "m-1")
    assert case.assignment("sanitation").state == AssignmentState.RESOLVED
    assert case.state == CaseState.RESOLVED


# -- acknowledge ------------------------------------------------------------------------------


def test_acknowledge_moves_the_assignment_and_queues_an_event():
    case = dispatched_case()
    case.acknowledge("fire", actor="fire:duty-7", note="在路上", at=minutes(10))
    fire = case.assignment("fire")
    assert fire.state == AssignmentState.ACKNOWLEDGED
    assert fire.acknowledged_at == minutes(10)
    assert case.pending_events == [
        (
            "assignment.acknowledged",
            {"department": "fire", "actor": "fire:duty-7", "note": "在路上", "at": minutes(10)},
        )
    ]
    entry = case.new_entries[-1]
    assert (entry.kind, entry.actor, entry.reason) == (
        "acknowledged",
        "fire:duty-7",
        "reported in: 在路上",
    )
    assert entry.data == {"department": "fire"}


def test_acknowledge_without_actor_names_the_department():
    case = dispatched_case()
    case.acknowledge("police", actor="", note="", at=minutes(10))
    assert (case.new_entries[-1].actor, case.new_entries[-1].reason) == ("police", "reported in")


def test_acknowledge_after_the_report_in_deadline_is_marked_late():
    case = dispatched_case()
    case.acknowledge("fire", actor="", note="堵车", at=REPORT_IN_DUE + timedelta(seconds=1))
    assert case.new_entries[-1].reason == "reported in late: 堵车"


def test_acknowledge_exactly_at_the_deadline_is_on_time():
    case = dispatched_case()
    case.acknowledge("fire", actor="", note="", at=REPORT_IN_DUE)
    assert case.new_entries[-1].reason == "reported in"


def test_acknowledge_is_allowed_before_the_dispatch_is_confirmed():
    case = routed_case()
    case.acknowledge("fire", actor="", note="", at=minutes(2))
    assert case.assignment("fire").state == AssignmentState.ACKNOWLEDGED


def test_case_is_acknowledged_only_when_every_assignment_is():
    case = dispatched_case()
    case.acknowledge("fire", actor="", note="", at=minutes(10))
    case.acknowledge("police", actor="", note="", at=minutes(11))
    assert case.state == CaseState.DISPATCHED
    case.acknowledge("urban_mgmt", actor="", note="", at=minutes(12))
    assert case.state == CaseState.ACKNOWLEDGED


def test_acknowledge_by_a_department_without_assignment_lists_the_assigned():
    case = dispatched_case()
    with pytest.raises(TransitionError) as exc:
        case.acknowledge("gas", actor="", note="", at=minutes(10))
    assert (
        str(exc.value) == "gas has no assignment on this case (assigned: fire, police, urban_mgmt)"
    )


def test_acknowledge_before_routing_says_nobody_is_assigned_yet():
    case = new_case()
    with pytest.raises(TransitionError) as exc:
        case.acknowledge("fire", actor="", note="", at=minutes(10))
    assert str(exc.value) == "fire has no assignment on this case (assigned: none yet)"


def test_acknowledge_twice_says_when_it_reported_in():
    case = dispatched_case()
    case.acknowledge("fire", actor="", note="", at=minutes(10))
    with pytest.raises(TransitionError) as exc:
        case.acknowledge("fire", actor="", note="", at=minutes(11))
    assert str(exc.value) == "fire already reported in at 2026-11-23 01:10:00Z"
    assert event_types(case) == ["assignment.acknowledged"]


def test_acknowledge_after_own_resolution_is_refused_while_others_work():
    case = acknowledged_case()
    resolve(case, "fire")
    with pytest.raises(TransitionError, match="fire already reported in at 2026-11-23 01:10:00Z"):
        case.acknowledge("fire", actor="", note="", at=minutes(70))


# -- resolve ----------------------------------------------------------------------------------


def test_resolve_before_acknowledge_asks_for_a_report_in():
    case = dispatched_case()
    with pytest.raises(TransitionError) as exc:
        resolve(case, "fire")
    assert str(exc.value) == "assignment of fire is dispatched; report in (ack) before resolving"


def test_resolve_of_a_pending_assignment_names_its_state():
    case = routed_case()
    with pytest.raises(TransitionError, match=r"^assignment of police is pending; report in"):
        resolve(case, "police")


def test_resolve_twice_says_it_is_already_resolved():
    case = acknowledged_case()
    resolve(case, "fire")
    with pytest.raises(TransitionError) as exc:
        resolve(case, "fire", minutes(61))
    assert str(exc.value) == "assignment of fire is resolved; it is already resolved"


def test_resolve_by_a_department_without_assignment_is_refused():
    case = acknowledged_case()
    with pytest.raises(TransitionError, match=r"^gas has no assignment on this case"):
        resolve(case, "gas")


def test_resolve_records_note_media_and_queues_an_event():
    case = acknowledged_case()
    media = ["https://m.example.com/after.jpg"]
    case.resolve("police", actor="police:007", note="车辆已拖离", media_urls=media, at=minutes(50))
    media.append("https://m.example.com/later.jpg")  # the caller's list is not kept
    a = case.assignment("police")
    assert (a.state, a.resolved_at, a.note) == ("resolved", minutes(50), "车辆已拖离")
    assert a.media_urls == ["https://m.example.com/after.jpg"]
    entry = case.new_entries[-1]
    assert (entry.kind, entry.actor, entry.reason) == ("resolved", "police:007", "车辆已拖离")
    assert entry.data == {"department": "police", "media_urls": ["https://m.example.com/after.jpg"]}
    assert case.pending_events[-1] == (
        "assignment.resolved",
        {
            "department": "police",
            "actor": "police:007",
            "note": "车辆已拖离",
            "media_urls": ["https://m.example.com/after.jpg"],
            "at": minutes(50),
        },
    )


def test_resolve_without_note_or_actor_has_defaults():
    case = acknowledged_case()
    resolve(case, "urban_mgmt")
    assert (case.new_entries[-1].actor, case.new_entries[-1].reason) == ("urban_mgmt", "resolved")


def test_one_resolved_assignment_puts_the_case_in_progress():
    case = acknowledged_case()
    resolve(case, "police")
    assert case.state == CaseState.IN_PROGRESS


def test_resolved_assignment_with_others_still_pending_is_in_progress():
    case = routed_case("fire", "police")
    case.acknowledge("fire", actor="", note="", at=minutes(5))
    resolve(case, "fire")
    assert case.assignment("police").state == AssignmentState.PENDING
    assert case.state == CaseState.IN_PROGRESS


def test_case_resolved_only_when_every_assignment_is_resolved():
    case = acknowledged_case()
    resolve(case, "fire", minutes(40))
    resolve(case, "police", minutes(50))
    assert "case_resolved" not in kinds(case)
    assert "case.resolved" not in event_types(case)
    assert case.state == CaseState.IN_PROGRESS

    resolve(case, "urban_mgmt", minutes(60))
    assert case.state == CaseState.RESOLVED
    assert kinds(case)[-2:] == ["resolved", "case_resolved"]
    last = case.new_entries[-1]
    assert (last.actor, last.reason, last.at) == (
        "intake",
        "every assignment is resolved",
        minutes(60),
    )
    assert case.pending_events[-1] == ("case.resolved", {"resolved_at": minutes(60)})
    assert event_types(case).count("case.resolved") == 1


def test_single_assignment_case_resolves_with_its_assignment():
    case = acknowledged_case("sanitation")
    resolve(case, "sanitation")
    assert case.state == CaseState.RESOLVED
    assert event_types(case) == ["assignment.acknowledged", "assignment.resolved", "case.resolved"]


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_a_resolved_case_is_closed_to_departments(action):
    case = acknowledged_case("sanitation")
    resolve(case, "sanitation")
    before = (len(case.new_entries), len(case.pending_events))
    with pytest.raises(TransitionError) as exc:
        if action == "acknowledge":
            case.acknowledge("sanitation", actor="", note="", at=minutes(90))
        else:
            resolve(case, "sanitation", minutes(90))
    assert str(exc.value) == "case 20261123-000001 is resolved"
    assert (len(case.new_entries), len(case.pending_events)) == before


def test_refused_transition_leaves_no_trace():
    case = dispatched_case()
    before = (kinds(case), case.updated_at, case.state)
    with pytest.raises(TransitionError):
        resolve(case, "fire")
    assert (kinds(case), case.updated_at, case.state) == before
    assert case.pending_events == []


# -- escalated --------------------------------------------------------------------------------


STREET = {
    "tier": "street",
    "code": "511802001",
    "name": "青江街道",
    "owner": {"id": "st-0001", "name": "黄国平", "role": "", "phone": ""},
}
NEXT_REPORT_IN_DUE = REPORT_IN_DUE + timedelta(minutes=15)  # the street's 15m from now
ESCALATION = {
    "reason": "report_in_missed",
    "missed": [
        {
            "department": "fire",
            "clock": "report_in",
            "due_at": REPORT_IN_DUE,
            "next_due": NEXT_REPORT_IN_DUE,
        },
        {
            "department": "police",
            "clock": "report_in",
            "due_at": REPORT_IN_DUE,
            "next_due": NEXT_REPORT_IN_DUE,
        },
    ],
    "from_tier": TIER,
    "to_tier": STREET,
    "step": 1,
    "notify": {
        "departments": ["fire", "police", "urban_mgmt"],
        "tiers": [STREET | {"role": "owner"}],
    },
    "escalated_at": REPORT_IN_DUE,
}


def test_escalated_moves_the_tier_and_counts():
    case = dispatched_case()
    case.escalated(ESCALATION, REPORT_IN_DUE)
    assert (case.tier, case.tier_code) == ("street", "511802001")
    assert case.escalations == 1
    assert case.state == CaseState.DISPATCHED  # a tier move is not a state change
    entry = case.new_entries[-1]
    assert (entry.kind, entry.actor) == ("escalated", "escalation")
    assert entry.reason == (
        "report_in_missed: fire (report_in), police (report_in); now at street 青江街道"
    )
    assert entry.data["missed"][0]["due_at"] == "2026-11-23T01:30:00+00:00"
    assert entry.data["missed"][0]["next_due"] == "2026-11-23T01:45:00+00:00"
    assert entry.data["escalated_at"] == "2026-11-23T01:30:00+00:00"
    assert entry.data["notify"]["tiers"][0]["role"] == "owner"
    assert case.pending_events == []


def test_escalated_to_a_nameless_tier_ends_with_the_tier():
    case = dispatched_case()
    case.escalated(ESCALATION | {"to_tier": STREET | {"name": ""}}, REPORT_IN_DUE)
    assert case.new_entries[-1].reason.endswith("; now at street")


def test_escalated_gives_the_missed_clocks_their_next_deadlines():
    case = dispatched_case()
    stopped = {"department": "urban_mgmt", "clock": "resolve", "due_at": RESOLVE_DUE}
    missed = [*ESCALATION["missed"][:1], stopped | {"next_due": None}]
    case.escalated(ESCALATION | {"missed": missed}, REPORT_IN_DUE)
    deadlines = {a.department: (a.report_in_due, a.resolve_due) for a in case.assignments}
    assert deadlines == {
        "fire": (NEXT_REPORT_IN_DUE, RESOLVE_DUE),  # the missed clock moves, the other stays
        "police": (REPORT_IN_DUE, RESOLVE_DUE),  # not missed: untouched
        "urban_mgmt": (REPORT_IN_DUE, None),  # its clock stopped at the top
    }


def test_escalated_ignores_a_missed_clock_of_a_department_not_on_the_case():
    case = dispatched_case()
    stray = {"department": "gas", "clock": "report_in", "due_at": REPORT_IN_DUE}
    case.escalated(ESCALATION | {"missed": [stray | {"next_due": NEXT_REPORT_IN_DUE}]}, RESOLVE_DUE)
    assert case.assignment("gas") is None
    assert {(a.report_in_due, a.resolve_due) for a in case.assignments} == {
        (REPORT_IN_DUE, RESOLVE_DUE)
    }
    assert (case.tier, case.escalations) == ("street", 1)


def test_escalations_accumulate():
    case = dispatched_case()
    case.escalated(ESCALATION, REPORT_IN_DUE)
    case.escalated(ESCALATION | {"reason": "resolve_missed"}, RESOLVE_DUE)
    assert case.escalations == 2
    assert case.updated_at == RESOLVE_DUE
    assert kinds(case).count("escalated") == 2


def test_the_escalation_the_case_records_is_a_valid_event():
    event = make_event("case.escalated", "20261123-000001", ESCALATION, producer="t", at=T0)
    case = dispatched_case()
    case.escalated(event.data, REPORT_IN_DUE)  # what intake does with the decoded event
    assert case.assignment("fire").report_in_due == NEXT_REPORT_IN_DUE


# -- the events it queues are valid events ----------------------------------------------------


def test_every_queued_event_is_a_valid_internal_event():
    case = acknowledged_case()
    for dept in DEPARTMENTS:
        case.resolve(
            dept, actor="", note="done", media_urls=["https://m.example.com/a.jpg"], at=minutes(60)
        )
    assert event_types(case) == [
        "assignment.acknowledged",
        "assignment.acknowledged",
        "assignment.acknowledged",
        "assignment.resolved",
        "assignment.resolved",
        "assignment.resolved",
        "case.resolved",
    ]
    for type_, data in case.pending_events:
        event = make_event(type_, case.case_id, data, producer="intake", at=minutes(60))
        assert event.type == type_


def test_timeline_is_append_only_in_order():
    case = acknowledged_case("sanitation")
    resolve(case, "sanitation")
    assert kinds(case) == [
        "reported",
        "routed",
        "dispatched",
        "acknowledged",
        "resolved",
        "case_resolved",
    ]
    times = [e.at for e in case.new_entries]
    assert times == sorted(times)
