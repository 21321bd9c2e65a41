"""Personal data masked: phones, names, reporters, free text, nested values, and the JSON log
formatter that runs every log line through them."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from shared.logs import JsonFormatter
from shared.privacy import mask_name, mask_phone, mask_reporter, mask_text, mask_value

PHONE = "13812345678"
REPORTER = {"kind": "resident", "id": "u-42", "name": "张三丰", "phone": PHONE,
            "webhook_url": "https://app.example.com/hook"}


@pytest.mark.parametrize(("phone", "masked"), [
    (PHONE, "138****5678"),
    ("138 1234 5678", "138****5678"),
    ("138-1234-5678", "138****5678"),
    ("+8613812345678", "+86138****5678"),
    ("0086 138 1234 5678", "0086138****5678"),
    ("02888881234", "*******1234"),  # not a mobile: the last 4 digits at most
    ("+14155550100", "+*******0100"),
    ("12345", "***45"),
    ("12", "**"),
    ("", ""),
    (None, ""),
    (13812345678, "138****5678"),
])
def test_phones(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(("name", "masked"), [
    ("张三丰", "张**"), ("张三", "张*"), ("Li Wei", "L*****"), ("张", "*"), ("", ""), (None, ""),
    ("  邓海燕 ", "邓**"),
])
def test_names(name, masked):
    assert mask_name(name) == masked


def test_a_reporter_keeps_everything_but_its_name_and_phone():
    masked = mask_reporter(REPORTER)
    assert masked == {**REPORTER, "name": "张**", "phone": "138****5678"}
    assert REPORTER["phone"] == PHONE  # a copy
    assert mask_reporter(None) is None
    assert mask_reporter({"kind": "app", "id": "u-1"}) == {"kind": "app", "id": "u-1"}
    assert mask_reporter({"name": "", "phone": None}) == {"name": "", "phone": None}


def test_free_text_masks_mobiles_and_id_numbers_only():
    text = (f"张三丰（{PHONE}，身份证511802199001011234，座机028-88881234，"
            "另 +86 139 0000 0002）反映：通道堵塞")
    assert mask_text(text) == ("张三丰（138****5678，身份证511***********1234，座机028-****1234，"
                               "另 +86139****0002）反映：通道堵塞")
    assert mask_text("ID 51180220001231123X ok") == "ID 511***********123X ok"


@pytest.mark.parametrize("text", [
    "case 20261123-000042 at 2026-11-23T01:00:00.120+08:00",
    "cell 511802001001101, building 511802001001101001",  # grid codes
    "event 0b4c13812345678af0 uuid 3f2a9c1e-1381-2345-6789-138123456789",
    "took 1764000000000 ms; 138123456789 is twelve digits",
    "HTTP 503 Service Unavailable",
    "",
])
def test_free_text_leaves_ids_codes_and_times_alone(text):
    assert mask_text(text) == text


def test_values_are_masked_under_reporters_and_phones_anywhere():
    value = {
        "case_id": "20261123-000042",
        "case": {"reporter": REPORTER, "description": f"电话{PHONE}",
                 "location": {"grid_code": "511802001001101", "name": "通工小区"}},
        "by": {"name": "胡涛", "tier": "community"},  # an operator, not a reporter
        "reporters": [{"name": "王芳", "mobile": "13900000002"}],
        "contact": {"phone": "13900000003", "reporter_name": "李敏"},
        "tags": ("a", PHONE),
        "n": 3, "ok": True, "none": None,
    }
    assert mask_value(value) == {
        "case_id": "20261123-000042",
        "case": {"reporter": {**REPORTER, "name": "张**", "phone": "138****5678"},
                 "description": "电话138****5678",
                 "location": {"grid_code": "511802001001101", "name": "通工小区"}},
        "by": {"name": "胡涛", "tier": "community"},
        "reporters": [{"name": "王*", "mobile": "139****0002"}],
        "contact": {"phone": "139****0003", "reporter_name": "李*"},
        "tags": ["a", "138****5678"],
        "n": 3, "ok": True, "none": None,
    }
    assert value["case"]["reporter"]["phone"] == PHONE  # not changed in place


def test_dataclasses_are_masked_as_their_fields():
    @dataclass
    class Follower:
        key: str
        reporter: dict[str, Any]

    assert mask_value(Follower("reporter", REPORTER)) == {
        "key": "reporter", "reporter": mask_reporter(REPORTER)}


# -- the log formatter ----------------------------------------------------------------------------


def _line(msg: str, args: tuple = (), extra: dict[str, Any] | None = None,
          exc: bool = False) -> dict[str, Any]:
    record = logging.LogRecord("services.notify.outbound", logging.INFO, __file__, 1, msg,
                               args, None)
    if exc:
        try:
            raise ConnectionError(f"gateway refused {PHONE}")
        except ConnectionError:
            record.exc_info = sys.exc_info()
    for k, v in (extra or {}).items():
        setattr(record, k, v)
    line = JsonFormatter("notify").format(record)
    assert PHONE not in line and "张三丰" not in line
    return json.loads(line)


def test_the_formatter_masks_a_case_summary_in_extra():
    summary = {"category": "E0402", "description": "消防通道被堵，联系13812345678",
               "reporter": REPORTER, "location": {"grid_code": "511802001001101"}}
    out = _line("case routed", extra={"case_id": "20261123-000042", "case": summary})
    assert out["case"]["reporter"] == mask_reporter(REPORTER)
    assert out["case"]["description"] == "消防通道被堵，联系138****5678"
    assert out["case"]["location"] == {"grid_code": "511802001001101"}
    assert (out["msg"], out["case_id"], out["service"]) == (
        "case routed", "20261123-000042", "notify")


def test_the_formatter_masks_the_message_its_args_and_the_exception():
    out = _line("sms to %s failed", args=(PHONE,), extra={"to": PHONE, "phone": PHONE},
                exc=True)
    assert out["msg"] == "sms to 138****5678 failed"
    assert out["to"] == out["phone"] == "138****5678"
    assert "ConnectionError: gateway refused 138****5678" in out["exc"]


def test_the_formatter_masks_what_json_cannot_carry():
    class Thing:
        def __str__(self) -> str:
            return f"thing of {PHONE}"

    assert _line("x", extra={"thing": Thing()})["thing"] == "thing of 138****5678"
