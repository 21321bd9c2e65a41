"""The operators' page in a real headless Chromium, against all five services running as
processes: it loads, shows a backlog when a consumer stops, replays a dead letter that then
reaches its department, and shows rates that match the cases behind them. Screenshots go
to var/screenshots/."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pika
import pytest
import requests
from browser import chromium, screenshot, until
from nameko.testing.utils import find_free_port
from processes import Processes, declared, healthy
from selenium.webdriver.common.by import By

from gridflow import SERVICES
from support import report, wait_for

MANAGEMENT = "http://127.0.0.1:15672/api"
GUEST = ("guest", "guest")
PASSWORD = "browser-test"


class District:
    def __init__(self, procs: Processes, amqp_uri: str, monitor: str) -> None:
        self.procs, self.amqp_uri, self.monitor = procs, amqp_uri, monitor
        self.api = procs.base_url

    def post_report(self, report_id: str, category: str = "E0402", **kw: Any) -> str:
        r = requests.post(f"{self.api}/api/v1/reports", json=report(report_id, category, **kw),
                          timeout=10)
        assert r.status_code == 201, r.text
        return r.json()["case_id"]

    def act(self, case_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.api}/api/v1/cases/{case_id}/{path}", json=body, timeout=10)
        assert r.status_code in (200, 202), r.text
        return r.json()

    def case(self, case_id: str) -> dict[str, Any]:
        return requests.get(f"{self.api}/api/v1/cases/{case_id}", timeout=10).json()


@pytest.fixture(scope="module")
def district(tmp_path_factory: pytest.TempPathFactory) -> Iterator[District]:
    vhost = f"nameko_test_browser_{uuid.uuid4().hex[:8]}"
    requests.put(f"{MANAGEMENT}/vhosts/{vhost}", auth=GUEST, timeout=10).raise_for_status()
    requests.put(f"{MANAGEMENT}/permissions/{vhost}/guest", auth=GUEST, timeout=10,
                 json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    amqp_uri = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    tmp = tmp_path_factory.mktemp("district")
    ports = {s: find_free_port() for s in SERVICES}
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
    }
    log_dir = tmp / "logs"
    log_dir.mkdir()
    procs = Processes(env, log_dir, base_url)
    for name in SERVICES:
        procs.start(name)
    try:
        wait_for(lambda: healthy(base_url), timeout=30, what="intake health")
        wait_for(lambda: healthy(f"http://127.0.0.1:{ports['monitor']}"), timeout=30,
                 what="monitor health")
        wait_for(lambda: declared(amqp_uri), timeout=30, what="the broker topology")
        yield District(procs, amqp_uri, f"http://127.0.0.1:{ports['monitor']}")
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
        requests.delete(f"{MANAGEMENT}/vhosts/{vhost}", auth=GUEST, timeout=30)


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

        def next_fire() -> tuple[Any, Any, bytes]:
            for method, props, body in channel.consume("dispatch.fire", inactivity_timeout=15):
                assert method is not None, "nothing on dispatch.fire"
                return method, props, body
            raise AssertionError("unreachable")

        method, props, body = next_fire()
        assert json.loads(body)["case_id"] == case_id
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

        method, again, body2 = next_fire()
        channel.basic_ack(method.delivery_tag)
        channel.cancel()
        assert again.message_id == props.message_id and body2 == body
    finally:
        conn.close()
    audit = until(lambda: [r for r in rows(page, "audit-table")
                           if r.find_element(By.CSS_SELECTOR, ".action").text == "replay"],
                  what="the replay in the audit log")
    assert "operator" in audit[0].text
