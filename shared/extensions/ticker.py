"""``@ticker``: nameko's timer with its interval taken from config (``GRIDFLOW_TICK_S``).

Tests set a long interval and drive ticks themselves with a fake clock.
"""

from __future__ import annotations

from typing import Any

from nameko.timer import Timer

from shared.config import setting


class ConfiguredTimer(Timer):
    def __init__(self, setting: str = "GRIDFLOW_TICK_S", default: float = 1.0, **kwargs: Any):
        self.setting = setting
        super().__init__(default, **kwargs)

    def setup(self) -> None:
        self.interval = float(setting(self.container.config, self.setting, self.interval))


ticker = ConfiguredTimer.decorator
