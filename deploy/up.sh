#!/usr/bin/env bash
# Set everything up (venv, dependencies, RabbitMQ) and run all of gridflow with the demo
# district 雨城区. Ctrl-C stops it. Extra arguments go to `gridflow up`.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install.sh
exec .venv/bin/gridflow up "$@"
