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
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-postgres: ERROR: need root to apt-get install postgresql" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-postgres: apt-get install postgresql"
for _ in $(seq 60); do   # another apt run holds the dpkg lock: wait for it, bounded
  $SUDO fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
  sleep 5
done
$SUDO apt-get update -qq
# RUNLEVEL=1: invoke-rc.d does not start the package's own cluster on install
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
PG_CTL="$(find_pg_ctl || true)"
[[ -n "$PG_CTL" && -x "$PG_CTL" ]] || { echo "install-postgres: ERROR: installed but no pg_ctl found" >&2; exit 1; }
echo "install-postgres: ok ($("$PG_CTL" --version))"
