"""Running the four services as processes, and reading their queues, for the e2e tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import requests

ROOT = Path(__file__).resolve().parents[2]


METRICS_TOKEN = "e2e-metrics-token"  # GRIDFLOW_METRICS_TOKEN of the services run here


def admin_key(env: dict[str, str], client: str = "e2e tests") -> str:
    """An admin API key (no rate limit) in intake's database for these services' ``env``
    (DATABASE_URL, GRIDFLOW_VAR_DIR): made before intake starts, or while it runs."""
    from support import issue_key

    return issue_key(env.get("DATABASE_URL"), env["GRIDFLOW_VAR_DIR"], client=client,
                     rate_per_min=0)


def session(token: str) -> requests.Session:
    """A ``requests`` session sending ``token`` as ``Authorization: Bearer``."""
    from support import bearer

    http = requests.Session()
    http.headers.update(bearer(token))
    return http


from support import stop_processes  # noqa: E402


class Processes:
    """The services as processes, and ``http``: a session holding an admin API key."""

    def __init__(self, env: dict[str, str], log_dir: Path, base_url: str) -> None:
        self.env, self.log_dir, self.base_url = env, log_dir, base_url
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.key = admin_key(env)
        self.http = session(self.key)

    def start(self, name: str) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "gridflow.run_service", name],
            cwd=ROOT,
            env={**self.env, "GRIDFLOW_SERVICE": name},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_processes(self.procs.values())  # one that will not stop: -9, a bad exit

    def logs(self) -> str:
        return "\n".join(
            f"--- {f.name}\n{f.read_text()[-3000:]}" for f in self.log_dir.glob("*.log")
        )


def healthy(base_url: str) -> bool:
    try:
        return requests.get(f"{base_url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def receive(amqp_uri: str, queue: str, timeout: float) -> tuple[Any, bytes]:
    """The first message on ``queue`` within ``timeout``, taken by a pika consumer (acked)."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        for method, props, body in channel.consume(queue, inactivity_timeout=timeout):
            if method is None:
                raise AssertionError(f"nothing on {queue} within {timeout}s")
            channel.basic_ack(method.delivery_tag)
            channel.cancel()
            return props, body
    finally:
        conn.close()
    raise AssertionError("unreachable")




def declared(amqp_uri: str) -> bool:
    """Whether every gridflow queue exists yet (the services declare them as they start)."""
    from shared.amqp.topology import queues
    from shared.reference import load_reference

    departments = load_reference(ROOT / "deploy" / "demo").catalogue.departments
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        for spec in queues(departments):
            channel = conn.channel()
            try:
                channel.queue_declare(spec.name, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return False
            channel.close()
        return True
    finally:
        conn.close()


@contextmanager
def running(env: dict[str, str], log_dir: Path, base_url: str, services: Iterable[str], *,
            amqp_uri: str, also_healthy: Iterable[str] = ()) -> Iterator[Processes]:
    """``services`` as processes, intake (and ``also_healthy``) answering and the topology
    declared; stopped afterwards, their logs printed if the block failed, and a failure if
    one of them exited badly. ``procs.http`` holds an admin key, issued before the start;
    the services' /metrics take ``METRICS_TOKEN`` unless ``env`` names another."""
    from support import wait_for

    log_dir.mkdir(parents=True, exist_ok=True)
    procs = Processes({"GRIDFLOW_METRICS_TOKEN": METRICS_TOKEN, **env}, log_dir, base_url)
    for name in services:
        procs.start(name)
    try:
        for url in (base_url, *also_healthy):
            wait_for(lambda u=url: healthy(u), timeout=30, what=f"{url}/health")
        wait_for(lambda: declared(amqp_uri), timeout=30, what="the broker topology")
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()
        procs.http.close()
    crashed = {n: p.returncode for n, p in procs.procs.items() if p.returncode not in (0, -15)}
    assert not crashed, f"services exited badly: {crashed}\n{procs.logs()}"


def distinct_ports(n: int, taken: Iterable[int] = ()) -> list[int]:
    """``n`` free ports, different from each other and from ``taken``. Two calls of
    nameko's find_free_port may return the same port, and eventlet listens with
    SO_REUSEPORT: two services would then share it and split its requests (seen in CI:
    intake's port answered 404 from another service)."""
    from nameko.testing.utils import find_free_port

    seen, out = set(taken), []
    while len(out) < n:
        port = find_free_port()
        if port not in seen:
            seen.add(port)
            out.append(port)
    return out
