"""The simulated cameras: open loop, each on its own clock, publishing detection results.

Camera i publishes frame k at `start + phase_i + k / fps`, whatever the pipeline does (open loop:
a slow pipeline never slows the cameras down). The thread sleeps until the next due frame of any
camera; a frame it could only send more than `LATE_S` after its due time is counted as late (its
capture time stays the due time, so the lateness shows in the end-to-end latency: never hidden).

The same gate as expand's (hazardctl.gating) runs here on every frame, so the loadtest knows how
many tasks expand should produce; the report sets that beside what expand really produced.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from hazardctl.gating import GateConfig, GroupGate, GroupView, view_of_json
from hazardctl.messages import task_id_for
from tools.loadtest.crops import Crop
from tools.loadtest.hazards import HazardLog
from tools.loadtest.scene import CameraScene, SceneConfig

#: a frame sent later than this after its due time is counted as late
LATE_S = 0.1


def gate_view(group: dict, tracks: dict[int, int | None]) -> GroupView:
    """The view expand's gate compares (built where expand builds it, from the JSON of one group)."""
    return view_of_json(group, tracks)


@dataclass
class CameraStats:
    """What the cameras did; read by the live display and the report (under `lock`)."""

    frames: int = 0
    groups: int = 0
    late: int = 0
    send_errors: int = 0
    predicted: dict[str, int] = field(default_factory=lambda: {"new": 0, "changed": 0, "refresh": 0})
    expected: dict[str, str] = field(default_factory=dict)
    """task id → reason of every task the gate predicted (the ids expand derives from detection and group)"""
    lags: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)
    hazards: HazardLog = field(default_factory=HazardLog)
    """with --motion: the labelled hazards and their predicted tasks (tools/loadtest/hazards.py)"""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def predicted_tasks(self) -> int:
        return sum(self.predicted.values())


def probe_frame(cfg: SceneConfig, crops: list[Crop], run_id: str, attempt: int) -> bytes:
    """A frame of a camera of its own (`lt-warmup-N`, new groups only) that proves the pipeline carries
    a message from the detections to the results before the cameras start; the ledger ignores it."""
    scene = CameraScene(f"lt-warmup-{attempt}", cfg, crops, seed=attempt)
    scene.advance(cfg.refresh_s)  # the queue and the dynamic groups have arrived
    now = time.time()
    msg = scene.frame(0, now, f"{run_id}:lt-warmup-{attempt}:0")
    msg["times"] = {"capture": now, "detect": now, "published": now}
    return orjson.dumps(msg)


class Cameras:
    """`n` cameras sending through `send(key, value)` from a thread, from `start` for `duration` s."""

    def __init__(self, n: int, cfg: SceneConfig, crops: list[Crop], gate: GateConfig, send: Callable[[bytes, bytes], None],
                 *, run_id: str, seed: int = 1):
        rng = random.Random(seed)
        self.cfg = cfg
        # stratified: camera i's queue and first event fall in their own 1/n of the interval (shuffled),
        # so the offered rate is flat from the first second, not bunched where chance puts it
        queue, event = list(range(n)), list(range(n))
        rng.shuffle(queue)
        rng.shuffle(event)
        hz_rng = random.Random(seed + 7919)  # its own stream: runs without --motion draw exactly as before
        hazard = list(range(n))
        hz_rng.shuffle(hazard)
        hazard_shares = [(hazard[i] + hz_rng.random()) / n for i in range(n)]
        self.scenes = [CameraScene(f"lt-cam-{i:03d}", cfg, crops, seed=rng.randrange(1 << 30),
                                   queue_share=(queue[i] + rng.random()) / n, event_share=(event[i] + rng.random()) / n,
                                   hazard_share=hazard_shares[i], replace_first=bool(i % 2))
                       for i in range(n)]
        self.phases = [rng.uniform(0, 1.0 / cfg.fps) for _ in range(n)]
        self.gate = GroupGate(gate)
        self.send = send
        self.run_id = run_id
        self.stats = CameraStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, start: float, duration: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(start, duration), name="cameras", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, start: float, duration: float) -> None:
        period = 1.0 / self.cfg.fps
        due = [(start + phase, i, 0) for i, phase in enumerate(self.phases)]
        heapq.heapify(due)
        end = start + duration
        stats = self.stats
        while due and not self._stop.is_set():
            at, i, k = heapq.heappop(due)
            if at >= end:
                break
            wait = at - time.time()
            if wait > 0 and self._stop.wait(wait):
                break
            scene = self.scenes[i]
            scene.advance(k * period)
            msg = scene.frame(k, at, f"{self.run_id}:{scene.camera_id}:{k}")
            now = time.time()
            msg["times"] = {"capture": at, "detect": now, "published": now}
            reasons = self._predict(msg)
            try:
                self.send(scene.camera_id.encode(), orjson.dumps(msg))
                failed = False
            except Exception:
                failed = True
            lag = now - at
            with stats.lock:
                stats.frames += 1
                stats.groups += len(msg["groups"])
                stats.late += lag > LATE_S
                stats.send_errors += failed
                stats.lags.append(lag)
                stats.sent_at.append(now)
                for tid, r in reasons:
                    stats.predicted[r] = stats.predicted.get(r, 0) + 1
                    stats.expected[tid] = r
                stats.hazards.note(scene.hazard_group_id(), msg, reasons, at)
            heapq.heappush(due, (start + self.phases[i] + (k + 1) * period, i, k + 1))

    def _predict(self, msg: dict) -> list[tuple[str, str]]:
        return predict_tasks(self.gate, msg)


def predict_tasks(gate: GroupGate, msg: dict) -> list[tuple[str, str]]:
    """(task id, reason) of each group of this detection the gate passes: the tasks expand must produce
    (also for the real detect stage's detections, tools/loadtest/video.py)."""
    tracks = {o["object_id"]: o["track_id"] for o in msg["objects"]}
    out = []
    for g in msg["groups"]:
        reason = gate.check(msg["camera_id"], g["group_id"], gate_view(g, tracks), msg["frame_ts"])
        if reason is not None:
            out.append((task_id_for(msg["message_id"], g["group_id"]), reason))
    return out
