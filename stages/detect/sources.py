"""Cameras in: RTSP/HTTP streams, devices, video files, image folders and single images (OpenCV).

One reader thread per camera does all the I/O and decoding, so a slow or dead camera never holds
up the others or the detector, and the decoding of one camera overlaps inference of the batch.
The thread samples at the camera's fps and leaves at most one frame for the stage to `take()`:

* live sources (streams, devices) and files paced in real time: the newest frame wins; a frame
  not taken before the next one is *superseded* (counted). Frames between samples are only
  grabbed, not converted (cheap), and counted as *sampling*.
* files with `--as-fast-as-possible`: the reader waits for the stage to take each frame, so no
  frame is lost and the run goes as fast as detection allows.

A live source that fails is released and reopened with capped exponential backoff, and reported
stale (see camera_state). Black or uniform frames and exact repeats of the previous frame from a
live source are never handed on.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hazardctl.errors import ConfigError
from stages.detect.camera_state import ENDED, CameraHealth, Transition, reconnect_delay

if TYPE_CHECKING:
    from hazardctl.zones import Scene
    from stages.detect.mot_format import MotInfo

log = logging.getLogger("hazardctl.detect.sources")

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
SourceKind = Literal["live", "device", "video", "images", "mot"]
#: FFmpeg options for network streams unless the user set OPENCV_FFMPEG_CAPTURE_OPTIONS:
#: RTSP over TCP, so lost UDP packets do not turn into smeared or grey frames.
DEFAULT_FFMPEG_OPTIONS = "rtsp_transport;tcp"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    camera_id: str
    uri: str
    kind: SourceKind
    fps: float = 2.0
    loop: bool = False
    images: tuple[str, ...] = ()
    mot: MotInfo | None = None
    """a MOT box file replayed instead of a camera (stages/detect/mot.py): boxes, no image"""
    scene: Scene | None = None
    """zones, lane directions, calibration (cameras.yaml; hazardctl/zones.py); None: a bare frame"""

    @property
    def is_live(self) -> bool:
        return self.kind in ("live", "device")


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    realtime: bool = True
    """pace files and image folders at their own speed (False: --as-fast-as-possible)"""
    media_clock: bool = False
    """files: a frame's capture time is its place on the file's own clock (start + position), as MOT
    replays always do, so a batch run (--as-fast-as-possible) is gated as if it ran in real time"""
    stale_after_s: float = 5.0
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    blank_std: float = 3.0
    """a live frame whose pixel standard deviation is below this is black/uniform: not used"""
    keyframes_only: bool = True
    """files whose keyframes come at least as often as --fps asks: decode only the keyframes (PyAV,
    skip_frame=NONKEY) and analyse the one nearest each due time; False: decode every frame"""


@dataclass(slots=True)
class Frame:
    camera_id: str
    frame_id: int
    """index of the frame in its source (files: position in the file; live: frames read so far)"""
    capture_ts: float
    """wall-clock time the frame was read (Unix seconds)"""
    image: np.ndarray
    media_ts: float | None = None
    """files: the frame's place on the file's own clock (start + position), which motion uses so
    `--as-fast-as-possible` does not speed objects up; None for live sources (capture_ts is it)"""


# --- sources from the command line or cameras.yaml -----------------------------------------------

def classify(uri: str) -> SourceKind:
    if uri.startswith("mot:"):
        return "mot"
    if uri.lower().startswith(LIVE_SCHEMES):
        return "live"
    if re.fullmatch(r"\d+", uri):
        return "device"
    p = Path(uri)
    if p.is_dir() or p.suffix.lower() in IMAGE_EXTS:
        return "images"
    return "video"


def default_camera_id(uri: str, kind: SourceKind) -> str:
    if kind == "device":
        return f"device-{uri}"
    if kind == "live":
        rest = re.sub(r"^[a-z]+://", "", uri, flags=re.IGNORECASE)
        rest = re.sub(r"^[^@/]*@", "", rest)  # never put credentials in an id
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", rest).strip("-")
        return name[:128] or "camera"
    return (Path(uri).stem or Path(uri).name or "camera")[:128]


def list_images(uri: str) -> tuple[str, ...]:
    p = Path(uri)
    if p.is_dir():
        files = sorted(f for f in glob.glob(os.path.join(uri, "*")) if Path(f).suffix.lower() in IMAGE_EXTS)
        if not files:
            raise ConfigError(f"--source {uri}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
        return tuple(files)
    if not p.is_file():
        raise ConfigError(f"--source {uri}: file not found")
    return (uri,)


def make_spec(uri: str, camera_id: str | None, fps: float | None, loop: bool) -> SourceSpec:
    """Classify and check one source; a missing file is a one-line ConfigError here, not later.

    `fps` None: 2 for cameras and files, the sequence's own frame rate for a MOT replay."""
    if fps is not None and fps <= 0:
        raise ConfigError(f"--fps {fps}: must be > 0")
    kind = classify(uri)
    if kind == "mot":
        return _mot_spec(uri, camera_id, fps, loop)
    fps = fps or 2.0
    images: tuple[str, ...] = ()
    if kind == "images":
        images = list_images(uri)
    elif kind == "video" and not Path(uri).is_file():
        raise ConfigError(f"--source {uri}: file not found (and not a URL, device index or folder)")
    return SourceSpec(camera_id or default_camera_id(uri, kind), uri, kind, fps, loop, images)


def unique_ids(specs: list[SourceSpec], explicit: set[str]) -> list[SourceSpec]:
    """Derived ids get a -2, -3 suffix when they collide; a repeated explicit id is an error."""
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        cid = s.camera_id
        if cid in seen:
            if cid in explicit:
                raise ConfigError(f"camera id {cid!r} is used by more than one source")
            seen[cid] += 1
            cid = f"{cid}-{seen[s.camera_id]}"
        seen.setdefault(cid, 1)
        out.append(replace(s, camera_id=cid))
    return out


def _mot_spec(uri: str, camera_id: str | None, fps: float | None, loop: bool) -> SourceSpec:
    from stages.detect.mot_format import mot_info

    info = mot_info(uri)
    if info.frame_rate is None:
        if fps is None:
            raise ConfigError(f"--source {uri}: no seqinfo.ini beside the box file; give --fps (its frame rate)")
        info = replace(info, frame_rate=fps)
    return SourceSpec(camera_id or info.name[:128] or "mot", uri, "mot", fps or info.frame_rate, loop, mot=info)


# --- frame checks ---------------------------------------------------------------------------------

def thumbnail(image: np.ndarray) -> np.ndarray:
    """A cheap subsample used to spot black/uniform frames and exact repeats."""
    step = max(1, min(image.shape[0], image.shape[1]) // 64)
    return image[::step, ::step]


def is_blank(thumb: np.ndarray, min_std: float) -> bool:
    return float(thumb.std()) < min_std


def keyframe_gap_s(uri: str, probe_s: float = 10.0) -> float | None:
    """The longest time between two keyframes in the file's first `probe_s` seconds, read from the
    packets alone (no decoding); None when PyAV is missing or the file has a single keyframe there."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(uri) as container:
            stream = container.streams.video[0]
            last = first = None
            gap = 0.0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = float(packet.pts * stream.time_base)
                first = t if first is None else first
                if packet.is_keyframe:
                    if last is not None:
                        gap = max(gap, t - last)
                    last = t
                elif last is not None and t - last > gap:
                    gap = t - last  # a run of non-key frames as long as this one, whatever follows
                if t - first > probe_s:
                    break
    except (av.FFmpegError, IndexError):
        return None
    return gap if last is not None and gap > 0 else None


# --- the reader thread ----------------------------------------------------------------------------

class _Stopped(Exception):
    pass


@dataclass
class CameraCounters:
    read: int = 0
    processed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def open_capture(uri: str, kind: SourceKind, settings: ReaderSettings) -> cv2.VideoCapture:
    if kind == "device":
        return cv2.VideoCapture(int(uri))
    if kind == "live":
        os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", DEFAULT_FFMPEG_OPTIONS)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.read_timeout_s * 1000)]
        return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(uri)


class CameraReader:
    """Reads one camera on its own thread; the stage takes at most one frame at a time from it.

    `on_event(camera_id, kind, value)` reports what happened, for metrics and logs:
    ("read", n), ("drop", reason), ("transition", Transition).
    """

    def __init__(self, spec: SourceSpec, settings: ReaderSettings, ready: threading.Event,
                 on_event: Callable[[str, str, object], None] | None = None, phase_s: float = 0.0):
        self.spec = spec
        self.settings = settings
        self.phase_s = phase_s if settings.realtime or spec.is_live else 0.0
        """the camera's sampling starts this much later: the stage spreads its cameras' due times over
        one period, so N cameras opened together do not hand the detector N frames at the same moment"""
        self.health = CameraHealth(stale_after_s=settings.stale_after_s)
        self.counters = CameraCounters()
        self._ready = ready
        self._on_event = on_event or (lambda *_: None)
        self._lock = threading.Condition()
        self._slot: Frame | None = None
        self._waiting_since: float | None = None
        self._stop = threading.Event()
        self._rng = random.Random(hash(spec.camera_id))
        self._blocking = not settings.realtime and not spec.is_live
        self._thread = threading.Thread(target=self._run, name=f"camera-{spec.camera_id}", daemon=True)

    # --- used by the stage (main thread) ---
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def take(self) -> Frame | None:
        with self._lock:
            frame, self._slot, self._waiting_since = self._slot, None, None
            if frame is not None:
                self._lock.notify_all()
            return frame

    @property
    def waiting_since(self) -> float | None:
        """Monotonic time since which this camera has had a frame waiting (kept when a newer frame
        supersedes it: the camera has waited that long), None with nothing to take."""
        return self._waiting_since

    @property
    def ended(self) -> bool:
        """Ended and nothing left to take."""
        with self._lock:
            return self.health.state == ENDED and self._slot is None

    @property
    def state(self) -> str:
        return self.health.state

    def check(self, now_mono: float) -> None:
        """Notice a camera that stopped delivering while its read is blocked (called by the stage)."""
        with self._lock:
            t = self.health.check(now_mono)
        self._transition(t)

    # --- reader thread ---
    def _transition(self, t: Transition | None) -> None:
        if t is not None:
            self._on_event(self.spec.camera_id, "transition", t)

    def _event(self, kind: str, value: object) -> None:
        if kind == "drop":
            self.counters.drop(str(value))
        elif kind == "read":
            self.counters.read += int(value)  # type: ignore[call-overload]
        self._on_event(self.spec.camera_id, kind, value)

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise _Stopped

    def _deliver(self, frame: Frame) -> None:
        with self._lock:
            if self._blocking:
                while self._slot is not None:
                    if self._stop.is_set():
                        raise _Stopped
                    self._lock.wait(0.1)
            elif self._slot is not None:
                self._event("drop", "superseded")
            if self._slot is None:
                self._waiting_since = time.monotonic()
            self._slot = frame
            t = self.health.frame(time.monotonic())
        self._transition(t)
        self._ready.set()

    def _end(self, reason: str) -> None:
        with self._lock:
            t = self.health.ended(reason)
        self._transition(t)
        self._ready.set()

    def _fail(self, reason: str) -> None:
        with self._lock:
            t = self.health.failed(time.monotonic(), reason)
        self._transition(t)

    def _read(self) -> str | None:
        """Read the source until it ends (the reason, None for a plain end) or the reader stops."""
        if self.spec.is_live:
            self._run_live()
            return None
        if self.spec.kind == "images":
            return self._run_images()
        return self._run_video()

    def _run(self) -> None:
        reason: str | None = None
        try:
            reason = self._read()
        except _Stopped:
            pass
        except Exception as e:  # a bug in one camera must not take the process down silently
            log.exception("camera %s: reader crashed", self.spec.camera_id)
            reason = f"reader error: {type(e).__name__}"
        self._end("stopped" if self._stop.is_set() else reason or "end of input")

    # live: streams and devices
    def _run_live(self) -> None:
        spec, st = self.spec, self.settings
        period = 1.0 / spec.fps
        attempt = 0
        frame_no = 0
        while not self._stop.is_set():
            cap = open_capture(spec.uri, spec.kind, st)
            try:
                if not cap.isOpened():
                    self._fail("cannot open stream")
                else:
                    got_frame, frame_no = self._read_live(cap, period, frame_no)
                    if got_frame:
                        attempt = 0
            finally:
                cap.release()
            if self._stop.is_set():
                break
            delay = reconnect_delay(attempt, base_s=st.reconnect_base_s, cap_s=st.reconnect_cap_s,
                                    rand=self._rng.random())
            log.info("camera %s: reconnecting in %.1fs (attempt %d)", spec.camera_id, delay, attempt + 1)
            attempt += 1
            self._wait(delay)

    def _read_live(self, cap: cv2.VideoCapture, period: float, frame_no: int) -> tuple[bool, int]:
        """Read until the stream fails; returns whether any usable frame came, and the frame count."""
        got_frame = False
        last_thumb: np.ndarray | None = None
        next_due = time.monotonic() + self.phase_s
        while not self._stop.is_set():
            if not cap.grab():
                self._fail("read failed (stream closed or timed out)")
                return got_frame, frame_no
            frame_no += 1
            self._event("read", 1)
            now = time.monotonic()
            if now < next_due:
                self._event("drop", "sampling")
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                self._fail("decode failed")
                return got_frame, frame_no
            thumb = thumbnail(image)
            if is_blank(thumb, self.settings.blank_std):
                self._event("drop", "blank")
                self.check(now)
                continue
            if last_thumb is not None and thumb.shape == last_thumb.shape and np.array_equal(thumb, last_thumb):
                self._event("drop", "repeated")
                self.check(now)
                continue
            last_thumb = thumb.copy()
            next_due = next_due + period if next_due + period > now else now + period
            got_frame = True
            self._deliver(Frame(self.spec.camera_id, frame_no - 1, time.time(), image))
        return got_frame, frame_no

    # files: video
    def _run_video(self) -> str | None:
        gap = keyframe_gap_s(self.spec.uri) if self.settings.keyframes_only else None
        if gap is not None and gap <= 1.0 / self.spec.fps + 1e-3:
            return self._run_keyframes(gap)
        return self._run_video_all()

    def _run_keyframes(self, gap: float) -> str | None:
        """Decode only keyframes; each due time (every 1/fps s) gets the keyframe nearest it (within gap/2)."""
        import av

        spec = self.spec
        period = 1.0 / spec.fps
        t0, wall0 = time.monotonic() + self.phase_s, time.time() + self.phase_s
        base_vt, next_t, frame_base = 0.0, 0.0, 0
        log.info("camera %s: keyframes every <= %.2fs: decoding keyframes only", spec.camera_id, gap)
        while not self._stop.is_set():
            try:
                container = av.open(spec.uri)
            except av.FFmpegError:
                return "cannot open video file"
            n = 0
            end_vt = base_vt
            try:
                stream = container.streams.video[0]
                stream.codec_context.skip_frame = "NONKEY"
                # one decoding thread: the reader's own. FFmpeg's default (a thread per core, per camera) spent
                # 1.5 ms more CPU per analysed frame at 27 cameras on 2 cores (x264 writes one slice per frame)
                stream.codec_context.thread_count = 1
                src_fps = float(stream.average_rate or 25.0)
                start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
                for packet in container.demux(stream):
                    if self._stop.is_set():
                        break
                    if packet.size == 0:
                        continue
                    n += 1
                    self._event("read", 1)
                    if not packet.is_keyframe:
                        self._event("drop", "sampling")
                        continue
                    for frame in packet.decode():
                        end_vt, next_t = self._keyframe(frame, base_vt, start, frame_base, src_fps, gap,
                                                        next_t, t0, wall0, end_vt)
                for frame in stream.codec_context.decode(None):  # frames the decoder still holds
                    end_vt, next_t = self._keyframe(frame, base_vt, start, frame_base, src_fps, gap,
                                                    next_t, t0, wall0, end_vt)
            except av.FFmpegError as e:
                log.warning("camera %s: decode error (%s)", spec.camera_id, e)
                self._event("drop", "undecodable")
            finally:
                container.close()
            if n == 0:
                return "video file has no frames"
            if not spec.loop:
                return None
            frame_base += n
            base_vt = max(end_vt, base_vt + n / src_fps)
        return None

    def _keyframe(self, frame, base_vt: float, start: float, frame_base: int, src_fps: float, gap: float,
                  next_t: float, t0: float, wall0: float, end_vt: float) -> tuple[float, float]:
        """Deliver a decoded keyframe if it is the one nearest a due time; the new (end, next due) times."""
        in_file = float(frame.pts * frame.time_base) - start
        vt = base_vt + in_file
        end_vt = max(end_vt, vt + 1 / src_fps)
        if vt < next_t - gap / 2 - 1e-6:
            self._event("drop", "sampling")
            return end_vt, next_t
        while next_t <= vt + gap / 2 + 1e-6:
            next_t += 1.0 / self.spec.fps
        if self.settings.realtime:
            self._wait(t0 + vt - time.monotonic())
        image = frame.to_ndarray(format="bgr24")
        self._deliver(Frame(self.spec.camera_id, frame_base + round(in_file * src_fps),
                            wall0 + vt if self.settings.media_clock else time.time(), image, wall0 + vt))
        return end_vt, next_t

    def _run_video_all(self) -> str | None:
        spec = self.spec
        period = 1.0 / spec.fps
        t0, wall0 = time.monotonic() + self.phase_s, time.time() + self.phase_s
        base_vt = 0.0     # video time at the start of this pass (loops continue the clock)
        next_t = 0.0      # video time of the next sample
        frame_no = 0
        while not self._stop.is_set():
            cap = open_capture(spec.uri, spec.kind, self.settings)
            if not cap.isOpened():
                return "cannot open video file"
            src_fps = cap.get(cv2.CAP_PROP_FPS)
            src_fps = src_fps if 0 < src_fps < 1000 else 25.0
            n = 0
            try:
                while not self._stop.is_set() and cap.grab():
                    vt = base_vt + n / src_fps
                    n += 1
                    frame_no += 1
                    self._event("read", 1)
                    if vt + 1e-6 < next_t:
                        self._event("drop", "sampling")
                        continue
                    while next_t <= vt + 1e-6:
                        next_t += period
                    if self.settings.realtime:
                        self._wait(t0 + vt - time.monotonic())
                    ok, image = cap.retrieve()
                    if not ok or image is None:
                        self._event("drop", "undecodable")
                        continue
                    self._deliver(Frame(spec.camera_id, frame_no - 1, wall0 + vt if self.settings.media_clock else time.time(),
                                        image, wall0 + vt))
            finally:
                cap.release()
            if n == 0:
                return "video file has no frames"
            if not spec.loop:
                return None
            base_vt += n / src_fps
        return None

    # files: image folder or a single image
    def _run_images(self) -> str | None:
        spec = self.spec
        period = 1.0 / spec.fps
        t0, wall0 = time.monotonic() + self.phase_s, time.time() + self.phase_s
        i = 0
        while not self._stop.is_set():
            for path in spec.images:
                if self.settings.realtime:
                    self._wait(t0 + i * period - time.monotonic())
                i += 1
                self._event("read", 1)
                image = cv2.imread(path, cv2.IMREAD_COLOR)
                if image is None:
                    log.warning("camera %s: cannot read image %s", spec.camera_id, path)
                    self._event("drop", "undecodable")
                    continue
                media = wall0 + (i - 1) * period
                self._deliver(Frame(spec.camera_id, i - 1, media if self.settings.media_clock else time.time(), image, media))
            if not spec.loop:
                return None
        return None


# --- cameras.yaml -----------------------------------------------------------------------------------

class CameraEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    source: str = Field(min_length=1)
    fps: float | None = Field(default=None, gt=0)
    loop: bool | None = None
    enabled: bool = True
    # the scene (issue 19; validated by hazardctl/zones.py with errors naming the camera and the zone)
    frame_size: tuple[int, int] | None = None
    zones: list[dict] = Field(default_factory=list)
    calibration: dict | None = None
    scene_cues: dict | None = None


class CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fps: float = Field(default=2.0, gt=0)
    loop: bool = False
    cameras: list[CameraEntry] = Field(min_length=1)


def load_cameras(path: str, fps: float | None = None, loop: bool | None = None) -> list[SourceSpec]:
    """Sources from a cameras YAML; --fps / --loop on the command line override the file's defaults."""
    from hazardctl.config import load_model

    cf = load_model(CamerasFile, path)
    specs = []
    for i, cam in enumerate(cf.cameras):
        if not cam.enabled:
            continue
        try:
            default_fps = None if classify(cam.source) == "mot" else cf.fps  # a replay keeps its own rate
            spec = make_spec(cam.source, cam.id, cam.fps or fps or default_fps,
                             cam.loop if cam.loop is not None else bool(loop or cf.loop))
        except ConfigError as e:
            raise ConfigError(f"{path}: cameras.{i} ({cam.id}): {e}") from None
        specs.append(replace(spec, scene=_scene(path, cam, spec)))
    if not specs:
        raise ConfigError(f"{path}: no enabled camera")
    return unique_ids(specs, {s.camera_id for s in specs})


def _scene(path: str, cam: CameraEntry, spec: SourceSpec):
    """The camera's zones and calibration (None without), checked before any camera opens."""
    from hazardctl.zones import SceneConfig, build_scene

    size = (spec.mot.width, spec.mot.height) if spec.mot and spec.mot.width and spec.mot.height else None
    try:
        return build_scene(cam.id, SceneConfig(frame_size=cam.frame_size, zones=cam.zones, calibration=cam.calibration,
                                               scene_cues=cam.scene_cues), size)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
