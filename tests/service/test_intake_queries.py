"""The monitor's queries on intake (the case funnel with its grid drill-down, the district's
measures, the case lists) against a district whose every number is worked out by hand, on
SQLite and on PostgreSQL, over HTTP and over nameko RPC on the real broker.

intake runs alone on a fake clock. Reports come in over HTTP; what routing, notify and
escalation would say (routed with known deadlines and tiers, dispatched, a rework's new
deadlines) is handed to intake's pipeline handler; the departments, the grid worker and
the reporters act over HTTP. The story, in minutes from T0 (Mon 2026-11-23 09:00 Beijing),
every report-in due 30 min and every resolve due 1 day (1440 min) after the report:

====  =====  ========  ====  =================  =========================================
case  cell   category  at    tier               what happens
====  =====  ========  ====  =================  =========================================
C0    A      E0101     -2d   compound           sanitation acks +10m, resolves +2h;
                                                verified at 60 (closed, 49 h); rated 5
C1    B      E0402     0     community          fire acks 20, urban_mgmt 25, police 45
                                                (late); fire resolves 300, urban 400,
                                                police 1500 (late); verified 1600
C2    Cc     E0101     1     compound           sanitation acks 20, resolves 200;
                                                verified 240; rated 5
C3    D      E0701     2     area               police acks 28, justice 40 (late);
                                                justice resolves 600, police 650;
                                                verified 1500 (after its resolve due,
                                                on time all the same); rated 3 by its
                                                reporter, 2 by C6's (no reopening: the
                                                category says so)
C4    D      E0101     3     street             sanitation acks 25, resolves 700;
                                                verification fails 720 (返工, report-in
                                                due 750, resolve due 2160); acks 740,
                                                resolves 900; verified 1000
C5    A      E0402     4     compound           police returns it 15 (退单); fire acks
                                                30, urban 33; fire resolves 500, urban
                                                550; verified 600; rated 4 "not fixed"
                                                at 700: fire reworks (report-in due 730,
                                                never reported in again)
C6    D      E0701     5     —                  a duplicate of C3
C7    E      E0101     6     compound           sanitation never reports in
C8    Cc     E0505     3d+1h compound           after the period; report-in due 3d+3h
====  =====  ========  ====  =================  =========================================

The period is [T0, T0 + 3 days); the measures are read at T0 + 3 days 2 hours.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from nameko.exceptions import RemoteError
from nameko.standalone.rpc import ServiceRpcProxy
from nameko.testing.services import entrypoint_hook

from services.intake.service import IntakeService
from services.routing.rules import route_with
from shared.clock import FakeClock
from shared.events import make_event
from shared.reference import load_reference
from support import report

REF = load_reference(Path(__file__).resolve().parents[2] / "deploy" / "demo")
T0 = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
S = T0 - timedelta(days=2)
UNTIL = T0 + timedelta(days=3)
NOW = T0 + timedelta(days=3, hours=2)
PERIOD = {"since": T0.isoformat(), "until": UNTIL.isoformat()}

A, B = "511802001001101", "511802001001102"  # 通工小区, 汉都华府小区: 桐梓林一片区
CC = "511802001002101"  # 正黄美食风情街商住区: 和平社区
D, E = "511802002001101", "511802002001102"  # 新安巷大院, 康藏路粮站宿舍: 河北街道
QINGJIANG, HEBEI, DONGCHENG = "511802001", "511802002", "511802003"
TONGZILIN, HEPING = "511802001001", "511802001002"
PHOTO = ["https://img.example/site.jpg"]
REPORT_IN, RESOLVE = timedelta(minutes=30), timedelta(days=1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class District:
    """Drives intake through the story: HTTP for people, the pipeline handler for the
    services that are not running."""

    def __init__(self, api: requests.Session, intake: Any, clock: FakeClock) -> None:
        self.api, self.intake, self.clock = api, intake, clock
        self.ids: dict[str, str] = {}
        self.cells: dict[str, str] = {}
        self.reported: dict[str, datetime] = {}

    def _at(self, when: datetime) -> None:
        assert when >= self.clock.now(), "the story runs forward"
        self.clock.set(when)

    def _post(self, path: str, body: dict[str, Any], when: datetime) -> dict[str, Any]:
        self._at(when)
        r = self.api.post(path, json=body)
        assert r.status_code in (200, 201, 202), (path, r.text)
        return r.json()

    def _events(self, *events: Any) -> None:
        with entrypoint_hook(self.intake, "on_pipeline") as handle:
            handle(list(events))

    def report(self, key: str, category: str, cell: str, when: datetime,
               reporter: str = "gw-0001") -> dict[str, Any]:
        body = report(f"r-{key}", category, grid_code=cell,
                      reporter={"kind": "grid_worker", "id": reporter, "name": "网格员"})
        out = self._post("/api/v1/reports", body, when)
        self.ids[key], self.cells[key], self.reported[key] = out["case_id"], cell, when
        return out

    def route(self, key: str, tier: str, report_in: timedelta = REPORT_IN) -> None:
        """Routed as the catalogue says, at ``tier``, with the story's deadlines; then every
        department is dispatched."""
        case_id, cell, when = self.ids[key], self.cells[key], self.reported[key]
        case = self.api.get(f"/api/v1/cases/{case_id}").json()
        summary = {"category": case["category"], "description": case["description"],
                   "location": {"grid_code": cell}, "reporter": case["reporter"],
                   "reported_at": when}
        payload = route_with(REF, summary, when)
        node, _ = REF.grid.cell_for_code(cell)
        payload["tier"] = REF.grid.tier_info(node, tier)
        for a in payload["assignments"]:
            a["report_in_due"], a["resolve_due"] = when + report_in, when + RESOLVE
        routed = make_event("case.routed", case_id, payload, producer="routing", at=when)
        dispatched = [make_event("assignment.dispatched", case_id, {
            "department": a["department"], "role": a["role"], "dispatched_at": when,
            "routing_key": f"{a['department']}.case.assigned", "message_id": f"m-{key}-{i}",
        }, producer="notify", at=when) for i, a in enumerate(payload["assignments"])]
        self._events(routed)
        self._events(*dispatched)

    def rescheduled(self, key: str, department: str, report_in_due: datetime,
                    resolve_due: datetime) -> None:
        """What escalation says after a rework: the clocks restarted."""
        self._events(make_event("assignment.rescheduled", self.ids[key], {
            "department": department, "report_in_due": report_in_due,
            "resolve_due": resolve_due, "reason": "rework", "at": self.clock.now(),
        }, producer="escalation", at=self.clock.now()))

    def _case(self, key: str) -> str:
        return f"/api/v1/cases/{self.ids[key]}"

    def ack(self, key: str, department: str, when: datetime) -> None:
        self._post(f"{self._case(key)}/assignments/{department}/ack", {}, when)

    def resolve(self, key: str, department: str, when: datetime) -> None:
        self._post(f"{self._case(key)}/assignments/{department}/resolve", {"note": "处置完毕"},
                   when)

    def give_back(self, key: str, department: str, when: datetime) -> None:
        self._post(f"{self._case(key)}/assignments/{department}/return",
                   {"reason_code": "not_our_responsibility"}, when)

    def verify(self, key: str, when: datetime, passed: bool = True) -> dict[str, Any]:
        worker = {"name": "网格员", "tier": "compound", "code": self.cells[key]}
        body: dict[str, Any] = {"passed": passed, "by": worker, "media_urls": PHOTO}
        if not passed:
            body["note"] = "仍有垃圾"
        return self._post(f"{self._case(key)}/verification", body, when)

    def rate(self, key: str, score: int, when: datetime, *, fixed: bool | None = None,
             reporter: str = "gw-0001") -> dict[str, Any]:
        body = {"score": score, "reporter_id": reporter,
                **({"fixed": fixed} if fixed is not None else {})}
        return self._post(f"{self._case(key)}/rating", body, when)


def tell_the_story(d: District) -> None:
    d.report("C0", "E0101", A, S)
    d.route("C0", "compound")
    d.ack("C0", "sanitation", S + timedelta(minutes=10))
    d.resolve("C0", "sanitation", S + timedelta(hours=2))

    for n, (key, category, cell) in enumerate([
        ("C1", "E0402", B), ("C2", "E0101", CC), ("C3", "E0701", D), ("C4", "E0101", D),
        ("C5", "E0402", A), ("C6", "E0701", D), ("C7", "E0101", E),
    ]):
        d.report(key, category, cell, at(n), reporter="res-6" if key == "C6" else "gw-0001")
    for key, tier in [("C1", "community"), ("C2", "compound"), ("C3", "area"),
                      ("C4", "street"), ("C5", "compound"), ("C7", "compound")]:
        d.route(key, tier)

    d.give_back("C5", "police", at(15))
    d.ack("C1", "fire", at(20))
    d.ack("C2", "sanitation", at(20))
    d.ack("C1", "urban_mgmt", at(25))
    d.ack("C4", "sanitation", at(25))
    d.ack("C3", "police", at(28))
    d.ack("C5", "fire", at(30))
    d.ack("C5", "urban_mgmt", at(33))
    d.ack("C3", "justice", at(40))
    d.ack("C1", "police", at(45))
    d.verify("C0", at(60))
    d.rate("C0", 5, at(100))
    d.resolve("C2", "sanitation", at(200))
    d.verify("C2", at(240))
    d.resolve("C1", "fire", at(300))
    d.rate("C2", 5, at(300))
    d.resolve("C1", "urban_mgmt", at(400))
    d.resolve("C5", "fire", at(500))
    d.resolve("C5", "urban_mgmt", at(550))
    d.verify("C5", at(600))
    d.resolve("C3", "justice", at(600))
    d.resolve("C3", "police", at(650))
    d.resolve("C4", "sanitation", at(700))
    case = d.rate("C5", 4, at(700), fixed=False)
    assert case["state"] == "in_progress", case["state"]  # "not fixed" reopened it
    d.rescheduled("C5", "fire", at(730), at(700) + RESOLVE)
    case = d.verify("C4", at(720), passed=False)
    assert case["state"] == "dispatched", case["state"]
    d.rescheduled("C4", "sanitation", at(750), at(720) + RESOLVE)
    d.ack("C4", "sanitation", at(740))
    d.resolve("C4", "sanitation", at(900))
    d.verify("C4", at(1000))
    d.resolve("C1", "police", at(1500))
    d.verify("C3", at(1500))
    d.rate("C3", 3, at(1550), fixed=True)
    case = d.rate("C3", 2, at(1560), reporter="res-6")
    assert case["state"] == "closed", "邻里纠纷 is not reopened on a complaint"
    d.verify("C1", at(1600))

    d.report("C8", "E0505", CC, UNTIL + timedelta(hours=1))
    d.route("C8", "compound", report_in=timedelta(hours=2))
    d.clock.set(NOW)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(S)


@pytest.fixture
def district(run_services: Any, api: requests.Session, clock: FakeClock) -> District:
    intake = run_services(IntakeService, clock=clock)["intake"]
    d = District(api, intake, clock)
    tell_the_story(d)
    return d


def _get(api: requests.Session, path: str, **params: Any) -> dict[str, Any]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _rates(m: dict[str, Any]) -> dict[str, tuple[int, int]]:
    names = ("response_rate", "resolution_rate", "satisfaction_rate", "on_time_closing_rate",
             "rework_rate")
    return {n: (m[n]["numerator"], m[n]["denominator"]) for n in names}


# -- what the story adds up to -----------------------------------------------------------------
# 响应率: report-ins due in the period by now, returned ones (C5 police) left out:
#   C1 fire ✓ police ✗ urban ✓, C2 ✓, C3 police ✓ justice ✗, C4 ✓ (its rework's report-in,
#   due 750, acked 740), C5 fire ✗ (reworked, not back) urban ✓, C7 ✗  →  6 / 10
# 解决率: C1–C7 reported in the period, C6 a duplicate; C1–C4 closed  →  4 / 6
# 满意率: C0 5, C2 5, C3 3 ✓; C3 2, C5 4 "not fixed" ✗  →  3 / 5
# 按期结案率: closed in the period C0, C1, C2, C3, C4; C1's police resolved late  →  4 / 5
#   (closed_at <= the latest resolve due would give 2 / 5: C0 and C3 were closed after it)
# 返工率: reworked C4 (closed) and C5 (back at work) of C1–C4 ∪ C5  →  2 / 5
EXPECTED_RATES = {
    "response_rate": (6, 10), "resolution_rate": (4, 6), "satisfaction_rate": (3, 5),
    "on_time_closing_rate": (4, 5), "rework_rate": (2, 5),
}
# handling: C0 2940, C1 1600, C2 239, C3 1498, C4 997 minutes
MEAN_HOURS = round((2940 + 1600 + 239 + 1498 + 997) / 5 / 60, 2)  # 24.25
MEDIAN_HOURS = round(1498 / 60, 2)  # 24.97
EXPECTED_DEPARTMENTS = {  # assignments, due, on time, resolved, resolved on time
    "fire": (2, 2, 1, 1, 1),  # C1 ✓; C5 reworked: due again, its resolution undone
    "justice": (1, 1, 0, 1, 1),
    "police": (3, 2, 1, 2, 1),  # C5's returned one counts as assigned only; C1 resolved late
    "sanitation": (3, 3, 2, 2, 2),  # C0's resolution was before the period
    "urban_mgmt": (2, 2, 2, 2, 2),
}


def test_measures_funnel_and_case_lists_add_up_to_the_story(
    district: District, api: requests.Session
) -> None:
    d = district
    m = _get(api, "/api/v1/stats/measures", **PERIOD)
    assert _rates(m) == EXPECTED_RATES
    assert m["response_rate"]["value"] == 0.6 and m["resolution_rate"]["value"] == 0.6667
    assert (m["response_rate"]["name_zh"], m["rework_rate"]["name_zh"]) == ("响应率", "返工率")
    assert m["now"] == NOW.isoformat() and m["filters"]["since"] == T0.isoformat()
    assert m["cases"] == {"reported": 6, "duplicates": 1, "resolved_or_closed": 4,
                          "reworked": 2, "closed_in_period": 5}
    assert m["handling_time"] == {"closed": 5, "average_hours": MEAN_HOURS,
                                  "median_hours": MEDIAN_HOURS}
    assert (MEAN_HOURS, MEDIAN_HOURS) == (24.25, 24.97)
    assert m["tier_split"] == {"compound": 2, "area": 1, "community": 1, "street": 1,
                               "district": 0}
    assert list(m["tier_split"]) == ["compound", "area", "community", "street", "district"]
    assert [(c["code"], c["name"], c["count"]) for c in m["top_categories"]] == [
        ("E0101", "暴露垃圾", 3), ("E0402", "消防通道堵塞", 2), ("E0701", "邻里纠纷", 1)]
    rows = {r["department"]: r for r in m["by_department"]}
    assert {k: (r["assignments"], r["due"], r["reported_in_on_time"], r["resolved"],
                r["resolved_on_time"]) for k, r in rows.items()} == EXPECTED_DEPARTMENTS
    assert rows["fire"]["response_rate"] == 0.5 and rows["justice"]["response_rate"] == 0.0
    assert rows["sanitation"]["name"] == "区环境卫生服务中心"

    # a slice: 河北街道 (C3, C4, C6, C7)
    m = _get(api, "/api/v1/stats/measures", grid=HEBEI, **PERIOD)
    assert _rates(m) == {"response_rate": (2, 4), "resolution_rate": (2, 3),
                         "satisfaction_rate": (1, 2), "on_time_closing_rate": (2, 2),
                         "rework_rate": (1, 2)}
    assert [p["name"] for p in m["path"]] == ["雨城区", "河北街道"]
    # a department: cases police is on (C1, C3, C5), its own report-ins and resolutions
    m = _get(api, "/api/v1/stats/measures", department="police", **PERIOD)
    assert _rates(m) == {"response_rate": (1, 2), "resolution_rate": (2, 3),
                         "satisfaction_rate": (1, 3), "on_time_closing_rate": (1, 2),
                         "rework_rate": (1, 3)}
    assert [r["department"] for r in m["by_department"]] == ["police"]
    # a building (C0..C8 were reported by cell): nothing
    m = _get(api, "/api/v1/stats/measures", grid=A + "001", **PERIOD)
    assert _rates(m)["resolution_rate"] == (0, 0) and m["resolution_rate"]["value"] is None
    assert m["handling_time"] == {"closed": 0, "average_hours": None, "median_hours": None}
    # the whole history, open-ended: C0 and C8 join the cohort; C8's report-in is not due
    m = _get(api, "/api/v1/stats/measures")
    assert _rates(m) == {"response_rate": (7, 11), "resolution_rate": (5, 8),
                         "satisfaction_rate": (3, 5), "on_time_closing_rate": (4, 5),
                         "rework_rate": (2, 6)}
    # a period that starts later: only what happened from minute 1000 on
    m = _get(api, "/api/v1/stats/measures", since=at(1000).isoformat(), top=1)
    assert _rates(m) == {"response_rate": (0, 0), "resolution_rate": (0, 1),
                         "satisfaction_rate": (1, 2), "on_time_closing_rate": (2, 3),
                         "rework_rate": (0, 0)}
    assert m["top_categories"] == [{"code": "E0505", "name": "噪音扰民", "major": "街面秩序",
                                    "count": 1}]

    # -- the funnel: the whole district, then street → community → area
    f = _get(api, "/api/v1/stats/funnel")
    assert (f["total"], f["open"]) == (9, 3)
    assert {k: v for k, v in f["by_state"].items() if v} == {
        "closed": 5, "in_progress": 1, "dispatched": 2, "duplicate": 1}
    assert set(f["by_state"]) >= {"reported", "routed", "acknowledged", "resolved"}
    assert [(s["stage"], s["cases"]) for s in f["stages"]] == [
        ("reported", 8), ("routed", 8), ("dispatched", 8), ("acknowledged", 6),
        ("resolved", 5), ("closed", 5)]
    assert f["by_tier"] == {"compound": 5, "area": 1, "community": 1, "street": 1,
                            "district": 0, "unrouted": 1}
    assert f["open_by_tier"] == {"compound": 3, "area": 0, "community": 0, "street": 0,
                                 "district": 0, "unrouted": 0}
    assert f["by_department"] == {
        "fire": {"pending": 0, "dispatched": 1, "acknowledged": 0, "resolved": 1, "returned": 0},
        "justice": {"pending": 0, "dispatched": 0, "acknowledged": 0, "resolved": 1,
                    "returned": 0},
        "police": {"pending": 0, "dispatched": 1, "acknowledged": 0, "resolved": 2,
                   "returned": 1},
        "sanitation": {"pending": 0, "dispatched": 1, "acknowledged": 0, "resolved": 3,
                       "returned": 0},
        "urban_mgmt": {"pending": 0, "dispatched": 0, "acknowledged": 0, "resolved": 2,
                       "returned": 0},
    }
    assert f["path"] == [{"code": "511802", "name": "雨城区", "level": "district",
                          "level_zh": "区"}]
    assert [(g["code"], g["name"], g["total"], g["open"]) for g in f["by_grid"]] == [
        (QINGJIANG, "青江街道", 5, 2), (HEBEI, "河北街道", 4, 1), (DONGCHENG, "东城街道", 0, 0)]
    assert f["elsewhere"] == {"total": 0, "open": 0}
    by_code = _get(api, "/api/v1/stats/funnel", grid="511802")
    assert {**by_code, "filters": None} == {**f, "filters": None}

    f = _get(api, "/api/v1/stats/funnel", grid=QINGJIANG)
    assert [p["code"] for p in f["path"]] == ["511802", QINGJIANG]
    assert [(g["code"], g["name"], g["tier"], g["total"], g["open"]) for g in f["by_grid"]] == [
        (TONGZILIN, "桐梓林社区", "community", 3, 1), (HEPING, "和平社区", "community", 2, 1)]
    f = _get(api, "/api/v1/stats/funnel", grid=TONGZILIN)
    assert [(p["name"], p["level"]) for p in f["path"]] == [
        ("雨城区", "district"), ("青江街道", "street"), ("桐梓林社区", "community")]
    assert [(g["code"], g["total"], g["open"], g["leaf"]) for g in f["by_grid"]] == [
        ("5118020010011", 3, 1, False), ("5118020010012", 0, 0, False)]
    f = _get(api, "/api/v1/stats/funnel", grid="5118020010011")
    assert [(g["code"], g["total"], g["open"]) for g in f["by_grid"]] == [(A, 2, 1), (B, 1, 0)]
    f = _get(api, "/api/v1/stats/funnel", grid=A)  # a cell: its buildings; C0, C5 have none
    assert all(g["total"] == 0 and g["leaf"] for g in f["by_grid"])
    assert f["elsewhere"] == {"total": 2, "open": 1}
    # in the period, for one department: 青江街道's cases police is on (C1, C5)
    f = _get(api, "/api/v1/stats/funnel", grid=QINGJIANG, department="police", **PERIOD)
    assert {k: v for k, v in f["by_state"].items() if v} == {"closed": 1, "in_progress": 1}
    assert f["by_department"] == {"police": {"pending": 0, "dispatched": 0, "acknowledged": 0,
                                             "resolved": 1, "returned": 1}}

    # -- bad query strings name the field
    for params, field in [
        ({"since": "yesterday"}, "since"), ({"since": "2026-11-23T00:00:00"}, "since"),
        ({"until": T0.isoformat(), "since": UNTIL.isoformat()}, "until"),
        ({"grid": "5118%"}, "grid"), ({"grid": "511809"}, "grid"),
        ({"department": "nobody"}, "department"), ({"top": "0"}, "top"),
        ({"colour": "red"}, "colour"),
    ]:
        r = api.get("/api/v1/stats/measures", params=params)
        assert r.status_code == 422 and field in r.json()["errors"], (params, r.text)
    r = api.get("/api/v1/stats/funnel", params={"top": 3})
    assert r.status_code == 422 and "top" in r.json()["errors"]
    r = api.get("/api/v1/stats/funnel", params={"grid": "1"})
    assert r.status_code == 422 and "grid" in r.json()["errors"]
    assert d.ids["C6"]  # the duplicate was registered


def test_the_rpc_methods_answer_over_the_broker(
    district: District, api: requests.Session, rabbit_config: dict[str, Any]
) -> None:
    d = district
    with ServiceRpcProxy("intake", {"AMQP_URI": rabbit_config["AMQP_URI"]},
                         timeout=30) as intake:
        m = intake.measures(**PERIOD)
        assert _rates(m) == EXPECTED_RATES
        assert m == _get(api, "/api/v1/stats/measures", **PERIOD)  # one answer, two doors
        assert intake.measures(since=None, grid=None) == _get(api, "/api/v1/stats/measures")

        f = intake.funnel(grid=HEBEI, since=T0.isoformat())
        assert f == _get(api, "/api/v1/stats/funnel", grid=HEBEI, since=T0.isoformat())
        assert [(g["code"], g["name"], g["total"], g["open"]) for g in f["by_grid"]] == [
            ("511802002001", "康藏路社区", 4, 1), ("511802002002", "苍坪社区", 0, 0)]

        page = intake.cases()
        assert page["total"] == 9 and page["limit"] == 50 and page["offset"] == 0
        newest_first = ["C8", "C7", "C6", "C5", "C4", "C3", "C2", "C1", "C0"]
        assert [i["case_id"] for i in page["items"]] == [d.ids[k] for k in newest_first]
        c8 = page["items"][0]
        assert (c8["state"], c8["tier"], c8["category"], c8["category_name"]) == (
            "dispatched", "compound", "E0505", "噪音扰民")
        assert (c8["grid_code"], c8["grid_name"]) == (CC, "正黄美食风情街商住区")
        assert c8["reported_at"] == (UNTIL + timedelta(hours=1)).isoformat()
        assert c8["escalations"] == 0 and c8["updated_at"]

        opened = intake.cases(state="open", grid=QINGJIANG)
        assert [i["case_id"] for i in opened["items"]] == [d.ids["C8"], d.ids["C5"]]
        listed = intake.cases(tier="compound", limit=2, offset=1, **PERIOD)
        assert listed["total"] == 3  # C7, C5, C2 (C0 and C8 are outside the period)
        assert [i["case_id"] for i in listed["items"]] == [d.ids["C5"], d.ids["C2"]]
        assert intake.cases(tier="unrouted")["items"][0]["duplicate_of"] == d.ids["C3"]
        assert intake.cases(department="justice", state="closed")["total"] == 1
        assert intake.cases(limit=1000)["limit"] == 200  # capped

        case = intake.case(d.ids["C4"])
        assert case == _get(api, f"/api/v1/cases/{d.ids['C4']}")
        assert case["state"] == "closed"
        assert [a["reworks"] for a in case["assignments"]] == [1]
        assert intake.case("20261123-999999") is None
        assert intake.case("x" * 65) is None

        for kwargs, field in [
            ({"since": "yesterday"}, "since"), ({"grid": "511809"}, "grid"),
            ({"until": T0.isoformat(), "since": UNTIL.isoformat()}, "until"),
            ({"department": 7}, "department"), ({"colour": "red"}, "colour"),
        ]:
            with pytest.raises(RemoteError) as err:
                intake.measures(**kwargs)
            assert err.value.exc_type == "InvalidFilters"
            assert field in json.loads(err.value.value), (kwargs, err.value.value)
        for kwargs, field in [({"state": "lost"}, "state"), ({"limit": 0}, "limit"),
                              ({"tier": "building"}, "tier"), ({"offset": -1}, "offset")]:
            with pytest.raises(RemoteError) as err:
                intake.cases(**kwargs)
            assert field in json.loads(err.value.value), (kwargs, err.value.value)
        with pytest.raises(RemoteError) as err:
            intake.funnel(limit=3)
        assert "limit" in json.loads(err.value.value)
