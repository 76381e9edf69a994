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
source "$(dirname "$0")/apt.sh"
apt_install install-systemd systemd
command -v systemd-analyze >/dev/null || { echo "install-systemd: ERROR: installed but systemd-analyze not on PATH" >&2; exit 1; }
echo "install-systemd: ok ($(systemd-analyze --version | head -1))"
