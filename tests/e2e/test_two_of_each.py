"""End to end with two instances of every service on one vhost and one PostgreSQL database:
no case is handled twice, and none is lost when an instance dies.

Ten processes (``python -m gridflow.run_service``): intake, routing, escalation, notify and
monitor, each twice, each instance with its own HTTP port (health, metrics; intake's API).
Eight clients post a few hundred reports, spread over both intakes, in categories that route
to different departments; a quarter are urgent, and their report-in deadline (10 demo
minutes, on a demo clock at 100×) falls due while the test runs, so both escalation
instances race over the same due clocks. Half way through the posting one routing instance
is killed (SIGKILL); the other carries on.

The departments' side is pika consumers on every ``dispatch.*`` queue. Expected from the
catalogue alone: every case's departments get exactly one ``case.assigned`` each, every
urgent case exactly one ``case.escalated`` per department and one for its area's owner,
nothing else (counted by message id and by case and recipient). Then the databases: one
report and one case per post, one routing decision and one ``case.routed`` per case, each
due clock fired once, one ``case.escalated`` and one ledger item per clock, one delivery per
message, intake's cases dispatched and escalated once with one timeline entry each, every
outbox row sent, nothing dead-lettered; each instance's /metrics show it did its share of
the work, the surviving routing instance routed what came after the kill, and the monitors
saw every instance's heartbeats.

The reference data is the demo's with two changes that make the run deterministic
(deploy/demo is untouched; a copy is used): no category links a report as a duplicate
(``duplicate_radius_m: 0``), and deadlines are long (a week to report in) except the urgent
policy's first step, 10 minutes, after which the case climbs one tier to deadlines a
month away: each urgent case's report-in clocks fall due once during the test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
import requests
import yaml
from processes import METRICS_TOKEN, ROOT, admin_key, declared, distinct_ports, healthy
from sqlalchemy import create_engine, text

from gridflow import SERVICES
from shared.amqp.topology import queues
from shared.reference import ReferenceData, load_reference
from support import TEST_BACKENDS, bearer, report, stop_processes, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif("postgresql" not in TEST_BACKENDS,
                       reason="several instances share one database: PostgreSQL"),
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

REPORTS = 240
CLIENTS = 8
SPEED = 100  # demo seconds a real second: 10 demo minutes are 6 s
URGENT_REPORT_IN = "10m"
KILLED = "routing-1"  # SIGKILLed half way through the posting
# (category, severity): departments from the catalogue; urgent ones start at the compound
# tier, so their first deadline is the urgent policy's short one
URGENT = [("E0701", "urgent"), ("E0801", "urgent"), ("E0101", "urgent")]
NORMAL = [("E0402", "normal"), ("E0801", "normal"), ("C0102", "normal"), ("E0504", "normal"),
          ("E0601", "normal"), ("E0302", "normal")]


def reference_data(dst: Path) -> ReferenceData:
    """The demo district with no duplicate linking and only the urgent first step short."""
    src = ROOT / "deploy" / "demo"
    shutil.copytree(src, dst)
    catalogue = yaml.safe_load((src / "catalogue.yaml").read_text(encoding="utf-8"))
    for family in catalogue["families"]:
        for major in family["majors"]:
            for minor in major["minors"]:
                minor.update(report_in="7d", resolve="30d", duplicate_radius_m=0)
    (dst / "catalogue.yaml").write_text(yaml.safe_dump(catalogue, allow_unicode=True),
                                        encoding="utf-8")
    policy = yaml.safe_load((src / "policy.yaml").read_text(encoding="utf-8"))
    later = {"notify": ["departments", "tier_owner"], "report_in": "30d", "resolve": "30d",
             "repeat": 0}
    policy["policies"]["once"] = {"steps": [
        {"tier": "compound", "notify": ["departments", "tier_owner"],
         "report_in": URGENT_REPORT_IN, "resolve": "30d", "repeat": 0},
        *({"tier": t, **later} for t in ("area", "community", "street", "district")),
    ]}
    policy["categories"] = {}
    policy["severity"] = {"urgent": {"policy": "once"}}
    (dst / "policy.yaml").write_text(yaml.safe_dump(policy, allow_unicode=True),
                                     encoding="utf-8")
    return load_reference(dst)


@dataclass
class Instance:
    name: str  # routing-1
    service: str
    url: str
    proc: subprocess.Popen[bytes]


@dataclass
class Fleet:
    instances: dict[str, Instance]
    log_dir: Path
    key: str
    amqp_uri: str
    database_url: str
    ref: ReferenceData

    def of(self, service: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.service == service]

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-3000:]}"
                         for f in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def fleet(rabbit_config: dict, database_url: str, tmp_path: Path,
          amqp_uri_pika: str) -> Iterator[Fleet]:
    ref = reference_data(tmp_path / "data")
    names = [f"{s}-{n}" for n in (1, 2) for s in SERVICES]
    ports = dict(zip(names, distinct_ports(len(names)), strict=True))
    epoch = datetime.now(UTC)
    common = {
        "PATH": os.environ.get("PATH", ""),
        "AMQP_URI": amqp_uri_pika,
        "DATABASE_URL": database_url,
        "GRIDFLOW_VAR_DIR": str(tmp_path / "var"),
        "GRIDFLOW_DATA_DIR": str(tmp_path / "data"),
        "GRIDFLOW_PUBLIC_URL": f"http://127.0.0.1:{ports['intake-1']}",
        "GRIDFLOW_METRICS_TOKEN": METRICS_TOKEN,
        "GRIDFLOW_CLOCK_SPEED": str(SPEED),
        "GRIDFLOW_CLOCK_START": epoch.isoformat(),
        "GRIDFLOW_CLOCK_EPOCH": epoch.isoformat(),
        "GRIDFLOW_HEARTBEAT_S": "1",
        "GRIDFLOW_MONITOR_COLLECT_S": "0.5",
    }
    key = admin_key(common, client="two of each")  # intake's tables exist before they start
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    instances: dict[str, Instance] = {}

    def start(name: str) -> Instance:
        service = name.rsplit("-", 1)[0]
        address = f"127.0.0.1:{ports[name]}"
        env = {**common, "GRIDFLOW_SERVICE": service,
               f"GRIDFLOW_{service.upper()}_HTTP_ADDRESS": address}
        with (log_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "gridflow.run_service", service],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        instances[name] = Instance(name, service, f"http://{address}", proc)
        return instances[name]

    fleet = Fleet(instances, log_dir, key, amqp_uri_pika, database_url, ref)
    try:
        # Two waves: the first instance of each service makes its tables. (Two instances
        # starting at once on a fresh database have raced on CREATE TABLE, one dying of
        # a unique violation: a start-up race of its own, not what this test is about.)
        for wave in (1, 2):
            started = [start(f"{s}-{wave}") for s in SERVICES]
            for i in started:
                wait_for(lambda i=i: healthy(i.url) or i.proc.poll() is not None,
                         timeout=60, interval=0.2, what=f"{i.name} /health")
                assert i.proc.poll() is None, f"{i.name} exited at start\n{fleet.logs()}"
        wait_for(lambda: declared(amqp_uri_pika), timeout=30, what="the broker topology")
        yield fleet
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        stop_processes(i.proc for i in instances.values())
    bad = {i.name: i.proc.returncode for i in instances.values()
           if i.name != KILLED and i.proc.returncode not in (0, -15)}
    assert not bad, f"instances exited badly: {bad}\n{fleet.logs()}"


# -- reading ------------------------------------------------------------------------------
METRIC = re.compile(r'^(gridflow_[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$')
Counters = list[tuple[str, dict[str, str], float]]


def metrics(url: str) -> Counters:
    """An instance's gridflow series: (name, labels, value)."""
    r = requests.get(f"{url}/metrics", headers=bearer(METRICS_TOKEN), timeout=10)
    assert r.status_code == 200, r.text
    out = []
    for line in r.text.splitlines():
        m = METRIC.match(line)
        if m:
            out.append((m[1], dict(re.findall(r'(\w+)="([^"]*)"', m[2])), float(m[3])))
    return out


def total(counters: Counters, name: str, **labels: str) -> float:
    return sum(v for n, have, v in counters
               if n == name and all(have.get(k) == want for k, want in labels.items()))


def handled(counters: Counters, queue: str, event: str) -> float:
    return total(counters, "gridflow_events_handled_total", queue=queue, event=event,
                 outcome="ok")


@dataclass
class Received:
    queue: str
    message_id: str
    type: str
    routing_key: str
    redelivered: bool
    body: dict[str, Any]


def consume(amqp_uri: str, names: list[str], done: Callable[[list[Received]], bool], *,
            quiet_s: float, timeout: float) -> list[Received]:
    """Take every message from ``names`` (acked) until ``done`` holds and nothing more has
    come for ``quiet_s`` (a double would arrive in that time), or ``timeout``."""
    got: list[Received] = []
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        channel.basic_qos(prefetch_count=500)
        tags: dict[str, str] = {}

        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            got.append(Received(tags[method.consumer_tag], props.message_id, props.type,
                                method.routing_key, method.redelivered, json.loads(body)))
            ch.basic_ack(method.delivery_tag)

        for name in names:
            tags[channel.basic_consume(name, on_message)] = name
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            before = len(got)
            conn.process_data_events(time_limit=0.2)
            if len(got) != before:
                last = time.monotonic()
            elif done(got) and time.monotonic() - last >= quiet_s:
                break
    finally:
        conn.close()
    return got


def rows(database_url: str, sql: str) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def doubles(counter: Counter[Any]) -> dict[Any, int]:
    return {k: n for k, n in counter.items() if n != 1}


def some(found: dict[Any, int] | list[Any], n: int = 5) -> str:
    """How many, and the first few: a failure's message stays readable."""
    items = sorted(found.items() if isinstance(found, dict) else found)
    return f"{len(items)}, e.g. {items[:n]}"


# -- the test -----------------------------------------------------------------------------
def test_two_instances_of_each_service_handle_every_case_once(fleet: Fleet) -> None:
    t0 = time.monotonic()
    catalogue = fleet.ref.catalogue
    intakes = fleet.of("intake")
    cells = [c.code for c in fleet.ref.grid.cells]
    plan = []  # (report_id, category, severity, cell, intake)
    for n in range(REPORTS):
        category, severity = URGENT[n // 4 % len(URGENT)] if n % 4 == 0 else \
            NORMAL[n % len(NORMAL)]
        plan.append((f"two-{n:04d}", category, severity, cells[n % len(cells)],
                     intakes[n % 2].url))

    answers: dict[str, requests.Response] = {}
    answered_at: dict[str, float] = {}

    def post(job: tuple[str, str, str, str, str]) -> None:
        report_id, category, severity, cell, url = job
        with requests.Session() as http:
            http.headers.update(bearer(fleet.key))
            for _ in range(3):  # a client retries a refused connection with the same id
                try:
                    answers[report_id] = http.post(
                        f"{url}/api/v1/reports", timeout=30,
                        json=report(report_id, category, grid_code=cell, severity=severity,
                                    description=f"两套服务测试 {report_id}"))
                    answered_at[report_id] = time.monotonic()
                    return
                except requests.ConnectionError:
                    time.sleep(0.5)

    half = REPORTS // 2
    routing_before_kill: dict[str, float] = {}
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(post, plan[:half]))
        # routing-1 dies while the second half is posted and the first is still routed
        for i in fleet.of("routing"):
            routing_before_kill[i.name] = handled(metrics(i.url), "gridflow.routing",
                                                  "case.reported")
        futures = [pool.submit(post, job) for job in plan[half:]]
        time.sleep(0.3)
        fleet.instances[KILLED].proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        for f in futures:
            f.result()
    posted_s = time.monotonic() - t0
    assert fleet.instances[KILLED].proc.wait(10) == -signal.SIGKILL

    # every report became exactly one case, none linked as a duplicate
    statuses = Counter(r.status_code for r in answers.values())
    assert len(answers) == REPORTS and statuses == {201: REPORTS}, {
        k: (r.status_code, r.text[:200]) for k, r in answers.items() if r.status_code != 201}
    case_of = {rid: r.json()["case_id"] for rid, r in answers.items()}
    assert all(r.json().get("state") != "duplicate" for r in answers.values())
    assert len(set(case_of.values())) == REPORTS
    job_of = {case_of[job[0]]: job for job in plan}

    # what the departments and the grid's owners must get, from the catalogue alone
    expected: Counter[tuple[str, str, str]] = Counter()
    urgent_cases = set()
    for case_id, (_, category, severity, _, _) in job_of.items():
        departments = catalogue.get(category).departments
        for d in departments:
            expected[(case_id, "case.assigned", d)] += 1
        if severity == "urgent":
            urgent_cases.add(case_id)
            for d in departments:
                expected[(case_id, "case.escalated", d)] += 1
            expected[(case_id, "case.escalated", "tier.area")] += 1

    def recipient(m: Received) -> str:
        data = m.body["data"]
        return data["department"] or f"tier.{data['recipient']['tier']['tier']}"

    def key(m: Received) -> tuple[str, str, str]:
        return (m.body["case_id"], m.type, recipient(m))

    def complete(got: list[Received]) -> bool:
        return set(expected) <= {key(m) for m in got}

    departments = sorted(catalogue.departments)
    dispatch = [q.name for q in queues(departments)
                if q.name.startswith("dispatch.") and not q.name.endswith(".dlq")]
    got = consume(fleet.amqp_uri, dispatch, complete, quiet_s=2.0, timeout=60)
    received_s = time.monotonic() - t0

    by_id = Counter(m.message_id for m in got)
    by_key = Counter(key(m) for m in got)
    assert not doubles(by_id), f"the same message delivered twice: {some(doubles(by_id))}"
    assert not [m for m in got if m.redelivered], "redelivered to the departments"
    missing = sorted(set(expected) - set(by_key))
    assert not missing, f"expected messages never came: {some(missing)}"
    assert not doubles(by_key), f"a case handled twice: {some(doubles(by_key))}"
    assert by_key == expected, f"unexpected: {some(list(set(by_key) - set(expected)))}"
    for m in got:  # each message on its recipient's queue, the assignment its own
        assert m.queue == f"dispatch.{recipient(m)}"
        if m.type == "case.assigned":
            assert m.body["data"]["assignment"]["department"] == recipient(m)
        else:
            assert m.body["data"]["escalation"]["step"] == 1
            assert m.body["data"]["escalation"]["to_tier"]["tier"] == "area"

    # the databases: nothing in them twice, nothing left behind
    db = fleet.database_url
    one_each = {
        "intake reports": "SELECT case_id, count(*) FROM intake.reports GROUP BY case_id",
        "intake cases": "SELECT case_id, count(*) FROM intake.cases GROUP BY case_id",
        "routing decisions": "SELECT case_id, count(*) FROM routing.decisions GROUP BY case_id",
        "case.routed": "SELECT case_id, count(*) FROM routing.outbox "
                       "WHERE type = 'case.routed' GROUP BY case_id",
        "escalation cases": "SELECT case_id, count(*) FROM escalation.cases GROUP BY case_id",
        "notify snapshots": "SELECT case_id, count(*) FROM notify.case_snapshots "
                            "GROUP BY case_id",
    }
    for what, sql in one_each.items():
        counts = dict(rows(db, sql))
        assert set(counts) == set(job_of), f"{what}: not one row per case"
        assert not doubles(Counter(counts)), f"{what} twice: {some(doubles(Counter(counts)))}"
    escalated = dict(rows(db, "SELECT case_id, count(*) FROM escalation.outbox "
                              "WHERE type = 'case.escalated' GROUP BY case_id"))
    assert escalated == dict.fromkeys(urgent_cases, 1), \
        f"case.escalated per case: {some(doubles(Counter(escalated)))}"
    assert rows(db, "SELECT count(*) FROM escalation.outbox WHERE type = 'case.reminded'") \
        == [(0,)]
    steps = dict(rows(db, "SELECT case_id, step * 10 + escalations FROM escalation.cases"))
    assert steps == {c: 11 if c in urgent_cases else 0 for c in job_of}  # step 1, 1 escalation
    clocks = rows(db, "SELECT case_id, department, kind, fired FROM escalation.clocks")
    assert len(clocks) == 2 * sum(len(catalogue.get(j[1]).departments) for j in plan)
    for case_id, department, kind, fired in clocks:
        due = kind == "report_in" and case_id in urgent_cases
        assert fired == int(due), f"clock {case_id}/{department}/{kind} fired {fired}×"
    ledger = Counter(rows(db, "SELECT case_id, department, kind FROM escalation.supervision"))
    assert set(ledger) == {(c, d, "report_in") for c, _, d in expected
                           if c in urgent_cases and not d.startswith("tier.")}
    assert not doubles(ledger)
    deliveries = Counter(  # a grid node's owner is tier.<tier>.<node code>
        (c, t, ".".join(r.split(".")[:2]) if r.startswith("tier.") else r)
        for c, t, r in rows(db, "SELECT case_id, event_type, recipient FROM notify.deliveries"))
    assert deliveries == expected, "notify's deliveries are not one per message"
    # intake's read model: each case dispatched to its departments, escalated once
    # (two intakes consume; an assignment.dispatched may overtake its case.routed there
    # and come back through a retry queue, so this may take a few seconds to settle)
    want_cases = {c: ("dispatched", "area" if c in urgent_cases else
                      catalogue.get(job_of[c][1]).tier, int(c in urgent_cases)) for c in job_of}

    def intake_cases() -> dict[str, tuple[str, str, int]]:
        return {c: (state, tier, n) for c, state, tier, n in rows(
            db, "SELECT case_id, state, tier, escalations FROM intake.cases")}

    wait_for(lambda: intake_cases() == want_cases, timeout=40, interval=0.5,
             what="intake's cases dispatched, urgent ones escalated once")
    assignments = Counter(rows(db, "SELECT c.case_id, a.department, a.state "
                                   "FROM intake.assignments a JOIN intake.cases c "
                                   "ON c.pk = a.case_pk"))
    assert assignments == Counter({(c, d, "dispatched"): 1 for c, t, d in expected
                                   if t == "case.assigned"})
    timeline = Counter(rows(db, "SELECT case_id, kind FROM intake.timeline "
                                "WHERE kind IN ('reported', 'routed', 'dispatched', 'escalated')"))
    want_timeline: Counter[tuple[str, str]] = Counter()
    for c, t, _ in expected:
        if t == "case.assigned":
            want_timeline[(c, "dispatched")] += 1
    for c in job_of:
        want_timeline.update([(c, "reported"), (c, "routed")]
                             + [(c, "escalated")] * (c in urgent_cases))
    assert timeline == want_timeline, \
        f"intake's timelines: {some({k: n for k, n in timeline.items() if want_timeline[k] != n})}"
    for service in SERVICES:
        unsent = rows(db, f"SELECT count(*) FROM {service}.outbox WHERE sent_at IS NULL")
        assert unsent == [(0,)], f"{service}: outbox rows unsent"
    assert rows(db, "SELECT count(*) FROM monitor.dead_letters") == [(0,)]

    # every instance did its share: its own counters, and its heartbeats as the monitors saw
    counters = {i.name: metrics(i.url) for i in fleet.instances.values() if i.name != KILLED}
    work = {
        "intake": ("gridflow.intake", "case.routed"),
        "routing": ("gridflow.routing", "case.reported"),
        "escalation": ("gridflow.escalation", "case.routed"),
        "notify": ("gridflow.notify", "case.routed"),
    }
    share = {name: handled(c, *work[name.rsplit("-", 1)[0]]) for name, c in counters.items()
             if name.rsplit("-", 1)[0] in work}
    share[KILLED] = routing_before_kill[KILLED]
    assert all(n > 0 for n in share.values()), \
        f"an instance did nothing: {share}\n{counters['routing-2']}"
    for service, (queue, event) in work.items():
        if service != "routing":  # a routed case goes once to each consuming service
            assert sum(handled(counters[f"{service}-{n}"], queue, event)
                       for n in (1, 2)) >= REPORTS
    # the other routing instance took over: it routed every report accepted after the kill
    survivor = f"routing-{3 - int(KILLED[-1])}"
    after_kill = sum(at > killed_at for at in answered_at.values())
    assert after_kill >= REPORTS // 4
    # (less the few in flight at the kill: committed before it, the killed one may have
    # routed them)
    assert share[survivor] - routing_before_kill[survivor] >= after_kill - CLIENTS
    accepted = {name: total(c, "gridflow_http_requests_total", method="POST",
                            route="/api/v1/reports", status="201")
                for name, c in counters.items() if name.startswith("intake")}
    assert accepted == {"intake-1": REPORTS / 2, "intake-2": REPORTS / 2}, accepted
    beats = {pid for (pid,) in rows(db, "SELECT pid FROM monitor.instances")}
    assert {i.proc.pid for i in fleet.instances.values()} <= beats
    for i in fleet.of("monitor"):
        assert healthy(i.url)

    print(f"\n{REPORTS} reports over 2 intakes in {posted_s:.1f} s; {len(got)} dispatch "
          f"messages ({len(urgent_cases)} urgent cases escalated) by {received_s:.1f} s; "
          f"{after_kill} reports accepted after {KILLED} was killed; "
          f"work per instance {share}")
