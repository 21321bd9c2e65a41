"""The simulator's planning, without I/O: reports at the rate asked for and valid for intake,
departments late in the share asked for, delays in demo time divided by the speed, what
follows an action, and the same choices for the same seed."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gridflow.simulation.plan import Action, Outcome, Simulation, Stats, Tunables
from gridflow.simulation.world import World
from services.intake.reports import ReportBody, summarise
from shared.events import RETURN_REASONS
from shared.reference import load_reference

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
T0 = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # Tue 08:30 in Beijing
MINUTE = 60.0


def api_json() -> tuple[dict[str, Any], dict[str, Any]]:
    """What intake's /api/v1/categories and /api/v1/grids answer for the demo district."""
    ref = load_reference(DEMO)
    cat = ref.catalogue
    categories = {"departments": [d.as_dict() for d in cat.departments.values()],
                  "categories": [c.as_dict() for c in cat.categories.values()]}
    grids = {"levels": [{"name": n} for n in ref.grid.levels.names],
             "cell_level": ref.grid.levels.cell_level, "tree": ref.grid.root.as_dict()}
    return categories, grids


WORLD = World.from_api(*api_json())


def sim(seed: int = 1, speed: float = 60.0, demo_now: Any = None, **tun: Any) -> Simulation:
    return Simulation(WORLD, speed=speed, seed=seed, run_id="t", tunables=Tunables(**tun),
                      demo_now=demo_now)


def assigned(case_id: str, dept: str, *, at: datetime = T0, report_in: float = 30,
             resolve: float = 4 * 60, role: str = "lead", category: str = "E0101",
             event_id: str | None = None) -> dict[str, Any]:
    """A case.assigned message as notify sends it (the parts the simulator reads)."""
    return {
        "event_id": event_id or f"m-{case_id}-{dept}", "type": "case.assigned",
        "occurred_at": at.isoformat(), "case_id": case_id,
        "data": {"department": dept, "recipient": {"kind": "department", "department": dept},
                 "assignment": {"department": dept, "role": role,
                                "report_in_due": (at + timedelta(minutes=report_in)).isoformat(),
                                "resolve_due": (at + timedelta(minutes=resolve)).isoformat()},
                 "case": {"category": category}},
    }


def tier_message(type_: str, case_id: str, tier: str, code: str, *, category: str = "E0101",
                 **data: Any) -> dict[str, Any]:
    node = {"tier": tier, "code": code, "name": "桐梓林社区", "role": "owner",
            "owner": {"id": "cm-0001", "name": "胡涛"}}
    return {"event_id": f"{type_}-{case_id}-{tier}", "type": type_, "case_id": case_id,
            "occurred_at": T0.isoformat(),
            "data": {"recipient": {"kind": "tier", "tier": node}, "case": {"category": category},
                     **data}}


def run_reports(s: Simulation, seconds: float, step: float = 0.5) -> list[Action]:
    out: list[Action] = []
    s.start(0.0)
    t = 0.0
    while t <= seconds:
        for a in s.due(t):
            out.append(a)
            s.after(a, Outcome(201, {"case_id": f"c{len(out)}", "created": True}), t)
        t += step
    return out


# -- the world ------------------------------------------------------------------------------------


def test_the_world_is_read_from_intakes_api() -> None:
    assert len(WORLD.departments) == 14 and "fire" in WORLD.departments
    assert len(WORLD.categories) == 39 and WORLD.categories["E0402"].lead == "fire"
    assert len(WORLD.cells) == 20
    cell = next(c for c in WORLD.cells if c.code == "511802001001101")
    assert cell.name == "通工小区" and cell.owner["id"] == "gw-0001" and cell.polygon


# -- reports --------------------------------------------------------------------------------------


def test_reports_come_at_the_rate_asked_for_per_real_minute_whatever_the_speed() -> None:
    for speed in (1, 60, 1000):
        reports = [a for a in run_reports(sim(speed=speed, rate=30), 600) if a.kind == "report"]
        assert 240 <= len(reports) <= 360, (speed, len(reports))  # 300 expected in 10 minutes


def test_the_first_report_goes_out_at_once_and_rate_zero_sends_none() -> None:
    s = sim(rate=10)
    s.start(100.0)
    assert [a.kind for a in s.due(100.0)] == ["report"]
    quiet = sim(rate=0)
    assert run_reports(quiet, 600) == []


def test_every_report_is_one_intake_accepts_in_a_cell_of_the_district() -> None:
    ref = load_reference(DEMO)
    reports = [a for a in run_reports(sim(rate=120, duplicate=0.2), 300) if a.kind == "report"]
    assert len(reports) > 400
    ids = set()
    for a in reports:
        body = ReportBody().load(dict(a.body))  # marshmallow: the API's own schema
        summary = summarise(body, ref, T0)  # the category and the cell resolve
        assert summary["location"]["grid_code"] == a.body["grid_code"]
        if "lat" in a.body:  # the point lies in the cell it names
            assert ref.grid.locate(a.body["lat"], a.body["lng"]).code == a.body["grid_code"]
        ids.add(a.body["report_id"])
    assert len(ids) == len(reports)
    kinds = collections.Counter(a.body["reporter"]["kind"] for a in reports)
    assert set(kinds) == {"grid_worker", "resident", "hotline"}
    assert kinds["grid_worker"] > kinds["resident"] > kinds["hotline"]
    for a in reports:
        if a.body["reporter"]["kind"] == "grid_worker":
            cell = next(c for c in WORLD.cells if c.code == a.body["grid_code"])
            assert a.body["reporter"]["id"] == cell.owner["id"]  # the cell's own 网格员


def test_categories_lean_to_the_everyday_ones() -> None:
    reports = [a for a in run_reports(sim(rate=120, duplicate=0), 600) if a.kind == "report"]
    counts = collections.Counter(a.body["category"] for a in reports)
    common = counts["E0101"] + counts["E0504"] + counts["C0101"]
    assert counts.most_common(1)[0][0] == "E0101"  # exposed garbage leads
    assert common > 0.2 * len(reports)
    assert counts["E0403"] < counts["E0101"] / 20  # a road collapse is rare


def test_some_reports_repeat_a_recent_one_nearby() -> None:
    reports = [a for a in run_reports(sim(rate=120, duplicate=0.3), 300) if a.kind == "report"]
    by_text = {a.body["description"]: a for a in reports}
    repeats = [a for a in reports if any(a.body["description"] != d and d in a.body["description"]
                                         for d in by_text)]
    assert len(repeats) > 0.15 * len(reports)
    for a in repeats[:20]:
        orig = next(o for d, o in by_text.items()
                    if d in a.body["description"] and o is not a)
        assert (orig.body["category"], orig.body["grid_code"]) == \
            (a.body["category"], a.body["grid_code"])
        if "lat" in a.body:
            assert abs(a.body["lat"] - orig.body["lat"]) <= 1e-4 + 1e-9


# -- departments ----------------------------------------------------------------------------------


def acks_after(s: Simulation, count: int, report_in_min: float = 30) -> list[tuple[float, Action]]:
    for i in range(count):
        s.on_message(assigned(f"c{i}", "sanitation", report_in=report_in_min), 0.0)
    return [(at, a) for at, a in s.schedule.items() if a.kind == "ack"]


def test_a_late_fraction_of_departments_reports_in_after_the_deadline() -> None:
    for late in (0.0, 0.15, 0.5):
        s = sim(late=late, returns=0, speed=60)
        acks = acks_after(s, 1000)
        deadline = 30 * MINUTE / 60  # 30 demo minutes at speed 60: 30 real seconds
        after = [a for at, a in acks if at > deadline]
        assert all(a.late for a in after) and all(not a.late for at, a in acks if at <= deadline)
        assert abs(len(after) / len(acks) - late) < 0.05, (late, len(after))


def test_on_time_report_ins_come_5_to_40_demo_minutes_after_and_before_the_deadline() -> None:
    s = sim(late=0, returns=0, speed=60)
    acks = acks_after(s, 500, report_in_min=120)
    waits = [at for at, _ in acks]
    assert min(waits) >= 5 * MINUTE / 60 and max(waits) <= 40 * MINUTE / 60
    tight = sim(late=0, returns=0, speed=60)
    acks = acks_after(tight, 200, report_in_min=10)  # a 10-minute deadline: before it
    assert max(at for at, _ in acks) <= 0.8 * 10 * MINUTE / 60 + 1e-9


def test_delays_are_demo_time_divided_by_the_speed() -> None:
    slow, fast = sim(seed=5, speed=1), sim(seed=5, speed=600)
    a, b = acks_after(slow, 300), acks_after(fast, 300)
    assert len(a) == len(b) > 0
    for (at1, a1), (at2, a2) in zip(a, b, strict=True):
        assert a1 == a2  # the same choices
        assert at1 == pytest.approx(at2 * 600)  # 600 times quicker


def test_deadlines_are_read_against_the_services_demo_clock_when_known() -> None:
    # the message is old (sent 25 demo minutes ago): 5 demo minutes are left, not 30
    clock_now = T0 + timedelta(minutes=25)
    s = sim(late=0, returns=0, speed=60, demo_now=lambda: clock_now)
    s.on_message(assigned("c1", "fire", report_in=30), 0.0)
    (at, _ack), = [(at, a) for at, a in s.schedule.items() if a.kind == "ack"]
    assert at <= 0.8 * 5 * MINUTE / 60 + 1e-9


def test_report_in_then_progress_then_resolve_before_the_resolve_deadline() -> None:
    s = sim(late=0, returns=0, progress=1.0, speed=60)
    s.on_message(assigned("c1", "sanitation", resolve=120), 0.0)
    (at, ack), = [(at, a) for at, a in s.schedule.items() if a.kind == "ack"]
    assert s.due(at) == [ack] and ack.path == "/api/v1/cases/c1/assignments/sanitation/ack"
    s.after(ack, Outcome(200, {"state": "acknowledged"}), at)
    later = {a.kind: t for t, a in s.schedule.items()}
    assert set(later) == {"progress", "resolve"}
    assert at < later["progress"] < later["resolve"] <= 120 * MINUTE / 60
    assert s.stats.acked == 1 and s.stats.late == 0


def test_a_refused_action_is_counted_and_nothing_follows_it() -> None:
    s = sim(late=0, returns=0)
    s.on_message(assigned("c1", "sanitation"), 0.0)
    (at, ack), = s.schedule.items()
    s.due(at)
    s.after(ack, Outcome(409, {"errors": {"state": ["already reported in"]}}), at)
    s.after(ack, Outcome(503), at)
    s.after(ack, Outcome(0, None, "ConnectionRefusedError"), at)
    assert len(s.schedule) == 0
    assert (s.stats.errors, s.stats.conflicts, s.stats.server_errors, s.stats.unreachable) == \
        (3, 1, 1, 1)
    assert "errors=3 (409=1" in s.stats.line()


def test_a_share_of_first_assignments_is_returned_with_a_reason_code() -> None:
    s = sim(returns=1.0)
    s.on_message(assigned("c1", "police", role="assist"), 0.0)
    s.on_message(assigned("c2", "housing", role="summoned"), 0.0)  # a whistle: never returned
    kinds = {a.case_id: a for _, a in s.schedule.items()}
    assert kinds["c1"].kind == "return" and kinds["c1"].body["reason_code"] in RETURN_REASONS
    assert kinds["c2"].kind == "ack"
    s2 = sim(returns=1.0)  # taken back by hand after a return: not returned again
    s2.on_message(assigned("c1", "police", event_id="first"), 0.0)
    s2.on_message(assigned("c1", "police", event_id="by-hand"), 0.0)
    assert [a.kind for _, a in s2.schedule.items()].count("ack") == 1


def test_a_rework_replaces_the_work_planned_before() -> None:
    s = sim(late=0, returns=0)
    s.on_message(assigned("c1", "sanitation"), 0.0)
    s.on_message({"event_id": "rw", "type": "case.reworked", "case_id": "c1",
                  "data": {"department": "sanitation", "rework": {"reason": "返工"}}}, 0.0)
    acks = [a for _, a in s.schedule.items() if a.kind == "ack"]
    assert len(acks) == 2
    done = s.due(10_000.0)
    assert len(done) == 1 and s.stats.superseded == 1


def test_the_same_message_id_is_handled_once() -> None:
    s = sim(returns=0)
    msg = assigned("c1", "sanitation")
    s.on_message(msg, 0.0, "mid-1")
    s.on_message(msg, 0.0, "mid-1")
    assert len(s.schedule) == 1 and s.stats.assigned == 1 and s.stats.messages == 1


def test_some_departments_answer_over_amqp_with_a_stable_message_id() -> None:
    s = sim(amqp=0.3, returns=0, late=0)
    assert 3 <= len(s.amqp_departments) <= 5
    dept = sorted(s.amqp_departments)[0]
    s.on_message(assigned("c1", dept), 0.0)
    (_, ack), = s.schedule.items()
    assert ack.via == "amqp" and ack.routing_key == f"{dept}.ack"
    assert s.message_id(ack) == s.message_id(Action(**{**ack.__dict__}))  # a retry: same id
    assert len(s.message_id(ack)) <= 64
    other_run = Simulation(WORLD, seed=1, run_id="u", tunables=Tunables(amqp=0.3))
    assert other_run.message_id(ack) != s.message_id(ack)


# -- grid workers, reporters, communities ---------------------------------------------------------


def task(case_id: str, kind: str, task_id: int = 7) -> dict[str, Any]:
    assignee = {"tier": "compound", "code": "511802001001101", "name": "通工小区",
                "owner": {"id": "gw-0001", "name": "邓海燕"}}
    return {"event_id": f"task-{task_id}", "type": "task.assigned", "case_id": case_id,
            "occurred_at": T0.isoformat(),
            "data": {"recipient": {"kind": "tier", "tier": {**assignee, "role": "owner"}},
                     "task": {"id": task_id, "kind": kind, "assignee": assignee}}}


def test_the_cells_grid_worker_verifies_and_a_pass_that_closes_lets_reporters_rate() -> None:
    s = sim(verify_fail=0.0, rates=1.0, unhappy=0.0)
    s.on_message(task("c1", "verification"), 0.0)
    (at, verify), = s.schedule.items()
    assert verify.path == "/api/v1/cases/c1/verification"
    assert verify.body["passed"] is True and verify.body["media_urls"]
    assert verify.body["by"] == {"name": "邓海燕", "tier": "compound", "code": "511802001001101"}
    s.due(at)
    view = {"state": "closed", "reporter": {"id": "r-0001"},
            "followers": [{"reporter": {"id": "r-0002"}}, {"reporter": {"id": "r-0001"}}]}
    s.after(verify, Outcome(200, view), at)
    ratings = [a for _, a in s.schedule.items()]
    assert sorted(a.body["reporter_id"] for a in ratings) == ["r-0001", "r-0002"]
    assert all(a.kind == "rate" and a.body["score"] >= 4 and a.body["fixed"] for a in ratings)
    assert (s.stats.verified, s.stats.closed) == (1, 1)
    s.after(verify, Outcome(200, view), at)  # closed again after a rework: once each
    assert len(s.schedule) == 2


def test_some_verifications_fail_and_some_ratings_are_unsatisfied() -> None:
    s = sim(verify_fail=0.3, rates=1.0, unhappy=0.3)
    for i in range(300):
        s.on_message(task(f"c{i}", "verification", task_id=i + 1), 0.0)
    verdicts = [a.body["passed"] for _, a in s.schedule.items()]
    assert 0.2 < verdicts.count(False) / len(verdicts) < 0.4
    assert all(a.body["note"] for _, a in s.schedule.items())
    r = sim(rates=1.0, unhappy=0.3)
    for i in range(300):
        r._plan_ratings(f"c{i}", {"reporter": {"id": f"r-{i}"}}, 0.0)
    scores = [a.body["score"] for _, a in r.schedule.items()]
    unhappy = [sc for sc in scores if sc <= 2]
    assert 0.2 < len(unhappy) / len(scores) < 0.4


def test_a_follow_up_task_is_done_by_the_grid_worker() -> None:
    s = sim()
    s.on_message(task("c1", "follow_up", task_id=12), 0.0)
    (_, done), = s.schedule.items()
    assert done.kind == "follow_up" and done.path == "/api/v1/tasks/12/done"
    assert done.body["by"]["code"] == "511802001001101" and done.body["note"]


def test_a_community_told_of_an_escalation_may_blow_the_whistle_once() -> None:
    s = sim(whistle=1.0, hard=0.0)
    msg = tier_message("case.escalated", "c1", "community", "511802001001", category="E0402",
                       escalation={"reason": "report_in_missed"})
    s.on_message(msg, 0.0)
    s.on_message({**msg, "event_id": "again"}, 0.0)
    (_, whistle), = s.schedule.items()
    assert whistle.path == "/api/v1/cases/c1/whistle" and whistle.body["level"] == "routine"
    assert whistle.body["by"] == {"name": "胡涛", "tier": "community", "code": "511802001001"}
    on_case = set(WORLD.categories["E0402"].departments)
    assert whistle.body["departments"] and not set(whistle.body["departments"]) & on_case
    assert s.stats.escalated == 1
    area = sim(whistle=1.0)
    area.on_message(tier_message("case.escalated", "c2", "area", "5118020010011"), 0.0)
    assert len(area.schedule) == 0  # an area does not whistle


def test_a_case_nobody_took_is_dispatched_by_hand_by_the_tier_owner() -> None:
    s = sim()
    for case_id, role in (("c1", "lead"), ("c2", "assist")):
        s.on_message(tier_message("case.needs_dispatch", case_id, "community", "511802001001",
                                  category="E0402", reason="nobody left",
                                  returned={"department": "police", "role": role,
                                            "reason_code": "not_our_responsibility"}), 0.0)
    s.on_message(tier_message("case.needs_dispatch", "c3", "community", "511802001001",
                              category="E0402", reason="nobody left"), 0.0)
    got = {a.case_id: a for _, a in s.schedule.items()}
    assert got["c1"].path == "/api/v1/cases/c1/assignments"
    assert (got["c1"].body["department"], got["c1"].body["role"]) == ("police", "lead")
    assert (got["c2"].body["department"], got["c2"].body["role"]) == ("police", "assist")
    assert (got["c3"].body["department"], got["c3"].body["role"]) == ("fire", "lead")
    assert got["c1"].body["by"] == {"name": "胡涛", "tier": "community", "code": "511802001001"}


# -- determinism and settings ---------------------------------------------------------------------


def script(seed: int) -> list[Any]:
    s = sim(seed=seed, rate=60, late=0.3, returns=0.1)
    out: list[Any] = [sorted(s.amqp_departments)]
    s.start(0.0)
    for i in range(40):
        s.on_message(assigned(f"c{i}", "sanitation"), float(i))
        s.on_message(task(f"c{i}", "verification", task_id=i + 1), float(i))
        for a in s.due(float(i)):
            out.append((a.kind, a.case_id, dict(a.body)))
            s.after(a, Outcome(201 if a.kind == "report" else 200, {"state": "closed"}), float(i))
    out.append([(round(at, 9), a.kind, a.case_id, a.late) for at, a in s.schedule.items()])
    return out


def test_the_same_seed_makes_the_same_day_and_another_seed_another() -> None:
    assert script(42) == script(42)
    assert script(42) != script(43)


@pytest.mark.parametrize("bad", [{"late": 1.5}, {"late": -0.1}, {"rate": -1},
                                 {"resolve": (60, 10)}])
def test_impossible_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Tunables(**bad)


def test_a_speed_must_be_positive() -> None:
    with pytest.raises(ValueError):
        sim(speed=0)


def test_the_progress_line_is_key_value_pairs() -> None:
    line = Stats(reports=3, acked=2, escalated=1).line()
    pairs = dict(p.split("=") for p in line.split())
    assert pairs["reports"] == "3" and pairs["acked"] == "2" and pairs["escalated"] == "1"
    assert "errors" in pairs
