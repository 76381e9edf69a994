"""detect: cameras in; detection results with tracked, size-aware groups and their crops out (spec §4).

    camera readers (a thread each, newest frame wins) → the frames ready across cameras, as one batch
    → detector → tracker (per camera) → kinematics (per camera: motion of each track) → pair cues
    → groups (size-relative, current OR predicted proximity) → stable group ids → group cues
    → crops within the message size → outbox (bounded; never blocks a camera) → output, keyed by camera id

A MOT replay (`--source mot:PATH`, stages/detect/mot.py) is a reader whose frames carry boxes
instead of an image: it skips the detector (and the crops) and joins the pipeline at the tracker;
its bad lines go to the dead-letter output.

detect is a source stage: nothing upstream to commit, so a result that cannot be delivered is
counted, not fatal — except on a pipe or file, where a closed reader means nobody is listening and
the stage stops. SIGTERM/SIGINT stop the cameras, deliver what is pending (bounded wait), exit 0.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hazardctl import metrics as shared_metrics
from hazardctl.cues import CueConfig, FramePairs, frame_pairs
from hazardctl.deadletter import dead_letter
from hazardctl.errors import ConfigError
from hazardctl.grouping import Cluster, GroupIds, GroupingConfig, cluster_tracks, find_groups
from hazardctl.kinematics import CameraKinematics, KinematicsConfig
from hazardctl.messages import DetectedObject, DetectionResult, DetectorInfo, Group, SpatialFeatures, StageTimes
from hazardctl.transports.base import Record
from hazardctl.runner import StopSignal
from stages.detect import metrics as m
from stages.detect.camera_status import CameraStatusPublisher
from stages.detect.camera_state import LIVE, STALE, STATES, Transition
from stages.detect.crops import Crop, CropConfig, fit_crops
from stages.detect.frames import FramesConfig, fit_frames
from stages.detect.inference import InferencePool, Job, default_workers, physical_cores
from stages.detect.scene import SceneRun
from stages.detect.mot import BoxFrame, MotReader
from stages.detect.mot_format import BadLine
from stages.detect.motion_gate import (REGION_MIN_INPUT_PX, SKIP, WHOLE, GateDecision, MotionGate, MotionGateConfig,
                                       iou, merge_boxes, min_side_for)
from stages.detect.outbox import Outbox
from stages.detect.sources import CameraReader, Frame, ReaderSettings, SourceSpec

if TYPE_CHECKING:
    from hazardctl.transports import Endpoints
    from stages.detect.backends import Box, Detector

log = logging.getLogger("hazardctl.detect")

STAGE = "detect"
DEFAULT_MODEL = ".cache/models/centernet-coco.onnx"
DEFAULT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign")
#: For pipes and files, and for Kafka when the topic's limit cannot be read (Kafka's default is 1 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: Room left under the limit for the record's key and Kafka's record/batch headers.
RECORD_OVERHEAD = 512


class Tracker(Protocol):
    """Per-camera tracking (stages/detect/tracking.py): the same boxes back, with track ids."""

    def update(self, boxes: list[Box], frame_shape: tuple[int, int]) -> list[Box]: ...


@dataclass(frozen=True)
class DetectConfig:
    cameras: tuple[SourceSpec, ...]
    out: str = "-"
    model: str = DEFAULT_MODEL
    device: str = "cpu"
    classes: tuple[str, ...] | None = DEFAULT_CLASSES
    conf: float = 0.35
    iou: float = 0.5
    imgsz: int | None = None
    """the detector input's longer side, the frame's aspect kept; None: the model's own (the CenterNet's
    512x512 square, 640 for YOLO)"""
    track: bool = True
    max_batch: int = 8
    max_message_bytes: int | None = None
    """None: the Kafka topic's max.message.bytes, or DEFAULT_MAX_MESSAGE_BYTES for pipes/files"""
    buffer_bytes: int = 64 * 1024 * 1024
    """at most this many bytes of results held undelivered while the output is slow or away"""
    grouping: GroupingConfig = GroupingConfig()
    crops: CropConfig = CropConfig()
    reader: ReaderSettings = ReaderSettings()
    group_memory_s: float = 5.0
    """a group gone this long keeps its id when it comes back or shares a track id with a new one (3 s made
    walkers who part and meet again within 3-5 s `new` tasks: vtest.avi replayed, 21 tasks -> 19)"""
    group_min_iou: float = 0.3
    status_every_s: float = 10.0
    drain_timeout_s: float = 10.0
    motion: bool = True
    """motion of tracked objects, pair cues and predicted-proximity grouping (needs track ids)"""
    kinematics: KinematicsConfig = KinematicsConfig()
    cues: CueConfig = CueConfig()
    mot_ids: str = "keep"
    """MOT replays: 'keep' the file's ids as track ids, or 'track' (ByteTrack) as for a camera"""
    dlq: str | None = None
    """dead letters (bad MOT lines); None: kafka://dead-letters when --out is Kafka, else stderr"""
    status_out: str | None = None
    """camera health (CameraStatus on change and as a heartbeat), e.g. kafka://camera-status; None: not sent"""
    heartbeat_s: float = 10.0
    snapshot_s: float = 10.0
    """with status_out: a small frame with the scene drawn on it goes with a status this often (0: never)"""
    frames: FramesConfig = FramesConfig()
    """earlier crops (and a thumbnail) for groups that will be `new` or `suspect` tasks (issue 19.4)"""
    motion_gate: MotionGateConfig | None = None
    """skip inference on frames in which nothing moved, repeating the last detections (motion_gate.py); None: off"""
    runtime: str = "auto"
    """an .onnx model's runtime: onnxruntime, openvino (CPU), auto (openvino on the CPU when installed)"""
    precision: str = "auto"
    """openvino's precision: auto (bf16 where the CPU has it natively, else f32), f32, bf16"""
    inference_workers: int | None = None
    """detector calls at once (stages/detect/inference.py); None: one per physical core on the CPU for an
    onnx model, else 1"""


@dataclass
class CameraRun:
    """What the stage keeps per camera besides its reader."""

    reader: CameraReader
    group_ids: GroupIds
    tracker: Tracker | None
    kinematics: CameraKinematics = field(default_factory=CameraKinematics)
    info: DetectorInfo | None = None
    """what found the boxes, when not the stage's detector (a MOT replay)"""
    transitions: list[Transition] = field(default_factory=list)
    reset_tracker: bool = False
    """set when the camera comes back from stale: old tracks mean nothing after a gap"""
    frame_size: tuple[int, int] | None = None
    scene: SceneRun | None = None
    """zones, zone cues, calibration, frames over time (stages/detect/scene.py)"""
    gate: MotionGate | None = None
    last_boxes: list[Box] = field(default_factory=list)
    """the detector's boxes of the camera's last analysed frame, repeated on a gated frame"""
    last_tracked: dict[int, DetectedObject] = field(default_factory=dict)
    """the tracked objects the detector found on the camera's last frame, by track id (for coasting)"""


@dataclass
class DetectStats:
    frames: int = 0
    batches: int = 0
    published: int = 0
    groups: int = 0
    errors: int = 0
    crops_downsized: int = 0
    crops_dropped: int = 0
    delivered: int = 0
    delivery_failures: int = 0
    dropped_backpressure: int = 0
    max_buffered_bytes: int = 0
    dead_letters: int = 0
    groups_ignored: int = 0
    """groups entirely inside ignore zones, never published"""
    frames_attached: int = 0
    frames_dropped: int = 0
    """earlier frames left out to keep a result under the message size"""
    inference_skipped: int = 0
    """frames the motion gate published with the last detections instead of running the model"""
    inference_regional: int = 0
    """frames the model ran on only where something moved (motion regions)"""
    motion_rejected: dict[str, int] = field(default_factory=dict)
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)


COAST_DUPLICATE_IOU = 0.3
"""a coasted box overlapping a detected box of its class this much is that detection under a new id"""


def message_id(camera_id: str, frame_id: int, capture_ts: float) -> str:
    """Unique and stable for one frame: camera, frame number and capture time (hashed when too long)."""
    mid = f"{camera_id}:{frame_id}:{int(capture_ts * 1000)}"
    return mid if len(mid) <= 128 else hashlib.sha1(mid.encode()).hexdigest()


def to_objects(boxes: Sequence[Box], width: int, height: int) -> list[DetectedObject]:
    """Wire objects, boxes clipped to the frame and confidences to [0, 1] (backends may overshoot)."""
    out = []
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in b.bbox)
        out.append(DetectedObject(
            object_id=i, class_name=b.class_name, class_id=int(b.class_id),
            confidence=min(1.0, max(0.0, float(b.confidence))),
            bbox=(min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height)),
            track_id=None if b.track_id is None else int(b.track_id),
        ))
    return out


def to_groups(objects: list[DetectedObject], clusters: list[Cluster], ids: list[str],
              pairs: FramePairs | None = None) -> list[Group]:
    groups = []
    for c, gid in zip(clusters, ids):
        mem = [objects[i] for i in c.members]
        groups.append(Group(
            group_id=gid, member_ids=list(c.members), bbox=c.bbox,
            classes=sorted({o.class_name for o in mem}),
            mean_confidence=sum(o.confidence for o in mem) / len(mem),
            features=SpatialFeatures(**asdict(c.features)),
            cues=None if pairs is None else pairs.group_cues(c.members),
        ))
    return groups


def _tracker_factory(detector: Detector | None, cfg: DetectConfig) -> Callable[[SourceSpec], Tracker | None]:
    """One tracker per camera, unless the backend tracks by itself (ultralytics) or tracking is off.

    A MOT replay keeps the file's ids (`mot_ids='keep'`) or is tracked like a camera ('track')."""
    def wanted(spec: SourceSpec) -> bool:
        if spec.kind == "mot":
            return cfg.mot_ids == "track"
        return cfg.track and not getattr(detector, "tracks", False)

    def make(spec: SourceSpec) -> Tracker | None:
        if not wanted(spec):
            return None
        try:
            from stages.detect.tracking import Tracker as ByteTracker
        except ImportError as e:
            log.warning("tracking unavailable (%s): group ids come from IoU matching", e)
            return None
        return ByteTracker(fps=spec.fps)

    return make


class DetectStage:
    def __init__(self, cfg: DetectConfig, detector: Detector | None, outbox_output, *, max_message_bytes: int,
                 stop_on_delivery_failure: bool, make_tracker: Callable[[SourceSpec], Tracker | None] | None = None,
                 dlq_output=None, status_output=None):
        self.cfg = cfg
        self.detector = detector
        self.max_message_bytes = max_message_bytes
        self.stop = StopSignal()
        self.stats = DetectStats()
        self._stop_on_failure = stop_on_delivery_failure
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        """counters that worker threads add to while they build results"""
        self._failure_logged = 0.0
        self._info = DetectorInfo(model=detector.model_name, version=detector.model_version) if detector else None
        self.dlq = dlq_output
        self._bad_lines: list[tuple[str, BadLine]] = []
        self._m_out = shared_metrics.MESSAGES_OUT.labels(STAGE)
        self._hops = shared_metrics.Hops(STAGE)
        self._m_fail = shared_metrics.DELIVERY_FAILURES.labels(STAGE, getattr(outbox_output, "name", "output"))
        self.outbox = Outbox(outbox_output, cfg.buffer_bytes, on_dropped=self._on_dropped, on_failed=self._on_failed)
        workers = cfg.inference_workers or default_workers(cfg.device, getattr(detector, "thread_safe", False))
        self.pool = InferencePool(self._work, workers if detector is not None else 1, on_done=self._ready.set)
        self._per_job = cfg.max_batch if getattr(detector, "per_call", cfg.max_batch) > 1 else 1
        """frames per detector call: a batch when the detector batches them, else one frame per worker"""
        self._inferring: set[str] = set()
        """cameras with a frame on a worker"""
        self.camera_status = CameraStatusPublisher(status_output, heartbeat_s=cfg.heartbeat_s,
                                                   snapshot_s=cfg.snapshot_s)
        session = _base36(int(time.time() * 10) % 36 ** 6)
        make_tracker = make_tracker or _tracker_factory(detector, cfg)
        self.cameras: dict[str, CameraRun] = {}
        imaged = [spec.camera_id for spec in cfg.cameras if spec.kind != "mot"]
        gate_cfg = cfg.motion_gate
        if gate_cfg is not None and gate_cfg.regions and not getattr(detector, "supports_regions", False):
            gate_cfg = replace(gate_cfg, regions=False)  # a fixed-size model sees whole frames only
        for spec in cfg.cameras:
            info = None
            if spec.kind == "mot":
                reader: CameraReader = MotReader(spec, cfg.reader, self._ready, on_event=self._on_camera_event,
                                                 classes=frozenset(cfg.classes) if cfg.classes else None)
                info = DetectorInfo(model="mot", version=spec.mot.name if spec.mot else "")
            elif detector is None:
                raise ConfigError(f"camera {spec.camera_id}: no detector")
            else:
                # the cameras' due times spread over one period: an even load on the workers, not N frames at once
                phase = imaged.index(spec.camera_id) / len(imaged) / spec.fps
                reader = CameraReader(spec, cfg.reader, self._ready, on_event=self._on_camera_event, phase_s=phase)
            self.cameras[spec.camera_id] = CameraRun(
                reader, GroupIds(prefix=f"{session}-", min_iou=cfg.group_min_iou, memory_s=cfg.group_memory_s),
                make_tracker(spec), CameraKinematics(cfg.kinematics), info,
                scene=SceneRun.for_camera(spec, cfg.frames, cfg.crops),
                gate=MotionGate(gate_cfg) if gate_cfg is not None and spec.kind != "mot" else None)
            self._set_state_metric(spec.camera_id, STALE)

    # --- events from reader threads ---
    def _on_camera_event(self, camera_id: str, kind: str, value: object) -> None:
        self.camera_status.note(camera_id, kind, value)
        if kind == "read":
            m.FRAMES_READ.labels(camera_id).inc(value)  # type: ignore[arg-type]
        elif kind == "bad_line":
            with self._lock:
                self._bad_lines.append((camera_id, value))  # type: ignore[arg-type]
        elif kind == "drop":
            m.FRAMES_DROPPED.labels(camera_id, str(value)).inc()
        elif kind == "transition":
            t: Transition = value  # type: ignore[assignment]
            with self._lock:
                self.cameras[camera_id].transitions.append(t)
            self._set_state_metric(camera_id, t.new)
            if t.new == STALE:
                log.warning("camera %s: STALE (%s); nothing is analysed until it is back", camera_id, t.reason)
            elif t.new == LIVE and t.old == STALE and self.cameras[camera_id].reader.health.reconnects:
                self.cameras[camera_id].reset_tracker = True
                m.RECONNECTS.labels(camera_id).inc()
                log.info("camera %s: live again (reconnect #%d)", camera_id,
                         self.cameras[camera_id].reader.health.reconnects)
            else:
                log.info("camera %s: %s (%s)", camera_id, t.new, t.reason)

    @staticmethod
    def _set_state_metric(camera_id: str, state: str) -> None:
        for s in STATES:
            m.CAMERA_STATE.labels(camera_id, s).set(1 if s == state else 0)

    # --- events from the outbox (main thread) ---
    def _on_dropped(self, camera_id: str) -> None:
        self.stats.dropped_backpressure += 1
        self.cameras[camera_id].reader.counters.drop("backpressure")
        m.FRAMES_DROPPED.labels(camera_id, "backpressure").inc()

    def _on_failed(self, camera_id: str, err: Exception) -> None:
        self.stats.delivery_failures += 1
        self._m_fail.inc()
        now = time.monotonic()
        if now - self._failure_logged > 10.0:
            self._failure_logged = now
            log.warning("detect: result not delivered (%s); %d so far", err, self.stats.delivery_failures)
        if self._stop_on_failure:
            log.error("detect: output closed (%s): stopping", err)
            self.stop.stop()

    # --- the loop ---
    def run(self) -> DetectStats:
        readers = [c.reader for c in self.cameras.values()]
        by_id = {cid: c.reader for cid, c in self.cameras.items()}
        next_status = time.monotonic() + self.cfg.status_every_s
        with self.stop:
            for r in readers:
                r.start()
            try:
                while not self.stop.stopped:
                    self._ready.clear()
                    now = time.monotonic()
                    for r in readers:
                        r.check(now)
                    self._emit_dead_letters()
                    finished = self.pool.finished()
                    self._release(finished)
                    frames = self._take_ready(readers) if self.pool.free else []
                    self._dispatch(frames)  # the workers get new frames before this thread sends what they made
                    self._emit(finished)
                    if not frames and not finished:
                        if not self.pool.busy and all(r.ended for r in readers):
                            break
                        self.outbox.pump()
                        self._ready.wait(0.05)
                    self.outbox.pump()
                    self._note_buffer()
                    self.camera_status.pump(by_id)
                    if self.cfg.status_every_s and now >= next_status:
                        next_status = now + self.cfg.status_every_s
                        log.info(self.status_line())
            finally:
                for r in readers:
                    r.stop()
                self._finish_inference(self.cfg.drain_timeout_s)
                self.camera_status.close(by_id, self.cfg.drain_timeout_s)
                self._emit_dead_letters()
                if self.dlq is not None:
                    self.dlq.flush(self.cfg.drain_timeout_s)
                left = self.outbox.drain(self.cfg.drain_timeout_s, time.monotonic)
                if left:
                    log.error("detect: %d results not delivered after %.0fs", left, self.cfg.drain_timeout_s)
                self._note_buffer()
                for r in readers:
                    r.join(2.0)
        self.stats.delivered = self.outbox.stats.delivered
        self.stats.cameras = self.camera_summary()
        log.info(self.status_line())
        return self.stats

    def _take_ready(self, readers: list[CameraReader]) -> list[Frame]:
        """Ready frames for the free workers (max_batch per worker when the detector batches, else one),
        the cameras that have waited longest first: near capacity a frame waits behind at most one round
        of the others, not behind whichever cameras a fixed order puts before it, so fewer are superseded
        (at 27 cameras on 2 cores: docs/detect-backends.md). A camera with a frame still being inferred
        waits, so its frames reach the tracker in order."""
        limit = self.pool.free * self._per_job
        waiting = sorted((since, i) for i, r in enumerate(readers)
                         if (since := r.waiting_since) is not None and r.spec.camera_id not in self._inferring)
        frames = []
        for _, i in waiting:
            if (f := readers[i].take()) is not None:
                frames.append(f)
                if len(frames) >= limit:
                    break
        return frames

    def _emit_dead_letters(self) -> None:
        """Bad lines reported by MOT readers → dead letters (main thread: the only DLQ writer)."""
        if not self._bad_lines:
            return
        with self._lock:
            bad, self._bad_lines = self._bad_lines, []
        for camera_id, b in bad:
            spec = self.cameras[camera_id].reader.spec
            record = Record(b.text.encode("utf-8", "surrogateescape"), camera_id.encode(), f"mot:{spec.mot.boxes_path if spec.mot else spec.uri}",
                            line=b.line)
            letter = dead_letter(record, STAGE, b.reason, "bad_mot_line")
            shared_metrics.DEAD_LETTERS.labels(STAGE, "bad_mot_line").inc()
            self.stats.dead_letters += 1
            if self.dlq is None:
                log.warning("detect: %s line %d: %s (no dead-letter output)", record.source, b.line, b.reason)
            else:
                self.dlq.send(letter.model_dump_json().encode(), record.key)
        if self.dlq is not None:
            self.dlq.poll(0)

    def _dispatch(self, frames: list[Frame | BoxFrame]) -> None:
        """Frames to the workers: those the model must see (whole, or the regions that moved), and those
        it need not — a MOT replay's boxes, or the camera's last boxes when the motion gate saw nothing
        move — which a worker only turns into results."""
        now = time.time()
        whole: list[Frame] = []
        for frame in frames:
            if isinstance(frame, BoxFrame):
                self._submit(Job([frame], [None], given=[frame.boxes], done_at=now))
                continue
            cam = self.cameras[frame.camera_id]
            decision = WHOLE if cam.gate is None else self._decide(cam, frame)
            if not decision.infer:
                self.stats.inference_skipped += 1
                m.INFERENCE_SKIPPED.labels(frame.camera_id).inc()
                self._submit(Job([frame], [None], given=[[replace(b, track_id=None) for b in cam.last_boxes]],
                                 done_at=now))
            elif decision.regions is not None:
                self._submit(Job([frame], [decision.regions], still=decision.still))
            else:
                whole.append(frame)
        for start in range(0, len(whole), self._per_job):  # a batching detector gets whole frames together
            chunk = whole[start:start + self._per_job]
            self._submit(Job(chunk, [None] * len(chunk)))

    def _submit(self, job: Job) -> None:
        self._inferring.update(f.camera_id for f in job.frames)
        self.pool.submit(job)

    def _decide(self, cam: CameraRun, frame: Frame) -> GateDecision:
        """The motion gate: skip the frame, run the whole frame, or only the regions that moved."""
        assert cam.gate is not None
        ts = frame.capture_ts if frame.media_ts is None else frame.media_ts
        if not cam.gate.cfg.regions:
            return WHOLE if cam.gate.infer(frame.image, ts) else SKIP
        h, w = frame.image.shape[:2]
        sx, sy = self.detector.region_scale(w, h)  # type: ignore[union-attr]
        decision = cam.gate.decide(frame.image, ts, [b.bbox for b in cam.last_boxes],
                                   min_side_for(REGION_MIN_INPUT_PX, sx, sy))
        if decision.regions is not None:
            m.INFERENCE_REGIONAL.labels(frame.camera_id).inc()
            self.stats.inference_regional += 1
        return decision

    def _work(self, job: Job) -> list[bytes | None]:
        """On a worker thread: the detector on the job's frames (or on the regions of its one frame) unless
        their boxes are given, then each frame's result — tracking, motion, groups, crops, JSON. A camera
        has one frame on the workers at a time, so its state is only ever touched by one thread at once."""
        found = job.given
        if found is None:
            t0 = time.perf_counter()
            if job.regions[0] is not None:
                found = [self.detector.detect_regions(job.frames[0].image, job.regions[0])]  # type: ignore[union-attr]
            else:
                found = self.detector.detect([f.image for f in job.frames])  # type: ignore[union-attr]
            job.seconds, job.done_at = time.perf_counter() - t0, time.time()
        built: list[bytes | None] = []
        for frame, boxes, regions in zip(job.frames, found, job.regions):
            cam = self.cameras[frame.camera_id]
            if regions is not None:  # outside the regions nothing moved: the last boxes stand
                boxes = merge_boxes(cam.last_boxes, boxes, regions, job.still)
            if cam.gate is not None and job.given is None:
                cam.last_boxes = [replace(b, track_id=None) for b in boxes]
            try:
                built.append(self._publish(cam, frame, boxes, job.done_at))
            except Exception:
                log.exception("detect: camera %s frame %d failed after detection", frame.camera_id, frame.frame_id)
                m.ERRORS.labels("publish").inc()
                built.append(None)
        return built

    def _release(self, jobs: list[Job]) -> None:
        """Cameras whose frame is done may have their next one taken (the gate then sees its boxes)."""
        for job in jobs:
            self._inferring.difference_update(f.camera_id for f in job.frames)

    def _emit(self, jobs: list[Job]) -> None:
        """Main thread: what the workers made goes to the output; each camera's results in order."""
        for job in jobs:
            if job.error is not None:
                log.error("detect: detector failed on a batch of %d frames: %s", len(job.frames), job.error,
                          exc_info=job.error)
                m.ERRORS.labels("detector").inc()
                self.stats.errors += len(job.frames)
                continue
            if job.given is None:
                m.INFERENCE_SECONDS.observe(job.seconds)
                m.BATCH_SIZE.observe(len(job.frames))
                self.stats.batches += 1
            for frame, value in zip(job.frames, job.built or []):
                self.cameras[frame.camera_id].reader.counters.processed += 1
                m.FRAMES_PROCESSED.labels(frame.camera_id).inc()
                self.stats.frames += 1
                if value is None:
                    self.stats.errors += 1
                    continue
                self.stats.published += 1
                self._m_out.inc()
                self.outbox.put(frame.camera_id.encode(), value, frame.camera_id)

    def _finish_inference(self, timeout_s: float) -> None:
        """At stop: the frames the workers still have are published (bounded wait), then they end."""
        deadline = time.monotonic() + timeout_s
        while self.pool.busy and time.monotonic() < deadline:
            finished = self.pool.finished(wait_s=min(0.5, max(0.0, deadline - time.monotonic())))
            self._release(finished)
            self._emit(finished)
        if self.pool.busy:
            log.error("detect: inference still running after %.0fs at stop", timeout_s)
        self.pool.close()

    def _publish(self, cam: CameraRun, frame: Frame | BoxFrame, boxes: list[Box], detect_done: float) -> bytes:
        """One frame's result as the bytes to send (on a worker thread; shared counters under a lock)."""
        image = None if isinstance(frame, BoxFrame) else frame.image
        h, w = (frame.height, frame.width) if image is None else image.shape[:2]
        reset = cam.reset_tracker or (cam.frame_size is not None and cam.frame_size != (h, w))
        cam.reset_tracker, cam.frame_size = False, (h, w)
        if reset:
            cam.kinematics.reset()  # track ids restart with the tracker (which resets itself on a new size)
            cam.last_tracked.clear()
            if cam.scene is not None:
                cam.scene.reset()
        if cam.tracker is not None:
            if reset and hasattr(cam.tracker, "reset"):
                cam.tracker.reset()
            boxes = cam.tracker.update(boxes, (h, w))
        objects = to_objects(boxes, w, h)
        pairs, predicted = None, []
        media_ts = getattr(frame, "media_ts", None)  # a file's own clock, else the capture time
        scene_ts = frame.capture_ts if media_ts is None else media_ts
        if self.cfg.motion:
            pairs = self._motion(cam, frame.camera_id, objects, scene_ts, w, h)
            predicted = pairs.predicted_links(self.cfg.grouping.link_k)
        placed = cam.scene.place(objects, scene_ts, w, h) if cam.scene is not None else None
        clusters = find_groups(objects, self.cfg.grouping, predicted)
        if placed is not None:
            clusters = cam.scene.with_flagged_alone(objects, clusters, placed, self.cfg.grouping)
        ids = cam.group_ids.assign([(cluster_tracks(objects, c), c.bbox) for c in clusters], scene_ts)
        groups = to_groups(objects, clusters, ids, pairs)
        if placed is not None:
            groups, ignored = cam.scene.annotate(groups, objects, placed)
            if ignored:
                with self._stats_lock:
                    self.stats.groups_ignored += ignored
                m.GROUPS_IGNORED.labels(frame.camera_id).inc(ignored)
        result = DetectionResult(
            message_id=message_id(frame.camera_id, frame.frame_id, frame.capture_ts),
            camera_id=frame.camera_id, frame_id=frame.frame_id, frame_ts=frame.capture_ts,
            frame_width=w, frame_height=h, detector=cam.info or self._info, objects=objects, groups=groups,
            times=StageTimes(capture=frame.capture_ts, detect=detect_done),
        )
        if groups and image is not None:
            skeleton = len(result.model_dump_json()) + RECORD_OVERHEAD

            def size_of(crops: list[Crop | None]) -> int:  # base64 needs no JSON escaping
                return skeleton + sum(len(c.jpeg_b64) + 16 for c in crops if c is not None)

            crops, report = fit_crops(image, [g.bbox for g in groups], self.cfg.crops, size_of, self.max_message_bytes)
            for g, c in zip(groups, crops):
                if c is not None:
                    g.crop_jpeg_b64, g.crop_size = c.jpeg_b64, c.size
            if report.downsized or report.dropped:
                with self._stats_lock:
                    self.stats.crops_downsized += report.downsized
                    self.stats.crops_dropped += report.dropped
                m.CROPS_DOWNSIZED.inc(report.downsized)
                m.CROPS_DROPPED.inc(report.dropped)
            if cam.scene is not None and cam.scene.history is not None:
                self._attach_frames(cam, result, image, scene_ts, size_of, crops)
        if image is not None and cam.scene is not None and cam.scene.history is not None:
            cam.scene.history.push(scene_ts, image)
        if image is not None and self.camera_status.wants_snapshot(frame.camera_id):
            self.camera_status.offer_snapshot(frame.camera_id, image, cam.scene.drawable() if cam.scene else None,
                                              objects, frame.capture_ts)
        published = time.time()
        result.times.published = published
        value = result.model_dump_json().encode()
        m.GROUPS_PER_FRAME.observe(len(groups))
        m.FRAME_LATENCY.observe(max(0.0, published - frame.capture_ts))
        self._hops.hop("capture", "detect", frame.capture_ts, detect_done)
        self._hops.hop("detect", "published", detect_done, published)
        with self._stats_lock:
            self.stats.groups += len(groups)
        return value

    def _attach_frames(self, cam: CameraRun, result: DetectionResult, image, ts: float, size_of, crops) -> None:
        """Earlier crops for the groups that will be `new` or `suspect` tasks, then under the size limit."""
        scene = cam.scene
        attached = scene.attach_frames(result.camera_id, result.groups, result.objects, image, result.frame_ts, ts)
        if not attached:
            return
        dropped = fit_frames(attached, size_of(crops), self.max_message_bytes)
        n = sum(len(g.frames) for g in attached if g.frames)
        with self._stats_lock:
            self.stats.frames_dropped += dropped
            self.stats.frames_attached += n
        if dropped:
            m.FRAMES_LEFT_OUT.inc(dropped)
        m.FRAMES_ATTACHED.inc(n)

    def _motion(self, cam: CameraRun, camera_id: str, objects: list[DetectedObject], ts: float,
                width: int, height: int) -> FramePairs:
        """Each tracked object's motion (set on it), coasted objects appended, and the frame's pair cues."""
        for o, motion in zip(objects, cam.kinematics.observe(objects, ts)):
            o.motion = motion
        seen = {o.track_id: o for o in objects if o.track_id is not None}
        detected = list(objects)
        for tid, prev in cam.last_tracked.items():
            if tid in seen:
                continue
            if (o := self._coasted(cam, camera_id, prev, len(objects), ts, width, height, detected)) is not None:
                objects.append(o)
        cam.last_tracked = seen
        if cam.kinematics.rejected:
            for reason, n in cam.kinematics.rejected.items():
                m.MOTION_REJECTED.labels(camera_id, reason).inc(n)
                with self._stats_lock:
                    self.stats.motion_rejected[reason] = self.stats.motion_rejected.get(reason, 0) + n
            cam.kinematics.rejected.clear()
        return frame_pairs(objects, self.cfg.cues)

    @staticmethod
    def _coasted(cam: CameraRun, camera_id: str, prev: DetectedObject, object_id: int, ts: float,
                 width: int, height: int, detected: list[DetectedObject]) -> DetectedObject | None:
        """A road user the detector missed on this frame, at the box its track predicts (kinematics
        "Coasting"), marked `coasted`; None when it cannot be predicted, is predicted out of the frame,
        or a detected box of its class overlaps the prediction (IoU ≥ COAST_DUPLICATE_IOU: the same road
        user under a new track id after an id switch; a ghost beside it would be a second one)."""
        box = cam.kinematics.coast(prev.track_id, ts)
        if box is None:
            return None
        x1, y1, x2, y2 = (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                          min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))
        if x2 <= x1 or y2 <= y1:
            return None
        if any(o.class_name == prev.class_name and iou((x1, y1, x2, y2), o.bbox) >= COAST_DUPLICATE_IOU
               for o in detected):
            return None
        m.OBJECTS_COASTED.labels(camera_id).inc()
        return prev.model_copy(update={"object_id": object_id, "bbox": (x1, y1, x2, y2), "coasted": True,
                                       "zones": None})

    def _note_buffer(self) -> None:
        b = self.outbox.buffered_bytes
        m.BUFFERED_BYTES.set(b)
        self.stats.max_buffered_bytes = max(self.stats.max_buffered_bytes, b)

    def camera_summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for cid, c in self.cameras.items():
            cnt = c.reader.counters
            out[cid] = {"state": c.reader.state, "read": cnt.read, "processed": cnt.processed,
                        "dropped": dict(cnt.dropped), "reconnects": c.reader.health.reconnects,
                        "transitions": [(t.old, t.new, t.reason) for t in c.transitions]}
        return out

    def status_line(self) -> str:
        cams = " ".join(
            f"{cid}={c.reader.state}(read={c.reader.counters.read} processed={c.reader.counters.processed})"
            for cid, c in list(self.cameras.items())[:20])
        more = f" +{len(self.cameras) - 20} cameras" if len(self.cameras) > 20 else ""
        o = self.outbox.stats
        return (f"detect: frames={self.stats.frames} groups={self.stats.groups} sent={o.sent} "
                f"delivered={o.delivered} failed={o.failed} dropped_backpressure={o.dropped} "
                f"buffered={self.outbox.buffered_bytes / 1e6:.1f}MB | {cams}{more}")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    s = ""
    while True:
        n, r = divmod(n, 36)
        s = digits[r] + s
        if n == 0:
            return s


def resolve_max_message_bytes(cfg: DetectConfig, endpoints: Endpoints) -> int:
    """The limit a result must stay under: the flag, else the topic's max.message.bytes, else 1 MB."""
    if cfg.max_message_bytes is not None:
        return cfg.max_message_bytes
    from hazardctl.transports import is_kafka, kafka_topic

    if is_kafka(cfg.out):
        from hazardctl.transports.kafka import PRODUCER_DEFAULTS, topic_max_message_bytes

        producer_max = int(endpoints.kafka.settings.producer.get("message.max.bytes",
                                                                 PRODUCER_DEFAULTS["message.max.bytes"]))
        topic_max = topic_max_message_bytes(endpoints.kafka.settings, kafka_topic(cfg.out))
        if topic_max is None:
            log.warning("detect: cannot read max.message.bytes of %s; assuming %d", cfg.out, DEFAULT_MAX_MESSAGE_BYTES)
            topic_max = DEFAULT_MAX_MESSAGE_BYTES
        return min(topic_max, producer_max)
    return DEFAULT_MAX_MESSAGE_BYTES


def load_detector_for(cfg: DetectConfig) -> Detector:
    try:
        from stages.detect.backends import load_detector
    except ImportError as e:
        raise ConfigError(f"detector backends are not installed ({e}); pip install 'hazardctl[detect]'") from None
    workers = cfg.inference_workers or default_workers(cfg.device, cfg.model.lower().endswith(".onnx"))
    # several workers share the cores: each call on one intra-op thread, unless the environment says otherwise
    threads = None if workers == 1 or os.environ.get("HAZARDCTL_DETECT_THREADS") else max(1, physical_cores() // workers)
    detector = load_detector(cfg.model, device=cfg.device, conf=cfg.conf, iou=cfg.iou, imgsz=cfg.imgsz,
                             classes=list(cfg.classes) if cfg.classes else None, threads=threads,
                             runtime=cfg.runtime, precision=cfg.precision, streams=workers)
    log.info("detect: %s on %s (%s), %d inference worker(s)", detector.model_name,
             getattr(detector, "runtime", "ultralytics"), getattr(detector, "precision", "f32"), workers)
    return detector


def warm_up(detector: Detector, *, batch: int, size: int) -> None:
    """Calls at the largest batch this process can form, then at one frame, before any camera is
    read: onnxruntime plans a memory pattern per input shape on its first run and allocates it on
    the second, so the arena reaches its size now; RSS is flat from the start (an outage test saw
    +85 MB the first time two cameras' frames met in one batch) and the first batch is not slow. A model
    the runtime loads but cannot run stops the stage here, with one line, before any camera is opened."""
    t0 = time.monotonic()
    blank = np.zeros((size * 9 // 16, size, 3), np.uint8)  # a 16:9 camera's shape: OpenVINO compiles for it now
    for n in sorted({batch, 1}, reverse=True):
        for _ in range(2):
            try:
                detector.detect([blank] * n)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 -- a model the runtime loads but cannot run (e.g. int8 on onnxruntime)
                log.debug("detect: the first inference failed", exc_info=True)
                runtime = getattr(detector, "runtime", "ultralytics")
                hint = ("; an int8 model from NNCF (make models) runs on OpenVINO only: --device cpu --runtime openvino"
                        if runtime == "onnxruntime" and "zero point" in str(e) else "")
                first = (str(e).splitlines() or [""])[0][:200]
                raise ConfigError(f"model {detector.model_name} on {runtime}: the first inference failed: "
                                  f"{type(e).__name__}: {first}{hint}") from None
    log.info("detect: detector warmed up at batch %d in %.2f s", batch, time.monotonic() - t0)


def run(cfg: DetectConfig, *, endpoints: Endpoints, detector: Detector | None = None,
        make_tracker: Callable[[SourceSpec], Tracker | None] | None = None, connect_timeout: float = 30.0,
        on_start: Callable[[DetectStage], None] | None = None) -> DetectStats:
    """Run the stage until every camera has ended (files) or SIGTERM/SIGINT (or `stage.stop.stop()`)."""
    from hazardctl.transports import is_kafka

    if not cfg.cameras:
        raise ConfigError("no camera: give --source or --cameras")
    if cfg.mot_ids not in ("keep", "track"):
        raise ConfigError(f"--mot-ids {cfg.mot_ids}: use keep or track")
    if detector is None and any(spec.kind != "mot" for spec in cfg.cameras):
        detector = load_detector_for(cfg)  # a MOT replay alone needs no model
        warm_up(detector, batch=min(cfg.max_batch, sum(spec.kind != "mot" for spec in cfg.cameras)),
                size=cfg.imgsz or 640)
    dlq_spec = None
    if any(spec.kind == "mot" for spec in cfg.cameras):
        dlq_spec = cfg.dlq or endpoints.default_dlq(cfg.out)
    endpoints.wait_ready([cfg.out] + ([dlq_spec] if dlq_spec else []) + ([cfg.status_out] if cfg.status_out else []),
                         connect_timeout)
    max_bytes = resolve_max_message_bytes(cfg, endpoints)
    output = endpoints.output(cfg.out)
    dlq = None if dlq_spec is None else endpoints.output(dlq_spec)
    status = None if not cfg.status_out else endpoints.output(cfg.status_out)
    stage = DetectStage(cfg, detector, output, max_message_bytes=max_bytes,
                        stop_on_delivery_failure=not is_kafka(cfg.out), make_tracker=make_tracker, dlq_output=dlq,
                        status_output=status)
    if on_start:
        on_start(stage)
    try:
        return stage.run()
    finally:
        output.close()
        if dlq is not None:
            dlq.close()
        if status is not None:
            status.close()
