"""Open311 GeoReport v2 at intake (``/open311/v2/``) with intake, routing and notify on the
real broker and database (SQLite and PostgreSQL): every endpoint in JSON and XML; errors
400, 403 and 404 as the spec has them; a request posted through Open311 reaches the lead
department's dispatch queue like any other report; a retried POST is the same request;
no GET shows a reporter."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
import requests

from services.intake.open311 import PLURALS
from services.intake.service import IntakeService
from services.notify.service import NotifyService
from services.routing.service import RoutingService
from shared.clock import FakeClock
from support import DEMO_CELL, bearer, get_messages, message_json, report, wait_for

V2 = "/open311/v2"
FORMATS = ("json", "xml")
NO_KEY = {"Authorization": None}  # the GETs are public: no key is sent
INSIDE_TONGGONG = {"lat": "29.9725", "long": "102.9975"}  # 通工小区, between its buildings
TONGGONG_1 = "511802001001101001"
OTHER_CELL = "511802002001101"  # 新安巷大院, 河北街道


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()  # Monday 2026-11-23 09:00 in 雨城区


@pytest.fixture
def intake(run_services: Any, clock: FakeClock) -> Any:
    return run_services(IntakeService, RoutingService, NotifyService, clock=clock)["intake"]


@pytest.fixture
def patrol(api: Any) -> str:
    return api.key("patrol_app", client="市民随手拍 (Open311)")


def spark(e: ET.Element) -> Any:
    """XML → JSON by the Spark convention (a plural element holds a list)."""
    if e.tag in PLURALS:
        return [spark(c) for c in e]
    if len(e):
        return {c.tag: spark(c) for c in e}
    return e.text


def get(api: Any, path: str, fmt: str, **params: Any) -> requests.Response:
    return api.get(f"{V2}/{path}.{fmt}", params=params, headers=NO_KEY)


def post(api: Any, fmt: str, form: dict[str, Any]) -> requests.Response:
    return api.post(f"{V2}/requests.{fmt}", data=form, headers=NO_KEY)


def body(r: requests.Response, fmt: str) -> Any:
    """The answer, checked for its format's content type; XML read as JSON (Spark), its
    root element returned alongside."""
    if fmt == "json":
        assert r.headers["Content-Type"] == "application/json; charset=utf-8", r.headers
        return r.json()
    assert r.headers["Content-Type"] == "text/xml; charset=utf-8", r.headers
    assert r.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(r.content)
    return root.tag, spark(root)


def errors(r: requests.Response, fmt: str, status: int) -> list[str]:
    """The descriptions of an Open311 error answer: ``[{code, description}]`` or
    ``<errors><error><code/><description/></error></errors>``."""
    assert r.status_code == status, (r.status_code, r.text)
    got = body(r, fmt)
    if fmt == "xml":
        root, got = got
        assert root == "errors"
        got = [{**e, "code": int(e["code"])} for e in got]
    assert got and all(set(e) == {"code", "description"} and e["code"] == status for e in got)
    return [e["description"] for e in got]


def requests_of(r: requests.Response, fmt: str) -> list[dict[str, Any]]:
    assert r.status_code in (200, 201), r.text
    got = body(r, fmt)
    if fmt == "xml":
        root, got = got
        assert root == "service_requests"
    return got


def a_form(key: str, **overrides: Any) -> dict[str, Any]:
    """The spec's example request, in 雨城区: a blocked fire lane (fire leads, police and
    urban management assist) in 通工小区."""
    out = {
        "api_key": key, "jurisdiction_id": "511802", "service_code": "E0402",
        **INSIDE_TONGGONG, "address_string": "3单元门口", "email": "resident@example.org",
        "device_id": "tt222111", "account_id": "123456", "first_name": "海燕",
        "last_name": "邓", "phone": "13800000001", "description": "消防通道被私家车堵塞",
        "media_url": "https://img.example/2212426634.jpg",
        "attribute[severity]": "urgent", "attribute[impact][]": ["traffic", "safety"],
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not ...}


# -- discovery, services, service definitions -------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_discovery_services_and_service_definitions(intake: Any, api: Any, fmt: str,
                                                    http_port: int) -> None:
    r = get(api, "discovery", fmt)
    assert r.status_code == 200
    doc = body(r, fmt)
    if fmt == "xml":
        root, doc = doc
        assert root == "discovery"
    (endpoint,) = doc["endpoints"]
    assert endpoint["url"] == f"http://127.0.0.1:{http_port}/open311/v2"
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["formats"] == ["text/xml", "application/json"]
    assert set(doc) == {"changeset", "contact", "key_service", "endpoints"}

    r = get(api, "services", fmt, jurisdiction_id="511802")
    assert r.status_code == 200
    services = body(r, fmt)
    if fmt == "xml":
        root, services = services
        assert root == "services"
    assert len(services) == 39
    lane = next(s for s in services if s["service_code"] == "E0402")
    assert set(lane) == {"service_code", "service_name", "description", "metadata", "type",
                         "keywords", "group"}
    assert lane["service_name"] == "消防通道堵塞" and lane["type"] == "realtime"
    assert lane["metadata"] in (True, "true") and lane["group"]

    r = get(api, "services/C0101", fmt)
    assert r.status_code == 200
    definition = body(r, fmt)
    if fmt == "xml":
        root, definition = definition
        assert root == "service_definition"
    assert definition["service_code"] == "C0101"
    codes = [a["code"] for a in definition["attributes"]]
    assert codes == ["severity", "occurred_at", "impact", "location_detail", "asset_code",
                     "quantity"]
    severity = definition["attributes"][0]
    assert severity["datatype"] == "singlevaluelist"
    assert [v["key"] for v in severity["values"]] == ["normal", "urgent"]

    assert "no service 'X9999'" in errors(get(api, "services/X9999", fmt), fmt, 404)[0]
    assert "jurisdiction_id" in errors(get(api, "services", fmt, jurisdiction_id="city.gov"),
                                       fmt, 404)[0]


# -- POST requests: the pipeline, retries, tokens ---------------------------------------------
def test_a_request_posted_through_open311_reaches_the_lead_departments_dispatch_queue(
    intake: Any, api: Any, patrol: str, rabbit_config: dict[str, Any], clock: FakeClock
) -> None:
    r = post(api, "json", a_form(patrol))
    assert r.status_code == 201, r.text
    (created,) = r.json()
    assert set(created) == {"service_request_id", "token", "service_notice", "account_id"}
    case_id, token = created["service_request_id"], created["token"]
    assert created["account_id"] == "123456"
    assert created["service_notice"].startswith("区消防救援大队")

    amqp = rabbit_config["AMQP_URI"]
    msgs = wait_for(lambda: get_messages(amqp, "dispatch.fire"), what="fire's assignment")
    (msg,) = msgs
    event = message_json(msg)
    assert msg.properties["type"] == "case.assigned" and event["case_id"] == case_id
    assert event["data"]["assignment"]["role"] == "lead"
    case = event["data"]["case"]
    assert case["category"] == "E0402" and case["location"]["grid_code"] == DEMO_CELL
    assert case["description"] == ("消防通道被私家车堵塞\n[Open311] 影响: 影响通行 (blocks the "
                                   "way)、存在安全隐患 (a safety risk); 地址: 3单元门口")
    # the department may call the reporter back
    assert case["reporter"]["kind"] == "app" and case["reporter"]["id"] == "123456"
    assert case["reporter"]["name"] == "邓海燕" and case["reporter"]["phone"] == "13800000001"
    assert case["media_urls"] == ["https://img.example/2212426634.jpg"]
    for dept in ("police", "urban_mgmt"):  # assisting, as for any report of the category
        wait_for(lambda d=dept: get_messages(amqp, f"dispatch.{d}"), what=f"{dept}'s")
    stored = wait_for(lambda: (c := api.get(f"/api/v1/cases/{case_id}").json())["state"]
                      == "dispatched" and c, what="the case dispatched")
    assert stored["severity"] == "urgent" and stored["reporter"]["kind"] == "app"

    # the same form again, from the same key, is a retry: the same request, no second case
    again = post(api, "xml", {**a_form(patrol), "attribute[impact][]": ["traffic", "safety"]})
    assert again.status_code == 200, again.text
    assert requests_of(again, "xml") == [{"service_request_id": case_id, "token": token,
                                          "service_notice": created["service_notice"],
                                          "account_id": "123456"}]
    assert api.get("/api/v1/cases").json()["total"] == 1
    assert get_messages(amqp, "dispatch.fire") == []
    # another person's report of it is another request (a duplicate of the first)
    other = post(api, "json", a_form(patrol, account_id="999", first_name="明"))
    assert other.status_code == 201 and other.json()[0]["service_request_id"] != case_id

    # a retry the next (UTC) day, within a day of the first post, is still the same request;
    # the same form a day later is a new report (the first's duplicate window is over too)
    clock.advance(timedelta(hours=23, minutes=30))
    assert post(api, "json", a_form(patrol)).json()[0]["service_request_id"] == case_id
    clock.advance(timedelta(hours=1))
    later = post(api, "json", a_form(patrol))
    assert later.status_code == 201, later.text
    assert later.json()[0]["service_request_id"] not in (case_id, other.json()[0][
        "service_request_id"])

    for fmt in FORMATS:
        r = get(api, f"tokens/{token}", fmt)
        assert requests_of(r, fmt) == [{"service_request_id": case_id, "token": token}]
        assert "no request has the token" in errors(get(api, "tokens/o311-" + "0" * 32, fmt),
                                                    fmt, 404)[0]
        assert errors(get(api, "tokens/demo-1", fmt), fmt, 404)  # not an Open311 token


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_address_string_or_address_id_locates_the_request(
    intake: Any, api: Any, patrol: str, fmt: str
) -> None:
    by_name = a_form(patrol, lat=..., long=..., address_string="通工小区 1栋 3单元门口")
    r = post(api, fmt, by_name)
    (created,) = requests_of(r, fmt)
    case = api.get(f"/api/v1/cases/{created['service_request_id']}").json()
    assert (case["grid_code"], case["building_code"]) == (DEMO_CELL, TONGGONG_1)
    assert case["description"].endswith("地址: 通工小区 1栋 3单元门口")

    r = post(api, fmt, a_form(patrol, lat=..., long=..., address_string=...,
                              address_id=TONGGONG_1, service_code="C0101"))
    (created,) = requests_of(r, fmt)
    (shown,) = requests_of(get(api, f"requests/{created['service_request_id']}", fmt), fmt)
    assert shown["address_id"] == TONGGONG_1
    assert shown["address"] == "1栋, 通工小区, 桐梓林一片区, 桐梓林社区, 青江街道, 雨城区"

    (problem,) = errors(post(api, fmt, a_form(patrol, lat=..., long=...,
                                              address_string="1234 5th street")), fmt, 400)
    assert problem.startswith("address_string: names no compound")
    (problem,) = errors(post(api, fmt, a_form(patrol, lat=..., long=...,
                                              address_string="1栋")), fmt, 400)
    assert problem.startswith("address_string: ")


# -- GET requests -----------------------------------------------------------------------------
def test_requests_are_listed_by_id_code_status_date_and_page(
    intake: Any, api: Any, patrol: str, clock: FakeClock
) -> None:
    lane = post(api, "json", a_form(patrol)).json()[0]["service_request_id"]
    wait_for(lambda: api.get(f"/api/v1/cases/{lane}").json()["assignments"], what="routing")
    # the same spot again from someone else: a duplicate, which is closed (merged)
    merged = post(api, "json", a_form(patrol, account_id="2")).json()[0]["service_request_id"]
    clock.advance(timedelta(days=2))
    lamp = post(api, "json", a_form(patrol, service_code="C0101")).json()[0][
        "service_request_id"]
    rows = api.get("/api/v1/cases").json()["items"]
    assert {c["case_id"]: c["state"] for c in rows}[merged] == "duplicate"

    def ids(fmt: str = "json", **params: Any) -> list[str]:
        return [r["service_request_id"] for r in requests_of(get(api, "requests", fmt,
                                                                 **params), fmt)]

    for fmt in FORMATS:
        assert ids(fmt) == [lamp, merged, lane]  # newest first, the last 90 days
        assert ids(fmt, status="closed") == [merged]
        assert ids(fmt, status="open") == [lamp, lane]
        assert ids(fmt, status="open,closed", service_code="E0402") == [merged, lane]
        assert ids(fmt, service_request_id=f"{lane},{lamp}", status="closed") == [lamp, lane]
        assert ids(fmt, page_size=1, page=2) == [merged]
        assert ids(fmt, page_size=2, page=2) == [lane]
        assert ids(fmt, start_date="2026-11-24T00:00:00+08:00") == [lamp]
        assert ids(fmt, end_date="2026-11-24T00:00:00+08:00") == [merged, lane]
        assert ids(fmt, start_date="2026-12-01T00:00:00Z", end_date="2026-12-02T00:00:00Z",
                   jurisdiction_id="", page="") == []  # empty: as if not sent
        (closed,) = requests_of(get(api, f"requests/{merged}", fmt), fmt)
        assert closed["status"] == "closed" and lane in closed["status_notes"]
        (open_,) = requests_of(get(api, f"requests/{lane}", fmt), fmt)
        assert open_["status"] == "open"
        assert open_["agency_responsible"] == "区消防救援大队"
        assert open_["expected_datetime"]  # the lead's resolve deadline
        assert open_["requested_datetime"].startswith("2026-11-23T01:00:00")

        for params, named in (
            ({"start_date": "2026-08-01T00:00:00Z", "end_date": "2026-11-23T00:00:00Z"},
             "may span at most 90 days"),
            ({"start_date": "2026-11-23T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"},
             "end_date: lies before start_date"),
            ({"start_date": "last week"}, "start_date: "),
            ({"status": "pending"}, "status: "),
            ({"page_size": "101"}, "page_size: "),
            ({"service_code": "X9"}, "service_code: unknown X9"),
        ):
            assert named in errors(get(api, "requests", fmt, **params), fmt, 400)[0], params
        assert "no request '20261123-999999'" in errors(
            get(api, "requests/20261123-999999", fmt), fmt, 404)[0]
        assert errors(get(api, "requests", fmt, jurisdiction_id="city.gov"), fmt, 404)


def test_no_get_shows_a_reporter(intake: Any, api: Any, patrol: str) -> None:
    case_id = post(api, "json", a_form(
        patrol, description="车主电话 13912345678，挡住了消防通道")).json()[0]["service_request_id"]
    by_json = api.post("/api/v1/reports", json=report("r-1", "C0601"))
    assert by_json.status_code == 201
    for fmt in FORMATS:
        for path in ("requests", f"requests/{case_id}", f"requests/{by_json.json()['case_id']}"):
            text = get(api, path, fmt).text
            assert "邓海燕" not in text and "13800000001" not in text, text  # the reporters'
            assert "123456" not in text and "resident@example.org" not in text
            assert "13912345678" not in text  # a phone typed into the description: masked
        assert "139****5678" in get(api, f"requests/{case_id}", fmt).text


# -- who may post ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_or_bad_api_key_is_a_403_and_a_bad_form_a_400(
    intake: Any, api: Any, patrol: str, fmt: str
) -> None:
    # the spec's own example request, as it is: its api_key (xyz) is none of ours
    spec = ("api_key=xyz&jurisdiction_id=city.gov&service_code=001&lat=37.76524078"
            "&long=-122.4212043&address_string=1234+5th+street&email=smit333%40sfgov.edu"
            "&device_id=tt222111&account_id=123456&first_name=john&last_name=smith"
            "&phone=111111111&description=A+large+sinkhole+is+destroying+the+street"
            "&media_url=http%3A%2F%2Ffarm3.static.flickr.com%2F2002%2F2212426634_5ed477a060.jpg"
            "&attribute[WHISPAWN]=123456&attribute[WHISDORN]=COISL001")
    r = api.post(f"{V2}/requests.{fmt}", data=spec, headers={
        **NO_KEY, "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    assert errors(r, fmt, 403) == ["api_key: not a gridflow API key (expected gfk_<id>_<secret>)"]
    # and with our key: its jurisdiction, service and attributes are not ours
    ours = spec.replace("api_key=xyz", f"api_key={patrol}")
    r = api.post(f"{V2}/requests.{fmt}", data=ours, headers={
        **NO_KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert errors(r, fmt, 404)[0].startswith("jurisdiction_id: 'city.gov' not found")
    r = api.post(f"{V2}/requests.{fmt}", data=ours.replace("city.gov", "511802"), headers={
        **NO_KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert errors(r, fmt, 404)[0].startswith("service_code: no service '001'")
    r = api.post(f"{V2}/requests.{fmt}", data=ours.replace("city.gov", "511802").replace(
        "service_code=001", "service_code=E0402"), headers={
        **NO_KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert [e.split(":")[0] for e in errors(r, fmt, 400)] == ["attribute[WHISPAWN]",
                                                              "attribute[WHISDORN]"]
    r = post(api, fmt, a_form(patrol, **{"lat": "37.76524078", "long": "-122.4212043"}))
    assert {e.split(":")[0] for e in errors(r, fmt, 400)} == {"lat", "long"}

    assert errors(post(api, fmt, a_form(...)), fmt, 403) == [
        "api_key: required, a gridflow API key (gfk_…) that may report (report.create)"]
    unknown = "gfk_0123456789ab_" + "x" * 43
    assert "unknown API key" in errors(post(api, fmt, a_form(unknown)), fmt, 403)[0]
    fire = api.key("department", department="fire")
    assert "(report.create: patrol_app, operator, admin only)" in errors(
        post(api, fmt, a_form(fire)), fmt, 403)[0]
    area = api.key("patrol_app", grid="5118020010011")  # 通工小区's area
    assert "outside this key's grid 5118020010011" in errors(
        post(api, fmt, a_form(area, lat=..., long=..., address_id=OTHER_CELL)), fmt, 403)[0]
    revoked = api.key("operator")
    api.post(f"/api/v1/keys/{revoked.split('_')[1]}/revoke")
    assert "was revoked" in errors(post(api, fmt, a_form(revoked)), fmt, 403)[0]
    for bad, named in (({"service_code": ...}, "service_code"), ({"lat": ...}, "lat"),
                       ({"phone": "call me"}, "phone"), ({"email": "x"}, "email"),
                       ({"attribute[severity]": "panic"}, "attribute[severity]")):
        assert errors(post(api, fmt, a_form(patrol, **bad)), fmt, 400)[0].startswith(
            f"{named}: "), bad
    r = api.post(f"{V2}/requests.{fmt}", json={"api_key": patrol}, headers=NO_KEY)
    assert "application/x-www-form-urlencoded" in errors(r, fmt, 400)[0]
    assert api.get("/api/v1/cases").json()["total"] == 0  # nothing was kept


def test_posts_are_audited_refusals_too_and_rated_per_key(intake: Any, api: Any) -> None:
    token = api.key("patrol_app", client="随手拍", rate_per_min=2)
    key_id = token.split("_")[1]
    assert post(api, "json", a_form(token)).status_code == 201
    assert post(api, "json", a_form(token)).status_code == 200  # a retry: audited as well
    r = post(api, "xml", a_form(token))
    errors(r, "xml", 429)
    assert int(r.headers["Retry-After"]) >= 1
    entries = api.get(f"/api/v1/audit?key_id={key_id}").json()["entries"]
    assert [(e["action"], e["outcome"], e["actor"], e["via"]) for e in entries] == \
        [("open311_post_request", "done", "随手拍", "http")] * 2
    assert entries[0]["route"] == "POST /open311/v2/requests.json"

    fire = api.key("department", department="fire")
    assert post(api, "json", a_form(fire)).status_code == 403
    (denied,) = api.get(f"/api/v1/audit?key_id={fire.split('_')[1]}").json()["entries"]
    assert (denied["outcome"], denied["status"]) == ("denied", 403)
    assert "report.create" in denied["detail"]["reason"]
    assert bearer(token)  # the same key works on the JSON API too
