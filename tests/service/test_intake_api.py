"""The intake service over HTTP, on the real broker and database (SQLite and PostgreSQL).

Most tests run intake alone: nothing consumes ``gridflow.routing``, so every
``case.reported`` intake publishes waits there to be counted. Because the outbox relay
publishes in commit order, a *marker* report posted last proves that nothing else is still
on its way once the marker has arrived.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import eventlet
import pytest
import requests

from services.escalation.service import EscalationService
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.clock import FakeClock
from support import (
    DEMO_BUILDING,
    DEMO_CELL,
    bearer,
    get_messages,
    message_json,
    report,
    wait_for,
)

ROUTING_QUEUE = "gridflow.routing"
STREET = "511802001"  # 青江街道
OTHER_STREET = "511802002"  # 河北街道
OTHER_CELL = "511802001001201"  # a cell of 桐梓林社区 outside DEMO_CELL's area
COMMUNITY = "511802001001"  # 桐梓林社区
INSIDE_TONGGONG = {"lat": 29.9725, "lng": 102.9975}  # inside 通工小区, between its buildings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2026-11-23 09:00 in 雨城区


@pytest.fixture
def intake(run_services: Any, clock: FakeClock) -> Any:
    return run_services(IntakeService, clock=clock)["intake"]


class Published:
    """What intake published to gridflow.routing, read as it arrives."""

    def __init__(self, amqp_uri: str) -> None:
        self.amqp_uri = amqp_uri
        self.messages: list[Any] = []

    def report_ids(self) -> list[str]:
        self.messages += get_messages(self.amqp_uri, ROUTING_QUEUE)
        return [message_json(m)["data"]["report_id"] for m in self.messages]

    def until_marker(self, api: requests.Session, marker: str) -> list[str]:
        """Post a valid report and wait for its event; everything before it has arrived."""
        # a category no other report of these tests uses: the marker is never a duplicate
        r = api.post("/api/v1/reports", json=report(marker, "C0601"))
        assert r.status_code == 201, r.text
        wait_for(lambda: marker in self.report_ids(), what=f"case.reported of {marker}")
        ids = self.report_ids()
        return ids[: ids.index(marker)]


@pytest.fixture
def published(amqp_uri: str) -> Published:
    return Published(amqp_uri)


def total_cases(api: requests.Session) -> int:
    r = api.get("/api/v1/cases")
    assert r.status_code == 200, r.text
    return r.json()["total"]


# -- reports ----------------------------------------------------------------------------------
def test_report_creates_a_case_and_publishes_case_reported(
    intake: Any, api: requests.Session, published: Published
) -> None:
    r = api.post(
        "/api/v1/reports", json=report("r-1", "E0101", media_urls=["https://img.example/a.jpg"])
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body == {
        "case_id": "20261123-000001",
        "created": True,
        "state": "reported",
        "links": {"self": "/api/v1/cases/20261123-000001"},
    }

    case = api.get("/api/v1/cases/20261123-000001").json()
    assert case["state"] == "reported" and case["category"] == "E0101"
    assert case["grid_code"] == DEMO_CELL and case["reported_at"].startswith("2026-11-23T01:00")
    assert [t["kind"] for t in case["timeline"]] == ["reported"]

    wait_for(published.report_ids, what="case.reported")
    (msg,) = published.messages
    event = message_json(msg)
    assert msg.properties["type"] == "case.reported"
    assert msg.properties["message_id"] == event["event_id"]
    assert msg.properties["delivery_mode"] == 2
    assert event["case_id"] == "20261123-000001" and event["producer"] == "intake"
    summary = event["data"]["case"]
    assert summary["category"] == "E0101" and summary["category_name"] == "暴露垃圾"
    assert summary["location"]["grid_code"] == DEMO_CELL
    assert summary["location"]["path"] == [
        "雨城区",
        "青江街道",
        "桐梓林社区",
        "桐梓林一片区",
        "通工小区",
    ]
    assert summary["media_urls"] == ["https://img.example/a.jpg"]
    assert summary["reporter"]["kind"] == "grid_worker"


def test_same_report_again_returns_the_same_case_and_publishes_once(
    intake: Any, api: requests.Session, published: Published
) -> None:
    body = report("r-1")
    first = api.post("/api/v1/reports", json=body)
    assert first.status_code == 201, first.text
    case_id = first.json()["case_id"]

    again = api.post("/api/v1/reports", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == {"case_id": case_id, "created": False, "state": "reported"}
    reordered = api.post("/api/v1/reports", json=dict(reversed(list(body.items()))))
    assert reordered.status_code == 200 and reordered.json()["case_id"] == case_id

    assert published.until_marker(api, "marker") == ["r-1"]  # one case.reported, not three
    assert total_cases(api) == 2


def test_same_report_id_with_a_different_body_is_a_conflict(
    intake: Any, api: requests.Session, published: Published
) -> None:
    case_id = api.post("/api/v1/reports", json=report("r-1")).json()["case_id"]
    r = api.post("/api/v1/reports", json=report("r-1", description="另一件事"))
    assert r.status_code == 409, r.text
    (message,) = r.json()["errors"]["report_id"]
    assert case_id in message and "different body" in message
    case = api.get(f"/api/v1/cases/{case_id}").json()
    assert case["description"] == "消防通道被私家车堵塞"  # the first report stands
    assert published.until_marker(api, "marker") == ["r-1"]


def test_concurrent_posts_of_one_report_make_one_case(
    intake: Any, api: requests.Session, published: Published, http_port: int
) -> None:
    body = report("r-race")
    auth = api.auth_header()

    def post(_: int) -> tuple[int, str]:
        with requests.Session() as s:
            r = s.post(f"http://127.0.0.1:{http_port}/api/v1/reports", json=body, timeout=10,
                       headers=auth)
            return r.status_code, r.json().get("case_id", r.text)

    results = list(eventlet.GreenPool(8).imap(post, range(8)))
    assert Counter(status for status, _ in results) == {201: 1, 200: 7}, results
    assert len({case_id for _, case_id in results}) == 1
    assert published.until_marker(api, "marker") == ["r-race"]
    assert total_cases(api) == 2


def _without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


GOOD = report("r-1")
BY_POINT = _without(GOOD, "grid_code")
INVALID: list[tuple[str, Any, int, set[str]]] = [
    # (what, body: bytes are sent as they are, anything else as JSON, status, fields named)
    ("not JSON", b'{"report_id": "r-1",', 400, {"_body"}),
    ("not UTF-8", b'{"report_id": "\xff"}', 400, {"_body"}),
    ("empty body", b"", 400, {"_body"}),
    ("a JSON array", [GOOD], 422, {"_body"}),
    ("JSON null", b"null", 422, {"_body"}),
    ("missing fields", {"report_id": "r-1"}, 422, {"category", "description", "reporter"}),
    ("missing report_id", _without(GOOD, "report_id"), 422, {"report_id"}),
    ("no place at all", BY_POINT, 422, {"grid_code"}),
    ("description not a string", report("r-1", description=123), 422, {"description"}),
    ("grid_code a number", report("r-1", grid_code=511802001001101), 422, {"grid_code"}),
    ("reporter a string", report("r-1", reporter="邓海燕"), 422, {"reporter"}),
    ("lat not a number", {**BY_POINT, "lat": "north", "lng": 103.0}, 422, {"lat"}),
    (
        "media_urls not a list",
        report("r-1", media_urls="https://img.example/a.jpg"),
        422,
        {"media_urls"},
    ),
    ("unknown field", report("r-1", priority="high"), 422, {"priority"}),
    (
        "unknown reporter field",
        report("r-1", reporter={"kind": "app", "age": 3}),
        422,
        {"reporter"},
    ),
    ("bad report_id", report("r 1/../x"), 422, {"report_id"}),
    ("blank description", report("r-1", description="   "), 422, {"description"}),
    ("oversize description", report("r-1", description="堵" * 2001), 422, {"description"}),
    ("unknown reporter kind", report("r-1", reporter={"kind": "alien"}), 422, {"reporter"}),
    ("bad phone", report("r-1", reporter={"kind": "app", "phone": "call me"}), 422, {"reporter"}),
    ("ftp media url", report("r-1", media_urls=["ftp://img/a.jpg"]), 422, {"media_urls"}),
    (
        "11 media urls",
        report("r-1", media_urls=[f"https://img.example/{i}" for i in range(11)]),
        422,
        {"media_urls"},
    ),
    ("naive occurred_at", report("r-1", occurred_at="2026-11-23T08:00:00"), 422, {"occurred_at"}),
    (
        "future occurred_at",
        report("r-1", occurred_at="2026-11-24T08:00:00+08:00"),
        422,
        {"occurred_at"},
    ),
    ("unknown category", report("r-1", "E9999"), 422, {"category"}),
    ("unknown grid", report("r-1", grid_code="511802009009109"), 422, {"grid_code"}),
    ("community-level code", report("r-1", grid_code=COMMUNITY), 422, {"grid_code"}),
    ("street-level code", report("r-1", grid_code=STREET), 422, {"grid_code"}),
    ("point outside every cell", {**BY_POINT, "lat": 31.0, "lng": 104.0}, 422, {"lat", "lng"}),
    ("lat without lng", {**BY_POINT, "lat": 29.9725}, 422, {"lng"}),
    ("lng without lat", {**BY_POINT, "lng": 102.9975}, 422, {"lat"}),
    ("lat out of range", {**BY_POINT, "lat": 91, "lng": 102.9975}, 422, {"lat"}),
    ("grid_code null", report("r-1", grid_code=None), 422, {"grid_code"}),
]


def test_invalid_reports_are_rejected_naming_the_field_and_nothing_is_kept(
    intake: Any, api: requests.Session, published: Published
) -> None:
    wrong = []
    for what, body, status, fields in INVALID:
        if isinstance(body, bytes):
            r = api.post("/api/v1/reports", data=body, headers={"Content-Type": "application/json"})
        else:
            r = api.post("/api/v1/reports", json=body)
        try:
            errors = r.json()["errors"]
        except (ValueError, KeyError, TypeError):
            errors = None
        named = set(errors) if isinstance(errors, dict) else None
        ok = (
            r.status_code == status
            and named == fields
            and all(isinstance(v, (list, dict)) and v for v in errors.values())
        )
        if not ok:
            wrong.append((what, r.status_code, r.text[:300]))
    assert wrong == []

    assert total_cases(api) == 0
    assert published.report_ids() == []
    assert published.until_marker(api, "marker") == []  # nothing was on its way either


def test_bulk_stores_the_valid_reports_answers_each_one_and_publishes_once(
    intake: Any, api: requests.Session, published: Published
) -> None:
    a, b = report("b-1", "E0801"), report("b-2", "C0101")
    body = {"reports": [a, b, a, {**a, "description": "另一件事"},
                        report("b-3", "ZZZ"), 7, {**report("b-4"), "extra": 1}]}
    r = api.post("/api/v1/reports/bulk", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["status"] for x in out["results"]] == [201, 201, 200, 409, 422, 422, 422]
    assert [x["index"] for x in out["results"]] == list(range(7))
    first, second, again, conflict, unknown, not_object, extra = out["results"]
    assert again["case_id"] == first["case_id"] and again["created"] is False
    assert second["case_id"] != first["case_id"]
    assert first["case_id"] in conflict["errors"]["report_id"][0]
    assert "unknown category 'ZZZ'" in unknown["errors"]["category"][0]
    assert not_object["errors"] == {"_item": ["expected a JSON object: a report"]}
    assert extra["errors"] == {"extra": ["Unknown field."]}
    assert (out["created"], out["existing"], out["rejected"]) == (2, 1, 4)
    assert total_cases(api) == 2
    assert published.until_marker(api, "marker") == ["b-1", "b-2"]
    # the same bulk again changes nothing: every report answers its case
    again = api.post("/api/v1/reports/bulk", json={"reports": [a, b]}).json()
    assert [x["status"] for x in again["results"]] == [200, 200]
    assert total_cases(api) == 3  # with the marker


def test_bulk_finds_duplicates_within_itself_and_is_one_audited_request(
    intake: Any, api: requests.Session, published: Published
) -> None:
    r = api.post("/api/v1/reports/bulk", json={"reports": [report("d-1"), report("d-2")]})
    first, second = r.json()["results"]
    assert (first["status"], second["status"]) == (201, 201)
    assert second["duplicate_of"] == first["case_id"]  # the same lane, minutes apart
    assert published.until_marker(api, "marker") == ["d-1"]  # a duplicate is not routed
    entries = api.get("/api/v1/audit?action=post_reports").json()["entries"]
    assert len(entries) == 1 and entries[0]["outcome"] == "done"


@pytest.mark.parametrize("body, field, reason", [
    ({"reports": []}, "reports", "Length must be between 1 and 200."),
    ({"reports": [report(f"n-{i}") for i in range(201)]}, "reports",
     "Length must be between 1 and 200."),
    ({"reports": report("n-x")}, "reports", "Not a valid list."),
    ({}, "reports", "Missing data for required field."),
    ({"reports": [report("n-y")], "more": 1}, "more", "Unknown field."),
])
def test_a_bulk_that_is_not_a_list_of_reports_is_refused_whole(
    intake: Any, api: requests.Session, published: Published, body: Any, field: str,
    reason: str,
) -> None:
    r = api.post("/api/v1/reports/bulk", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][field] == [reason]
    assert total_cases(api) == 0
    assert published.until_marker(api, "marker") == []


def test_a_patrol_apps_bulk_keeps_to_its_grid(
    intake: Any, api: requests.Session, published: Published
) -> None:
    patrol = bearer(api.key("patrol_app", grid="5118020010011"))  # DEMO_CELL's area
    inside, outside = report("p-1", "E0801"), report("p-2", "E0801", grid_code=OTHER_CELL)
    r = api.post("/api/v1/reports/bulk", json={"reports": [inside, outside]}, headers=patrol)
    ok, refused = r.json()["results"]
    assert ok["status"] == 201
    assert refused["status"] == 403 and OTHER_CELL in refused["errors"]["_auth"][0]
    assert published.until_marker(api, "marker") == ["p-1"]


def test_body_over_256_kb_is_rejected_with_413(
    intake: Any, api: requests.Session, published: Published
) -> None:
    big = report("r-big", description="x" * (300 * 1024))
    r = api.post("/api/v1/reports", json=big)
    assert r.status_code == 413, r.text
    assert "body larger than 262144 bytes" in r.json()["errors"]["_request"][0]
    assert total_cases(api) == 0
    assert published.until_marker(api, "marker") == []


def _chunked(data: bytes, size: int = 64 * 1024) -> Any:
    """A request body without Content-Length (Transfer-Encoding: chunked)."""
    return iter([data[i : i + size] for i in range(0, len(data), size)])


def test_chunked_bodies_are_read_and_capped(
    intake: Any, api: requests.Session, published: Published
) -> None:
    headers = {"Content-Type": "application/json"}
    data = json.dumps(report("r-chunked")).encode()
    r = api.post("/api/v1/reports", data=_chunked(data, 50), headers=headers)
    assert r.status_code == 201, r.text

    big = json.dumps(report("r-big", description="x" * (300 * 1024))).encode()
    r = api.post("/api/v1/reports", data=_chunked(big), headers=headers)
    assert r.status_code == 413, r.text
    assert published.until_marker(api, "marker") == ["r-chunked"]


def test_report_by_point_resolves_the_cell(
    intake: Any, api: requests.Session, published: Published
) -> None:
    body = {k: v for k, v in report("r-gps").items() if k != "grid_code"}
    r = api.post("/api/v1/reports", json={**body, **INSIDE_TONGGONG})
    assert r.status_code == 201, r.text
    case = api.get(f"/api/v1/cases/{r.json()['case_id']}").json()
    assert case["grid_code"] == DEMO_CELL == "511802001001101"
    assert case["building_code"] is None
    assert case["location"] == {"grid_code": DEMO_CELL, "building_code": None, **INSIDE_TONGGONG}

    wait_for(published.report_ids, what="case.reported")
    location = message_json(published.messages[0])["data"]["case"]["location"]
    assert location["grid_code"] == DEMO_CELL and location["grid_name"] == "通工小区"
    assert (location["lat"], location["lng"]) == (29.9725, 102.9975)


def test_report_by_building_code_names_cell_and_building(
    intake: Any, api: requests.Session
) -> None:
    r = api.post("/api/v1/reports", json=report("r-bldg", grid_code=DEMO_BUILDING))
    assert r.status_code == 201, r.text
    case = api.get(f"/api/v1/cases/{r.json()['case_id']}").json()
    assert (case["grid_code"], case["building_code"]) == (DEMO_CELL, DEMO_BUILDING)


# -- reference data ---------------------------------------------------------------------------
def test_categories_list_both_families_and_the_departments(
    intake: Any, api: requests.Session
) -> None:
    r = api.get("/api/v1/categories")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"]
    departments = {d["code"]: d["name"] for d in body["departments"]}
    assert all(departments.values())
    assert departments["sanitation"] == "区环境卫生服务中心"
    categories = {c["code"]: c for c in body["categories"]}
    assert len(categories) >= 24
    assert {c["family"] for c in categories.values()} == {"component", "event"}
    for c in categories.values():
        assert c["name"] and c["major"]["name"]
        assert {c["lead"], *c["assist"]} <= set(departments), c["code"]
    garbage, fire_lane = categories["E0101"], categories["E0402"]
    assert (garbage["name"], garbage["lead"], garbage["assist"]) == ("暴露垃圾", "sanitation", [])
    assert (fire_lane["name"], fire_lane["lead"]) == ("消防通道堵塞", "fire")
    assert fire_lane["assist"] == ["police", "urban_mgmt"]
    assert garbage["deadlines"]["report_in"] and garbage["deadlines"]["resolve"]


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("children", []) for n in _walk(child))]


def test_grids_full_tree_and_a_subtree(intake: Any, api: requests.Session) -> None:
    r = api.get("/api/v1/grids")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [lv["name"] for lv in body["levels"]] == [
        "district",
        "street",
        "community",
        "area",
        "compound",
        "building",
    ]
    assert body["levels"][3] == {"name": "area", "name_zh": "片区"}
    assert body["cell_level"] == "compound"
    tree = body["tree"]
    assert (tree["code"], tree["name"], tree["parent"]) == ("511802", "雨城区", None)
    nodes = {n["code"]: n for n in _walk(tree)}
    cell = nodes[DEMO_CELL]
    assert cell["name"] == "通工小区" and cell["level"] == "compound"
    assert cell["parent"] == "5118020010011"
    assert cell["polygon"] == [
        [102.996, 29.972],
        [103.001, 29.972],
        [103.001, 29.975],
        [102.996, 29.975],
    ]
    assert nodes[DEMO_BUILDING]["level"] == "building"  # the whole tree, buildings included
    assert nodes[STREET]["name"] == "青江街道" and nodes[COMMUNITY]["name"] == "桐梓林社区"
    assert sum(n["level"] == "compound" for n in nodes.values()) == 20

    r = api.get("/api/v1/grids", params={"code": COMMUNITY, "depth": 1})
    assert r.status_code == 200, r.text
    sub = r.json()["tree"]
    assert (sub["code"], sub["name"], sub["level"]) == (COMMUNITY, "桐梓林社区", "community")
    assert sub["parent"] == STREET and sub["owner"]["role"] == "社区党委书记"
    assert [c["code"] for c in sub["children"]] == ["5118020010011", "5118020010012"]
    assert all("children" not in c for c in sub["children"])  # one level only

    r = api.get("/api/v1/grids", params={"code": DEMO_CELL, "depth": 0})
    assert r.json()["tree"]["code"] == DEMO_CELL and "children" not in r.json()["tree"]

    r = api.get("/api/v1/grids", params={"code": "511802009"})
    assert r.status_code == 404 and "511802009" in r.json()["errors"]["code"][0]
    r = api.get("/api/v1/grids", params={"code": "abc"})
    assert r.status_code == 422 and "code" in r.json()["errors"]
    r = api.get("/api/v1/grids", params={"depth": -1})
    assert r.status_code == 422 and "depth" in r.json()["errors"]


# -- cases ------------------------------------------------------------------------------------
def test_unknown_case_is_404_for_reads_and_actions(intake: Any, api: requests.Session) -> None:
    unknown = "20261123-999999"
    r = api.get(f"/api/v1/cases/{unknown}")
    assert r.status_code == 404 and unknown in r.json()["errors"]["case_id"][0]
    base = f"/api/v1/cases/{unknown}/assignments/sanitation"
    r = api.post(f"{base}/ack", json={"actor": "王师傅"})
    assert r.status_code == 404 and "case_id" in r.json()["errors"]
    r = api.post(f"{base}/ack")  # no body at all
    assert r.status_code == 404
    r = api.post(f"{base}/resolve", json={"note": "清运完毕"})
    assert r.status_code == 404 and "case_id" in r.json()["errors"]


def test_case_list_filters_pages_and_orders_newest_first(
    run_services: Any, api: requests.Session, clock: FakeClock
) -> None:
    run_services(IntakeService, RoutingService, EscalationService, NotifyService, clock=clock)
    plan = [  # (report id, category, cell)
        ("r-1", "E0101", DEMO_CELL),  # 暴露垃圾 → sanitation; 青江街道
        ("r-2", "E0402", "511802002001101"),  # 消防通道堵塞 → fire, police, urban_mgmt; 河北街道
        ("r-3", "E0101", "511802002001102"),  # 河北街道
        ("r-4", "E0402", "511802001001102"),  # 青江街道, 桐梓林社区
        ("r-5", "E0101", "511802001002101"),  # 青江街道, 和平社区
    ]
    ids: dict[str, str] = {}
    for report_id, category, cell in plan:
        r = api.post("/api/v1/reports", json=report(report_id, category, grid_code=cell))
        assert r.status_code == 201, r.text
        ids[report_id] = r.json()["case_id"]
        clock.advance(timedelta(minutes=1))

    def all_dispatched() -> bool:
        items = api.get("/api/v1/cases", params={"state": "dispatched"}).json()["items"]
        return len(items) == len(plan)

    wait_for(all_dispatched, timeout=15, what="every case dispatched")
    r = api.post(f"/api/v1/cases/{ids['r-3']}/assignments/sanitation/ack", json={})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged", r.text

    def listed(**params: Any) -> list[str]:
        r = api.get("/api/v1/cases", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        back = {v: k for k, v in ids.items()}
        return [back[item["case_id"]] for item in body["items"]]

    assert listed() == ["r-5", "r-4", "r-3", "r-2", "r-1"]  # newest first
    assert listed(state="acknowledged") == ["r-3"]
    assert listed(state="dispatched") == ["r-5", "r-4", "r-2", "r-1"]
    assert listed(state="resolved") == []
    assert listed(grid=STREET) == ["r-5", "r-4", "r-1"]
    assert listed(grid=OTHER_STREET) == ["r-3", "r-2"]
    assert listed(grid=COMMUNITY) == ["r-4", "r-1"]
    assert listed(grid=DEMO_CELL) == ["r-1"]
    assert listed(department="sanitation") == ["r-5", "r-3", "r-1"]
    assert listed(department="police") == ["r-4", "r-2"]
    assert listed(department="gas") == []
    assert listed(department="sanitation", grid=STREET) == ["r-5", "r-1"]
    assert listed(department="sanitation", state="dispatched", grid=STREET) == ["r-5", "r-1"]

    pages = [
        api.get("/api/v1/cases", params={"per_page": 2, "page": p}).json() for p in (1, 2, 3, 4)
    ]
    assert [len(p["items"]) for p in pages] == [2, 2, 1, 0]
    assert all(p["total"] == 5 and p["per_page"] == 2 for p in pages)
    assert [p["page"] for p in pages] == [1, 2, 3, 4]
    flat = [item["case_id"] for p in pages for item in p["items"]]
    assert flat == [ids[k] for k in ("r-5", "r-4", "r-3", "r-2", "r-1")]
    filtered = api.get("/api/v1/cases", params={"grid": STREET, "per_page": 2, "page": 2}).json()
    assert filtered["total"] == 3 and [i["case_id"] for i in filtered["items"]] == [ids["r-1"]]

    item = api.get("/api/v1/cases", params={"department": "police", "per_page": 1}).json()
    summary = item["items"][0]
    assert summary["case_id"] == ids["r-4"] and summary["state"] == "dispatched"
    assert summary["departments"] == ["fire", "police", "urban_mgmt"]
    assert summary["grid_code"] == "511802001001102"

    assert api.get("/api/v1/cases", params={"per_page": 100}).status_code == 200
    for params, field in [
        ({"per_page": 101}, "per_page"),
        ({"per_page": 0}, "per_page"),
        ({"page": 0}, "page"),
        ({"page": "two"}, "page"),
        ({"state": "lost"}, "state"),
        ({"grid": "5118%"}, "grid"),
        ({"department": "x" * 65}, "department"),
    ]:
        r = api.get("/api/v1/cases", params=params)
        assert r.status_code == 422 and field in r.json()["errors"], (params, r.text)
