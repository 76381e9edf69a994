#!/usr/bin/env bash
# Fetch the COCO-80 object detector and convert it to ONNX.
#
# Source: npm package @vladmandic/human@3.3.6 (MIT), files models/centernet.{json,bin}:
# a MobileNetV3-CenterNet in TensorFlow.js graph format (fp16 weights).  Only the npm
# registry is needed (no GitHub / model hub).  The two files are checked against pinned
# sha256 values, then scripts/tfjs_to_onnx.py (numpy + onnx) writes centernet-coco.onnx.
#
#   scripts/fetch_models.sh            # -> .cache/models/centernet-coco.onnx
#   HAZARDCTL_MODEL_CACHE=/some/dir PYTHON=/path/to/python scripts/fetch_models.sh
#
# Then scripts/check_tfjs.py runs the original tfjs graph in the TensorFlow.js runtime (npm, pinned in
# scripts/tfjs/) and the ONNX file in onnxruntime on real images: boxes within 0.001 px or it fails.
# Its pass is remembered (centernet-coco.tfjs-check: the sha256 of every input) until a file changes.
#
# Then scripts/quantize_model.py writes centernet-coco-int8.onnx (NNCF's static int8, calibrated on frames the
# project ships or makes; OpenVINO runs it: `--model .cache/models/centernet-coco-int8.onnx`), when nncf is
# installed (the [dev] extra); rebuilt when the fp32 model or the script changes (centernet-coco-int8.inputs).
#
# Idempotent: exits early when the ONNX file is already there and verifies.
set -euo pipefail

PKG="@vladmandic/human@3.3.6"
JSON_SHA256="bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05"
BIN_SHA256="1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef"
# Output of the current converter (same bytes with onnx 1.16..1.23, protobuf 4..7, numpy 1..2).
# Update it whenever scripts/tfjs_to_onnx.py changes what it writes.
ONNX_SHA256="7b141a52d82c0334688a7bde0bea00c619ccd267665718453c020d17b956d65e"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HAZARDCTL_MODEL_CACHE:-$ROOT/.cache/models}"
PYTHON="${PYTHON:-python3}"
ONNX="$CACHE/centernet-coco.onnx"

log() { echo "fetch_models: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

check_sha() {  # file expected -> 0 when the file exists and matches
    [[ -f "$1" ]] && [[ "$(sha256 "$1")" == "$2" ]]
}

verify_onnx() {  # pinned sha256, else fall back to a structural check (other onnx version)
    [[ -f "$ONNX" ]] || return 1
    local got
    got="$(sha256 "$ONNX")"
    if [[ "$got" == "$ONNX_SHA256" ]]; then
        log "ok: $ONNX (sha256 $got)"
        return 0
    fi
    "$PYTHON" -c 'import numpy, onnx' 2>/dev/null || return 1
    "$PYTHON" "$ROOT/scripts/tfjs_to_onnx.py" --verify "$ONNX" >&2 || return 1
    log "WARNING: $ONNX sha256 $got differs from pinned $ONNX_SHA256 (structural check passed)"
}

check_tfjs() {  # ONNX vs the tfjs runtime, once per set of inputs (needs node + npm)
    local stamp="$CACHE/centernet-coco.tfjs-check" want f
    want="$(for f in "$ONNX" "$CACHE/centernet.json" "$CACHE/centernet.bin" "$ROOT/scripts/check_tfjs.py" \
                     "$ROOT/scripts/tfjs/package-lock.json" "$ROOT/scripts/tfjs/run_centernet.mjs"; do sha256 "$f"; done)"
    if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; then
        log "ok: matches the TensorFlow.js runtime (checked before; $stamp)"
        return 0
    fi
    "$PYTHON" "$ROOT/scripts/check_tfjs.py" --onnx "$ONNX" --tfjs-json "$CACHE/centernet.json" >&2 \
        || die "$ONNX does not match the TensorFlow.js runtime (scripts/check_tfjs.py)"
    echo "$want" > "$stamp"
}

quantize() {  # the int8 model beside it (scripts/quantize_model.py), rebuilt when the fp32 file or the script changes
    local int8="$CACHE/centernet-coco-int8.onnx" stamp="$CACHE/centernet-coco-int8.inputs" want
    want="$(sha256 "$ONNX") $(sha256 "$ROOT/scripts/quantize_model.py")"
    if [[ -f "$int8" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; then
        log "ok: $int8"
        return 0
    fi
    if ! "$PYTHON" -c "import nncf" >/dev/null 2>&1; then  # optional: the [dev] extra brings NNCF
        log "skipped the int8 model: nncf is not installed (pip install -e '.[dev]')"
        return 0
    fi
    "$PYTHON" "$ROOT/scripts/quantize_model.py" "$ONNX" "$int8.tmp" >&2 || die "int8 quantization failed"
    mv -f "$int8.tmp" "$int8"
    echo "$want" > "$stamp"
}

if verify_onnx && [[ -f "$CACHE/centernet.json" && -f "$CACHE/centernet.bin" ]]; then
    check_tfjs
    quantize
    echo "$ONNX"
    exit 0
fi

"$PYTHON" -c 'import numpy, onnx' 2>/dev/null \
    || die "$PYTHON needs numpy and onnx (pip install numpy onnx), or set PYTHON=..."
mkdir -p "$CACHE"

if check_sha "$CACHE/centernet.json" "$JSON_SHA256" && check_sha "$CACHE/centernet.bin" "$BIN_SHA256"; then
    log "using cached centernet.json/.bin"
else
    command -v npm >/dev/null 2>&1 || die "npm not found (needed to fetch $PKG)"
    TMP="$(mktemp -d "$CACHE/.tmp.XXXXXX")"
    trap 'rm -rf "$TMP"' EXIT
    log "npm pack $PKG"
    (cd "$TMP" && npm pack "$PKG" --silent >/dev/null) || die "npm pack $PKG failed"
    TGZ="$(ls "$TMP"/*.tgz)"
    tar -xzf "$TGZ" -C "$TMP" package/models/centernet.json package/models/centernet.bin
    check_sha "$TMP/package/models/centernet.json" "$JSON_SHA256" || die "centernet.json sha256 mismatch"
    check_sha "$TMP/package/models/centernet.bin" "$BIN_SHA256" || die "centernet.bin sha256 mismatch"
    mv -f "$TMP/package/models/centernet.json" "$TMP/package/models/centernet.bin" "$CACHE/"
    rm -rf "$TMP"
    trap - EXIT
fi

log "converting to $ONNX"
"$PYTHON" "$ROOT/scripts/tfjs_to_onnx.py" "$CACHE/centernet.json" "$ONNX.tmp" >&2
mv -f "$ONNX.tmp" "$ONNX"
verify_onnx || die "converted model failed verification"
check_tfjs
quantize
echo "$ONNX"
