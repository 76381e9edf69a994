#!/usr/bin/env bash
# Install what the browser test of the live page needs: Debian's chromium and Playwright for
# Python (the driver only). Idempotent: does nothing when both are already there.
# Never runs `playwright install` (no browser downloads: this machine may be offline).
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1; then
    source scripts/apt.sh
    apt_install install-chromium chromium fonts-dejavu-core
fi

if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
    echo "install-chromium: installing playwright (python driver only)" >&2
    "$PY" -m pip install -q "playwright>=1.45"
fi

echo "install-chromium: ok ($(chromium --version 2>/dev/null | head -1))" >&2
