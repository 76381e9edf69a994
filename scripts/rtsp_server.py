#!/usr/bin/python3
"""A small RTSP camera for tests and demos: serves a folder of JPEG frames (looped) on 127.0.0.1.

Runs on Debian's own `/usr/bin/python3` (python3-gi + gst-rtsp-server; install them with
`scripts/install-rtsp.sh`), not in the project's virtualenv, which has no GObject bindings.

    /usr/bin/python3 scripts/rtsp_server.py --frames DIR --port 8554 --path /cam --fps 10
    # -> rtsp://127.0.0.1:8554/cam   (H.264 by default; --codec mjpeg for Motion-JPEG)

Frames are read from DIR/%05d.jpg (00000.jpg, 00001.jpg, ...), all the same size. Without
--frames a moving test pattern is served. The server prints `READY <url>` on stdout once it
listens, and exits cleanly on SIGTERM/SIGINT (tests stop and restart it to simulate an outage).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(frames: str | None, fps: int, codec: str) -> str:
    """The GStreamer pipeline of one stream; `pay0` is the name the RTSP server looks for."""
    if frames:
        src = (f'multifilesrc location="{os.path.join(frames, "%05d.jpg")}" index=0 loop=true '
               f'caps="image/jpeg,framerate={fps}/1" ! jpegdec ! videoconvert')
    else:
        src = f"videotestsrc pattern=ball is-live=true ! video/x-raw,width=640,height=360,framerate={fps}/1"
    if codec == "mjpeg":
        enc = "jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26"
    else:  # a keyframe every second so a reconnecting client gets a clean picture quickly
        enc = (f"video/x-raw,format=I420 ! x264enc tune=zerolatency speed-preset=ultrafast "
               f"key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1")
    return f"( {src} ! {enc} )"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", help="folder of %%05d.jpg frames (default: a test pattern)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--path", default="/cam")
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--codec", choices=["h264", "mjpeg"], default="h264")
    args = ap.parse_args()
    if args.frames and not os.path.isfile(os.path.join(args.frames, "00000.jpg")):
        print(f"rtsp_server: {args.frames}/00000.jpg not found", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.frames, args.fps, args.codec))
    factory.set_shared(True)  # every client sees the same live stream, like a real camera
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://{args.host}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
