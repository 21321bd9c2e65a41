"""A TCP fault proxy: forwards a local port to a real server and can cut the line.

The services under test connect to the proxy instead of RabbitMQ or PostgreSQL. ``cut()``
closes every open connection (both ends see the socket close, as when a server dies or a
firewall resets the flow) and, until ``restore()``, new connections are either refused
(``mode="refuse"``: nothing listens on the port) or black-holed (``mode="blackhole"``:
accepted, then never answered, as behind a partition that drops packets). The real
servers are never touched, so other tests sharing them are not disturbed.

The proxy runs on real OS threads with the unpatched socket module, so it keeps
forwarding whatever eventlet's hub is doing in the test process (the services under test
may run in that very hub).
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventlet.patcher import original

_socket: Any = original("socket")
_threading: Any = original("threading")
_select: Any = original("select")
_time: Any = original("time")

BUFFER = 64 * 1024


class FaultProxy:
    def __init__(self, upstream: tuple[str, int], *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.mode = "up"  # "up", "refuse" or "blackhole"
        self.accepted = 0  # connections forwarded, ever
        self.cuts = 0
        self._lock = _threading.Lock()
        self._links: set[_Link] = set()
        self._held: set[Any] = set()  # black-holed client sockets
        self._listener: Any = None
        self._stopping = False
        self._thread: Any = None

    # -- life ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listen()
        self._thread = _threading.Thread(target=self._accept_loop, name="fault-proxy",
                                         daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._close_all()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            listener, self._listener = self._listener, None
        _close(listener)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # -- faults ----------------------------------------------------------------------------
    def cut(self, mode: str = "refuse") -> None:
        """Close every open connection; refuse or black-hole new ones until ``restore``."""
        if mode not in ("refuse", "blackhole"):
            raise ValueError(mode)
        with self._lock:
            self.mode = mode
            self.cuts += 1
            if mode == "refuse":
                listener, self._listener = self._listener, None
            else:
                listener = None
        _close(listener)
        self._close_all()

    def restore(self) -> None:
        """Forward new connections again (black-holed ones are closed: clients reconnect)."""
        with self._lock:
            held, self._held = self._held, set()
        for sock in held:
            _close(sock)
        with self._lock:
            if self._listener is None:
                self._listen_locked()
            self.mode = "up"

    # -- URLs ------------------------------------------------------------------------------
    def url(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{self.host}:{self.port}" if auth else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- internals -------------------------------------------------------------------------
    def _listen(self) -> None:
        with self._lock:
            self._listen_locked()

    def _listen_locked(self) -> None:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock

    def _accept_loop(self) -> None:
        while not self._stopping:
            with self._lock:
                listener = self._listener
            if listener is None:
                _time.sleep(0.02)
                continue
            try:
                ready, _, _ = _select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _addr = listener.accept()
            except (OSError, ValueError):  # closed under us by cut()
                continue
            with self._lock:
                mode = self.mode
                if mode == "blackhole":
                    self._held.add(client)
                    continue
            if mode != "up":
                _close(client)
                continue
            _threading.Thread(target=self._open_link, args=(client,), daemon=True).start()

    def _open_link(self, client: Any) -> None:
        try:
            server = _socket.create_connection(self.upstream, timeout=5)
            server.settimeout(None)
        except OSError:
            _close(client)
            return
        link = _Link(client, server, self._forget)
        with self._lock:
            up = self.mode == "up" and not self._stopping
            if up:
                self._links.add(link)
                self.accepted += 1
        if up:
            link.start()
        else:
            link.close()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _close_all(self) -> None:
        with self._lock:
            links, self._links = list(self._links), set()
            held = list(self._held) if self._stopping else []
            if self._stopping:
                self._held = set()
        for link in links:
            link.close()
        for sock in held:
            _close(sock)


class _Link:
    """One forwarded connection: two pumping threads, closed together."""

    def __init__(self, client: Any, server: Any, on_close: Any) -> None:
        self.client = client
        self.server = server
        self._on_close = on_close
        self._closed = False
        self._lock = _threading.Lock()

    def start(self) -> None:
        for src, dst in ((self.client, self.server), (self.server, self.client)):
            _threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(BUFFER)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.server):
            _close(sock)
        self._on_close(self)


def _close(sock: Any) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.shutdown(_socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
