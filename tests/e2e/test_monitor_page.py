"""The operators' page in a real headless Chromium, against all five services running as
processes: it loads, shows a backlog when a consumer stops, replays a dead letter that then
reaches its department, and shows rates that match the cases behind them. Screenshots go
to var/screenshots/."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pika
import pytest
from browser import chromium, screenshot, until
from processes import Processes, distinct_ports, running
from selenium.webdriver.common.by import By

from gridflow import SERVICES
from support import DEMO_CELL, report, vhost, wait_for

SPEED = 600
DEMO_START = datetime(2026, 11, 23, 0, 30, tzinfo=UTC)  # Monday 08:30 in Beijing
EPOCH = [datetime.now(UTC)]  # the real instant demo time starts; set when the district does
GRID_WORKER = {"name": "邓海燕", "tier": "compound", "code": DEMO_CELL}
PASSWORD = "browser-test"


class District:
    def __init__(self, procs: Processes, amqp_uri: str, monitor: str) -> None:
        self.procs, self.amqp_uri, self.monitor = procs, amqp_uri, monitor
        self.api = procs.base_url
        self.http = procs.http  # an admin key

    def post_report(self, report_id: str, category: str = "E0402", **kw: Any) -> str:
        r = self.http.post(f"{self.api}/api/v1/reports", json=report(report_id, category, **kw),
                           timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["case_id"]

    def act(self, case_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(f"{self.api}/api/v1/cases/{case_id}/{path}", json=body, timeout=10)
        assert r.status_code in (200, 202), r.text
        return r.json()

    def case(self, case_id: str) -> dict[str, Any]:
        return self.http.get(f"{self.api}/api/v1/cases/{case_id}", timeout=10).json()


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Iterator[District]:
    EPOCH[0] = datetime.now(UTC)
    name = f"nameko_test_browser_{uuid.uuid4().hex[:8]}"  # tests/clean_vhosts.py knows it
    vhost(name, create=True)
    amqp_uri = f"amqp://guest:guest@127.0.0.1:5672/{name}"
    tmp = tmp_path_factory.mktemp("district")
    ports = dict(zip(SERVICES, distinct_ports(len(SERVICES)), strict=True))
    base_url = f"http://127.0.0.1:{ports['intake']}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri,
        "GRIDFLOW_VAR_DIR": str(tmp / "var"),
        "GRIDFLOW_PUBLIC_URL": base_url,
        **{f"GRIDFLOW_{s.upper()}_HTTP_ADDRESS": f"127.0.0.1:{p}" for s, p in ports.items()},
        "GRIDFLOW_HEARTBEAT_S": "1",
        "GRIDFLOW_MONITOR_COLLECT_S": "0.5",
        "GRIDFLOW_MONITOR_SAMPLE_S": "1",
        "GRIDFLOW_MONITOR_PASSWORD": PASSWORD,
        # demo time, 600× from a Monday morning: report-in deadlines pass within seconds
        "GRIDFLOW_CLOCK_SPEED": str(SPEED),
        "GRIDFLOW_CLOCK_START": DEMO_START.isoformat(),
        "GRIDFLOW_CLOCK_EPOCH": EPOCH[0].isoformat(),
    }
    monitor = f"http://127.0.0.1:{ports['monitor']}"
    try:
        with running(env, tmp / "logs", base_url, SERVICES, amqp_uri=amqp_uri,
                     also_healthy=[monitor]) as procs:
            yield District(procs, amqp_uri, monitor)
    finally:
        vhost(name, create=False)


@pytest.fixture(scope="module")
def page(district: District) -> Iterator[Any]:
    driver = chromium()
    try:
        driver.get(district.monitor + "/")
        until(lambda: driver.find_element(By.ID, "login-form").is_displayed(),
              what="the login form")
        driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
        driver.find_element(By.ID, "login-submit").click()
        until(lambda: driver.find_element(By.ID, "tabs").is_displayed(), what="logged in")
        yield driver
    finally:
        driver.quit()


def show(driver: Any, tab: str) -> None:
    driver.execute_script(f"location.hash = '{tab}'")
    until(lambda: driver.execute_script("return document.body.dataset.loaded") == tab,
          what=f"the {tab} tab loaded")


def rows(driver: Any, table: str) -> list[Any]:
    return driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")


def test_the_page_loads_with_every_service_up_and_the_queues(page, district):
    show(page, "overview")

    def services_up() -> set[str]:
        return {r.get_attribute("data-service") for r in rows(page, "services-table")
                if r.get_attribute("data-status") == "up"}

    until(lambda: services_up() >= set(SERVICES), timeout=20, what="all five services up")
    queues = {r.get_attribute("data-queue") for r in rows(page, "queues-table")}
    assert {"gridflow.routing", "gridflow.intake", "dispatch.fire"} <= queues
    assert page.find_element(By.ID, "operator").text == "operator"
    screenshot(page, "monitor-overview")


def test_a_backlog_appears_when_a_consumer_is_stopped(page, district):
    routing = district.procs.procs["routing"]
    routing.send_signal(signal.SIGTERM)
    routing.wait(20)
    try:
        for n in range(30):
            district.post_report(f"backlog-{n}", "E0801")  # never a duplicate
        show(page, "overview")

        def routing_row() -> Any:
            row = page.find_element(By.CSS_SELECTOR, 'tr[data-queue="gridflow.routing"]')
            alerts = row.get_attribute("data-alerts")
            ready = int(row.find_element(By.CSS_SELECTOR, ".ready").text.replace(",", ""))
            return row if "no consumer" in alerts and ready >= 30 else None

        row = until(routing_row, timeout=20, what="the routing queue flagged")
        assert "alert" in row.get_attribute("class")
        until(lambda: any(r.get_attribute("data-service") == "routing"
                          and r.get_attribute("data-status") == "down"
                          for r in rows(page, "services-table")),
              timeout=10, what="routing shown down")
        screenshot(page, "monitor-backlog")
    finally:
        district.procs.start("routing")
    until(lambda: "no consumer" not in page.find_element(
        By.CSS_SELECTOR, 'tr[data-queue="gridflow.routing"]').get_attribute("data-alerts"),
        timeout=30, what="routing consuming again")


def test_a_dead_letter_is_replayed_from_the_page_and_reaches_its_department(page, district):
    case_id = district.post_report("dead-letter-1", "E0402")  # fire leads
    conn = pika.BlockingConnection(pika.URLParameters(district.amqp_uri))
    try:
        channel = conn.channel()

        def next_fire(message_id: str | None = None) -> tuple[Any, Any, bytes]:
            """The case's next assignment (or the one with ``message_id``); other messages
            (demo time runs fast: reminders, escalations) are acked and passed over."""
            for method, props, body in channel.consume("dispatch.fire", inactivity_timeout=15):
                assert method is not None, "nothing more on dispatch.fire"
                if (props.type == "case.assigned" and json.loads(body)["case_id"] == case_id
                        and message_id in (None, props.message_id)):
                    return method, props, body
                channel.basic_ack(method.delivery_tag)
            raise AssertionError("unreachable")

        method, props, body = next_fire()
        channel.basic_reject(method.delivery_tag, requeue=False)  # the brigade's system fails
        channel.cancel()

        show(page, "letters")
        selector = '#letters-table tr[data-queue="dispatch.fire"][data-state="parked"]'
        row = until(lambda: page.find_elements(By.CSS_SELECTOR, selector), timeout=20,
                    what="the dead letter on the page")[0]
        assert "rejected by its consumer" in row.find_element(By.CSS_SELECTOR, ".reason").text
        screenshot(page, "monitor-dead-letters")
        row.find_element(By.CSS_SELECTOR, ".dl-select").click()
        page.find_element(By.ID, "replay-selected").click()
        until(lambda: "replayed 1" in page.find_element(By.ID, "letters-result").text,
              what="the replay confirmed")

        method, again, body2 = next_fire(props.message_id)
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        assert again.message_id == props.message_id and body2 == body
    finally:
        conn.close()
    audit = until(lambda: [r for r in rows(page, "audit-table")
                           if r.find_element(By.CSS_SELECTOR, ".action").text == "replay"],
                  what="the replay in the audit log")
    assert "operator" in audit[0].text


def demo_now() -> datetime:
    return DEMO_START + (datetime.now(UTC) - EPOCH[0]) * SPEED


def expected_measures(district: District) -> dict[str, Any]:
    """The district's measures worked out here from every case intake shows, by the
    definitions in services/intake/measures.py."""
    cases, page_no = [], 1
    while True:
        got = district.http.get(f"{district.api}/api/v1/cases", timeout=10,
                                params={"per_page": 100, "page": page_no}).json()
        cases += [district.case(c["case_id"]) for c in got["items"]]
        if page_no * 100 >= got["total"]:
            break
        page_no += 1
    at = datetime.fromisoformat
    cohort = [c for c in cases if c["state"] != "duplicate"]
    resolved = [c for c in cohort if c["state"] in ("resolved", "closed")]
    reworked = [c for c in cohort if any(a["reworks"] for a in c["assignments"])]
    ratings = [r for c in cases for r in c["ratings"]]
    closed = [c for c in cohort if c["state"] == "closed"]

    def on_time(c: dict[str, Any]) -> bool:
        return all(a["resolved_at"] and a["deadlines"]["resolve"] and not a["resolve_missed"]
                   and at(a["resolved_at"]) <= at(a["deadlines"]["resolve"])
                   for a in c["assignments"] if a["state"] != "returned")

    now = demo_now()
    due = [a for c in cases for a in c["assignments"] if a["state"] != "returned"
           and a["deadlines"]["first_report_in"]
           and at(a["deadlines"]["first_report_in"]) <= now]
    in_time = [a for a in due if a["acknowledged_at"]
               and at(a["acknowledged_at"]) <= at(a["deadlines"]["first_report_in"])]
    hours = [(at(c["closed_at"]) - at(c["reported_at"])).total_seconds() / 3600 for c in closed]

    def rate(n: int, d: int) -> float | None:
        return round(n / d, 4) if d else None

    return {
        "response_rate": rate(len(in_time), len(due)),
        "resolution_rate": rate(len(resolved), len(cohort)),
        "satisfaction_rate": rate(sum(r["score"] > 2 and r.get("fixed") is not False
                                      for r in ratings), len(ratings)),
        "on_time_closing_rate": rate(sum(map(on_time, closed)), len(closed)),
        "rework_rate": rate(len(reworked), len({c["case_id"] for c in resolved + reworked})),
        "average_handling_hours": round(sum(hours) / len(hours), 2) if hours else None,
        "tier_split": Counter(c["tier"] for c in closed),
        "categories": Counter(c["category"] for c in cohort),
        "due": len(due), "late": len(due) - len(in_time),
    }


def test_the_rates_on_the_page_match_the_cases_behind_them(page, district):
    ids = [district.post_report(f"rates-{n}", "E0801") for n in range(6)]

    def handle(case_id: str, rating: dict[str, Any] | None) -> None:
        district.act(case_id, "assignments/civil_affairs/ack", {"actor": "民政 王科长"})
        district.act(case_id, "assignments/civil_affairs/resolve", {"note": "已上门探访"})
        district.act(case_id, "verification", {"passed": True, "by": GRID_WORKER,
                                               "media_urls": ["https://img.example/v.jpg"]})
        if rating:
            district.act(case_id, "rating", rating)

    for case_id in ids:  # routed and dispatched: the assignment is on the case
        wait_for(lambda c=case_id: district.case(c)["assignments"], what="the assignment")
    handle(ids[0], {"score": 5, "fixed": True})
    handle(ids[1], {"score": 2, "fixed": False, "comment": "老人说没人来过"})  # reopens it
    time.sleep(3 * 3600 / SPEED)  # three demo hours: the other report-ins are overdue now
    handle(ids[2], {"score": 4})
    handle(ids[3], None)

    show(page, "measures")
    names = ("response_rate", "resolution_rate", "satisfaction_rate", "on_time_closing_rate",
             "rework_rate", "average_handling_hours")
    want: dict[str, Any] = {}

    def matches() -> bool:
        nonlocal want
        want = expected_measures(district)
        got = {r.get_attribute("data-measure"): r.get_attribute("data-value")
               for r in rows(page, "measures-table")}
        return all((float(got[k]) if got[k] else None) == want[k] for k in names)

    until(matches, timeout=20, what="the page's rates to match the cases")
    assert want["late"] and want["rework_rate"]  # late report-ins and a rework are in them
    assert 0 < want["response_rate"] < 1 and 0 < want["satisfaction_rate"] < 1
    tiers = {r.get_attribute("data-tier"): int(r.find_elements(By.TAG_NAME, "td")[1].text)
             for r in rows(page, "tier-split")}
    assert {t: n for t, n in tiers.items() if n} == dict(want["tier_split"])
    top = {r.get_attribute("data-category"): int(r.find_elements(By.TAG_NAME, "td")[1].text)
           for r in rows(page, "top-categories")}
    assert top == dict(want["categories"])
    screenshot(page, "monitor-measures")

    show(page, "cases")
    until(lambda: rows(page, "funnel-grid"), what="the funnel by grid")
    screenshot(page, "monitor-cases")
    page.execute_script(f"location.hash = 'case/{ids[1]}'")
    until(lambda: ids[1] in page.find_element(By.ID, "case-title").text, what="the case page")
    assert rows(page, "case-assignments")[0].get_attribute("data-department") == "civil_affairs"
    timeline = page.find_element(By.ID, "case-timeline").text
    assert "reported" in timeline and "rated" in timeline
