"""The report a patrol app posts: field validation, and its resolution into a case summary."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from marshmallow import ValidationError

from services.intake.reports import FUTURE_SKEW, ReportBody, body_fingerprint, summarise
from shared.events import make_event
from shared.reference import ReferenceData, load_reference

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "deploy" / "demo"

NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Mon 09:00 Beijing
TONGGONG = "511802001001101"  # 通工小区
TONGGONG_1 = "511802001001101001"  # 通工小区 1栋
INSIDE_TONGGONG = {
    "lat": 29.9735,
    "lng": 102.9985,
}  # polygon lng 102.996–103.001, lat 29.972–29.975


def ref() -> ReferenceData:
    return load_reference(DEMO)


def body(**overrides: Any) -> dict[str, Any]:
    """A valid posted body; an override of ``...`` removes the field."""
    out: dict[str, Any] = {
        "report_id": "gw-0001:2026-11-23:0001",
        "category": "E0101",
        "grid_code": TONGGONG,
        "description": "小区门口垃圾堆积",
        "reporter": {
            "kind": "grid_worker",
            "id": "gw-0001",
            "name": "邓海燕",
            "phone": "13800000001",
        },
    }
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not ...}


def errors(raw: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as exc:
        ReportBody().load(raw)
    return exc.value.messages


def summary_errors(raw: dict[str, Any], now: datetime = NOW) -> dict[str, Any]:
    loaded = ReportBody().load(raw)
    with pytest.raises(ValidationError) as exc:
        summarise(loaded, ref(), now)
    return exc.value.messages


def summarise_raw(raw: dict[str, Any], now: datetime = NOW) -> dict[str, Any]:
    return summarise(ReportBody().load(raw), ref(), now)


# -- the schema: what loads -------------------------------------------------------------------


def test_minimal_body_loads_with_defaults():
    loaded = ReportBody().load(
        {
            "report_id": "r1",
            "category": "E0101",
            "grid_code": TONGGONG,
            "description": "垃圾",
            "reporter": {"kind": "resident"},
        }
    )
    assert loaded == {
        "report_id": "r1",
        "category": "E0101",
        "grid_code": TONGGONG,
        "description": "垃圾",
        "reporter": {"kind": "resident", "id": "", "name": "", "phone": "",
                     "webhook_url": None},
        "media_urls": [],
        "occurred_at": None,
        "severity": "normal",
    }


def test_a_point_instead_of_a_grid_code_loads():
    loaded = ReportBody().load(body(grid_code=..., **INSIDE_TONGGONG))
    assert (loaded["lat"], loaded["lng"]) == (29.9735, 102.9985)
    assert "grid_code" not in loaded


def test_full_body_loads():
    loaded = ReportBody().load(
        body(
            media_urls=["https://m.example.com/a.jpg", "http://m.example.com/b.jpg"],
            occurred_at="2026-11-23T08:30:00+08:00",
            **INSIDE_TONGGONG,
        )
    )
    assert loaded["media_urls"] == ["https://m.example.com/a.jpg", "http://m.example.com/b.jpg"]
    assert loaded["occurred_at"] == datetime(2026, 11, 23, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize("report_id", ["a", "R-1", "gw.0001_2026:11-23", "9" * 64])
def test_report_ids_that_are_accepted(report_id):
    assert ReportBody().load(body(report_id=report_id))["report_id"] == report_id


@pytest.mark.parametrize("phone", ["", "13800000001", "+86 138-0000-0001", "0835-2222222"])
def test_phone_numbers_that_are_accepted(phone):
    loaded = ReportBody().load(body(reporter={"kind": "grid_worker", "phone": phone}))
    assert loaded["reporter"]["phone"] == phone


def test_description_of_exactly_2000_characters_is_accepted():
    assert len(ReportBody().load(body(description="堆" * 2000))["description"]) == 2000


def test_exactly_ten_media_urls_are_accepted():
    urls = [f"https://m.example.com/{i}.jpg" for i in range(10)]
    assert ReportBody().load(body(media_urls=urls))["media_urls"] == urls


@pytest.mark.parametrize("severity", ["normal", "urgent"])
def test_severities_that_are_accepted(severity):
    assert ReportBody().load(body(severity=severity))["severity"] == severity


# -- the schema: field-level errors -------------------------------------------------------------


@pytest.mark.parametrize("field", ["report_id", "category", "description", "reporter"])
def test_missing_required_field(field):
    assert errors(body(**{field: ...})) == {field: ["Missing data for required field."]}


def test_missing_reporter_kind():
    assert errors(body(reporter={"id": "gw-0001"})) == {
        "reporter": {"kind": ["Missing data for required field."]}
    }


def test_wrong_types_are_reported_per_field():
    assert errors(body(report_id=5, grid_code=511802001001101, description=["x"])) == {
        "report_id": ["Not a valid string."],
        "grid_code": ["Not a valid string."],
        "description": ["Not a valid string."],
    }


def test_non_numeric_coordinates():
    assert errors(body(grid_code=..., lat="north", lng=102.99)) == {"lat": ["Not a valid number."]}


def test_reporter_and_media_of_the_wrong_shape():
    assert errors(body(reporter="gw-0001", media_urls="https://m.example.com/a.jpg")) == {
        "reporter": {"_schema": ["Invalid input type."]},
        "media_urls": ["Not a valid list."],
    }


def test_unknown_fields_are_refused_at_top_level_and_in_the_reporter():
    assert errors(body(priority="high", reporter={"kind": "grid_worker", "team": "A"})) == {
        "priority": ["Unknown field."],
        "reporter": {"team": ["Unknown field."]},
    }


def test_oversize_description():
    assert errors(body(description="堆" * 2001)) == {
        "description": ["Length must be between 1 and 2000."]
    }


@pytest.mark.parametrize("blank", ["   ", "\n\t ", "\u3000"])
def test_blank_description(blank):
    assert errors(body(description=blank)) == {"description": ["must not be blank"]}


def test_empty_description_fails_both_rules():
    assert errors(body(description="")) == {
        "description": ["Length must be between 1 and 2000.", "must not be blank"]
    }


@pytest.mark.parametrize("description", [" 小区门口垃圾堆积", "\n小区门口垃圾堆积"])
def test_description_with_leading_whitespace_is_not_blank(description):
    assert ReportBody().load(body(description=description))["description"] == description


REPORT_ID_ERROR = ["1–64 characters: letters, digits, and . _ : - (not first)"]


@pytest.mark.parametrize(
    "report_id", ["", "-starts-with-dash", ".x", "has space", "报告1", "a/b", "9" * 65]
)
def test_bad_report_id(report_id):
    assert errors(body(report_id=report_id)) == {"report_id": REPORT_ID_ERROR}


def test_report_id_with_a_trailing_newline_is_refused():
    assert errors(body(report_id="r-1\n")) == {"report_id": REPORT_ID_ERROR}


def test_phone_with_a_trailing_newline_is_refused():
    raw = body(reporter={"kind": "grid_worker", "phone": "13800000001\n"})
    assert errors(raw) == {"reporter": {"phone": ["not a phone number"]}}


def test_lat_without_lng():
    assert errors(body(grid_code=..., lat=29.97)) == {"lng": ["give lat and lng together"]}


def test_lng_without_lat():
    assert errors(body(grid_code=..., lng=102.99)) == {"lat": ["give lat and lng together"]}


def test_lat_without_lng_is_refused_even_with_a_grid_code():
    assert errors(body(lat=29.97)) == {"lng": ["give lat and lng together"]}


def test_neither_grid_code_nor_point():
    assert errors(body(grid_code=...)) == {"grid_code": ["give grid_code, or lat and lng"]}


@pytest.mark.parametrize(
    ("field", "value"), [("lat", 90.01), ("lat", -91), ("lng", 180.5), ("lng", -181)]
)
def test_coordinates_out_of_range(field, value):
    raw = body(grid_code=..., **INSIDE_TONGGONG) | {field: value}
    assert field in errors(raw)


def test_nan_coordinates_are_refused():
    assert "lat" in errors(body(grid_code=..., lat=float("nan"), lng=102.99))


@pytest.mark.parametrize("code", ["51180A001001101", "12345", "5" * 25, " 511802001001101"])
def test_grid_code_must_be_6_to_24_digits(code):
    assert errors(body(grid_code=code)) == {"grid_code": ["digits only"]}


@pytest.mark.parametrize(
    "url", ["ftp://app.example.com/hook", "javascript:alert(1)", "not a url", "//app.example.com"]
)
def test_a_reporters_webhook_is_an_http_url(url):
    assert errors(body(reporter={"kind": "app", "webhook_url": url})) == {
        "reporter": {"webhook_url": ["Not a valid URL."]}
    }


def test_a_reporters_webhook_is_at_most_500_characters():
    url = "https://app.example.com/" + "h" * 477
    assert len(url) == 501
    assert errors(body(reporter={"kind": "app", "webhook_url": url})) == {
        "reporter": {"webhook_url": ["Longer than maximum length 500."]}
    }
    loaded = ReportBody().load(body(reporter={"kind": "app", "webhook_url": url[:500]}))
    assert loaded["reporter"]["webhook_url"] == url[:500]


def test_a_reporters_webhook_may_be_null():
    loaded = ReportBody().load(body(reporter={"kind": "app", "webhook_url": None}))
    assert loaded["reporter"]["webhook_url"] is None


@pytest.mark.parametrize("phone", ["call me", "123", "+", "138 0000 0001 ext. 2"])
def test_bad_phone(phone):
    assert errors(body(reporter={"kind": "grid_worker", "phone": phone})) == {
        "reporter": {"phone": ["not a phone number"]}
    }


def test_unknown_reporter_kind():
    message = errors(body(reporter={"kind": "drone"}))["reporter"]["kind"][0]
    assert message.startswith("Must be one of: grid_worker, resident, hotline")


@pytest.mark.parametrize(
    "url", ["ftp://m.example.com/a.jpg", "file:///etc/passwd", "javascript:alert(1)", "a.jpg"]
)
def test_non_http_media_url(url):
    raw = body(media_urls=["https://m.example.com/ok.jpg", url])
    assert errors(raw) == {"media_urls": {1: ["Not a valid URL."]}}


def test_more_than_ten_media_urls():
    urls = [f"https://m.example.com/{i}.jpg" for i in range(11)]
    assert errors(body(media_urls=urls)) == {"media_urls": ["Longer than maximum length 10."]}


def test_naive_occurred_at_is_refused():
    assert errors(body(occurred_at="2026-11-23T09:00:00")) == {
        "occurred_at": ["Not a valid aware datetime."]
    }


@pytest.mark.parametrize("severity", ["critical", "URGENT", "", None])
def test_unknown_severity(severity):
    expected = (
        ["Field may not be null."] if severity is None else ["Must be one of: normal, urgent."]
    )
    assert errors(body(severity=severity)) == {"severity": expected}


def test_severity_of_the_wrong_type():
    assert errors(body(severity=2)) == {"severity": ["Not a valid string."]}


def test_every_field_error_is_reported_at_once():
    raw = body(report_id=..., description="", media_urls=["ftp://x.example.com/a"], extra=1)
    assert set(errors(raw)) == {"report_id", "description", "media_urls", "extra"}


# -- summarise: resolving against the deployment's data ----------------------------------------


def test_summary_of_a_grid_code_report():
    assert summarise_raw(body(description="小区门口垃圾堆积  \n")) == {
        "category": "E0101",
        "category_name": "暴露垃圾",
        "severity": "normal",
        "description": "小区门口垃圾堆积",
        "location": {
            "grid_code": TONGGONG,
            "grid_name": "通工小区",
            "building_code": None,
            "path": ["雨城区", "青江街道", "桐梓林社区", "桐梓林一片区", "通工小区"],
            "lat": None,
            "lng": None,
        },
        "reporter": {
            "kind": "grid_worker",
            "id": "gw-0001",
            "name": "邓海燕",
            "phone": "13800000001",
            "webhook_url": None,
        },
        "media_urls": [],
        "occurred_at": None,
        "reported_at": NOW,
    }


def test_a_building_code_resolves_to_its_cell_and_names_the_building():
    location = summarise_raw(body(grid_code=TONGGONG_1))["location"]
    assert location["grid_code"] == TONGGONG
    assert location["grid_name"] == "通工小区"
    assert location["building_code"] == TONGGONG_1
    assert location["path"] == [
        "雨城区",
        "青江街道",
        "桐梓林社区",
        "桐梓林一片区",
        "通工小区",
        "1栋",
    ]


def test_a_point_inside_tonggong_resolves_to_its_cell():
    location = summarise_raw(body(grid_code=..., **INSIDE_TONGGONG))["location"]
    assert location["grid_code"] == "511802001001101"
    assert location["grid_name"] == "通工小区"
    assert location["building_code"] is None
    assert (location["lat"], location["lng"]) == (29.9735, 102.9985)


def test_a_point_in_another_cell_resolves_there():
    location = summarise_raw(body(grid_code=..., lat=29.9915, lng=103.0395))["location"]
    assert (location["grid_code"], location["grid_name"]) == ("511802003001202", "姚桥安置小区")


def test_a_grid_code_wins_over_a_point():
    location = summarise_raw(body(grid_code="511802003001202", **INSIDE_TONGGONG))["location"]
    assert location["grid_code"] == "511802003001202"


def test_unknown_category():
    assert summary_errors(body(category="X9999")) == {
        "category": ["unknown category 'X9999'; GET /api/v1/categories lists them"]
    }


def test_unknown_grid_code():
    assert summary_errors(body(grid_code="511802999999999")) == {
        "grid_code": ["unknown grid code 511802999999999"]
    }


@pytest.mark.parametrize(
    ("code", "level"),
    [
        ("511802001001", "community"),
        ("5118020010011", "area"),
        ("511802001", "street"),
        ("511802", "district"),
    ],
)
def test_a_code_above_the_cells_is_refused(code, level):
    assert summary_errors(body(grid_code=code)) == {
        "grid_code": [f"{code} is a {level}; give a compound (cell) code or a building code"]
    }


def test_a_point_outside_every_cell_is_an_error_on_lat_and_lng():
    message = "point (29.98, 103.02) lies outside every grid cell"
    assert summary_errors(body(grid_code=..., lat=29.98, lng=103.02)) == {
        "lat": [message],
        "lng": [message],
    }


def test_a_point_far_away_is_outside_every_cell():
    assert set(summary_errors(body(grid_code=..., lat=39.9, lng=116.4))) == {"lat", "lng"}


def test_category_and_location_errors_are_reported_together():
    assert set(summary_errors(body(category="X9999", grid_code="511802999999999"))) == {
        "category",
        "grid_code",
    }


def test_occurred_at_more_than_five_minutes_ahead_lies_in_the_future():
    raw = body(occurred_at=(NOW + FUTURE_SKEW + timedelta(seconds=1)).isoformat())
    assert summary_errors(raw) == {"occurred_at": ["lies in the future"]}


@pytest.mark.parametrize(
    "offset", [FUTURE_SKEW, timedelta(minutes=4), timedelta(0), -timedelta(days=3)]
)
def test_occurred_at_within_the_clock_skew_or_in_the_past_is_kept(offset):
    assert (
        summarise_raw(body(occurred_at=(NOW + offset).isoformat()))["occurred_at"] == NOW + offset
    )


def test_future_skew_is_five_minutes():
    assert timedelta(minutes=5) == FUTURE_SKEW


@pytest.mark.parametrize(
    ("given", "severity"), [({}, "normal"), ({"severity": "urgent"}, "urgent")]
)
def test_summary_carries_the_severity(given, severity):
    assert summarise_raw(body(**given))["severity"] == severity


def test_summary_carries_media_and_the_reporter():
    raw = body(media_urls=["https://m.example.com/a.jpg"], reporter={"kind": "hotline"})
    s = summarise_raw(raw)
    assert s["media_urls"] == ["https://m.example.com/a.jpg"]
    assert s["reporter"] == {"kind": "hotline", "id": "", "name": "", "phone": "",
                             "webhook_url": None}


def test_summary_carries_the_reporters_webhook():
    hook = "https://app.example.com/hooks/r-77?token=abc"
    s = summarise_raw(body(reporter={"kind": "app", "id": "r-77", "webhook_url": hook}))
    assert s["reporter"] == {"kind": "app", "id": "r-77", "name": "", "phone": "",
                             "webhook_url": hook}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"grid_code": TONGGONG_1},
        {"grid_code": ..., **INSIDE_TONGGONG},
        {"severity": "urgent"},
    ],
)
def test_summary_is_a_valid_case_reported_payload(overrides):
    raw = body(**overrides, occurred_at="2026-11-23T08:55:00+08:00")
    data = {"report_id": raw["report_id"], "case": summarise_raw(raw)}
    event = make_event("case.reported", "20261123-000001", data, producer="intake", at=NOW)
    assert event.data["case"]["location"]["grid_code"] == TONGGONG
    assert event.data["case"]["reported_at"] == NOW
    assert event.data["case"]["severity"] == raw.get("severity", "normal")


# -- body_fingerprint -------------------------------------------------------------------------


def test_fingerprint_is_a_sha256_hex_digest():
    assert re.fullmatch(r"[0-9a-f]{64}", body_fingerprint(body()))


def test_fingerprint_does_not_depend_on_key_order():
    raw = body(media_urls=["https://m.example.com/a.jpg"])
    reordered = {k: raw[k] for k in reversed(list(raw))}
    reordered["reporter"] = {k: raw["reporter"][k] for k in reversed(list(raw["reporter"]))}
    assert list(reordered) != list(raw)
    assert body_fingerprint(reordered) == body_fingerprint(raw)


def test_fingerprint_is_stable_across_calls():
    assert body_fingerprint(body()) == body_fingerprint(copy.deepcopy(body()))


@pytest.mark.parametrize(
    "change",
    [
        {"description": "小区门口垃圾堆积!"},
        {"reporter": {"kind": "grid_worker", "id": "gw-0002"}},
        {"media_urls": ["https://m.example.com/a.jpg"]},
        {"severity": "urgent"},
    ],
)
def test_a_different_body_has_a_different_fingerprint(change):
    assert body_fingerprint(body(**change)) != body_fingerprint(body())


def test_fingerprint_tells_list_order_apart():
    a = body(media_urls=["https://m.example.com/1.jpg", "https://m.example.com/2.jpg"])
    b = body(media_urls=["https://m.example.com/2.jpg", "https://m.example.com/1.jpg"])
    assert body_fingerprint(a) != body_fingerprint(b)
