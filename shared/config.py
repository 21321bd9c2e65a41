"""Settings, read from a service's nameko config with environment variables as fallback.

Every key can be set in ``deploy/config/<service>.yaml`` (which itself reads the
environment) or directly in the environment. Defaults run the demo on one machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672/"


# Where each service listens over HTTP: intake is the API, monitor the operators' page; every
# service serves its /health and its Prometheus /metrics. GRIDFLOW_<SERVICE>_HTTP_ADDRESS
# overrides.
HTTP_ADDRESSES = {
    "intake": "127.0.0.1:8000",
    "monitor": "127.0.0.1:8001",
    "escalation": "127.0.0.1:8002",
    "routing": "127.0.0.1:8003",
    "notify": "127.0.0.1:8004",
}


def http_address(service: str, config: Mapping[str, Any] | None = None) -> str:
    config = config or {}
    own = setting(config, f"GRIDFLOW_{service.upper()}_HTTP_ADDRESS", None)
    if own:
        return str(own)
    if service == "intake":
        return str(setting(config, "GRIDFLOW_HTTP_ADDRESS", HTTP_ADDRESSES["intake"]))
    return HTTP_ADDRESSES.get(service, "127.0.0.1:0")


def setting(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key)
    if value in (None, ""):
        value = os.environ.get(key)
    return default if value in (None, "") else value


@dataclass(frozen=True)
class Settings:
    amqp_uri: str
    database_url: str | None
    var_dir: Path
    data_dir: Path
    public_url: str
    prefetch: int
    batch_size: int
    batch_linger_ms: int
    relay_batch: int
    max_attempts: int
    poll_interval_s: float
    rating_window_days: float  # how long a reporter may rate a closed case
    follow_up_days: float  # when the follow-up visit (回访) after closing is due

    @classmethod
    def from_config(cls, config: Mapping[str, Any], service: str | None = None) -> Settings:
        db_url = None
        if service:
            db_url = setting(config, f"{service.upper()}_DATABASE_URL", None)
        return cls(
            amqp_uri=str(setting(config, "AMQP_URI", DEFAULT_AMQP_URI)),
            database_url=db_url or setting(config, "DATABASE_URL", None),
            var_dir=Path(setting(config, "GRIDFLOW_VAR_DIR", PROJECT_ROOT / "var")),
            data_dir=Path(setting(config, "GRIDFLOW_DATA_DIR", PROJECT_ROOT / "deploy" / "demo")),
            public_url=str(setting(config, "GRIDFLOW_PUBLIC_URL", "http://127.0.0.1:8000")).rstrip(
                "/"
            ),
            prefetch=int(setting(config, "GRIDFLOW_PREFETCH", 200)),
            batch_size=int(setting(config, "GRIDFLOW_BATCH_SIZE", 100)),
            batch_linger_ms=int(setting(config, "GRIDFLOW_BATCH_LINGER_MS", 2)),
            relay_batch=int(setting(config, "GRIDFLOW_RELAY_BATCH", 500)),
            max_attempts=int(setting(config, "GRIDFLOW_MAX_ATTEMPTS", 6)),
            poll_interval_s=float(setting(config, "GRIDFLOW_POLL_INTERVAL_S", 1.0)),
            rating_window_days=float(setting(config, "GRIDFLOW_RATING_WINDOW_DAYS", 7)),
            follow_up_days=float(setting(config, "GRIDFLOW_FOLLOW_UP_DAYS", 3)),
        )
