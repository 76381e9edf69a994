#!/usr/bin/env bash
# fetch_footage.sh — a real street video for the gate benchmark: OpenCV's sample vtest.avi
# (768x576, 10 fps, 795 frames = 79.5 s of people walking on a pedestrian street, no vehicle),
# as Debian ships it in opencv-doc (/usr/share/doc/opencv-doc/examples/data/vtest.avi).
#
# `apt-get download` fetches the .deb (~96 MB) through apt's own client without installing it
# (no root needed), the one file is taken out with dpkg-deb and checked against its pinned
# sha256, and the .deb is deleted: .cache/footage/vtest.avi (8 MB).
#
#   scripts/fetch_footage.sh               # -> .cache/footage/vtest.avi
#   HAZARDCTL_FOOTAGE_CACHE=/some/dir scripts/fetch_footage.sh
#
# Idempotent: exits early when the file is there and verifies.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HAZARDCTL_FOOTAGE_CACHE:-$ROOT/.cache/footage}"
OUT="$CACHE/vtest.avi"
SHA256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
MEMBER="./usr/share/doc/opencv-doc/examples/data/vtest.avi"

log() { echo "fetch_footage: $*" >&2; }
ok() { [[ -f "$OUT" ]] && [[ "$(sha256sum "$OUT" | cut -d' ' -f1)" == "$SHA256" ]]; }

if ok; then
  log "$OUT already there"
  exit 0
fi
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
  log "ERROR: needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch opencv-doc"; exit 1; }
mkdir -p "$CACHE"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
if ! apt-get download opencv-doc >/dev/null 2>"$WORK/apt.err"; then
  log "apt-get download opencv-doc failed; trying apt-get update first"
  SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  apt-get download opencv-doc >/dev/null 2>"$WORK/apt.err" || { cat "$WORK/apt.err" >&2; exit 1; }
fi
DEB="$(ls "$WORK"/opencv-doc_*.deb)"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO "$MEMBER" > "$OUT.part"
mv "$OUT.part" "$OUT"
ok || { log "ERROR: $OUT does not match sha256 $SHA256 (another opencv-doc version?)"; rm -f "$OUT"; exit 1; }
log "ok: $OUT from $(basename "$DEB")"
