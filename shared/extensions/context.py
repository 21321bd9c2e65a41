"""Dependencies every service uses: reference data and the clock."""

from __future__ import annotations

from nameko.extensions import DependencyProvider

from shared.clock import Clock, clock_from_env
from shared.config import Settings, setting
from shared.reference import ReferenceData, load_reference


class Reference(DependencyProvider):
    """The grid, the catalogue and the calendar, loaded (and checked) at start-up."""

    def setup(self) -> None:
        self.data = load_reference(Settings.from_config(self.container.config).data_dir)

    def get_dependency(self, worker_ctx: object) -> ReferenceData:
        return self.data


class ClockProvider(DependencyProvider):
    """Domain time. An explicit ``clock`` wins; otherwise the demo clock when
    ``GRIDFLOW_CLOCK_SPEED`` / ``_START`` / ``_EPOCH`` are set (in the nameko config or the
    environment, read when the container starts), else wall-clock time
    (``shared.clock.clock_from_env``). Tests swap in a FakeClock with
    ``replace_dependencies``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._explicit = clock
        self.clock: Clock | None = clock

    def setup(self) -> None:
        if self._explicit is None:
            config = self.container.config
            self.clock = clock_from_env(lambda key: setting(config, key, None))

    def get_dependency(self, worker_ctx: object) -> Clock:
        if self.clock is None:  # not set up (used outside a container)
            self.clock = clock_from_env()
        return self.clock
