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
from stages.detect.scene import SceneRun
from stages.detect.mot import BoxFrame, MotReader
from stages.detect.mot_format import BadLine
from stages.detect.motion_gate import MotionGate, MotionGateConfig
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
    motion_rejected: dict[str, int] = field(default_factory=dict)
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)


COAST_DUPLICATE_IOU = 0.3
"""a coasted box overlapping a detected box of its class this much is that detection under a new id"""


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0.0 or h <= 0.0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


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
        self._rr = 0
        self._failure_logged = 0.0
        self._info = DetectorInfo(model=detector.model_name, version=detector.model_version) if detector else None
        self.dlq = dlq_output
        self._bad_lines: list[tuple[str, BadLine]] = []
        self._m_out = shared_metrics.MESSAGES_OUT.labels(STAGE)
        self._hops = shared_metrics.Hops(STAGE)
        self._m_fail = shared_metrics.DELIVERY_FAILURES.labels(STAGE, getattr(outbox_output, "name", "output"))
        self.outbox = Outbox(outbox_output, cfg.buffer_bytes, on_dropped=self._on_dropped, on_failed=self._on_failed)
        self.camera_status = CameraStatusPublisher(status_output, heartbeat_s=cfg.heartbeat_s,
                                                   snapshot_s=cfg.snapshot_s)
        session = _base36(int(time.time() * 10) % 36 ** 6)
        make_tracker = make_tracker or _tracker_factory(detector, cfg)
        self.cameras: dict[str, CameraRun] = {}
        for spec in cfg.cameras:
            info = None
            if spec.kind == "mot":
                reader: CameraReader = MotReader(spec, cfg.reader, self._ready, on_event=self._on_camera_event,
                                                 classes=frozenset(cfg.classes) if cfg.classes else None)
                info = DetectorInfo(model="mot", version=spec.mot.name if spec.mot else "")
            elif detector is None:
                raise ConfigError(f"camera {spec.camera_id}: no detector")
            else:
                reader = CameraReader(spec, cfg.reader, self._ready, on_event=self._on_camera_event)
            self.cameras[spec.camera_id] = CameraRun(
                reader, GroupIds(prefix=f"{session}-", min_iou=cfg.group_min_iou, memory_s=cfg.group_memory_s),
                make_tracker(spec), CameraKinematics(cfg.kinematics), info,
                scene=SceneRun.for_camera(spec, cfg.frames, cfg.crops),
                gate=MotionGate(cfg.motion_gate) if cfg.motion_gate is not None and spec.kind != "mot" else None)
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
                    frames = self._take_ready(readers)
                    if frames:
                        self._process_batch(frames)
                    elif all(r.ended for r in readers):
                        break
                    else:
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
        """Up to max_batch ready frames, starting at a rotating camera so none is starved."""
        n = len(readers)
        frames = []
        for k in range(n):
            f = readers[(self._rr + k) % n].take()
            if f is not None:
                frames.append(f)
                if len(frames) >= self.cfg.max_batch:
                    break
        self._rr = (self._rr + 1) % n
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

    def _process_batch(self, frames: list[Frame | BoxFrame]) -> None:
        replayed = [f for f in frames if isinstance(f, BoxFrame)]
        if replayed:
            done = time.time()
            for frame in replayed:
                self._publish_one(frame, frame.boxes, done)
        images = [f for f in frames if not isinstance(f, BoxFrame)]
        if not images or self.detector is None:
            return
        images = self._gate(images)
        if not images:
            return
        t0 = time.perf_counter()
        try:
            results = self.detector.detect([f.image for f in images])
        except Exception:
            log.exception("detect: detector failed on a batch of %d frames", len(images))
            m.ERRORS.labels("detector").inc()
            self.stats.errors += len(images)
            return
        detect_done = time.time()
        m.INFERENCE_SECONDS.observe(time.perf_counter() - t0)
        m.BATCH_SIZE.observe(len(images))
        self.stats.batches += 1
        for frame, boxes in zip(images, results):
            cam = self.cameras[frame.camera_id]
            if cam.gate is not None:
                cam.last_boxes = [replace(b, track_id=None) for b in boxes]
            self._publish_one(frame, boxes, detect_done)

    def _gate(self, images: list[Frame]) -> list[Frame]:
        """Frames the model must see; the others are published now with their camera's last boxes."""
        wanted = []
        for frame in images:
            cam = self.cameras[frame.camera_id]
            ts = frame.capture_ts if frame.media_ts is None else frame.media_ts
            if cam.gate is None or cam.gate.infer(frame.image, ts):
                wanted.append(frame)
                continue
            self.stats.inference_skipped += 1
            m.INFERENCE_SKIPPED.labels(frame.camera_id).inc()
            self._publish_one(frame, [replace(b, track_id=None) for b in cam.last_boxes], time.time())
        return wanted

    def _publish_one(self, frame: Frame | BoxFrame, boxes: list[Box], detect_done: float) -> None:
        cam = self.cameras[frame.camera_id]
        cam.reader.counters.processed += 1
        m.FRAMES_PROCESSED.labels(frame.camera_id).inc()
        self.stats.frames += 1
        try:
            self._publish(cam, frame, boxes, detect_done)
        except Exception:
            log.exception("detect: camera %s frame %d failed after detection", frame.camera_id, frame.frame_id)
            m.ERRORS.labels("publish").inc()
            self.stats.errors += 1

    def _publish(self, cam: CameraRun, frame: Frame | BoxFrame, boxes: list[Box], detect_done: float) -> None:
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
        self.stats.groups += len(groups)
        self.stats.published += 1
        self._m_out.inc()
        self.outbox.put(frame.camera_id.encode(), value, frame.camera_id)

    def _attach_frames(self, cam: CameraRun, result: DetectionResult, image, ts: float, size_of, crops) -> None:
        """Earlier crops for the groups that will be `new` or `suspect` tasks, then under the size limit."""
        scene = cam.scene
        attached = scene.attach_frames(result.camera_id, result.groups, result.objects, image, result.frame_ts, ts)
        if not attached:
            return
        dropped = fit_frames(attached, size_of(crops), self.max_message_bytes)
        if dropped:
            self.stats.frames_dropped += dropped
            m.FRAMES_LEFT_OUT.inc(dropped)
        n = sum(len(g.frames) for g in attached if g.frames)
        self.stats.frames_attached += n
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
        if any(o.class_name == prev.class_name and _iou((x1, y1, x2, y2), o.bbox) >= COAST_DUPLICATE_IOU
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
    return load_detector(cfg.model, device=cfg.device, conf=cfg.conf, iou=cfg.iou, imgsz=cfg.imgsz,
                         classes=list(cfg.classes) if cfg.classes else None)


def warm_up(detector: Detector, *, batch: int, size: int) -> None:
    """Calls at the largest batch this process can form, then at one frame, before any camera is
    read: onnxruntime plans a memory pattern per input shape on its first run and allocates it on
    the second, so the arena reaches its size now; RSS is flat from the start (an outage test saw
    +85 MB the first time two cameras' frames met in one batch) and the first batch is not slow."""
    t0 = time.monotonic()
    blank = np.zeros((size, size, 3), np.uint8)
    for n in sorted({batch, 1}, reverse=True):
        for _ in range(2):
            detector.detect([blank] * n)
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
