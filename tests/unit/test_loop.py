"""The closed loop on the case aggregate: 协同 and manual dispatch, returns (退单), progress
(进展), tasks for the grid worker, verification on site (核查), closing, rating (评议) that may
reopen, follow-up visits (回访), and duplicates."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.intake.cases import AssignmentState, Case, CaseState, Task, TransitionError
from services.intake.loop import RETURN_LABELS, UNSATISFIED_SCORE
from shared.events import RETURN_REASONS, make_event
from shared.reference import load_reference
from support import event_types, fresh, kinds

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
REF = load_reference(DEMO)

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
CASE_ID = "20261123-000001"
DUPLICATE_ID = "20261123-000002"
TONGGONG = "511802001001101"  # 通工小区 → 桐梓林一片区 → 桐梓林社区 → 青江街道 → 雨城区
HANDU = "511802001001102"  # 汉都华府小区, the next cell
CELL, _ = REF.grid.cell_for_code(TONGGONG)
REPORT_IN_DUE = T0 + timedelta(minutes=30)
RESOLVE_DUE = T0 + timedelta(hours=6)
DEPARTMENTS = ("fire", "police", "urban_mgmt")
REPORTER = {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": "13800000001"}
FOLLOWER = {"kind": "resident", "id": "r-77", "name": "李娜", "phone": "13700000077"}
NAMES = {"compound": "邓海燕", "area": "梁雅琴", "community": "胡涛", "street": "黄国平",
         "district": "张建国"}
PHOTO = "https://m.example.com/check.jpg"
RATING_WINDOW = timedelta(days=7)
FOLLOW_UP_AFTER = timedelta(days=3)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def tier(name: str) -> dict[str, Any]:
    """The node answering for 通工小区 at ``name``, as routing and the shell give it."""
    return REF.grid.tier_info(CELL, name)


def operator(name: str, code: str | None = None) -> dict[str, Any]:
    own = REF.grid.tier_node(CELL, name).code
    return {"name": NAMES[name], "tier": name, "code": own if code is None else code}


GRID_WORKER = operator("compound")  # 邓海燕, the grid worker of 通工小区
GRID_WORKER_ACTOR = "compound:511802001001101:邓海燕"
COMMUNITY_ACTOR = "community:511802001001:胡涛"


def assignments(*departments: str) -> list[dict[str, Any]]:
    return [
        {"department": d, "role": "lead" if i == 0 else "assist",
         "report_in_due": REPORT_IN_DUE, "resolve_due": RESOLVE_DUE,
         "report_in": "30m", "resolve": "4wh"}
        for i, d in enumerate(departments)
    ]


def new_case(reporter: dict[str, Any] | None = None) -> Case:
    return Case(CASE_ID, category="E0402", grid_code=TONGGONG, description="消防通道被私家车堵塞",
                reporter=reporter or REPORTER, reported_at=T0)


def routed_case(*departments: str, reporter: dict[str, Any] | None = None) -> Case:
    case = new_case(reporter)
    case.routed(tier("community"), assignments(*(departments or DEPARTMENTS)), minutes(1))
    return case


def dispatched_case(*departments: str, reporter: dict[str, Any] | None = None) -> Case:
    case = routed_case(*departments, reporter=reporter)
    for a in case.assignments:
        case.dispatched(a.department, minutes(2), f"{a.department}.case.assigned",
                        f"m-{a.department}")
    return case


def acknowledged_case(*departments: str, reporter: dict[str, Any] | None = None) -> Case:
    case = dispatched_case(*departments, reporter=reporter)
    for a in case.assignments:
        case.acknowledge(a.department, actor="", note="", at=minutes(10))
    return case


def resolve(case: Case, department: str, at: datetime | None = None) -> None:
    case.resolve(department, actor="", note="done", media_urls=[], at=at or minutes(60))


def resolved_case(*departments: str, reporter: dict[str, Any] | None = None) -> Case:
    case = acknowledged_case(*departments, reporter=reporter)
    for a in case.assignments:
        resolve(case, a.department)
    assert case.state == CaseState.RESOLVED
    return case


def verify(case: Case, *, passed: bool = True, by: dict[str, Any] | None = None,
           note: str = "", media_urls: tuple[str, ...] = (PHOTO,),
           rework: tuple[str, ...] = (), at: datetime | None = None) -> None:
    case.verify(passed=passed, by=by or GRID_WORKER, cell_code=TONGGONG, note=note,
                media_urls=list(media_urls), rework=list(rework), at=at or minutes(120),
                rating_window=RATING_WINDOW, follow_up_after=FOLLOW_UP_AFTER)


def closed_case(*departments: str, reporter: dict[str, Any] | None = None) -> Case:
    case = resolved_case(*departments, reporter=reporter)
    verify(case)  # closed at minutes(120)
    assert case.state == CaseState.CLOSED
    return case


def rate(case: Case, score: int, *, fixed: bool | None = None, comment: str = "",
         reporter_id: str = "", may_reopen: bool = True, at: datetime | None = None) -> bool:
    return case.rate(score=score, fixed=fixed, comment=comment, reporter_id=reporter_id,
                     may_reopen=may_reopen, at=at or minutes(200))


def give_back(case: Case, department: str, reason_code: str = "not_our_responsibility",
              note: str = "", actor: str = "", at: datetime | None = None) -> None:
    case.return_assignment(department, reason_code=reason_code, note=note, actor=actor,
                           at=at or minutes(15))


def added(reason: str, *departments: str, role: str = "assist", replaces: str | None = None,
          requested_by: str = "routing", note: str = "",
          at: datetime | None = None) -> dict[str, Any]:
    """An assignments.added payload of routing, as the intake shell receives it (loaded)."""
    payload = {
        "reason": reason, "requested_by": requested_by, "note": note,
        "assignments": [
            {"department": d, "role": role, "report_in_due": minutes(80),
             "resolve_due": minutes(500), "report_in": "30m", "resolve": "4wh"}
            for d in departments
        ],
        "replaces": replaces,
        "case": {"category": "E0402", "description": "消防通道被私家车堵塞",
                 "location": {"grid_code": TONGGONG}, "reporter": REPORTER,
                 "reported_at": T0},
        "added_at": at or minutes(50),
    }
    return make_event("assignments.added", CASE_ID, payload, producer="routing",
                      at=at or minutes(50)).data





def states(case: Case) -> list[tuple[str, str, str]]:
    return [(a.department, a.role, a.state) for a in case.assignments]


def assert_valid_events(case: Case, at: datetime) -> None:
    for type_, data in case.pending_events:
        make_event(type_, CASE_ID, data, producer="intake", at=at)


def nothing_happened(case: Case) -> bool:
    return case.new_entries == [] and case.pending_events == []


# -- 协同: the lead asks for assistance --------------------------------------------------------


def test_the_lead_asks_another_department_to_assist():
    case = fresh(dispatched_case())
    case.request_department("traffic", role="assist", requested_by="fire-desk-1",
                            by_department="fire", note="需要拖车", at=minutes(20))
    assert case.pending_events == [("assignment.requested", {
        "department": "traffic", "role": "assist", "kind": "assist",
        "requested_by": "fire-desk-1", "note": "需要拖车", "at": minutes(20),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("department_requested", "fire-desk-1",
                                                   minutes(20))
    assert entry.reason == "traffic asked to assist: 需要拖车"
    assert entry.data == {"department": "traffic", "role": "assist"}
    # routing plans the assignment: nothing is added yet
    assert [a.department for a in case.assignments] == list(DEPARTMENTS)
    assert case.state == CaseState.DISPATCHED
    assert_valid_events(case, minutes(20))


def test_a_request_without_a_note_says_only_who_is_asked():
    case = fresh(dispatched_case())
    case.request_department("traffic", role="assist", requested_by="fire", by_department="fire",
                            note="", at=minutes(20))
    assert case.new_entries[-1].reason == "traffic asked to assist"


@pytest.mark.parametrize("asker", ["police", "urban_mgmt", "gas"])
def test_only_the_lead_asks_for_assistance(asker):
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match=f"only the lead department asks for assistance; "
                                              f"{asker} is not the lead"):
        case.request_department("traffic", role="assist", requested_by=asker,
                                by_department=asker, note="", at=minutes(20))
    assert nothing_happened(case)


def test_a_lead_that_returned_the_case_no_longer_asks_for_assistance():
    case = dispatched_case()
    give_back(case, "fire")
    fresh(case)
    with pytest.raises(TransitionError, match="fire is not the lead"):
        case.request_department("traffic", role="assist", requested_by="fire",
                                by_department="fire", note="", at=minutes(20))
    assert nothing_happened(case)


def test_the_lead_asks_for_assisting_departments_only():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match="the lead asks for assisting departments only"):
        case.request_department("traffic", role="lead", requested_by="fire",
                                by_department="fire", note="", at=minutes(20))
    assert nothing_happened(case)


# -- manual dispatch by an operator --------------------------------------------------------------


def test_an_operator_dispatches_a_new_lead_when_the_lead_returned_the_case():
    case = dispatched_case()
    give_back(case, "fire")
    assert case.lead() is None
    fresh(case)
    case.request_department("traffic", role="lead", requested_by=COMMUNITY_ACTOR,
                            by_department=None, note="交警牵头", at=minutes(20))
    assert case.pending_events == [("assignment.requested", {
        "department": "traffic", "role": "lead", "kind": "manual",
        "requested_by": COMMUNITY_ACTOR, "note": "交警牵头", "at": minutes(20),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor) == ("department_requested", COMMUNITY_ACTOR)
    assert entry.reason == "traffic asked to lead: 交警牵头"
    assert entry.data == {"department": "traffic", "role": "lead"}
    assert_valid_events(case, minutes(20))


def test_an_operator_asking_for_an_assisting_department_is_assistance_not_a_manual_dispatch():
    case = fresh(dispatched_case())
    case.request_department("traffic", role="assist", requested_by=COMMUNITY_ACTOR,
                            by_department=None, note="", at=minutes(20))
    [(_, data)] = case.pending_events
    assert (data["kind"], data["role"], data["requested_by"]) == ("assist", "assist",
                                                                  COMMUNITY_ACTOR)


def test_a_lead_is_dispatched_by_hand_only_when_the_case_has_none():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match=r"the case has a lead \(fire\)"):
        case.request_department("traffic", role="lead", requested_by=COMMUNITY_ACTOR,
                                by_department=None, note="", at=minutes(20))
    assert nothing_happened(case)


@pytest.mark.parametrize(("department", "role"), [("fire", "lead"), ("police", "assist")])
def test_a_department_active_on_the_case_is_not_asked_again(department, role):
    case = fresh(acknowledged_case())
    with pytest.raises(TransitionError, match=f"{department} is already on the case as {role}"):
        case.request_department(department, role="assist", requested_by=COMMUNITY_ACTOR,
                                by_department=None, note="", at=minutes(20))
    assert nothing_happened(case)


def test_a_department_that_returned_its_assignment_may_be_asked_again():
    case = dispatched_case()
    give_back(case, "police")
    fresh(case)
    case.request_department("police", role="assist", requested_by="fire", by_department="fire",
                            note="还是需要你们", at=minutes(20))
    assert event_types(case) == ["assignment.requested"]


@pytest.mark.parametrize("state_of", [resolved_case, closed_case])
def test_nobody_is_asked_onto_a_case_that_is_no_longer_open(state_of):
    case = fresh(state_of())
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is {case.state}"):
        case.request_department("traffic", role="assist", requested_by="fire",
                                by_department="fire", note="", at=minutes(300))
    assert nothing_happened(case)


# -- added: what routing planned -----------------------------------------------------------------


def test_an_assisting_department_joins_the_case():
    case = fresh(acknowledged_case())
    case.added(added("assist", "traffic", requested_by="fire", note="需要拖车"), minutes(50))
    traffic = case.assignment("traffic")
    assert (traffic.role, traffic.state, traffic.report_in_due, traffic.resolve_due) == (
        "assist", AssignmentState.PENDING, minutes(80), minutes(500)
    )
    assert [a.department for a in case.assignments] == [*DEPARTMENTS, "traffic"]
    assert case.state == CaseState.ROUTED  # traffic has no message yet
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("assist_added", "routing", minutes(50))
    assert entry.reason == "traffic assists (需要拖车)"
    assert entry.data == {
        "reason": "assist",
        "assignments": [{"department": "traffic", "role": "assist",
                         "report_in_due": "2026-11-23T02:20:00+00:00",
                         "resolve_due": "2026-11-23T09:20:00+00:00",
                         "report_in": "30m", "resolve": "4wh"}],
        "already": [], "raise_to": None, "replaces": None,
    }
    assert case.pending_events == []


def test_a_rerouted_department_takes_over_from_the_one_that_returned():
    case = dispatched_case()
    give_back(case, "fire", "needs_other_department")
    fresh(case)
    case.added(added("reroute", "traffic", role="lead", replaces="fire",
                     note="fire returned it: needs_other_department"), minutes(50))
    assert states(case) == [("fire", "lead", "returned"), ("police", "assist", "dispatched"),
                            ("urban_mgmt", "assist", "dispatched"),
                            ("traffic", "lead", "pending")]
    assert case.lead() is case.assignment("traffic")
    [entry] = case.new_entries
    assert entry.kind == "rerouted"
    assert entry.reason == "traffic takes over from fire (fire returned it: needs_other_department)"
    assert entry.data["replaces"] == "fire"


def test_a_manual_dispatch_names_who_dispatched():
    case = dispatched_case()
    give_back(case, "fire")
    fresh(case)
    case.added(added("manual", "housing", role="lead", requested_by=COMMUNITY_ACTOR),
               minutes(50))
    [entry] = case.new_entries
    assert (entry.kind, entry.actor) == ("dispatched_by_hand", "routing")
    assert entry.reason == f"housing dispatched by {COMMUNITY_ACTOR}"
    assert case.assignment("housing").role == "lead"


def test_a_department_that_returned_earlier_comes_back_on_its_old_assignment():
    case = dispatched_case()
    case.acknowledge("police", actor="", note="", at=minutes(10))
    give_back(case, "police", "cannot_handle", note="人手不足")
    police = case.assignment("police")
    assert police.state == AssignmentState.RETURNED
    case.added(added("manual", "police", role="assist", requested_by=COMMUNITY_ACTOR),
               minutes(50))
    assert case.assignment("police") is police  # the same row, not a second one
    assert [a.department for a in case.assignments] == list(DEPARTMENTS)
    assert (police.role, police.state, police.acknowledged_at, police.resolved_at) == (
        "assist", AssignmentState.PENDING, None, None
    )
    assert (police.report_in_due, police.resolve_due) == (minutes(80), minutes(500))
    assert police.active is True
    assert case.state == CaseState.ROUTED


def test_a_returned_department_may_come_back_in_another_role():
    case = dispatched_case()
    give_back(case, "fire")
    case.added(added("manual", "fire", role="lead", requested_by=COMMUNITY_ACTOR), minutes(50))
    assert states(case)[0] == ("fire", "lead", "pending")
    case.dispatched("fire", minutes(51), "fire.case.assigned", "m-fire-2")
    assert case.state == CaseState.DISPATCHED


def test_a_department_still_on_the_case_keeps_its_assignment_when_added_again():
    case = acknowledged_case()
    case.added(added("assist", "police"), minutes(50))
    police = case.assignment("police")
    assert (police.state, police.report_in_due, police.acknowledged_at) == (
        AssignmentState.ACKNOWLEDGED, REPORT_IN_DUE, minutes(10)
    )
    assert case.state == CaseState.ACKNOWLEDGED


def test_a_new_department_ends_the_wait_for_a_manual_dispatch():
    case = dispatched_case()
    case.needs_dispatch({"tier": tier("community"), "reason": "无人接手"}, minutes(40))
    assert case.awaiting_dispatch == "无人接手"
    case.added(added("manual", "housing", requested_by=COMMUNITY_ACTOR), minutes(50))
    assert case.awaiting_dispatch == ""


def test_a_whistle_that_adds_nobody_leaves_the_wait_for_a_manual_dispatch():
    case = dispatched_case()
    case.needs_dispatch({"tier": tier("community"), "reason": "无人接手"}, minutes(40))
    whistle = {"reason": "whistle", "level": "routine", "assignments": [], "already": ["police"],
               "raise_to": None}
    case.added(whistle, minutes(50))
    assert case.awaiting_dispatch == "无人接手"
    assert case.new_entries[-1].reason == (
        "routine whistle: nobody new summoned; police already on the case"
    )


# -- returns (退单) -----------------------------------------------------------------------------


def test_a_department_returns_its_assignment_with_a_reason_code():
    case = fresh(dispatched_case())
    give_back(case, "police", "not_our_responsibility", note="应由交警处理", actor="police-desk-2",
              at=minutes(15))
    police = case.assignment("police")
    assert (police.state, police.return_code, police.return_note, police.active) == (
        AssignmentState.RETURNED, "not_our_responsibility", "应由交警处理", False
    )
    assert case.pending_events == [("assignment.returned", {
        "department": "police", "role": "assist", "reason_code": "not_our_responsibility",
        "note": "应由交警处理", "actor": "police-desk-2", "at": minutes(15),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("returned", "police-desk-2", minutes(15))
    assert entry.reason == "police returned it: 不属本部门职责 — 应由交警处理"
    assert entry.data == {"department": "police", "reason_code": "not_our_responsibility",
                          "role": "assist"}
    assert case.state == CaseState.DISPATCHED  # fire and urban_mgmt still work on it
    assert_valid_events(case, minutes(15))


def test_a_return_without_actor_or_note_is_the_departments_and_names_the_reason_only():
    case = fresh(dispatched_case())
    give_back(case, "fire", "wrong_location")
    [entry] = case.new_entries
    assert (entry.actor, entry.reason) == ("fire", "fire returned it: 地点有误")
    assert case.pending_events[0][1]["actor"] == ""
    assert case.pending_events[0][1]["role"] == "lead"


def test_every_return_reason_has_a_label():
    assert set(RETURN_LABELS) == set(RETURN_REASONS)


@pytest.mark.parametrize("code", RETURN_REASONS)
def test_each_return_reason_is_named_on_the_timeline(code):
    case = dispatched_case()
    give_back(case, "fire", code)
    assert case.new_entries[-1].reason == f"fire returned it: {RETURN_LABELS[code]}"


def test_a_pending_or_an_acknowledged_assignment_may_be_returned():
    case = routed_case("fire", "police")
    give_back(case, "police")
    assert case.state == CaseState.ROUTED
    case = acknowledged_case("fire", "police")
    give_back(case, "police")
    assert case.state == CaseState.ACKNOWLEDGED


def test_a_return_ends_a_pause():
    case = acknowledged_case()
    case.pause("police", reason="等待交警", actor="", at=minutes(12))
    give_back(case, "police")
    police = case.assignment("police")
    assert (police.paused_at, police.pause_reason) == (None, "")


def test_a_resolved_assignment_cannot_be_returned():
    case = acknowledged_case()
    resolve(case, "fire")
    fresh(case)
    with pytest.raises(TransitionError, match="assignment of fire is resolved; only open work "
                                              "can be returned"):
        give_back(case, "fire")
    assert case.assignment("fire").state == AssignmentState.RESOLVED
    assert nothing_happened(case)


def test_an_assignment_is_returned_once():
    case = dispatched_case()
    give_back(case, "police", "duplicate")
    fresh(case)
    with pytest.raises(TransitionError, match=r"assignment of police is returned \(duplicate\); "
                                              "it is off the case"):
        give_back(case, "police", "other")
    assert case.assignment("police").return_code == "duplicate"
    assert nothing_happened(case)


def test_a_department_not_on_the_case_has_nothing_to_return():
    case = dispatched_case()
    with pytest.raises(TransitionError, match="gas has no assignment on this case "
                                              r"\(assigned: fire, police, urban_mgmt\)"):
        give_back(case, "gas")


def test_nothing_is_returned_on_a_resolved_case():
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is resolved"):
        give_back(case, "fire")
    assert nothing_happened(case)


def test_a_case_every_department_returned_is_returned_and_waits_for_a_new_one():
    case = dispatched_case()
    give_back(case, "police")
    give_back(case, "urban_mgmt")
    assert case.state == CaseState.DISPATCHED
    give_back(case, "fire")
    assert case.state == CaseState.RETURNED == "returned"
    assert case.lead() is None
    assert case.state in CaseState.OPEN  # still open: someone must take it
    case.added(added("manual", "traffic", role="lead", requested_by=COMMUNITY_ACTOR),
               minutes(50))
    assert case.state == CaseState.ROUTED
    case.dispatched("traffic", minutes(51), "traffic.case.assigned", "m-traffic")
    assert case.state == CaseState.DISPATCHED


def test_the_case_state_leaves_returned_assignments_out():
    case = acknowledged_case()
    case.added(added("assist", "traffic"), minutes(50))
    assert case.state == CaseState.ROUTED  # traffic has no message yet
    give_back(case, "traffic", at=minutes(52))
    assert case.state == CaseState.ACKNOWLEDGED  # the three others reported in


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda c: c.acknowledge("police", actor="", note="", at=minutes(20)),
         "assignment of police is returned"),
        (lambda c: resolve(c, "police"),
         r"assignment of police is returned \(not_our_responsibility\); it is off the case"),
        (lambda c: c.progress("police", note="x", media_urls=[], actor="", at=minutes(20)),
         r"assignment of police is returned \(not_our_responsibility\); it is off the case"),
    ],
)
def test_a_returned_assignment_is_not_worked_on(action, message):
    case = dispatched_case()
    give_back(case, "police")
    fresh(case)
    with pytest.raises(TransitionError, match=message):
        action(case)
    assert nothing_happened(case)


@pytest.mark.parametrize("action", ["pause", "extension"])
def test_a_returned_assignment_is_neither_paused_nor_extended(action):
    case = dispatched_case()
    give_back(case, "police")
    fresh(case)
    with pytest.raises(TransitionError, match="police"):
        if action == "pause":
            case.pause("police", reason="等待", actor="", at=minutes(20))
        else:
            case.request_extension("police", extend_by="1wd", reason="等待", actor="",
                                   at=minutes(20))
    assert nothing_happened(case)
    assert case.extensions == []


def test_a_return_that_leaves_only_resolved_work_resolves_the_case_like_a_resolution():
    case = acknowledged_case("fire", "police")
    resolve(case, "fire")
    fresh(case)
    give_back(case, "police")
    assert case.state == CaseState.RETURNED  # fire is done; police's part waits for a taker
    assert "case.resolved" not in event_types(case) and "case_resolved" not in kinds(case)


# -- needs dispatch ------------------------------------------------------------------------------


def test_a_case_nobody_is_left_for_waits_on_the_tier_owners_queue():
    case = dispatched_case("sanitation")
    give_back(case, "sanitation")
    fresh(case)
    reason = "sanitation returned it (not_our_responsibility) and no other department is left"
    case.needs_dispatch({"tier": tier("community"), "reason": reason}, minutes(16))
    assert case.awaiting_dispatch == reason
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("needs_dispatch", "routing", minutes(16))
    assert entry.reason == f"on 桐梓林社区's manual-dispatch queue: {reason}"
    assert entry.data == {"tier": tier("community")}
    assert case.pending_events == []
    assert case.state == CaseState.RETURNED


def test_a_nameless_tier_is_named_by_its_code():
    case = dispatched_case()
    case.needs_dispatch({"tier": {"tier": "community", "code": "511802001001"},
                         "reason": "x"}, minutes(16))
    assert case.new_entries[-1].reason == "on 511802001001's manual-dispatch queue: x"


# -- progress (进展) ----------------------------------------------------------------------------


def test_progress_is_recorded_and_queued():
    case = fresh(acknowledged_case())
    case.progress("police", note="已联系车主", media_urls=[PHOTO], actor="police:3",
                  at=minutes(30))
    assert case.pending_events == [("assignment.progressed", {
        "department": "police", "note": "已联系车主", "media_urls": [PHOTO],
        "actor": "police:3", "at": minutes(30),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("progress", "police:3", minutes(30))
    assert entry.reason == "police: 已联系车主"
    assert entry.data == {"department": "police", "media_urls": [PHOTO]}
    assert case.state == CaseState.ACKNOWLEDGED
    assert case.assignment("police").state == AssignmentState.ACKNOWLEDGED
    assert_valid_events(case, minutes(30))


def test_progress_without_an_actor_is_the_departments():
    case = fresh(acknowledged_case())
    case.progress("fire", note="到场", media_urls=[], actor="", at=minutes(30))
    assert case.new_entries[-1].actor == "fire"
    assert case.pending_events[-1][1]["actor"] == ""


def test_progress_media_are_kept_as_a_copy():
    case = fresh(acknowledged_case())
    media = [PHOTO]
    case.progress("fire", note="到场", media_urls=media, actor="", at=minutes(30))
    media.append("https://m.example.com/later.jpg")
    assert case.new_entries[-1].data["media_urls"] == [PHOTO]
    assert case.pending_events[-1][1]["media_urls"] == [PHOTO]


def test_progress_is_reported_between_report_in_and_resolve():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match="assignment of fire is dispatched; progress is "
                                              "reported between report-in and resolve"):
        case.progress("fire", note="x", media_urls=[], actor="", at=minutes(5))
    case = acknowledged_case()
    resolve(case, "fire")
    fresh(case)
    with pytest.raises(TransitionError, match="assignment of fire is resolved; progress"):
        case.progress("fire", note="x", media_urls=[], actor="", at=minutes(70))
    assert nothing_happened(case)


def test_progress_of_a_paused_department_is_recorded():
    case = acknowledged_case()
    case.pause("fire", reason="等待拖车", actor="", at=minutes(12))
    fresh(case)
    case.progress("fire", note="拖车已在路上", media_urls=[], actor="", at=minutes(20))
    assert event_types(case) == ["assignment.progressed"]


# -- tasks for the grid worker ------------------------------------------------------------------


def test_a_verification_task_goes_to_the_cells_grid_worker():
    case = fresh(resolved_case("fire"))
    task = case.open_task("verification", tier("compound"), minutes(61))
    assert case.tasks == [task]
    assert (task.case_id, task.kind, task.assignee_code, task.assignee, task.state) == (
        CASE_ID, "verification", TONGGONG, tier("compound"), Task.OPEN
    )
    assert (task.created_at, task.due_at, task.done_at, task.result) == (
        minutes(61), None, None, {}
    )
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("verification_task", "intake", minutes(61))
    assert entry.reason == "邓海燕 (通工小区) is to verify the work on site (核查)"
    assert entry.data == {"assignee": TONGGONG}
    assert case.pending_events == []  # the shell queues task.created once the task has an id


def test_a_follow_up_task_may_be_due_and_names_the_code_without_an_owner():
    case = closed_case("fire")
    fresh(case)
    task = case.open_task("follow_up", {"code": TONGGONG, "name": "通工小区"}, minutes(300),
                          due_at=minutes(400))
    assert (task.kind, task.due_at, task.assignee) == (
        "follow_up", minutes(400), {"code": TONGGONG, "name": "通工小区"}
    )
    assert case.new_entries[-1].reason == (
        f"{TONGGONG} (通工小区) is to visit the reporter again (回访)"
    )
    assert case.new_entries[-1].kind == "follow_up_task"


def test_a_task_keeps_a_copy_of_its_assignee():
    case = resolved_case("fire")
    assignee = tier("compound")
    task = case.open_task("verification", assignee, minutes(61))
    assignee["name"] = "changed"
    assert task.assignee["name"] == "通工小区"


def test_a_tasks_id_is_what_the_store_maps():
    task = Task(CASE_ID, "follow_up", tier("compound"), minutes(1))
    task._pk = 42
    assert task.id == 42
    assert (Task.OPEN, Task.DONE) == ("open", "done")


def test_task_finds_the_open_task_of_a_kind():
    case = resolved_case("fire")
    assert case.task("verification") is None
    task = case.open_task("verification", tier("compound"), minutes(61))
    assert case.task("verification") is task
    assert case.task("follow_up") is None
    task.state = Task.DONE
    assert case.task("verification") is None


# -- verification (核查结案) --------------------------------------------------------------------


def test_a_passed_verification_closes_the_case():
    case = resolved_case("fire", "police")
    task = case.open_task("verification", tier("compound"), minutes(61))
    task._pk = 1
    fresh(case)
    verify(case, note="通道已畅通", at=minutes(120))
    assert (case.state, case.closed_at, case.rate_until) == (
        CaseState.CLOSED, minutes(120), minutes(120) + RATING_WINDOW
    )
    assert case.pending_events == [
        ("case.verified", {"passed": True, "by": GRID_WORKER, "note": "通道已畅通",
                           "media_urls": [PHOTO], "rework": [], "at": minutes(120)}),
        ("case.closed", {"closed_at": minutes(120), "rate_until": minutes(120) + RATING_WINDOW,
                         "follow_up_at": minutes(120) + FOLLOW_UP_AFTER,
                         "grid_code": TONGGONG}),
    ]
    verified, closed = case.new_entries
    assert (verified.kind, verified.actor, verified.reason, verified.data) == (
        "verified", GRID_WORKER_ACTOR, "passed on site: 通道已畅通", {"media_urls": [PHOTO]}
    )
    assert (closed.kind, closed.actor, closed.reason) == (
        "closed", GRID_WORKER_ACTOR, "结案: verified on site"
    )
    assert (task.state, task.done_at, task.result) == (
        Task.DONE, minutes(120), {"passed": True, "note": "通道已畅通", "by": GRID_WORKER}
    )
    assert_valid_events(case, minutes(120))


def test_a_passed_verification_without_a_note_says_it_passed():
    case = fresh(resolved_case("fire"))
    verify(case)
    assert case.new_entries[0].reason == "passed on site"


@pytest.mark.parametrize("state_of", [dispatched_case, acknowledged_case, closed_case])
def test_only_a_resolved_case_is_verified(state_of):
    case = fresh(state_of())
    expected = case.state
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is {expected}; it is verified "
                                              "once every department has resolved its part"):
        verify(case, at=minutes(300))
    assert case.state == expected
    assert nothing_happened(case)


@pytest.mark.parametrize(
    ("by", "named"),
    [
        (operator("compound", HANDU), f"compound {HANDU}"),
        (operator("community"), "community 511802001001"),
        ({"name": "某人", "tier": "compound", "code": ""}, "compound (no code)"),
    ],
)
def test_only_the_cells_own_grid_worker_verifies(by, named):
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError, match=re.escape(
            f"the grid worker of cell {TONGGONG} verifies this case, not {named}")):
        verify(case, by=by)
    assert case.state == CaseState.RESOLVED
    assert nothing_happened(case)


@pytest.mark.parametrize("passed", [True, False])
def test_a_verification_needs_a_photo(passed):
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError, match=r"a verification needs at least one photo "
                                              r"\(media_urls\)"):
        verify(case, passed=passed, note="通道仍被占用", media_urls=())
    assert case.state == CaseState.RESOLVED
    assert nothing_happened(case)


@pytest.mark.parametrize("note", ["", "   "])
def test_a_failed_verification_says_why(note):
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError, match=r"a failed verification says why \(note\)"):
        verify(case, passed=False, note=note)
    assert case.assignment("fire").state == AssignmentState.RESOLVED
    assert nothing_happened(case)


def test_a_failed_verification_sends_the_lead_back_to_work_by_default():
    case = resolved_case()
    task = case.open_task("verification", tier("compound"), minutes(61))
    fresh(case)
    verify(case, passed=False, note="通道仍被占用", at=minutes(120))
    assert states(case) == [("fire", "lead", "dispatched"), ("police", "assist", "resolved"),
                            ("urban_mgmt", "assist", "resolved")]
    assert case.assignment("fire").reworks == 1
    assert (case.state, case.closed_at) == (CaseState.IN_PROGRESS, None)
    assert case.pending_events == [
        ("case.verified", {"passed": False, "by": GRID_WORKER, "note": "通道仍被占用",
                           "media_urls": [PHOTO], "rework": ["fire"], "at": minutes(120)}),
        ("assignment.reopened", {"department": "fire", "reason": "通道仍被占用",
                                 "at": minutes(120)}),
        ("case.reopened", {"cause": "verification", "reason": "通道仍被占用",
                           "departments": ["fire"], "at": minutes(120)}),
    ]
    failed, reopened = case.new_entries
    assert (failed.kind, failed.actor, failed.reason, failed.data) == (
        "verification_failed", GRID_WORKER_ACTOR, "通道仍被占用",
        {"media_urls": [PHOTO], "rework": ["fire"]},
    )
    assert (reopened.kind, reopened.actor, reopened.reason, reopened.data) == (
        "reopened", GRID_WORKER_ACTOR, "fire reworks: 通道仍被占用",
        {"department": "fire", "reworks": 1},
    )
    assert (task.state, task.done_at, task.result["passed"]) == (Task.DONE, minutes(120), False)
    assert_valid_events(case, minutes(120))


def test_a_failed_verification_reworks_the_departments_it_names():
    case = resolved_case()
    fresh(case)
    verify(case, passed=False, note="占道车辆未清", rework=("police", "urban_mgmt"))
    assert states(case) == [("fire", "lead", "resolved"), ("police", "assist", "dispatched"),
                            ("urban_mgmt", "assist", "dispatched")]
    assert event_types(case) == ["case.verified", "assignment.reopened", "assignment.reopened",
                                 "case.reopened"]
    assert case.pending_events[0][1]["rework"] == ["police", "urban_mgmt"]
    assert case.pending_events[-1][1]["departments"] == ["police", "urban_mgmt"]
    assert kinds(case) == ["verification_failed", "reopened", "reopened"]


@pytest.mark.parametrize(("rework", "named"), [(("gas",), "gas"), (("fire", "gas"), "gas")])
def test_a_failed_verification_reworks_only_resolved_departments_of_the_case(rework, named):
    case = fresh(resolved_case("fire", "police"))
    with pytest.raises(TransitionError, match=f"not resolved on this case: {named}$"):
        verify(case, passed=False, note="x", rework=rework)
    assert case.state == CaseState.RESOLVED
    assert nothing_happened(case)


def test_a_returned_department_is_not_reworked_on_verification():
    case = acknowledged_case("fire", "police")
    give_back(case, "police", at=minutes(11))
    resolve(case, "fire")
    assert case.state == CaseState.RESOLVED
    fresh(case)
    with pytest.raises(TransitionError, match="not resolved on this case: police"):
        verify(case, passed=False, note="x", rework=("police",))
    assert nothing_happened(case)


def test_a_reworked_case_is_verified_again_once_resolved_again():
    case = resolved_case("fire")
    verify(case, passed=False, note="通道仍被占用", at=minutes(120))
    assert case.state == CaseState.DISPATCHED
    case.acknowledge("fire", actor="", note="", at=minutes(130))
    resolve(case, "fire", minutes(150))
    verify(case, at=minutes(160))
    assert (case.state, case.closed_at) == (CaseState.CLOSED, minutes(160))


def test_a_failed_verification_of_a_case_without_a_lead_reworks_every_department_on_it():
    case = acknowledged_case("fire", "police")
    give_back(case, "fire", at=minutes(11))
    resolve(case, "police")
    assert case.state == CaseState.RESOLVED
    fresh(case)
    verify(case, passed=False, note="通道仍被占用")
    assert case.assignment("police").state == "dispatched"
    assert_valid_events(case, minutes(200))


# -- rating (评议打分) --------------------------------------------------------------------------


def test_a_satisfied_reporter_rates_the_closed_case():
    case = fresh(closed_case("fire"))
    assert rate(case, 5, fixed=True, comment="很满意", at=minutes(200)) is False
    assert case.ratings == [{"score": 5, "fixed": True, "comment": "很满意",
                             "reporter_id": "gw-0001", "at": "2026-11-23T04:20:00+00:00"}]
    assert case.pending_events == [("case.rated", {
        "score": 5, "fixed": True, "comment": "很满意", "reopens": False, "at": minutes(200),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("rated", "reporter:gw-0001", minutes(200))
    assert entry.reason == "5/5, fixed: 很满意"
    assert entry.data == {"score": 5, "fixed": True}
    assert (case.state, case.closed_at) == (CaseState.CLOSED, minutes(120))
    assert_valid_events(case, minutes(200))


@pytest.mark.parametrize("state_of", [dispatched_case, resolved_case])
def test_a_rating_follows_closing(state_of):
    case = fresh(state_of())
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is {case.state}; a rating "
                                              "follows closing"):
        rate(case, 5)
    assert case.ratings == []
    assert nothing_happened(case)


def test_a_reporter_rates_once():
    case = closed_case("fire")
    rate(case, 4)
    fresh(case)
    with pytest.raises(TransitionError, match="gw-0001 rated this case already"):
        rate(case, 1, reporter_id="gw-0001")
    assert [r["score"] for r in case.ratings] == [4]
    assert nothing_happened(case)


def test_a_rating_comes_within_the_window():
    case = closed_case("fire")  # closed at 03:00Z: the window closes 7 days later
    late = minutes(120) + RATING_WINDOW + timedelta(seconds=1)
    with pytest.raises(TransitionError, match="the rating window closed at 2026-11-30 03:00Z"):
        rate(case, 5, at=late)
    assert case.ratings == []
    assert rate(case, 5, at=minutes(120) + RATING_WINDOW) is False
    assert case.ratings[0]["at"] == "2026-11-30T03:00:00+00:00"


def test_a_stranger_does_not_rate():
    case = fresh(closed_case("fire"))
    with pytest.raises(TransitionError, match="r-99 did not report this case"):
        rate(case, 1, reporter_id="r-99")
    assert case.ratings == []
    assert nothing_happened(case)


def test_a_followers_reporter_rates_too_once_each():
    case = closed_case("fire")
    case.attach(DUPLICATE_ID, FOLLOWER, "r-0002", minutes(30))
    rate(case, 4, reporter_id="r-77")
    rate(case, 5)
    assert [(r["reporter_id"], r["score"]) for r in case.ratings] == [("r-77", 4),
                                                                      ("gw-0001", 5)]
    assert case.new_entries[-2].actor == "reporter:r-77"
    with pytest.raises(TransitionError, match="r-77 rated this case already"):
        rate(case, 1, reporter_id="r-77")


def test_a_reporter_without_an_id_rates_as_the_reporter():
    case = closed_case("fire", reporter={"kind": "hotline"})
    rate(case, 3)
    assert case.ratings[0]["reporter_id"] == ""
    assert case.new_entries[-1].actor == "reporter"
    with pytest.raises(TransitionError, match="the reporter rated this case already"):
        rate(case, 3)


@pytest.mark.parametrize(
    ("score", "fixed", "reopens"),
    [
        (1, None, True), (2, True, True), (3, None, False), (3, False, True),
        (5, False, True), (5, None, False), (3, True, False),
    ],
)
def test_a_low_score_or_not_fixed_reopens_the_case(score, fixed, reopens):
    case = fresh(closed_case("fire"))
    assert rate(case, score, fixed=fixed) is reopens
    assert case.pending_events[0] == ("case.rated", {
        "score": score, "fixed": fixed, "comment": "", "reopens": reopens, "at": minutes(200),
    })
    assert case.state == (CaseState.DISPATCHED if reopens else CaseState.CLOSED)


def test_unsatisfied_means_two_or_less():
    assert UNSATISFIED_SCORE == 2


def test_an_unsatisfied_rating_sends_the_lead_back_to_work():
    case = fresh(closed_case("fire"))
    assert rate(case, 2, comment="还是堵", at=minutes(200)) is True
    assert (case.state, case.closed_at) == (CaseState.DISPATCHED, None)
    fire = case.assignment("fire")
    assert (fire.state, fire.reworks, fire.resolved_at) == (AssignmentState.DISPATCHED, 1, None)
    reason = "reporter unsatisfied (2/5): 还是堵"
    assert case.pending_events == [
        ("case.rated", {"score": 2, "fixed": None, "comment": "还是堵", "reopens": True,
                        "at": minutes(200)}),
        ("assignment.reopened", {"department": "fire", "reason": reason, "at": minutes(200)}),
        ("case.reopened", {"cause": "rating", "reason": reason, "departments": ["fire"],
                           "at": minutes(200)}),
    ]
    rated, reopened = case.new_entries
    assert rated.reason == "2/5: 还是堵; reopened"
    assert (reopened.kind, reopened.actor, reopened.reason) == (
        "reopened", "reporter:gw-0001", f"fire reworks: {reason}"
    )
    assert_valid_events(case, minutes(200))


def test_a_reopened_case_with_several_departments_is_in_progress_again():
    case = closed_case()
    rate(case, 1)
    assert states(case) == [("fire", "lead", "dispatched"), ("police", "assist", "resolved"),
                            ("urban_mgmt", "assist", "resolved")]
    assert case.state == CaseState.IN_PROGRESS


def test_a_category_that_is_not_reopened_keeps_the_case_closed():
    case = fresh(closed_case("fire"))
    assert rate(case, 1, fixed=False, may_reopen=False) is False
    assert case.state == CaseState.CLOSED
    assert event_types(case) == ["case.rated"]
    assert case.pending_events[0][1]["reopens"] is False
    assert case.new_entries[-1].reason == "1/5, not fixed; its category is not reopened"
    assert case.assignment("fire").state == AssignmentState.RESOLVED


def test_an_unsatisfied_rating_of_a_case_without_a_lead_queues_only_valid_events():
    case = acknowledged_case("fire", "police")
    give_back(case, "fire", at=minutes(11))
    resolve(case, "police")
    verify(case)
    fresh(case)
    rate(case, 1)
    assert_valid_events(case, minutes(200))


# -- follow-up visits (回访) --------------------------------------------------------------------


def test_a_follow_up_falls_due_on_a_closed_case():
    case = fresh(closed_case("fire"))
    task = case.follow_up_due(tier("compound"), minutes(4440))
    assert case.tasks == [task]
    assert (task.kind, task.assignee_code, task.state, task.created_at, task.due_at) == (
        "follow_up", TONGGONG, Task.OPEN, minutes(4440), None
    )
    [entry] = case.new_entries
    assert (entry.kind, entry.reason) == (
        "follow_up_task", "邓海燕 (通工小区) is to visit the reporter again (回访)"
    )


def test_a_follow_up_opens_one_task_at_a_time():
    case = closed_case("fire")
    first = case.follow_up_due(tier("compound"), minutes(4440))
    fresh(case)
    assert case.follow_up_due(tier("compound"), minutes(4441)) is None
    assert case.tasks == [first]
    assert nothing_happened(case)


@pytest.mark.parametrize("state_of", [dispatched_case, resolved_case])
def test_no_follow_up_on_a_case_that_is_not_closed(state_of):
    case = fresh(state_of())
    assert case.follow_up_due(tier("compound"), minutes(4440)) is None
    assert case.tasks == []
    assert nothing_happened(case)


def test_no_follow_up_once_a_rating_reopened_the_case():
    case = closed_case("fire")
    rate(case, 1)
    assert case.follow_up_due(tier("compound"), minutes(4440)) is None
    assert case.tasks == []


def follow_up_task(case: Case) -> Task:
    task = case.follow_up_due(tier("compound"), minutes(4440))
    task._pk = 5
    return task


def test_the_grid_worker_finishes_the_follow_up():
    case = closed_case("fire")
    task = follow_up_task(case)
    fresh(case)
    case.finish_task(task, by=GRID_WORKER, note="回访满意", at=minutes(4500))
    assert (task.state, task.done_at, task.result) == (
        Task.DONE, minutes(4500), {"note": "回访满意", "by": GRID_WORKER}
    )
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason) == ("followed_up", GRID_WORKER_ACTOR,
                                                       "回访满意")
    assert case.pending_events == []
    assert case.task("follow_up") is None


def test_a_follow_up_without_a_note_is_done():
    case = closed_case("fire")
    task = follow_up_task(case)
    case.finish_task(task, by=GRID_WORKER, note="", at=minutes(4500))
    assert case.new_entries[-1].reason == "回访 done"


def test_a_task_is_finished_once():
    case = closed_case("fire")
    task = follow_up_task(case)
    case.finish_task(task, by=GRID_WORKER, note="", at=minutes(4500))
    fresh(case)
    with pytest.raises(TransitionError, match="task 5 is done"):
        case.finish_task(task, by=GRID_WORKER, note="again", at=minutes(4600))
    assert task.done_at == minutes(4500)
    assert nothing_happened(case)


def test_a_task_is_finished_by_its_assignee_only():
    case = closed_case("fire")
    task = follow_up_task(case)
    fresh(case)
    with pytest.raises(TransitionError, match=f"task 5 is for {TONGGONG}"):
        case.finish_task(task, by=operator("compound", HANDU), note="", at=minutes(4500))
    assert task.state == Task.OPEN
    assert nothing_happened(case)


def test_a_verification_task_is_not_finished_as_a_task():
    case = resolved_case("fire")
    task = case.open_task("verification", tier("compound"), minutes(61))
    task._pk = 3
    fresh(case)
    with pytest.raises(TransitionError, match="a verification task is done by POST "
                                              "…/verification"):
        case.finish_task(task, by=GRID_WORKER, note="", at=minutes(70))
    assert task.state == Task.OPEN
    assert nothing_happened(case)


# -- duplicates --------------------------------------------------------------------------------


def test_a_duplicate_report_is_linked_to_the_open_case():
    dup = Case(DUPLICATE_ID, category="E0402", grid_code=TONGGONG, description="消防通道又被堵",
               reporter=FOLLOWER, reported_at=minutes(30))
    fresh(dup)
    dup.mark_duplicate(CASE_ID, 41.6, minutes(30))
    assert (dup.state, dup.duplicate_of) == (CaseState.DUPLICATE, CASE_ID)
    [entry] = dup.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("duplicate", "intake", minutes(30))
    assert entry.reason == (f"same category 42 m from open case {CASE_ID}; the reporter "
                            "follows that case")
    assert entry.data == {"duplicate_of": CASE_ID}
    assert dup.pending_events == []


def test_a_duplicates_reporter_follows_the_original():
    case = fresh(dispatched_case())
    case.attach(DUPLICATE_ID, FOLLOWER, "r-0002", minutes(30))
    assert case.followers == [{"case_id": DUPLICATE_ID, "report_id": "r-0002",
                               "reporter": FOLLOWER, "at": "2026-11-23T01:30:00+00:00"}]
    assert case.pending_events == [("reporter.attached", {
        "reporter": FOLLOWER, "report_id": "r-0002", "duplicate_case_id": DUPLICATE_ID,
        "at": minutes(30),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor) == ("duplicate_attached", "intake")
    assert entry.reason == f"duplicate report {DUPLICATE_ID} attached; its reporter follows"
    assert entry.data == {"duplicate_case_id": DUPLICATE_ID}
    assert case.state == CaseState.DISPATCHED
    assert_valid_events(case, minutes(30))


def test_followers_accumulate_in_order():
    case = dispatched_case()
    case.attach(DUPLICATE_ID, FOLLOWER, "r-0002", minutes(30))
    case.attach("20261123-000003", {"kind": "app", "id": "a-1"}, "r-0003", minutes(31))
    assert [f["case_id"] for f in case.followers] == [DUPLICATE_ID, "20261123-000003"]


def test_an_unlinked_duplicates_reporter_no_longer_follows():
    case = dispatched_case()
    case.attach(DUPLICATE_ID, FOLLOWER, "r-0002", minutes(30))
    case.attach("20261123-000003", {"kind": "app", "id": "a-1"}, "r-0003", minutes(31))
    fresh(case)
    follower = case.detach(DUPLICATE_ID, minutes(40), COMMUNITY_ACTOR)
    assert follower == {"case_id": DUPLICATE_ID, "report_id": "r-0002", "reporter": FOLLOWER,
                        "at": "2026-11-23T01:30:00+00:00"}
    assert [f["case_id"] for f in case.followers] == ["20261123-000003"]
    assert case.pending_events == [("reporter.detached", {
        "reporter": FOLLOWER, "duplicate_case_id": DUPLICATE_ID, "at": minutes(40),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason) == (
        "duplicate_detached", COMMUNITY_ACTOR, f"{DUPLICATE_ID} un-linked: a case of its own"
    )
    assert entry.data == {"duplicate_case_id": DUPLICATE_ID}
    assert_valid_events(case, minutes(40))


def test_only_an_attached_duplicate_is_detached():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match=f"{DUPLICATE_ID} is not attached to {CASE_ID}"):
        case.detach(DUPLICATE_ID, minutes(40), COMMUNITY_ACTOR)
    assert case.followers == []
    assert nothing_happened(case)


def test_an_unlinked_duplicate_is_a_reported_case_of_its_own():
    dup = Case(DUPLICATE_ID, category="E0402", grid_code=TONGGONG, description="消防通道又被堵",
               reporter=FOLLOWER, reported_at=minutes(30))
    dup.mark_duplicate(CASE_ID, 20.0, minutes(30))
    fresh(dup)
    dup.unlink(actor=COMMUNITY_ACTOR, reason="不是同一处通道", at=minutes(40))
    assert (dup.state, dup.duplicate_of) == (CaseState.REPORTED, None)
    [entry] = dup.new_entries
    assert (entry.kind, entry.actor, entry.reason) == (
        "unlinked", COMMUNITY_ACTOR, f"not a duplicate of {CASE_ID}: 不是同一处通道"
    )
    assert dup.pending_events == []


def test_only_a_duplicate_is_unlinked():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is not a duplicate"):
        case.unlink(actor=COMMUNITY_ACTOR, reason="x", at=minutes(40))
    assert case.state == CaseState.DISPATCHED
    assert nothing_happened(case)


def test_a_duplicate_is_closed_to_departments():
    dup = Case(DUPLICATE_ID, category="E0402", grid_code=TONGGONG, description="消防通道又被堵",
               reporter=FOLLOWER, reported_at=minutes(30))
    dup.mark_duplicate(CASE_ID, 20.0, minutes(30))
    with pytest.raises(TransitionError, match=f"case {DUPLICATE_ID} is duplicate"):
        dup.request_department("fire", role="lead", requested_by=COMMUNITY_ACTOR,
                               by_department=None, note="", at=minutes(31))
