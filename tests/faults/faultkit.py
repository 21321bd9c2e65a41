"""Helpers for the fault tests."""

from __future__ import annotations

from typing import Any

import pytest

from shared.extensions.store import Store
from support import TEST_BACKENDS

# For tests whose outcome does not depend on the database: run them on one backend only.
one_backend = pytest.mark.parametrize("database_url", TEST_BACKENDS[:1], indirect=True)


def only_on(backend: str) -> pytest.MarkDecorator:
    """Run the test on ``backend`` only (skipped when that backend's runs are off)."""
    return pytest.mark.parametrize(
        "database_url",
        [pytest.param(backend, marks=pytest.mark.skipif(
            backend not in TEST_BACKENDS, reason=f"{backend} runs are switched off"))],
        indirect=True,
    )


def store_of(container: Any) -> Store:
    return next(d for d in container.extensions if isinstance(d, Store))


def backlog(containers: dict[str, Any]) -> dict[str, int]:
    """Unsent outbox rows of every service."""
    return {name: store_of(c).relay.backlog() for name, c in containers.items()}
