#!/usr/bin/env bash
# install-mosquitto.sh — Debian's mosquitto package (2.0.x), the MQTT broker that the alert-sink
# tests (tests/test_sinks_mqtt.py) start as their own process with a temporary config on a free port.
# Idempotent: does nothing when the binary is there. Needs root (or sudo) to install.
# The package's own service is not used (and not started here: a container has no systemd).
#
#   bash scripts/install-mosquitto.sh    # then: mosquitto -h
set -euo pipefail

if command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]]; then
  echo "install-mosquitto: $( (command -v mosquitto || echo /usr/sbin/mosquitto) )"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-mosquitto mosquitto
{ command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]]; } \
  || { echo "install-mosquitto: ERROR: package installed but mosquitto not found" >&2; exit 1; }
echo "install-mosquitto: ok"
