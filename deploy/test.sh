#!/usr/bin/env bash
# Run the whole test suite: unit, service (in-process nameko containers on the real
# RabbitMQ) and end-to-end (services as processes), each database test on SQLite and on
# PostgreSQL. Extra arguments go to pytest (e.g. -k sqlite, -x, tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/lib.sh
deploy/install.sh
# The monitor's page is tested in a real headless browser: Debian's Chromium and its driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 ||
  [ ! -d /usr/share/fonts/truetype/wqy ]; then
  if is_root; then
    apt_install chromium chromium-driver fonts-wqy-zenhei  # the font: Chinese in screenshots
  else
    say "chromium and chromium-driver are missing (apt-get install chromium chromium-driver); the browser tests will be skipped"
  fi
fi
case "${GRIDFLOW_TEST_DATABASES:-sqlite,postgresql}" in
  *postgresql*) deploy/postgres.sh ;;
esac
if [ -z "${GRIDFLOW_TEST_PG_URL:-}" ] && [ -f var/test-pg-url ]; then
  export GRIDFLOW_TEST_PG_URL=$(cat var/test-pg-url)
fi
.venv/bin/python tests/clean_vhosts.py || true  # what killed runs left behind
say "running the tests …"
exec .venv/bin/python -m pytest "$@"
