#!/usr/bin/env bash
# install-prometheus.sh — Debian's prometheus package (2.42: prometheus + promtool), which the
# monitoring test (tests/test_prometheus.py) starts on loopback against a running pipeline.
# Idempotent: does nothing when both binaries are there. Needs root (or sudo) to install.
# The package's own service is not used (and not started here: a container has no systemd).
#
#   bash scripts/install-prometheus.sh    # then: promtool check config deploy/prometheus/prometheus.yml
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  echo "install-prometheus: $(prometheus --version 2>&1 | head -1)"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-prometheus prometheus
command -v prometheus >/dev/null && command -v promtool >/dev/null \
  || { echo "install-prometheus: ERROR: package installed but prometheus/promtool not on PATH" >&2; exit 1; }
echo "install-prometheus: ok ($(prometheus --version 2>&1 | head -1))"
