"""Dependencies every service uses: reference data and the clock."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from shared.clock import Clock, SystemClock
from shared.config import Settings
from shared.reference import ReferenceData, load_reference


class Reference(DependencyProvider):
    """The grid, the catalogue and the calendar, loaded (and checked) at start-up."""

    def setup(self) -> None:
        self.data = load_reference(Settings.from_config(self.container.config).data_dir)

    def get_dependency(self, worker_ctx: object) -> ReferenceData:
        return self.data


class ClockProvider(DependencyProvider):
    """Wall-clock time; tests swap in a FakeClock with ``replace_dependencies``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()

    def get_dependency(self, worker_ctx: object) -> Clock:
        return self.clock
