#!/usr/bin/env bash
# Install what gridflow needs on a Debian machine, and only what is missing:
# Python 3.11 with a venv in .venv, the Python dependencies, and a running RabbitMQ with
# its management plugin. Safe to run again.
#   AMQP_URI=amqp://user:pass@host:5672/vhost  use that broker instead of a local one
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/lib.sh

# -- Python 3.11 ---------------------------------------------------------------------------
find_python() {
  local c
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}
PY=$(find_python) || {
  is_root || die "Python 3.11 with venv is needed (Debian 12: apt-get install python3 python3-venv)"
  apt_install python3 python3-venv
  PY=$(find_python) || die "no Python 3.11 after installing python3; gridflow needs 3.11"
}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.gridflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing Python dependencies into .venv (about a minute the first time) …"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi

# -- RabbitMQ ------------------------------------------------------------------------------
if [ -n "${AMQP_URI:-}" ]; then
  say "using the broker in AMQP_URI; not managing a local RabbitMQ"
  exit 0
fi
if ! port_open 127.0.0.1 5672; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    is_root || die "RabbitMQ is neither running on 127.0.0.1:5672 nor installed.
  As root: apt-get install rabbitmq-server   (or set AMQP_URI to a broker you have)"
    apt_install rabbitmq-server
  fi
  is_root || die "RabbitMQ is installed but not running; as root: rabbitmq-server -detached"
  say "starting RabbitMQ …"
  port_open 127.0.0.1 5672 || rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 127.0.0.1 5672 90 RabbitMQ
fi
if ! port_open 127.0.0.1 15672; then
  is_root || die "the RabbitMQ management plugin is off; as root: rabbitmq-plugins enable rabbitmq_management"
  say "enabling the RabbitMQ management plugin (web UI on :15672) …"
  rabbitmq-plugins enable --quiet rabbitmq_management >/dev/null
  wait_port 127.0.0.1 15672 60 "RabbitMQ management"
fi
version=$(rabbitmqctl version 2>/dev/null || echo unknown)
case "$version" in
  3.[0-9].* | unknown) say "RabbitMQ $version: quorum queues with at-least-once dead-lettering need 3.10 or newer" ;;
esac
say "RabbitMQ $version is running on 127.0.0.1:5672"
