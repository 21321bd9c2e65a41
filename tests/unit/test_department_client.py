"""The reference client's one-line account of each public message type."""

from __future__ import annotations

from gridflow.department_client import describe

TIER = {"tier": "street", "code": "511802001", "name": "青江街道", "role": "supervisor",
        "owner": {"name": "黄国平", "role": "街道网格化服务管理中心主任"}}
MISSED = [{"department": "sanitation", "clock": "report_in", "due_at": "…"}]


def test_an_assignment_says_role_and_whistle():
    line = describe({"type": "case.assigned", "case_id": "C1", "data": {
        "assignment": {"role": "summoned", "report_in_due": "T1", "resolve_due": "T2"},
        "whistle": {"level": "hard"},
        "case": {"category_name": "暴露垃圾", "description": "垃圾", "location": {
            "path": ["雨城区", "青江街道"]}}}})
    assert line == ("ASSIGNED C1 [summoned] (whistle: hard) 暴露垃圾 @ 雨城区 / 青江街道: 垃圾"
                    " | report in by T1, resolve by T2")


def test_an_escalation_to_a_tier_names_who_it_is_for():
    line = describe({"type": "case.escalated", "case_id": "C1", "data": {
        "recipient": {"kind": "tier", "tier": TIER},
        "escalation": {"reason": "report_in_missed", "missed": MISSED,
                       "to_tier": {"tier": "community", "name": "桐梓林社区"}}}})
    assert line == ("ESCALATED C1 report_in_missed (sanitation report_in): now at community "
                    "桐梓林社区 | for 青江街道 街道网格化服务管理中心主任 黄国平")


def test_a_reminder_says_the_case_stays():
    line = describe({"type": "case.reminded", "case_id": "C1", "data": {
        "recipient": {"kind": "department", "department": "sanitation"},
        "reminder": {"reason": "report_in_missed_repeated", "missed": MISSED,
                     "tier": {"tier": "community", "name": "桐梓林社区"}}}})
    assert line == ("REMINDED C1 report_in_missed_repeated (sanitation report_in): still at "
                    "community 桐梓林社区")


def test_a_whistle_names_the_summoned():
    line = describe({"type": "case.whistled", "case_id": "C1", "data": {
        "whistle": {"level": "routine", "by": {"name": "胡涛", "tier": "community"}},
        "departments": ["housing", "police"]}})
    assert line == "WHISTLE C1 [routine] by 胡涛 (community): housing, police report in"


def test_an_unknown_type_is_named():
    assert describe({"type": "case.other", "case_id": "C1", "data": {}}) == "case.other C1"
