"""Run one gridflow service in this process: ``python -m gridflow.run_service intake``.

eventlet must patch the standard library before anything else is imported.
"""

import warnings

warnings.filterwarnings("ignore", message=".*Eventlet is deprecated.*")

import eventlet  # noqa: E402

eventlet.monkey_patch()

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging.config  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402
from nameko.cli.main import setup_yaml_parser  # noqa: E402
from nameko.cli.run import run  # noqa: E402

from gridflow import SERVICES  # noqa: E402
from shared.config import PROJECT_ROOT  # noqa: E402
from shared.logs import logging_config  # noqa: E402

DEFAULT_CONFIG = PROJECT_ROOT / "deploy" / "config" / "gridflow.yaml"


def load_config(path: Path) -> dict:
    setup_yaml_parser()
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def service_class(name: str) -> type:
    module, _, attr = SERVICES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gridflow run", description="Run one gridflow service in the foreground."
    )
    parser.add_argument("service", choices=sorted(SERVICES))
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"nameko YAML config (default: {DEFAULT_CONFIG})",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GRIDFLOW_SERVICE", args.service)
    config = load_config(args.config)
    logging.config.dictConfig(
        logging_config(args.service, os.environ.get("GRIDFLOW_LOG_LEVEL", "INFO"))
    )
    logging.getLogger("gridflow").info("starting", extra={"pid": os.getpid()})
    run([service_class(args.service)], config)


if __name__ == "__main__":
    main()
