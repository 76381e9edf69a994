#!/usr/bin/env bash
# Run the whole suite against a real local Kafka broker; stop the broker whatever happens.
# A broker that was already running (a developer's `make kafka-up`) is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

started=0
if ! bash scripts/kafka-local.sh status >/dev/null 2>&1; then
  bash scripts/kafka-local.sh up
  started=1
fi
cleanup() { [ "$started" = 1 ] && bash scripts/kafka-local.sh down || true; }
trap cleanup EXIT INT TERM

mkdir -p test-artifacts
# HAZARDCTL_REQUIRE_KAFKA=1: an unreachable broker fails the Kafka tests instead of skipping them.
# HAZARDCTL_REQUIRE_BROWSER=1: a missing chromium fails the live-page test instead of skipping it.
# HAZARDCTL_NO_SKIP=1: any other skip (RTSP server, ultralytics, models) is a failure too; only
#   skip_for_hardware() in a test marked needs_gpu/needs_no_gpu may skip (tests/conftest.py).
HAZARDCTL_REQUIRE_KAFKA=1 HAZARDCTL_REQUIRE_BROWSER=1 HAZARDCTL_NO_SKIP=1 "$PY" -m pytest -ra --durations=15 "$@"
