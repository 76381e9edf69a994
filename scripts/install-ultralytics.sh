#!/usr/bin/env bash
# The ultralytics backend (.pt weights) for the test venv, without ultralytics' opencv-python
# dependency: that GUI build writes the same cv2 module as our opencv-python-headless and needs
# libGL. torch 2.14.1 + torchvision 0.29.1 is the pair that imports here (PyPI's Linux torch is the
# CUDA build: ~3 GB of wheels, ~1-2 min to install on 2 cores). Idempotent.
# Users install the plain extra instead: pip install 'hazardctl[ultralytics]'.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
if "$PY" -c "import ultralytics, torch, torchvision" >/dev/null 2>&1; then
  echo "install-ultralytics: already installed" >&2
  exit 0
fi
echo "install-ultralytics: torch==2.14.1 torchvision==0.29.1 ultralytics (no opencv-python)" >&2
"$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$PY" -m pip install -q --no-deps "ultralytics==8.4.190"
"$PY" -m pip install -q "matplotlib>=3.3" "pillow>=7.1.2" "requests>=2.23" "psutil>=5.8" "polars>=0.20" \
  "nvidia-ml-py>=12" "ultralytics-thop>=2.2.3" "ultralytics-platform>=0.1.45"
"$PY" -c "import ultralytics, torch" && echo "install-ultralytics: ok" >&2
