#!/usr/bin/env bash
# install-iproute2.sh — `ss`, for the test that lists every listening socket of the demo and the loadtest
# (tests/test_listeners.py: no hazardctl listener on a wildcard address unless asked).
# Idempotent: does nothing when ss is already there. Needs root (or sudo) to install.
set -euo pipefail
if command -v ss >/dev/null; then
  echo "install-iproute2: ss already installed"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-iproute2 --recommends iproute2
command -v ss >/dev/null || { echo "install-iproute2: ERROR: ss still missing after apt-get" >&2; exit 1; }
echo "install-iproute2: ok"
