#!/usr/bin/env bash
# Make sure a PostgreSQL server runs on 127.0.0.1:5432 for the test suite: start it if it is
# installed, install it (as root) if it is not. gridflow itself runs on SQLite by default.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/lib.sh

if port_open 127.0.0.1 5432; then exit 0; fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  apt_install postgresql
  fresh=1
fi
is_root || die "PostgreSQL is installed but not running; as root: pg_ctlcluster <version> main start"
say "starting PostgreSQL …"
for v in /etc/postgresql/*; do
  pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start 2>/dev/null ||
    pg_ctlcluster "$(basename "$v")" main start || true
done
wait_port 127.0.0.1 5432 60 PostgreSQL
if [ "${fresh:-}" = 1 ]; then
  # a fresh Debian cluster wants a password over TCP: give the test suite one
  su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'gridflow'\"" >/dev/null
  mkdir -p var && echo "postgresql://postgres:gridflow@127.0.0.1:5432/postgres" > var/test-pg-url
fi
