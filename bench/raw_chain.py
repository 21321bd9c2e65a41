"""The broker's ceiling for a chain of four hops, without gridflow: the baseline the gridflow
pipeline (four services in four processes, each consuming a durable quorum queue and
publishing the next event with publisher confirms, acking its input once its output is
confirmed) is compared with.

A source process publishes ``count`` persistent messages of ``size`` bytes to q1 (hop 1); three
worker processes each consume q_i and publish every message to q_{i+1} (hops 2-4), acking the
input only after the output is confirmed; a sink process consumes q4 and notes when the last
message arrives. Every hop runs in its own OS process (multiprocessing, spawn); the queues are
durable, quorum by default, fresh (uniquely named) per run and deleted afterwards; messages go to
the default exchange with delivery_mode=2.

Modes:

``blocking``
    pika BlockingConnection with ``confirm_delivery()``: each basic_publish waits for its own
    confirm, a worker acks its input after its publish returned; prefetch 100.
``pipelined``
    pika SelectConnection: a worker publishes as messages arrive, keeps publish-seq -> input
    delivery tag and on Basic.Ack (``multiple`` honoured) acks its inputs up to there with
    basic_ack(multiple=True), on Basic.Nack nacks (requeues) them; the source keeps a window of
    1,000 unconfirmed messages; prefetch 1,000.

Throughput = count / (time the sink got the count-th message - time the source began publishing).
Each body starts with the source's send time, so the sink also gives the end-to-end latency
p50/p99 (queueing included).

As a module::

    from bench.raw_chain import run_chain      # or ``import raw_chain`` with bench/ on sys.path
    run_chain("amqp://guest:guest@127.0.0.1:5672/some-vhost", "pipelined", 20000)
    # {"mode": "pipelined", "count": 20000, "seconds": ..., "per_s": ..., "p50_ms": ...,
    #  "p99_ms": ..., ...}

The caller owns the vhost; ``run_chain`` declares and deletes its own queues. It starts its
processes with the *spawn* method, so a script calling it needs an ``if __name__ == "__main__"``
guard.

As a command (makes its own throwaway vhost ``nameko_test_rawchain_*`` through the management
API and deletes it at the end, also on Ctrl-C; ``tests/clean_vhosts.py`` removes one left by a
killed run)::

    .venv/bin/python bench/raw_chain.py --mode both --queue-type both
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue as stdlib_queue
import signal
import struct
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid
from array import array
from base64 import b64encode
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
from pika.spec import Basic

MODES = ("blocking", "pipelined")
QUEUE_TYPES = ("quorum", "classic")
HOPS = 4
# Defaults chosen so that one run takes ~5-15 s on the 2-core dev box (RabbitMQ 3.10).
DEFAULT_COUNTS = {"blocking": 4000, "pipelined": 30000}
DEFAULT_PREFETCH = {"blocking": 100, "pipelined": 1000}
DEFAULT_WINDOW = 1000
HEADER = struct.Struct("!dI")  # send time (epoch seconds), message number
POLL_S = 0.2


def log(msg: str) -> None:
    print(f"[raw] {msg}", file=sys.stderr, flush=True)


def _body(seq: int, size: int) -> bytes:
    head = HEADER.pack(time.time(), seq)
    return head + b"x" * max(0, size - len(head))


PERSISTENT = pika.BasicProperties(delivery_mode=2)


# --------------------------------------------------------------------------------------------
# The hops, each the target of one spawned process. They report on ``results`` as
# (kind, role, payload): ("ready", role, None), ("done", role, {...}), ("error", role, text).


def _child(role: str, results: Any, fn: Callable[..., dict | None], *args: Any) -> None:
    try:
        out = fn(results, role, *args)
        if out is not None:
            results.put(("done", role, out))
    except BaseException:  # reported to the parent, which stops the run
        results.put(("error", role, traceback.format_exc()))
        sys.exit(1)


def _blocking_source(results, role, url, out_q, count, size, stop):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        t0 = time.time()
        seq = 0
        while seq < count:
            if seq % 100 == 0 and stop.is_set():
                return {"stopped": True}
            try:
                ch.basic_publish("", out_q, _body(seq, size), PERSISTENT)
            except pika.exceptions.NackError:
                continue  # published again
            seq += 1
        return {"t0": t0, "t_end": time.time()}
    finally:
        _close(conn)


def _blocking_worker(results, role, url, in_q, out_q, prefetch, stop):
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_qos(prefetch_count=prefetch)
        n = 0

        def on_message(ch, method, props, body):
            nonlocal n
            try:
                ch.basic_publish("", out_q, body, PERSISTENT)
            except pika.exceptions.NackError:
                ch.basic_nack(method.delivery_tag, requeue=True)
                return
            ch.basic_ack(method.delivery_tag)
            n += 1

        ch.basic_consume(in_q, on_message)
        results.put(("ready", role, None))
        while not stop.is_set():
            conn.process_data_events(time_limit=POLL_S)
        return {"forwarded": n}
    finally:
        _close(conn)


def _sink(results, role, url, in_q, count, prefetch, ack_every, stop):
    """Consumes with a BlockingConnection in both modes (it publishes nothing, so it has no
    confirms to wait for); acks each message (blocking) or every ``ack_every`` (pipelined)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        seen = bytearray(count)
        latencies = array("d")
        st = {"got": 0, "dups": 0, "unacked": 0, "t_last": None}

        def on_message(ch, method, props, body):
            now = time.time()
            sent, seq = HEADER.unpack_from(body)
            if seen[seq]:
                st["dups"] += 1
            else:
                seen[seq] = 1
                st["got"] += 1
                latencies.append(now - sent)
            st["unacked"] += 1
            if st["unacked"] >= ack_every or st["got"] == count:
                ch.basic_ack(method.delivery_tag, multiple=True)
                st["unacked"] = 0
            if st["got"] == count and st["t_last"] is None:
                st["t_last"] = now

        ch.basic_consume(in_q, on_message)
        results.put(("ready", role, None))
        while st["t_last"] is None and not stop.is_set():
            conn.process_data_events(time_limit=POLL_S)
        if st["t_last"] is None:
            return None  # stopped early: the parent reports why
        lat = sorted(latencies)
        return {"t_last": st["t_last"], "duplicates": st["dups"],
                "p50_ms": _pct(lat, 0.50) * 1000, "p99_ms": _pct(lat, 0.99) * 1000}
    finally:
        _close(conn)


def _pct(sorted_values, q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def _close(conn) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:  # closing on the way out
        pass


class _Async:
    """A SelectConnection with one channel in confirm mode; subclasses fill in ``on_ready``."""

    def __init__(self, url: str):
        self.error: str | None = None
        self.result: dict | None = None
        self.ch = None
        self.conn = pika.SelectConnection(
            pika.URLParameters(url), on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_conn_closed)

    def run(self) -> dict:
        self.conn.ioloop.start()
        if self.error:
            raise RuntimeError(self.error)
        return self.result or {}

    def finish(self, result: dict | None = None, error: str | None = None) -> None:
        if result is not None:
            self.result = result
        if error and not self.error:
            self.error = error
        if self.conn.is_open:
            self.conn.close()
        elif self.conn.is_closed:
            self.conn.ioloop.stop()

    def _on_open(self, conn) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_open_error(self, conn, exc) -> None:
        self.error = f"cannot connect: {exc!r}"
        conn.ioloop.stop()

    def _on_conn_closed(self, conn, reason) -> None:
        if self.result is None and not self.error:
            self.error = f"connection closed: {reason!r}"
        conn.ioloop.stop()

    def _on_channel(self, ch) -> None:
        self.ch = ch
        ch.add_on_close_callback(self._on_channel_closed)
        ch.confirm_delivery(self.on_confirm, callback=lambda _frame: self.on_ready())

    def _on_channel_closed(self, ch, reason) -> None:
        if self.result is None:
            self.finish(error=f"channel closed: {reason!r}")

    def on_ready(self) -> None:
        raise NotImplementedError

    def on_confirm(self, frame) -> None:
        raise NotImplementedError


class _PipelinedSource(_Async):
    def __init__(self, url, out_q, count, size, window, stop):
        self.out_q, self.count, self.size, self.window = out_q, count, size, window
        self.stop = stop
        self.next_msg = 0          # next message number never published
        self.retry: list[int] = []  # message numbers nacked, to publish again
        self.seq = 0               # publish sequence number (confirm delivery tag)
        self.unconfirmed: dict[int, int] = {}  # publish seq -> message number
        self.confirmed = 0
        self.t0 = 0.0
        super().__init__(url)

    def on_ready(self) -> None:
        self.t0 = time.time()
        self._fill()
        self.conn.ioloop.call_later(POLL_S, self._check_stop)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            self.finish({"stopped": True})
        elif self.result is None:
            self.conn.ioloop.call_later(POLL_S, self._check_stop)

    def _fill(self) -> None:
        while len(self.unconfirmed) < self.window:
            if self.retry:
                msg = self.retry.pop()
            elif self.next_msg < self.count:
                msg = self.next_msg
                self.next_msg += 1
            else:
                return
            self.ch.basic_publish("", self.out_q, _body(msg, self.size), PERSISTENT)
            self.seq += 1
            self.unconfirmed[self.seq] = msg

    def on_confirm(self, frame) -> None:
        m = frame.method
        seqs = ([s for s in self.unconfirmed if s <= m.delivery_tag] if m.multiple
                else [m.delivery_tag])
        nack = isinstance(m, Basic.Nack)
        for s in seqs:
            msg = self.unconfirmed.pop(s, None)
            if msg is None:
                continue
            if nack:
                self.retry.append(msg)
            else:
                self.confirmed += 1
        if self.confirmed >= self.count:
            self.finish({"t0": self.t0, "t_end": time.time()})
        else:
            self._fill()


class _PipelinedWorker(_Async):
    def __init__(self, url, in_q, out_q, prefetch, on_consuming, stop):
        self.in_q, self.out_q, self.prefetch = in_q, out_q, prefetch
        self.on_consuming, self.stop = on_consuming, stop
        self.seq = 0       # publish sequence number of the last publish
        self.head = 1      # lowest publish seq whose input is not yet settled
        self.tag_of: dict[int, int] = {}       # publish seq -> input delivery tag
        self.outcome: dict[int, bool] = {}     # publish seq -> confirmed (True) / nacked
        self.forwarded = 0
        super().__init__(url)

    def on_ready(self) -> None:
        self.ch.basic_qos(prefetch_count=self.prefetch, callback=self._on_qos)

    def _on_qos(self, _frame) -> None:
        self.ch.basic_consume(self.in_q, self._on_message, callback=self._on_consume_ok)

    def _on_consume_ok(self, _frame) -> None:
        self.on_consuming()
        self.conn.ioloop.call_later(POLL_S, self._check_stop)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            self.finish({"forwarded": self.forwarded})
        else:
            self.conn.ioloop.call_later(POLL_S, self._check_stop)

    def _on_message(self, ch, method, props, body) -> None:
        ch.basic_publish("", self.out_q, body, PERSISTENT)
        self.seq += 1
        self.tag_of[self.seq] = method.delivery_tag

    def on_confirm(self, frame) -> None:
        m = frame.method
        ok = isinstance(m, Basic.Ack)
        first = self.head if m.multiple else m.delivery_tag
        for s in range(first, m.delivery_tag + 1):
            if s in self.tag_of and s not in self.outcome:
                self.outcome[s] = ok
        # Settle the inputs in order, as far as every output is confirmed or nacked: runs of
        # confirmed ones with one basic_ack(multiple=True), nacked ones requeued one by one.
        ack_upto = None
        while self.head in self.outcome:
            s = self.head
            tag = self.tag_of.pop(s)
            if self.outcome.pop(s):
                ack_upto = tag
                self.forwarded += 1
            else:
                if ack_upto is not None:
                    self.ch.basic_ack(ack_upto, multiple=True)
                    ack_upto = None
                self.ch.basic_nack(tag, multiple=False, requeue=True)
            self.head += 1
        if ack_upto is not None:
            self.ch.basic_ack(ack_upto, multiple=True)


def _pipelined_source(results, role, url, out_q, count, size, window, stop):
    return _PipelinedSource(url, out_q, count, size, window, stop).run()


def _pipelined_worker(results, role, url, in_q, out_q, prefetch, stop):
    def consuming():
        results.put(("ready", role, None))

    return _PipelinedWorker(url, in_q, out_q, prefetch, consuming, stop).run()


# --------------------------------------------------------------------------------------------
# The parent


def _parent_params(url: str) -> pika.URLParameters:
    """The parent's own connections retry: a busy shared broker sometimes stalls a handshake."""
    params = pika.URLParameters(url)
    params.connection_attempts = 3
    params.retry_delay = 2
    return params


def _declare(url: str, names: list[str], queue_type: str) -> None:
    conn = pika.BlockingConnection(_parent_params(url))
    try:
        ch = conn.channel()
        for name in names:
            ch.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
            ch.queue_purge(name)
    finally:
        _close(conn)


def _delete(url: str, names: list[str]) -> None:
    try:
        conn = pika.BlockingConnection(_parent_params(url))
    except Exception as exc:  # best effort on the way out
        log(f"cannot delete the queues: {exc!r}")
        return
    try:
        for name in names:
            try:
                conn.channel().queue_delete(name)
            except Exception as exc:
                log(f"cannot delete queue {name}: {exc!r}")
    finally:
        _close(conn)


def run_chain(amqp_url: str, mode: str, count: int, size: int = 500,
              queue_type: str = "quorum", *, prefetch: int | None = None,
              window: int = DEFAULT_WINDOW, timeout: float | None = None) -> dict:
    """Runs the 4-hop chain once on the vhost of ``amqp_url`` and returns
    ``{"mode", "count", "seconds", "per_s", "p50_ms", "p99_ms"}`` (plus ``queue_type``,
    ``size``, ``publish_seconds`` - the source's own time - and ``duplicates``, messages the
    sink got twice after a nack). Raises RuntimeError if a hop fails or ``timeout`` (default:
    generous for ``count``) passes; all its processes are stopped and its queues deleted."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    if count < 1 or size < HEADER.size:
        raise ValueError(f"count must be >= 1 and size >= {HEADER.size}")
    prefetch = prefetch or DEFAULT_PREFETCH[mode]
    if timeout is None:
        timeout = 60 + count / 50
    run_id = uuid.uuid4().hex[:8]
    queues = [f"rawchain.{run_id}.q{i}" for i in range(1, HOPS + 1)]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    stop = ctx.Event()
    procs: dict[str, Any] = {}

    def start(role: str, fn, *args) -> None:
        p = ctx.Process(target=_child, args=(role, results, fn, *args),
                        name=f"raw-chain-{role}", daemon=True)
        p.start()
        procs[role] = p

    done: dict[str, dict] = {}

    def wait_for(kind: str, roles: set[str], deadline: float) -> None:
        while roles - (done.keys() if kind == "done" else ready):
            try:
                got_kind, role, payload = results.get(timeout=0.5)
            except stdlib_queue.Empty:
                if time.monotonic() > deadline:
                    missing = roles - (done.keys() if kind == "done" else ready)
                    raise RuntimeError(f"timed out waiting for {kind} of {sorted(missing)}"
                                       ) from None
                for role, p in procs.items():
                    if p.exitcode not in (None, 0):
                        raise RuntimeError(f"hop {role} exited with {p.exitcode}") from None
                continue
            if got_kind == "error":
                raise RuntimeError(f"hop {role} failed:\n{payload}")
            if got_kind == "ready":
                ready.add(role)
            else:
                done[role] = payload

    ready: set[str] = set()
    try:
        _declare(amqp_url, queues, queue_type)
        worker = _blocking_worker if mode == "blocking" else _pipelined_worker
        ack_every = 1 if mode == "blocking" else max(1, prefetch // 4)
        start("sink", _sink, amqp_url, queues[-1], count, prefetch, ack_every, stop)
        for i in range(1, HOPS):
            start(f"hop{i + 1}", worker, amqp_url, queues[i - 1], queues[i], prefetch, stop)
        consumers = set(procs)
        wait_for("ready", consumers, time.monotonic() + 60)
        if mode == "blocking":
            start("source", _blocking_source, amqp_url, queues[0], count, size, stop)
        else:
            start("source", _pipelined_source, amqp_url, queues[0], count, size, window, stop)
        wait_for("done", {"source", "sink"}, time.monotonic() + timeout)
    finally:
        stop.set()
        deadline = time.monotonic() + 10
        for p in procs.values():
            p.join(timeout=max(0.1, deadline - time.monotonic()))
        for role, p in procs.items():
            if p.is_alive():
                log(f"terminating hop {role}")
                p.terminate()
                p.join(timeout=5)
        results.close()
        _delete(amqp_url, queues)

    src, sink = done["source"], done["sink"]
    seconds = sink["t_last"] - src["t0"]
    return {"mode": mode, "count": count, "seconds": round(seconds, 3),
            "per_s": round(count / seconds, 1), "p50_ms": round(sink["p50_ms"], 1),
            "p99_ms": round(sink["p99_ms"], 1), "queue_type": queue_type, "size": size,
            "publish_seconds": round(src["t_end"] - src["t0"], 3),
            "duplicates": sink["duplicates"]}


# --------------------------------------------------------------------------------------------
# The command, with its own vhost


class _Management:
    def __init__(self, api: str, user: str, password: str):
        self.api = api.rstrip("/")
        token = b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "content-type": "application/json"}

    def _call(self, method: str, path: str, body: dict | None = None,
              attempts: int = 3) -> None:
        """PUT / DELETE, both idempotent: retried when a busy broker drops the request."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, attempts + 1):
            req = urllib.request.Request(f"{self.api}{path}", data=data, method=method,
                                         headers=self.headers)
            try:
                with urllib.request.urlopen(req, timeout=60):
                    return
            except urllib.error.HTTPError:
                raise
            except OSError as exc:
                if attempt == attempts:
                    raise
                log(f"management API: {exc!r}, again")
                time.sleep(2)

    def create_vhost(self, vhost: str, user: str) -> None:
        v = quote(vhost, safe="")
        self._call("PUT", f"/api/vhosts/{v}", {})
        self._call("PUT", f"/api/permissions/{v}/{quote(user, safe='')}",
                   {"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self, vhost: str) -> None:
        try:
            self._call("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="The broker's ceiling for a 4-hop chain of persistent messages "
                    "(source -> 3 confirming workers -> sink, one process each): the baseline "
                    "for the gridflow pipeline.")
    ap.add_argument("--mode", choices=(*MODES, "both"), default="both")
    ap.add_argument("--queue-type", choices=(*QUEUE_TYPES, "both"), default="quorum")
    ap.add_argument("--count", type=int, default=None,
                    help="messages per run (default: " + ", ".join(
                        f"{m} {c}" for m, c in DEFAULT_COUNTS.items()) + ")")
    ap.add_argument("--size", type=int, default=500, help="message bytes (default 500)")
    ap.add_argument("--runs", type=int, default=1, help="runs of each mode and queue type")
    ap.add_argument("--prefetch", type=int, default=None, help="default: " + ", ".join(
        f"{m} {c}" for m, c in DEFAULT_PREFETCH.items()))
    ap.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                    help="pipelined source's unconfirmed window (default %(default)s)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--api", default="http://127.0.0.1:15672", help="management API")
    ap.add_argument("--user", default="guest")
    ap.add_argument("--password", default="guest")
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines too")
    args = ap.parse_args(argv)

    modes = MODES if args.mode == "both" else (args.mode,)
    qtypes = QUEUE_TYPES if args.queue_type == "both" else (args.queue_type,)
    mgmt = _Management(args.api, args.user, args.password)
    vhost = f"nameko_test_rawchain_{uuid.uuid4().hex[:8]}"
    url = (f"amqp://{quote(args.user, safe='')}:{quote(args.password, safe='')}"
           f"@{args.host}:{args.port}/{quote(vhost, safe='')}")
    rows: list[dict] = []

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # deletes the vhost on `kill` / `timeout` too
    log(f"vhost {vhost}")
    guard = None
    try:
        mgmt.create_vhost(vhost, args.user)  # in the try: a timed-out PUT may still create it
        # An idle connection held open for the whole command: tests/clean_vhosts.py (run by
        # deploy/test.sh) deletes nameko_test_* vhosts that no connection uses, which would
        # otherwise catch this one between two runs. No heartbeats: it is never serviced.
        guard = pika.BlockingConnection(_parent_params(url + "?heartbeat=0"))
        for qtype in qtypes:
            for mode in modes:
                count = args.count or DEFAULT_COUNTS[mode]
                for run in range(1, args.runs + 1):
                    log(f"{mode} {qtype} run {run}/{args.runs}: {count} x {args.size} B ...")
                    started = time.monotonic()
                    r = run_chain(url, mode, count, args.size, qtype, prefetch=args.prefetch,
                                  window=args.window)
                    r["wall_s"] = round(time.monotonic() - started, 1)
                    log(f"{mode} {qtype}: {r['per_s']:.0f} msg/s ({r['seconds']:.2f} s), "
                        f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, "
                        f"wall {r['wall_s']} s")
                    rows.append(r)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Exception as exc:
        log(f"failed: {exc!r}" if not isinstance(exc, RuntimeError) else f"failed: {exc}")
        return 1
    finally:
        if guard is not None:
            _close(guard)
        try:
            mgmt.delete_vhost(vhost)
            log(f"deleted vhost {vhost}")
        except Exception as exc:
            log(f"cannot delete vhost {vhost}: {exc!r}")
        _print_table(rows)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return 0


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    head = f"{'mode':<10} {'queues':<8} {'count':>7} {'seconds':>8} {'msg/s':>8} " \
           f"{'p50 ms':>8} {'p99 ms':>8}"
    print(head)
    for r in rows:
        print(f"{r['mode']:<10} {r['queue_type']:<8} {r['count']:>7} {r['seconds']:>8.2f} "
              f"{r['per_s']:>8.0f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f}")


if __name__ == "__main__":
    sys.exit(main())
