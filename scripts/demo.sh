#!/usr/bin/env bash
# The whole pipeline on the embedded default: Unix pipes, the local expand engine, the real
# detector (CenterNet COCO, onnxruntime) on looping test images, and — when no API key is
# configured — the simulated LLM. Open http://127.0.0.1:8080 to watch incidents appear.
#
#   make demo                                   # or: bash scripts/demo.sh
#   DEMO_SOURCES="rtsp://cam1/stream" make demo # your own cameras
#   DEMO_SECONDS=60 make demo                   # stop by itself after a minute
#   DEMO_DATA=/var/tmp/hz make demo             # where the incident store and evidence go (.cache/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HAZARDCTL:-.venv/bin/hazardctl}
HTTP=${DEMO_HTTP:-127.0.0.1:8080}
WS=${DEMO_WS:-127.0.0.1:8765}

sources=()
if [ -n "${DEMO_SOURCES:-}" ]; then
  i=0
  for s in $DEMO_SOURCES; do i=$((i + 1)); sources+=(--source "$s" --camera-id "cam-$(printf %02d $i)"); done
else
  sources=(--source tests/data/bus.jpg --camera-id demo-bus --source tests/data/zidane.jpg --camera-id demo-zidane --loop)
fi

echo "demo: detect → expand → schedule → consume; live page on http://$HTTP (WebSocket ws://$WS/ws)" >&2
limit=() eof=()
if [ -n "${DEMO_SECONDS:-}" ]; then  # stop the cameras after DEMO_SECONDS; the end of input then drains each stage
  limit=(timeout -s TERM "$DEMO_SECONDS") eof=(--exit-on-eof)
fi
"${limit[@]}" "$H" detect "${sources[@]}" --fps 1 --conf 0.3 \
  | "$H" expand --refresh 5 \
  | "$H" schedule \
  | "$H" consume --ws "$WS" --http "$HTTP" --min-level low --data-dir "${DEMO_DATA:-.cache/demo}" "${eof[@]}" || rc=$?
[ "${rc:-0}" = 0 ] || [ "${rc}" = 124 ] || exit "$rc"   # 124: DEMO_SECONDS ran out, as asked
