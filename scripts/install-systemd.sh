#!/usr/bin/env bash
# install-systemd.sh — Debian's systemd package, for `systemd-analyze verify` of deploy/systemd/*
# (tests/test_systemd_units.py). Only the tool is used: nothing is started or enabled, and a
# container without systemd as PID 1 is fine. Idempotent: does nothing when systemd-analyze is there.
# Needs root (or sudo) to install.
set -euo pipefail

if command -v systemd-analyze >/dev/null; then
  echo "install-systemd: $(systemd-analyze --version | head -1)"
  exit 0
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null || { echo "install-systemd: ERROR: need root to apt-get install systemd" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-systemd: apt-get install systemd"
for _ in $(seq 60); do   # another apt run holds the dpkg lock: wait for it, bounded
  $SUDO fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
  sleep 5
done
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
command -v systemd-analyze >/dev/null || { echo "install-systemd: ERROR: installed but systemd-analyze not on PATH" >&2; exit 1; }
echo "install-systemd: ok ($(systemd-analyze --version | head -1))"
