"""`--source mot:PATH`: replay a MOT-Challenge box file as a camera that yields boxes, not images.

The seam is the reader: `MotReader` is a `CameraReader` whose frames are `BoxFrame`s (the file's
boxes of one frame, the frame size, no image), so pacing, sampling, `--as-fast-as-possible`,
`--loop`, camera state and metrics are the same as for a video file, and the stage skips only the
detector and the crops. Frame k is captured at start + (k − 1) / frameRate (file time, never wall
time between frames), so speeds come out in pixels per second of the sequence. Lines that are not
boxes are reported as ("bad_line", BadLine) events: the stage turns each into a dead letter with
the line number. With `--loop`, each pass adds (largest id + 1) to the ids, so a pass's tracks are
new tracks, not teleports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from stages.detect.backends import Box
from stages.detect.mot_format import COCO_IDS, MotSequence, parse_boxes
from stages.detect.sources import CameraReader


@dataclass(slots=True)
class BoxFrame:
    """One replayed frame: boxes already found (track ids from the file when kept), no image."""

    camera_id: str
    frame_id: int
    capture_ts: float
    width: int
    height: int
    boxes: list[Box]


class MotReader(CameraReader):
    """Replays `spec.mot` at the sequence's frame rate, sampled at `spec.fps` (see module doc)."""

    def __init__(self, *args, classes: frozenset[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.classes = classes
        self.sequence: MotSequence | None = None

    def _read(self) -> str | None:
        spec, info = self.spec, self.spec.mot
        assert info is not None and info.frame_rate
        try:
            with open(info.boxes_path, "rb") as f:
                lines = [raw.decode("utf-8", "surrogateescape") for raw in f]  # bad bytes survive to the dead letter
        except OSError as e:
            return f"cannot read {info.boxes_path} ({e.strerror})"
        seq = self.sequence = parse_boxes(lines, self.classes)
        for bad in seq.bad:
            self._on_event(spec.camera_id, "bad_line", bad)
        n_frames = max(info.length or 0, seq.last_frame)
        if n_frames == 0:
            return "MOT file has no boxes"
        width = info.width or max(1, math.ceil(seq.extent[0]))
        height = info.height or max(1, math.ceil(seq.extent[1]))
        rate, period = info.frame_rate, 1.0 / spec.fps
        t0, wall0 = time.monotonic(), time.time()
        next_t, n_pass = 0.0, 0
        while not self._stop.is_set():
            id_offset = n_pass * (seq.max_id + 1)
            for k in range(1, n_frames + 1):
                index = n_pass * n_frames + k
                vt = (index - 1) / rate
                self._event("read", 1)
                if vt + 1e-6 < next_t:
                    self._event("drop", "sampling")
                    continue
                while next_t <= vt + 1e-6:
                    next_t += period
                if self.settings.realtime:
                    self._wait(t0 + vt - time.monotonic())
                boxes = [Box(COCO_IDS[b.class_name], b.class_name, b.confidence, b.bbox,
                             None if b.track_id is None else b.track_id + id_offset)
                         for b in seq.frames.get(k, ())]
                self._deliver(BoxFrame(spec.camera_id, index, wall0 + vt, width, height, boxes))  # type: ignore[arg-type]
            if not spec.loop:
                return None
            n_pass += 1
        return None
