#!/usr/bin/env bash
# install-postgres.sh — Debian's PostgreSQL 15 server binaries (initdb, pg_ctl, postgres), which the
# store tests (tests/pg_util.py) run as their own throw-away server: `initdb` on a temp dir, `pg_ctl
# start` on a free loopback port, stopped at the end of the session. The package's own cluster and
# service are not used (a container has no systemd). Idempotent; needs root (or sudo) to install.
#
#   bash scripts/install-postgres.sh          # prints the pg_ctl it found
set -euo pipefail

find_pg_ctl() {
  command -v pg_ctl 2>/dev/null && return 0
  ls -1d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -1
}

PG_CTL="$(find_pg_ctl || true)"
if [[ -n "$PG_CTL" && -x "$PG_CTL" ]]; then
  echo "install-postgres: $("$PG_CTL" --version) ($PG_CTL)"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-postgres postgresql
PG_CTL="$(find_pg_ctl || true)"
[[ -n "$PG_CTL" && -x "$PG_CTL" ]] || { echo "install-postgres: ERROR: installed but no pg_ctl found" >&2; exit 1; }
echo "install-postgres: ok ($("$PG_CTL" --version))"
