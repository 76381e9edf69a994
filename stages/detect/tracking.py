"""Per-camera track ids for detections: ByteTrack (supervision's implementation), one per camera.

Track ids are what make group ids stable across frames (spec §4), so a camera's tracker must never
see another camera's boxes: the stage keeps one `Tracker` per camera id. Frames are sampled at a
few fps, so "how long a lost track is kept" is given in seconds and converted with the sampling
rate; a camera that went stale is `reset()` rather than matched against boxes from long ago.

supervision 0.30 is the last release that ships ByteTrack without pulling in opencv-python (GUI)
next to opencv-python-headless; its successor (the `trackers` package) does pull it in.
docs/detect-backends.md explains the choice.
"""

from __future__ import annotations

import warnings

import numpy as np

from stages.detect.backends import Box


class Tracker:
    """ByteTrack state for one camera. `update` returns the same boxes with `track_id` set for
    those that belong to a confirmed track (a new object gets its id on its second frame, except
    in a camera's very first frame)."""

    def __init__(self, *, fps: float = 2.0, lost_after_s: float = 2.0, match_iou: float = 0.2,
                 buffer: float = 0.5, min_confidence: float = 0.0) -> None:
        """`lost_after_s`: how long an unseen object keeps its id. `match_iou`: the least overlap
        between a track's predicted box and a detection for them to be one object. `buffer`: each
        box is widened by this fraction of its width/height on every side before matching, so an
        object that moved up to (1 + 2 × buffer) box widths between two samples still overlaps
        its track (C-BIoU, Yang et al. 2023); 0 turns it off. `min_confidence`: boxes below it
        are left out of tracking (no id)."""
        import supervision as sv

        self.buffer = buffer
        self.min_confidence = min_confidence
        with warnings.catch_warnings():  # ByteTrack is marked deprecated in favour of `trackers`
            warnings.simplefilter("ignore")
            self._bytetrack = sv.ByteTrack(
                track_activation_threshold=0.5,  # every box comes in with score 1.0, see update()
                lost_track_buffer=max(1, round(lost_after_s * fps)),
                minimum_matching_threshold=1.0 - match_iou,
                frame_rate=30,  # with 30 here, lost_track_buffer counts our own frames
                minimum_consecutive_frames=1,
            )
        self._sv = sv
        self._frame_shape: tuple[int, int] | None = None

    def reset(self) -> None:
        """Forget every track (camera reconnected after being stale, or the scene changed)."""
        self._bytetrack.reset()
        self._frame_shape = None

    def update(self, boxes: list[Box], frame_shape: tuple[int, int]) -> list[Box]:
        """Assign track ids to this frame's boxes (in place, and returned for chaining)."""
        shape = (int(frame_shape[0]), int(frame_shape[1]))
        if self._frame_shape is not None and shape != self._frame_shape:
            self.reset()  # a resolution change means old positions mean nothing
        self._frame_shape = shape
        for box in boxes:
            box.track_id = None
        tracked_boxes = [b for b in boxes if b.confidence >= self.min_confidence]
        if tracked_boxes:
            # Scores go in as 1.0: the detector has already applied its conf, and ByteTrack's
            # score fusion (IoU × score) would otherwise make a 0.35-confidence person need
            # three times the overlap of a sure one to keep its id.
            detections = self._sv.Detections(
                xyxy=buffered(np.array([b.bbox for b in tracked_boxes], dtype=np.float32).reshape(-1, 4), self.buffer),
                confidence=np.ones(len(tracked_boxes), dtype=np.float32),
                class_id=np.array([b.class_id for b in tracked_boxes], dtype=int),
                data={"index": np.arange(len(tracked_boxes))},
            )
        else:
            detections = self._sv.Detections.empty()
        tracked = self._bytetrack.update_with_detections(detections)
        if len(tracked):
            for index, track_id in zip(tracked.data["index"].tolist(), tracked.tracker_id.tolist()):
                tracked_boxes[index].track_id = int(track_id)
        return boxes


def buffered(xyxy: np.ndarray, buffer: float) -> np.ndarray:
    """Boxes widened by `buffer` × their own width and height on each side (same centre)."""
    if buffer <= 0:
        return xyxy
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    pad = np.stack([-w, -h, w, h], axis=1) * buffer
    return xyxy + pad


class CameraTrackers:
    """One Tracker per camera id, created on first sight (the stage's only tracking state)."""

    def __init__(self, **tracker_kwargs) -> None:
        self._kwargs = tracker_kwargs
        self._by_camera: dict[str, Tracker] = {}

    def __getitem__(self, camera_id: str) -> Tracker:
        tracker = self._by_camera.get(camera_id)
        if tracker is None:
            tracker = self._by_camera[camera_id] = Tracker(**self._kwargs)
        return tracker

    def reset(self, camera_id: str) -> None:
        self._by_camera.pop(camera_id, None)
