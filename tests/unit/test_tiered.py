"""Tiered response on the case aggregate: whistles, extensions, pauses, rework, and what the
escalation service reports back (summoned departments, reminders, tiers, deadlines, ledger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.intake.cases import AssignmentState, Case, CaseState, Extension, TransitionError
from shared.events import make_event
from shared.reference import load_reference
from support import event_types, fresh, kinds

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"
REF = load_reference(DEMO)

T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
CASE_ID = "20261123-000001"
TONGGONG = "511802001001101"  # 通工小区 → 桐梓林一片区 → 桐梓林社区 → 青江街道 → 雨城区
CELL, _ = REF.grid.cell_for_code(TONGGONG)
REPORT_IN_DUE = T0 + timedelta(minutes=30)
RESOLVE_DUE = T0 + timedelta(hours=6)
DEPARTMENTS = ("fire", "police", "urban_mgmt")
REPORTER = {"kind": "grid_worker", "id": "gw-0001", "name": "邓海燕", "phone": "13800000001"}
NAMES = {"compound": "邓海燕", "area": "梁雅琴", "community": "胡涛", "street": "黄国平",
         "district": "张建国"}
OTHER_COMMUNITY = "511802003001"  # 沙湾社区, another branch of the grid
OTHER_STREET = "511802003"  # 东城街道


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def tier(name: str) -> dict[str, Any]:
    """The node answering for 通工小区 at ``name``, as routing and escalation give it."""
    return REF.grid.tier_info(CELL, name)


def node_code(name: str) -> str:
    """What the intake shell passes as ``node_code`` for an operator of tier ``name``."""
    return REF.grid.tier_node(CELL, name).code


def operator(name: str, code: str | None = None) -> dict[str, Any]:
    return {"name": NAMES[name], "tier": name, "code": node_code(name) if code is None else code}


def assignments(*departments: str) -> list[dict[str, Any]]:
    return [
        {"department": d, "role": "lead" if i == 0 else "assist",
         "report_in_due": REPORT_IN_DUE, "resolve_due": RESOLVE_DUE,
         "report_in": "30m", "resolve": "4wh"}
        for i, d in enumerate(departments)
    ]


def new_case() -> Case:
    return Case(CASE_ID, category="E0402", grid_code=TONGGONG, description="消防通道被私家车堵塞",
                reporter=REPORTER, reported_at=T0)


def routed_case(*departments: str, at_tier: str = "community") -> Case:
    case = new_case()
    case.routed(tier(at_tier), assignments(*(departments or DEPARTMENTS)), minutes(1))
    return case


def dispatched_case(*departments: str, at_tier: str = "community") -> Case:
    case = routed_case(*departments, at_tier=at_tier)
    for a in case.assignments:
        case.dispatched(a.department, minutes(2), f"{a.department}.case.assigned",
                        f"m-{a.department}")
    return case


def acknowledged_case(*departments: str, at_tier: str = "community") -> Case:
    case = dispatched_case(*departments, at_tier=at_tier)
    for a in case.assignments:
        case.acknowledge(a.department, actor="", note="", at=minutes(10))
    return case


def resolve(case: Case, department: str, at: datetime | None = None) -> None:
    case.resolve(department, actor="", note="done", media_urls=[], at=at or minutes(60))


def resolved_case(*departments: str) -> Case:
    case = acknowledged_case(*departments)
    for a in case.assignments:
        resolve(case, a.department)
    assert case.state == CaseState.RESOLVED
    return case





def whistle(case: Case, by: dict[str, Any], node: str | None = None, *, level: str = "hard",
            departments: tuple[str, ...] = ("housing", "police"), reason: str = "车主联系不上",
            at: datetime | None = None) -> None:
    case.whistle(level=level, departments=list(departments), by=by,
                 node_code=node_code(by["tier"]) if node is None else node, reason=reason,
                 at=at or minutes(20))


def request(case: Case, department: str = "fire", extend_by: str = "4wh", pk: int = 1,
            actor: str = "", at: datetime | None = None) -> Extension:
    ext = case.request_extension(department, extend_by=extend_by, reason="等待车主",
                                 actor=actor, at=at or minutes(30))
    ext._pk = pk  # what the store maps
    return ext


def decide(case: Case, ext: Extension, by: dict[str, Any], *, approved: bool = True,
           node: str | None = None, note: str = "同意", at: datetime | None = None) -> None:
    case.decide_extension(ext, approved=approved, by=by,
                          node_code=node_code(by["tier"]) if node is None else node, note=note,
                          at=at or minutes(40))


def reopen(case: Case, department: str, by: dict[str, Any], node: str | None = None,
           at: datetime | None = None) -> None:
    case.reopen(department, reason="通道仍被占用", by=by,
                node_code=node_code(by["tier"]) if node is None else node, at=at or minutes(90))


# -- whistle (吹哨) -------------------------------------------------------------------------------


def test_a_community_whistle_queues_the_event_and_a_timeline_entry():
    case = fresh(dispatched_case())
    by = operator("community")
    whistle(case, by)
    assert case.pending_events == [("case.whistled", {
        "level": "hard", "departments": ["housing", "police"], "by": by,
        "reason": "车主联系不上", "whistled_at": minutes(20),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.at, entry.actor) == ("whistled", minutes(20),
                                                   "community:511802001001:胡涛")
    assert entry.reason == "hard whistle summons housing, police: 车主联系不上"
    assert entry.data == {"level": "hard", "departments": ["housing", "police"], "by": by}
    assert case.updated_at == minutes(20)


def test_a_whistle_without_a_reason_says_whom_it_summons():
    case = fresh(dispatched_case())
    whistle(case, operator("street"), level="routine", departments=("housing",), reason="")
    assert case.new_entries[-1].actor == "street:511802001:黄国平"
    assert case.new_entries[-1].reason == "routine whistle summons housing"
    assert case.pending_events[-1][1]["reason"] == ""


def test_the_whistled_payload_is_a_valid_event():
    case = fresh(dispatched_case())
    whistle(case, operator("street"))
    [(type_, data)] = case.pending_events
    event = make_event(type_, CASE_ID, data, producer="intake", at=minutes(20))
    assert event.data["by"] == {"name": "黄国平", "tier": "street", "code": "511802001"}
    assert event.data["departments"] == ["housing", "police"]


def test_a_whistle_leaves_the_case_where_it_is():
    case = dispatched_case()
    whistle(case, operator("community"))
    assert (case.state, case.tier, case.tier_code, case.escalations) == (
        CaseState.DISPATCHED, "community", "511802001001", 0
    )
    assert [a.department for a in case.assignments] == list(DEPARTMENTS)


@pytest.mark.parametrize("name", ["compound", "area", "district"])
def test_only_a_community_or_a_street_whistles(name):
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError,
                       match=f"a whistle comes from a community or a street, not a {name}"):
        whistle(case, operator(name))
    assert case.pending_events == [] and case.new_entries == []


@pytest.mark.parametrize(
    ("name", "code", "own"),
    [("community", OTHER_COMMUNITY, "511802001001"), ("street", OTHER_STREET, "511802001")],
)
def test_a_whistle_comes_from_the_cases_own_community_or_street(name, code, own):
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError,
                       match=f"{name} {code} does not answer for this case "
                             rf"\(its {name} is {own}\)"):
        whistle(case, operator(name, code))
    assert case.pending_events == [] and case.new_entries == []


def test_an_operator_who_names_no_node_cannot_whistle():
    case = dispatched_case()
    with pytest.raises(TransitionError):
        whistle(case, {"name": "某人", "tier": "community", "code": ""})


def test_no_whistle_before_routing():
    case = new_case()
    with pytest.raises(TransitionError,
                       match=f"case {CASE_ID} is not routed yet; whistle after routing"):
        whistle(case, operator("community"))
    assert case.pending_events == []


def test_no_whistle_on_a_resolved_case():
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is resolved"):
        whistle(case, operator("community"))
    assert case.pending_events == [] and case.new_entries == []


# -- extensions (延期) ----------------------------------------------------------------------------


def test_a_department_asks_for_an_extension():
    case = fresh(dispatched_case())
    ext = request(case, "fire", "4wh", actor="fire-desk-1")
    assert case.extensions == [ext]
    assert (ext.case_id, ext.department, ext.extend_by, ext.reason, ext.requested_by,
            ext.requested_at) == (CASE_ID, "fire", "4wh", "等待车主", "fire-desk-1", minutes(30))
    assert (ext.state, ext.decided_at, ext.decided_by, ext.decision_note) == (
        Extension.PENDING, None, None, ""
    )
    assert ext.id == 1
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("extension_requested", "fire-desk-1",
                                                   minutes(30))
    assert entry.reason == "fire asks for 4wh more: 等待车主"
    assert entry.data == {"department": "fire", "extend_by": "4wh"}
    assert case.pending_events == []  # nothing to tell until it is decided


def test_an_extension_without_an_actor_is_requested_by_the_department():
    case = dispatched_case()
    ext = request(case, "police")
    assert ext.requested_by == "police"
    assert case.new_entries[-1].actor == "police"


def test_an_extension_states_are_named():
    assert (Extension.PENDING, Extension.APPROVED, Extension.REFUSED) == (
        "pending", "approved", "refused"
    )


def test_no_extension_for_a_resolved_assignment():
    case = acknowledged_case()
    resolve(case, "fire")
    with pytest.raises(TransitionError, match="fire has resolved its part; nothing to extend"):
        request(case, "fire")
    assert case.extensions == []


def test_no_extension_on_a_resolved_case():
    case = resolved_case("fire")
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is resolved"):
        request(case, "fire")


def test_no_extension_for_a_department_not_on_the_case():
    case = dispatched_case()
    with pytest.raises(TransitionError, match="gas has no assignment on this case"):
        request(case, "gas")


def test_one_pending_extension_per_department():
    case = dispatched_case()
    request(case, "fire", pk=1)
    with pytest.raises(TransitionError, match="fire already has an extension request pending"):
        request(case, "fire", "1wd", pk=2)
    request(case, "police", pk=3)  # another department may
    assert [(e.department, e.extend_by) for e in case.extensions] == [("fire", "4wh"),
                                                                      ("police", "4wh")]


def test_once_decided_a_department_may_ask_again():
    case = dispatched_case()
    first = request(case, "fire", pk=1)
    decide(case, first, operator("street"), approved=False)
    second = request(case, "fire", "1wd", pk=2)
    assert [(e.id, e.state) for e in case.extensions] == [(1, "refused"), (2, "pending")]
    assert second.extend_by == "1wd"


def test_the_tier_above_approves_an_extension():
    case = dispatched_case()
    ext = request(case, "fire")
    fresh(case)
    by = operator("street")
    decide(case, ext, by, note="同意")
    assert (ext.state, ext.decided_at, ext.decided_by, ext.decision_note) == (
        Extension.APPROVED, minutes(40), by, "同意"
    )
    assert case.pending_events == [("extension.decided", {
        "extension_id": 1, "department": "fire", "approved": True, "extend_by": "4wh",
        "approver": by, "note": "同意", "at": minutes(40),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("extension_approved",
                                                   "street:511802001:黄国平", minutes(40))
    assert entry.reason == "4wh for fire approved: 同意"
    assert entry.data == {"extension_id": 1, "department": "fire"}
    make_event("extension.decided", CASE_ID, case.pending_events[0][1], producer="intake",
               at=minutes(40))


def test_a_refusal_is_queued_too():
    case = dispatched_case()
    ext = request(case, "police", "2wd", pk=7)
    fresh(case)
    decide(case, ext, operator("district"), approved=False, note="")
    assert ext.state == Extension.REFUSED
    [(type_, data)] = case.pending_events
    assert (type_, data["extension_id"], data["approved"], data["extend_by"], data["note"]) == (
        "extension.decided", 7, False, "2wd", ""
    )
    assert data["approver"] == {"name": "张建国", "tier": "district", "code": "511802"}
    assert case.new_entries[-1].kind == "extension_refused"
    assert case.new_entries[-1].reason == "2wd for police refused"


def test_the_decider_is_kept_as_a_copy():
    case = dispatched_case()
    ext = request(case, "fire")
    by = operator("street")
    decide(case, ext, by)
    by["name"] = "changed"
    assert ext.decided_by == {"name": "黄国平", "tier": "street", "code": "511802001"}


def test_an_extension_is_decided_once():
    case = dispatched_case()
    ext = request(case, "fire")
    decide(case, ext, operator("street"))
    fresh(case)
    with pytest.raises(TransitionError, match="extension 1 was already approved"):
        decide(case, ext, operator("district"), approved=False)
    assert ext.state == Extension.APPROVED
    assert ext.decided_by["tier"] == "street"
    assert case.pending_events == [] and case.new_entries == []


@pytest.mark.parametrize("name", ["community", "area", "compound"])
def test_an_extension_is_decided_only_by_a_tier_strictly_above_the_case(name):
    case = dispatched_case()  # at the community
    ext = request(case, "fire")
    fresh(case)
    with pytest.raises(TransitionError,
                       match=r"an extension is decided by a tier above the case's tier "
                             rf"\(community\), not by a {name}"):
        decide(case, ext, operator(name))
    assert ext.state == Extension.PENDING
    assert case.pending_events == []


def test_an_extension_is_decided_by_the_cases_own_node_above():
    case = dispatched_case()
    ext = request(case, "fire")
    with pytest.raises(TransitionError, match=f"street {OTHER_STREET} does not answer"):
        decide(case, ext, operator("street", OTHER_STREET))
    assert ext.state == Extension.PENDING


def test_once_the_case_moved_up_the_old_tier_above_no_longer_decides():
    case = dispatched_case()
    ext = request(case, "fire")
    case.tier_changed({"from_tier": tier("community"), "to_tier": tier("street"),
                       "reason": "whistle (hard)", "at": minutes(35)}, minutes(35))
    with pytest.raises(TransitionError, match=r"tier above the case's tier \(street\), not by a "
                                              "street"):
        decide(case, ext, operator("street"))
    decide(case, ext, operator("district"))
    assert ext.state == Extension.APPROVED


def test_a_compound_case_is_extended_by_its_area():
    case = dispatched_case("sanitation", at_tier="compound")
    ext = request(case, "sanitation")
    decide(case, ext, operator("area"))
    assert ext.decided_by == {"name": "梁雅琴", "tier": "area", "code": "5118020010011"}


def test_no_decision_on_a_resolved_case():
    case = acknowledged_case("fire")
    ext = request(case, "fire")
    resolve(case, "fire")
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is resolved"):
        decide(case, ext, operator("street"))
    assert ext.state == Extension.PENDING


# -- pause (缓办) and resume ----------------------------------------------------------------------


def test_a_pause_stops_the_assignment_and_queues_the_event():
    case = fresh(acknowledged_case())
    case.pause("fire", reason="等待交警拖车", actor="fire-desk-1", at=minutes(15))
    fire = case.assignment("fire")
    assert (fire.paused_at, fire.pause_reason) == (minutes(15), "等待交警拖车")
    assert fire.state == AssignmentState.ACKNOWLEDGED  # a pause is not a state
    assert case.pending_events == [("assignment.paused", {
        "department": "fire", "reason": "等待交警拖车", "actor": "fire-desk-1", "at": minutes(15),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason, entry.data) == (
        "paused", "fire-desk-1", "fire: 等待交警拖车", {"department": "fire"}
    )
    make_event("assignment.paused", CASE_ID, case.pending_events[0][1], producer="intake",
               at=minutes(15))


def test_a_pause_without_an_actor_is_the_departments():
    case = dispatched_case()
    case.pause("police", reason="现场封控", actor="", at=minutes(15))
    assert case.new_entries[-1].actor == "police"
    assert case.assignment("fire").paused_at is None  # only police paused


def test_a_paused_assignment_cannot_be_paused_again():
    case = dispatched_case()
    case.pause("fire", reason="等待交警拖车", actor="", at=minutes(15))
    fresh(case)
    with pytest.raises(TransitionError, match="fire is paused since 2026-11-23 01:15Z"):
        case.pause("fire", reason="again", actor="", at=minutes(16))
    assert case.assignment("fire").pause_reason == "等待交警拖车"
    assert case.pending_events == []


def test_a_resolved_assignment_cannot_be_paused():
    case = acknowledged_case()
    resolve(case, "fire")
    with pytest.raises(TransitionError, match="fire has resolved its part; nothing to pause"):
        case.pause("fire", reason="x", actor="", at=minutes(70))
    assert case.assignment("fire").paused_at is None


def test_no_pause_on_a_resolved_case():
    case = resolved_case("fire")
    with pytest.raises(TransitionError, match=f"case {CASE_ID} is resolved"):
        case.pause("fire", reason="x", actor="", at=minutes(70))


def test_resume_says_how_long_the_assignment_was_paused():
    case = acknowledged_case()
    case.pause("fire", reason="等待交警拖车", actor="", at=minutes(15))
    fresh(case)
    case.resume("fire", actor="fire-desk-2", at=minutes(105))
    fire = case.assignment("fire")
    assert (fire.paused_at, fire.pause_reason) == (None, "")
    assert case.pending_events == [("assignment.resumed", {
        "department": "fire", "actor": "fire-desk-2", "at": minutes(105),
    })]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason) == ("resumed", "fire-desk-2",
                                                       "fire goes on after 1h30m")
    assert entry.data == {"department": "fire", "paused_s": 5400.0}


@pytest.mark.parametrize(
    ("paused_for", "text"),
    [(timedelta(minutes=45), "45m"), (timedelta(seconds=59), "0m"),
     (timedelta(hours=1), "1h00m"), (timedelta(days=2, minutes=5), "48h05m")],
)
def test_resume_spans(paused_for, text):
    case = dispatched_case()
    case.pause("fire", reason="x", actor="", at=minutes(15))
    case.resume("fire", actor="", at=minutes(15) + paused_for)
    assert case.new_entries[-1].reason == f"fire goes on after {text}"
    assert case.new_entries[-1].actor == "fire"


def test_resume_when_not_paused_is_refused():
    case = fresh(dispatched_case())
    with pytest.raises(TransitionError, match="fire is not paused"):
        case.resume("fire", actor="", at=minutes(15))
    assert case.pending_events == [] and case.new_entries == []


def test_a_resumed_assignment_may_pause_again():
    case = dispatched_case()
    case.pause("fire", reason="a", actor="", at=minutes(15))
    case.resume("fire", actor="", at=minutes(20))
    case.pause("fire", reason="b", actor="", at=minutes(25))
    assert (case.assignment("fire").paused_at, case.assignment("fire").pause_reason) == (
        minutes(25), "b"
    )
    assert event_types(case) == ["assignment.paused", "assignment.resumed", "assignment.paused"]


# -- rework (返工) --------------------------------------------------------------------------------


def test_a_reworked_assignment_goes_back_to_dispatched_and_reopens_the_case():
    case = fresh(resolved_case("fire"))
    by = operator("community")
    reopen(case, "fire", by)
    fire = case.assignment("fire")
    assert (fire.state, fire.acknowledged_at, fire.resolved_at, fire.reworks) == (
        AssignmentState.DISPATCHED, None, None, 1
    )
    assert fire.dispatched_at == minutes(2)
    assert case.state == CaseState.DISPATCHED
    assert case.pending_events == [
        ("assignment.reopened", {"department": "fire", "reason": "通道仍被占用",
                                 "at": minutes(90)}),
        ("case.reopened", {"cause": "operator", "reason": "通道仍被占用",
                           "departments": ["fire"], "at": minutes(90)}),
    ]
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason) == (
        "reopened", "community:511802001001:胡涛", "fire reworks: 通道仍被占用"
    )
    assert entry.data == {"department": "fire", "reworks": 1}
    for type_, data in case.pending_events:
        make_event(type_, CASE_ID, data, producer="intake", at=minutes(90))


def test_rework_of_one_of_several_resolved_assignments_leaves_the_case_in_progress():
    case = resolved_case()
    reopen(case, "police", operator("street"))
    assert case.state == CaseState.IN_PROGRESS
    assert [a.state for a in case.assignments] == ["resolved", "dispatched", "resolved"]


def test_rework_on_an_open_case_reopens_the_assignment_but_not_the_case():
    case = acknowledged_case()
    resolve(case, "fire")
    fresh(case)
    reopen(case, "fire", operator("community"))
    assert event_types(case) == ["assignment.reopened"]
    assert case.new_entries[-1].data == {"department": "fire", "reworks": 1}
    assert case.state == CaseState.DISPATCHED  # fire dispatched, the others acknowledged


def close(case: Case, at: datetime | None = None) -> None:
    """The cell's grid worker passes the resolved case on site (核查): it is closed."""
    case.verify(passed=True, by=operator("compound"), cell_code=TONGGONG, note="",
                media_urls=["https://m.example.com/ok.jpg"], rework=[], at=at or minutes(80),
                rating_window=timedelta(days=7), follow_up_after=timedelta(days=3))


def test_rework_of_a_closed_case_reopens_it_for_the_operator():
    case = resolved_case("fire", "police")
    close(case)
    assert (case.state, case.closed_at) == (CaseState.CLOSED, minutes(80))
    fresh(case)
    reopen(case, "police", operator("street"))
    assert (case.state, case.closed_at) == (CaseState.IN_PROGRESS, None)
    assert [(a.department, a.state) for a in case.assignments] == [("fire", "resolved"),
                                                                   ("police", "dispatched")]
    assert case.pending_events == [
        ("assignment.reopened", {"department": "police", "reason": "通道仍被占用",
                                 "at": minutes(90)}),
        ("case.reopened", {"cause": "operator", "reason": "通道仍被占用",
                           "departments": ["police"], "at": minutes(90)}),
    ]
    assert kinds(case) == ["reopened"]
    assert case.new_entries[0].actor == "street:511802001:黄国平"


def test_reworks_are_counted_and_the_department_works_again():
    case = resolved_case("fire")
    reopen(case, "fire", operator("community"))
    case.acknowledge("fire", actor="", note="", at=minutes(100))
    resolve(case, "fire", minutes(120))
    assert case.state == CaseState.RESOLVED
    reopen(case, "fire", operator("district"), at=minutes(130))
    assert case.assignment("fire").reworks == 2
    assert case.new_entries[-1].data["reworks"] == 2
    assert event_types(case).count("assignment.reopened") == 2


@pytest.mark.parametrize(
    ("state_of", "expected"),
    [(dispatched_case, "dispatched"), (acknowledged_case, "acknowledged")],
)
def test_only_a_resolved_assignment_is_reworked(state_of, expected):
    case = fresh(state_of())
    with pytest.raises(TransitionError, match="only a resolved assignment can be reworked; "
                                              f"fire's is {expected}"):
        reopen(case, "fire", operator("community"))
    assert case.assignment("fire").reworks == 0
    assert case.pending_events == []


def test_rework_of_a_department_not_on_the_case_is_refused():
    case = resolved_case("fire")
    with pytest.raises(TransitionError, match="gas has no assignment on this case"):
        reopen(case, "gas", operator("community"))


@pytest.mark.parametrize("name", ["compound", "area"])
def test_rework_is_not_ordered_from_below_the_cases_tier(name):
    case = fresh(resolved_case("fire"))
    with pytest.raises(TransitionError,
                       match=r"rework is ordered at the case's tier \(community\) or above"):
        reopen(case, "fire", operator(name))
    assert case.state == CaseState.RESOLVED
    assert case.pending_events == []


@pytest.mark.parametrize("name", ["community", "street", "district"])
def test_rework_is_ordered_at_the_cases_tier_or_above(name):
    case = resolved_case("fire")
    reopen(case, "fire", operator(name))
    assert case.assignment("fire").state == AssignmentState.DISPATCHED
    assert case.new_entries[-1].actor == f"{name}:{node_code(name)}:{NAMES[name]}"


def test_rework_is_ordered_by_the_cases_own_node():
    case = resolved_case("fire")
    with pytest.raises(TransitionError, match=f"community {OTHER_COMMUNITY} does not answer"):
        reopen(case, "fire", operator("community", OTHER_COMMUNITY))
    assert case.assignment("fire").state == AssignmentState.RESOLVED


def test_a_reworked_assignment_is_not_paused():
    case = acknowledged_case("fire", "police")
    case.pause("fire", reason="等待交警拖车", actor="", at=minutes(15))
    resolve(case, "fire", minutes(30))
    reopen(case, "fire", operator("community"), at=minutes(40))
    assert case.assignment("fire").paused_at is None
    case.pause("fire", reason="再次等待", actor="", at=minutes(50))


# -- what escalation reports: summoned departments ----------------------------------------------


def summons(*departments: str, already: tuple[str, ...] = (), level: str = "hard",
            raise_to: dict[str, Any] | None = None) -> dict[str, Any]:
    """The parts of an assignments.added payload for a whistle that the case reads."""
    return {
        "reason": "whistle",
        "level": level,
        "assignments": [
            {"department": d, "role": "summoned", "report_in_due": minutes(50),
             "resolve_due": minutes(600), "report_in": "30m", "resolve": "1wd"}
            for d in departments
        ],
        "already": list(already),
        "raise_to": raise_to,
    }


def test_summoned_departments_join_the_case():
    case = fresh(dispatched_case())
    case.added(summons("housing", already=("police",), raise_to=tier("district")), minutes(21))
    housing = case.assignment("housing")
    assert (housing.role, housing.state, housing.report_in_due, housing.resolve_due) == (
        "summoned", AssignmentState.PENDING, minutes(50), minutes(600)
    )
    assert [a.department for a in case.assignments] == [*DEPARTMENTS, "housing"]
    assert case.state == CaseState.ROUTED  # housing is not dispatched yet
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("summoned", "routing", minutes(21))
    assert entry.reason == "hard whistle: housing summoned; police already on the case"
    assert set(entry.data) == {"reason", "assignments", "already", "raise_to", "replaces"}
    assert (entry.data["reason"], entry.data["already"], entry.data["replaces"]) == (
        "whistle", ["police"], None
    )
    assert entry.data["raise_to"]["code"] == "511802"
    assert entry.data["assignments"][0]["report_in_due"] == "2026-11-23T01:50:00+00:00"
    assert case.pending_events == []


def test_summoned_twice_adds_the_assignment_once():
    case = dispatched_case()
    data = summons("housing", "gas")
    case.added(data, minutes(21))
    case.added(data, minutes(22))
    assert [a.department for a in case.assignments] == [*DEPARTMENTS, "housing", "gas"]
    assert kinds(case)[-2:] == ["summoned", "summoned"]


def test_a_summoned_department_already_on_the_case_keeps_its_assignment():
    case = acknowledged_case()
    case.added(summons("fire", "housing"), minutes(21))
    fire = case.assignment("fire")
    assert (fire.role, fire.state, fire.report_in_due) == ("lead", "acknowledged",
                                                           REPORT_IN_DUE)
    assert case.assignment("housing").role == "summoned"


def test_a_whistle_that_summons_nobody_new_says_so():
    case = dispatched_case()
    case.added(summons(already=("fire", "police"), level="routine"), minutes(21))
    assert case.new_entries[-1].reason == (
        "routine whistle: nobody new summoned; fire, police already on the case"
    )
    assert case.state == CaseState.DISPATCHED


def test_a_summoned_department_is_dispatched_and_acknowledges_like_the_others():
    case = acknowledged_case()
    case.added(summons("housing"), minutes(21))
    case.dispatched("housing", minutes(22), "housing.case.assigned", "m-housing")
    assert case.state == CaseState.DISPATCHED
    case.acknowledge("housing", actor="", note="", at=minutes(30))
    assert case.state == CaseState.ACKNOWLEDGED


# -- what escalation reports: reminders, escalations, tiers, deadlines, the ledger --------------


def missed(department: str, clock: str, due: datetime, next_due: datetime | None):
    return {"department": department, "clock": clock, "due_at": due, "next_due": next_due}


def test_a_reminder_gives_the_missed_clocks_their_fresh_deadlines():
    case = fresh(dispatched_case())
    case.reminded({
        "reason": "report_in_missed_repeated",
        "missed": [missed("fire", "report_in", REPORT_IN_DUE, minutes(70)),
                   missed("police", "resolve", RESOLVE_DUE, minutes(900)),
                   missed("gas", "report_in", REPORT_IN_DUE, minutes(70))],  # not on the case
        "exhausted": [missed("urban_mgmt", "report_in", REPORT_IN_DUE, None)],
        "tier": tier("community"), "step": 0, "reminded_at": minutes(40),
    }, minutes(40))
    assert (case.assignment("fire").report_in_due, case.assignment("fire").resolve_due) == (
        minutes(70), RESOLVE_DUE
    )
    assert (case.assignment("police").report_in_due,
            case.assignment("police").resolve_due) == (REPORT_IN_DUE, minutes(900))
    # an exhausted clock keeps the deadline it missed
    assert case.assignment("urban_mgmt").report_in_due == REPORT_IN_DUE
    assert case.assignment("gas") is None
    assert (case.tier, case.escalations) == ("community", 0)
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("reminded", "escalation", minutes(40))
    assert entry.reason == ("report_in_missed_repeated: fire (report_in), police (resolve), "
                            "gas (report_in), urban_mgmt (report_in); stays at community")
    assert entry.data["missed"][0]["next_due"] == "2026-11-23T02:10:00+00:00"
    assert entry.data["exhausted"][0]["next_due"] is None
    assert case.pending_events == []


def test_an_escalation_moves_the_case_up_and_sets_fresh_deadlines():
    case = fresh(dispatched_case())
    case.escalated({
        "reason": "report_in_missed",
        "missed": [missed("fire", "report_in", REPORT_IN_DUE, minutes(45))],
        "from_tier": tier("community"), "to_tier": tier("street"), "step": 1,
        "escalated_at": minutes(31),
    }, minutes(31))
    assert (case.tier, case.tier_code, case.escalations) == ("street", "511802001", 1)
    assert case.assignment("fire").report_in_due == minutes(45)
    assert case.new_entries[-1].reason == (
        "report_in_missed: fire (report_in); now at street 青江街道"
    )
    assert case.new_entries[-1].kind == "escalated"


def test_a_tier_change_moves_the_case_without_counting_an_escalation():
    case = fresh(dispatched_case())
    case.tier_changed({"from_tier": tier("community"), "to_tier": tier("district"),
                       "reason": "whistle (hard) by 胡涛", "at": minutes(21)}, minutes(21))
    assert (case.tier, case.tier_code, case.escalations) == ("district", "511802", 0)
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.at) == ("tier_changed", "escalation", minutes(21))
    assert entry.reason == "community → district: whistle (hard) by 胡涛"
    assert entry.data["at"] == "2026-11-23T01:21:00+00:00"
    assert entry.data["to_tier"]["owner"]["name"] == "张建国"


def test_a_tier_change_down_after_rework():
    case = dispatched_case(at_tier="street")
    case.tier_changed({"from_tier": tier("street"), "to_tier": tier("community"),
                       "reason": "reopened: x", "at": minutes(21)}, minutes(21))
    assert (case.tier, case.tier_code) == ("community", "511802001001")


def test_rescheduled_sets_both_deadlines():
    case = fresh(dispatched_case())
    case.rescheduled({"department": "fire", "report_in_due": minutes(80),
                      "resolve_due": minutes(800), "reason": "resumed", "at": minutes(60)},
                     minutes(60))
    fire = case.assignment("fire")
    assert (fire.report_in_due, fire.resolve_due) == (minutes(80), minutes(800))
    assert case.assignment("police").resolve_due == RESOLVE_DUE
    [entry] = case.new_entries
    assert (entry.kind, entry.actor, entry.reason) == ("rescheduled", "escalation",
                                                       "fire: resumed")
    assert entry.data["resolve_due"] == "2026-11-23T14:20:00+00:00"


def test_rescheduled_deadlines_may_be_none_while_a_clock_does_not_run():
    case = dispatched_case()
    case.rescheduled({"department": "fire", "report_in_due": None, "resolve_due": None,
                      "reason": "paused: 等待交警拖车", "at": minutes(15)}, minutes(15))
    fire = case.assignment("fire")
    assert (fire.report_in_due, fire.resolve_due) == (None, None)
    assert case.new_entries[-1].reason == "fire: paused: 等待交警拖车"
    assert case.new_entries[-1].data["report_in_due"] is None


def test_rescheduled_for_an_unknown_department_is_refused():
    case = dispatched_case()
    with pytest.raises(TransitionError, match="no assignment for gas"):
        case.rescheduled({"department": "gas", "report_in_due": None, "resolve_due": None,
                          "reason": "resumed", "at": minutes(15)}, minutes(15))


def test_supervision_opened_and_closed_are_on_the_timeline():
    case = fresh(dispatched_case())
    opened = [{"id": 1, "department": "fire", "kind": "report_in", "due_at": REPORT_IN_DUE,
               "at": minutes(31)}]
    case.supervision(True, opened, minutes(31))
    closed = [
        {"id": 1, "department": "fire", "kind": "report_in", "at": minutes(50)},
        {"id": 2, "department": "police", "kind": "resolve", "at": minutes(50)},
    ]
    case.supervision(False, closed, minutes(50))
    first, second = case.new_entries
    assert (first.kind, first.actor, first.at) == ("supervision_opened", "escalation",
                                                   minutes(31))
    assert first.reason == "fire report_in on the supervision ledger (督办)"
    assert first.data == {"items": [{"id": 1, "department": "fire", "kind": "report_in",
                                     "due_at": "2026-11-23T01:30:00+00:00",
                                     "at": "2026-11-23T01:31:00+00:00"}]}
    assert (second.kind, second.at) == ("supervision_closed", minutes(50))
    assert second.reason == "fire report_in, police resolve off the supervision ledger"
    assert case.pending_events == []
    assert case.state == CaseState.DISPATCHED


def test_a_missed_deadline_stays_missed_for_the_measures():
    """Escalation moves the deadlines on; 响应率 and 按期结案率 must still see the miss."""
    case = fresh(dispatched_case())
    case.escalated({
        "reason": "report_in_missed",
        "missed": [missed("fire", "report_in", REPORT_IN_DUE, minutes(45)),
                   missed("police", "resolve", RESOLVE_DUE, minutes(900))],
        "from_tier": tier("community"), "to_tier": tier("street"), "step": 1,
        "escalated_at": minutes(31),
    }, minutes(31))
    fire, police = case.assignment("fire"), case.assignment("police")
    assert fire.report_in_due == minutes(45) and fire.first_report_in_due == REPORT_IN_DUE
    assert police.resolve_missed and not fire.resolve_missed
    case.acknowledge("fire", actor="", note="", at=minutes(40))
    assert fire.acknowledged_at > fire.first_report_in_due  # late, though before the new one


def test_a_rework_starts_a_new_report_in_cycle():
    case = fresh(dispatched_case())
    case.rescheduled({"department": "fire", "report_in_due": minutes(800),
                      "resolve_due": minutes(2000), "reason": "reopened: not fixed",
                      "at": minutes(700)}, minutes(700))
    assert case.assignment("fire").first_report_in_due == minutes(800)
