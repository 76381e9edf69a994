"""Cameras from a real video: `hazardctl loadtest --cameras-from VIDEO`.

Instead of simulated detections, the real detect stage (`hazardctl detect`, the default CenterNet
ONNX model from `make models`) reads one looping copy of VIDEO per camera and publishes what it
finds, so end to end (capture → result, capture → alert) includes decoding, inference, tracking,
grouping and the crops. The loadtest watches the detections on their way to expand (the detections
topic over Kafka; detect's stdout, which it copies into expand's stdin, over pipes) and runs the
same gate on each one, so it still knows which tasks expand must produce.

Same interface as `cameras.Cameras` for the run: `stats`, `start`, `stop`, `join`; plus `launch`,
which starts detect and waits for its first detection before the run's clock starts (a model load
is not part of the figures).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import orjson

from hazardctl.errors import ConfigError, ServiceUnavailable
from hazardctl.gating import GateConfig, GroupGate
from tools.loadtest.cameras import CameraStats, predict_tasks
from tools.loadtest.ledger import WARMUP_PREFIX
from tools.loadtest.procs import Proc, wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / ".cache" / "models" / "centernet-coco.onnx"


def check_video(video: Path, model: Path = MODEL) -> None:
    """One clear line before anything starts: the video and the detector must be there."""
    if not video.is_file():
        raise ConfigError(f"--cameras-from {video}: no such video file")
    if not model.is_file():
        raise ConfigError(f"--cameras-from needs the detector {model}: run `make models`")


class VideoCameras:
    """`n` cameras, each a looping copy of `video`, through one `hazardctl detect` process."""

    mode = "video"

    def __init__(self, n: int, video: Path, fps: float, gate: GateConfig, logdir: Path, env: dict, *,
                 out: str, kafka_config: Path | None, forward: Callable[[bytes, bytes], None] | None):
        """`out`: detect's --out (kafka://TOPIC, or '-' for pipes, where `forward(key, line)` passes each
        detection on to expand after the gate has seen it)."""
        self.n, self.video, self.fps, self.logdir, self.env = n, video, fps, logdir, env
        self.out, self.kafka_config, self.forward = out, kafka_config, forward
        self.camera_ids = [f"lt-cam-{i:03d}" for i in range(n)]
        self.gate = GroupGate(gate)
        self.stats = CameraStats()
        self.proc: Proc | None = None
        self.first_at: float | None = None
        self._end: float | None = None
        self._pump: threading.Thread | None = None

    def args(self) -> list[str]:
        args = []
        for cid in self.camera_ids:
            args += ["--source", str(self.video), "--camera-id", cid]
        args += ["--loop", "--fps", f"{self.fps:g}", "--model", str(MODEL), "--out", self.out]
        if self.kafka_config and self.out.startswith("kafka://"):
            args += ["--kafka-config", str(self.kafka_config)]
        return args

    # -- the run's interface -----------------------------------------------------------------------------
    def launch(self, timeout: float = 90.0) -> None:
        """Start detect; return when its first detection has been seen (the model is loaded, frames flow)."""
        piped = self.out == "-"
        self.proc = Proc("detect", self.args(), self.logdir, env=self.env,
                         stdout=subprocess.PIPE if piped else subprocess.DEVNULL)
        if piped:
            self._pump = threading.Thread(target=self._copy_stdout, name="pump-detect", daemon=True)
            self._pump.start()
        if not wait_for(lambda: self.first_at is not None or not self.proc.alive(), timeout, 0.1) \
                or self.first_at is None:
            raise ServiceUnavailable(f"hazardctl detect sent no detection within {timeout:g} s: "
                                     f"{self.proc.last_line()} ({self.proc.log})")

    def start(self, start: float, duration: float) -> None:
        self._end = start + duration  # detect already runs; it is stopped at the end by the run

    def stop(self) -> None:
        """SIGTERM detect (it flushes what it has); the watcher sees its last detections."""
        if self.proc is not None and self.proc.alive():
            self.proc.terminate(15)

    def join(self, timeout: float | None = None) -> None:
        self.stop()
        if self._pump is not None:
            self._pump.join(timeout)

    # -- every detection, on its way to expand -------------------------------------------------------------
    def on_detection(self, value: bytes, ts: float) -> None:
        """The gate's prediction for one detection (Kafka: from the detections topic; pipes: detect's stdout)."""
        msg = orjson.loads(value)
        if msg["camera_id"].startswith(WARMUP_PREFIX):
            return
        reasons = predict_tasks(self.gate, msg)
        published = (msg.get("times") or {}).get("published") or ts
        capture = (msg.get("times") or {}).get("capture") or msg["frame_ts"]
        stats = self.stats
        with stats.lock:
            stats.frames += 1
            stats.groups += len(msg.get("groups") or ())
            stats.lags.append(published - capture)  # decode, inference, grouping, crops: capture → published
            stats.sent_at.append(published)
            for tid, r in reasons:
                stats.predicted[r] = stats.predicted.get(r, 0) + 1
                stats.expected[tid] = r
        if self.first_at is None:
            self.first_at = time.time()

    def _copy_stdout(self) -> None:
        for line in self.proc.proc.stdout:
            if not line.strip():
                continue
            try:
                msg_key = orjson.loads(line)["camera_id"].encode()
                self.on_detection(line, time.time())
            except Exception:
                msg_key = b""  # not ours to judge: expand dead-letters what it cannot read
            self.forward(msg_key, line.rstrip(b"\n"))
