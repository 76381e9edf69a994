#!/usr/bin/env bash
# install-rtsp.sh — the Debian packages the RTSP test server (scripts/rtsp_server.py) needs.
# Idempotent: does nothing when they are already there. Needs root (or sudo) to install.
#
#   bash scripts/install-rtsp.sh          # then: /usr/bin/python3 scripts/rtsp_server.py --help
set -euo pipefail

PKGS=(gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
      gstreamer1.0-plugins-base python3-gi)

check() {
  /usr/bin/python3 - <<'EOF' 2>/dev/null
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("multifilesrc", "jpegdec", "jpegenc", "x264enc", "rtph264pay", "rtpjpegpay",
                       "videotestsrc", "videoconvert") if Gst.ElementFactory.find(e) is None]
raise SystemExit(1 if missing else 0)
EOF
}

if check; then
  echo "install-rtsp: gst-rtsp-server and plugins already installed"
  exit 0
fi
source "$(dirname "$0")/apt.sh"
apt_install install-rtsp --recommends "${PKGS[@]}"
check || { echo "install-rtsp: ERROR: packages installed but GStreamer elements still missing" >&2; exit 1; }
echo "install-rtsp: ok"
