"""How soon the outbox relay tries again after the broker or the database failed it.

The relay backs off while publishing fails, doubling its wait from the poll interval. The
wait is capped (``GRIDFLOW_RELAY_MAX_BACKOFF_S``, 5 s by default): after a long outage the
events must leave within seconds of the broker's return, not up to half a minute later, as
they did with the old 30 s cap. The relay's waits are recorded instead of slept.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import exc as sa_exc

from shared.amqp.publisher import PublishError
from shared.outbox import DEFAULT_MAX_BACKOFF_S, OutboxRelay


class RecordedWaits:
    """Stands in for the relay's stop event: records each wait, stops after ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return len(self.waits) >= self.limit

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


def relay_failing_with(errors: list[BaseException | None], limit: int, **kw: Any) -> Any:
    """A relay whose drains fail with ``errors`` in turn (None: a drain that works), and
    the list its waits, backoffs and poll waits alike, are recorded in."""
    relay = OutboxRelay(None, None, None, hold_claims=False, **kw)  # type: ignore[arg-type]

    def drain() -> int:
        error = errors.pop(0) if errors else None
        if error is not None:
            raise error
        return 0

    relay.drain = drain  # type: ignore[method-assign]
    relay._stopping = relay._wake = waits = RecordedWaits(limit)  # type: ignore[assignment]
    relay.run()
    return relay, waits.waits


@pytest.mark.parametrize(
    "error",
    [
        PublishError("ConnectionRefusedError: [Errno 111] Connection refused"),
        sa_exc.OperationalError("SELECT", {}, ConnectionRefusedError("database is down")),
    ],
    ids=["broker", "database"],
)
def test_relay_backoff_doubles_up_to_the_cap_then_resets(error: BaseException) -> None:
    relay, waits = relay_failing_with([error] * 8 + [None, error], limit=10, poll_interval_s=1.0)
    assert waits == [1.0, 2.0, 4.0] + [DEFAULT_MAX_BACKOFF_S] * 5 + [1.0, 1.0]
    assert relay.failures == 9


def test_relay_backoff_cap_is_configurable_and_never_below_the_poll_interval() -> None:
    _, waits = relay_failing_with([PublishError("down")] * 5, limit=5, poll_interval_s=0.2,
                                  max_backoff_s=1.0)
    assert waits == [0.2, 0.4, 0.8, 1.0, 1.0]
    slow = OutboxRelay(None, None, None, hold_claims=False, poll_interval_s=10.0,  # type: ignore[arg-type]
                       max_backoff_s=1.0)
    assert slow.max_backoff_s == 10.0
