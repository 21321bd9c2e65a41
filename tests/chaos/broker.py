"""A RabbitMQ server of the chaos run's own: restarting it harms nobody else.

The machine's RabbitMQ serves every other test and service; stopping it under them, or
waiting minutes while it recovers thousands of test vhosts, is not what a chaos run should
do. This starts a second node from the same installation, on free ports, with its data in a
throwaway directory, and can stop and start it whole (or kill -9 it).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import requests

AUTH = ("guest", "guest")


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): the node is stopped and started
    on the same ports, and an ephemeral one may be taken by an outgoing connection while it
    is down (seen in CI: eaddrinuse, the node never came back)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class PrivateBroker:
    def __init__(self) -> None:
        self.amqp_port, self.api_port, self.dist_port = free_port(), free_port(), free_port()
        self.node = f"gridflow-chaos-{self.amqp_port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="gridflow-rabbit-"))
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.amqp_port}\n"
            f"management.tcp.port = {self.api_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "loopback_users = none\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        shutil.chown(self.dir, "rabbitmq", "rabbitmq")
        for f in self.dir.iterdir():
            shutil.chown(f, "rabbitmq", "rabbitmq")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.amqp_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait until it takes connections; a node whose VM died while
        booting is started once more."""
        deadline = time.monotonic() + timeout
        for _ in range(2):
            subprocess.run(["rabbitmq-server", "-detached"], env=self._env(), cwd=self.dir,
                           check=True, capture_output=True, timeout=60)
            booting_since = time.monotonic()
            while time.monotonic() < deadline:
                if self.ready():
                    return
                if time.monotonic() - booting_since > 10 and not self._alive():
                    break  # the VM is gone: start it again
                time.sleep(0.5)
        raise TimeoutError(f"RabbitMQ node {self.node} did not start in {timeout:.0f}s; "
                           f"see {self.dir / 'log'}")

    def _pid(self) -> int | None:
        try:
            return int((self.dir / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _alive(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _wait_gone(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", self.amqp_port, credentials=pika.PlainCredentials(*AUTH),
                connection_attempts=1, socket_timeout=2))
            conn.close()
            return requests.get(f"{self.api}/api/overview", auth=AUTH, timeout=2).ok
        except (pika.exceptions.AMQPError, requests.RequestException, OSError):
            return False

    def stop(self) -> None:
        """Stop the whole node (its Erlang VM) gracefully."""
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self._env(),
                       capture_output=True, timeout=120)
        self._wait_gone()

    def kill(self) -> None:
        """kill -9 the node's VM: no goodbye to any client, no flush."""
        pid = self._pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._wait_gone()

    def restart(self, down_s: float, hard: bool = False) -> float:
        """Stop (or kill) the server, wait ``down_s``, start it; seconds it was away."""
        began = time.monotonic()
        self.kill() if hard else self.stop()
        time.sleep(down_s)
        self.start()
        return time.monotonic() - began

    def remove(self, keep_logs_in: Path | None = None) -> None:
        """Stop the node and delete its data; its logs are copied to ``keep_logs_in``."""
        self.stop()
        if keep_logs_in is not None and (self.dir / "log").exists():
            shutil.copytree(self.dir / "log", keep_logs_in, dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def queue_stats(api: str, vhost: str) -> dict[str, dict[str, Any]]:
    r = requests.get(f"{api}/api/queues/{vhost}", auth=AUTH, timeout=10,
                     params={"columns": "name,messages,messages_ready,messages_unacknowledged"})
    r.raise_for_status()
    return {q["name"]: q for q in r.json()}


def publish(amqp_uri: str, messages: list[tuple[str, str, bytes, pika.BasicProperties]]) -> None:
    """Publish (exchange, routing key, body, properties) with confirms, or raise."""
    conn = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for exchange, key, body, props in messages:
            channel.basic_publish(exchange, key, body, props, mandatory=True)
    finally:
        conn.close()
