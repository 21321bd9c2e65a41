"""``Observed``: what every gridflow service shows its operators.

Mix it into a service class::

    class RoutingService(Observed):
        name = "routing"

and the service gets

- ``heartbeat = Heartbeat()``: a beat every ``GRIDFLOW_HEARTBEAT_S`` on
  ``gridflow.heartbeats`` (see ``shared.extensions.heartbeat``);
- ``GET /metrics``: the process' Prometheus registry (``shared.metrics``) in the text
  format, after ``refresh_metrics()`` has set the gauges that are read at scrape time.

``refresh_metrics`` is the hook: by default it sets ``gridflow_outbox_backlog`` for every
``Store`` the service has; a service overrides it (calling ``super()``) to read more, as
escalation does for ``gridflow_clocks_due``. A hook that fails (database away) is logged
and the rest of the page is served all the same.

nameko finds entrypoints and dependency providers on base classes too, so a subclass needs
nothing else; its own method named ``metrics_page`` or attribute ``heartbeat`` would replace
these.
"""

from __future__ import annotations

import hmac
import inspect
import logging
from functools import cache
from typing import Any

from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Request, Response

from shared import metrics
from shared.access import token_from, unauthenticated
from shared.config import setting
from shared.extensions.heartbeat import Heartbeat
from shared.extensions.http import json_http
from shared.extensions.store import Store
from shared.outbox import outbox_backlog

log = logging.getLogger(__name__)


@cache
def _stores(cls: type) -> tuple[tuple[str, Store], ...]:
    """The ``Store`` dependency providers declared on a service class, by attribute."""
    return tuple(inspect.getmembers(cls, lambda v: isinstance(v, Store)))


class MetricsToken(DependencyProvider):
    """The bearer token a scraper sends to ``/metrics`` (``GRIDFLOW_METRICS_TOKEN``; unset:
    the page refuses every request)."""

    def setup(self) -> None:
        self.token: str = setting(self.container.config, "GRIDFLOW_METRICS_TOKEN", "") or ""

    def get_dependency(self, worker_ctx: Any) -> str:
        return self.token


def check_scraper(token: str, authorization: str | None) -> None:
    if not token:
        raise unauthenticated("metrics are off: set GRIDFLOW_METRICS_TOKEN and send it as "
                              "'Authorization: Bearer <token>'")
    given = token_from(authorization, None)
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise unauthenticated("wrong metrics token")


class Observed:
    """Mixin for service classes: heartbeats and ``GET /metrics`` (for a scraper holding
    the metrics token)."""

    name: str
    heartbeat = Heartbeat()
    metrics_token = MetricsToken()

    @json_http("GET", "/metrics", public=True,  # not an API key: the scraper's own token
               security="metricsToken", responses={200: {"text/plain": None}},
               summary="Prometheus metrics")
    def metrics_page(self, request: Request) -> Response:
        check_scraper(self.metrics_token, request.headers.get("Authorization"))
        try:
            self.refresh_metrics()
        except Exception as exc:  # the counters are still worth serving
            log.warning("scrape-time metrics not refreshed",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
        return Response(metrics.render(), status=200, content_type=metrics.CONTENT_TYPE)

    def refresh_metrics(self) -> None:
        """Set the gauges read at scrape time: the outbox backlog of each store."""
        stores = _stores(type(self))
        if not stores:
            return
        backlog = 0
        for attr, store in stores:
            access: Any = getattr(self, attr)
            with access.read() as session:
                backlog += outbox_backlog(session, store.outbox_model)
        metrics.OUTBOX_BACKLOG.labels(self.name).set(backlog)
