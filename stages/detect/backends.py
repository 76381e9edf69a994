"""Detector backends behind one small interface, chosen from the model file (spec §4).

`.onnx` → onnxruntime (YOLOv8/YOLO11 exports and the CenterNet layout; no torch, the fast CPU
path); `.pt` → ultralytics (the optional `[ultralytics]` extra). The stage only sees `Detector`:
BGR frames in, `Box`es in each frame's own pixels out, so grouping never knows which model ran.

Classes are validated here, against the names the model itself carries, because a misspelt class
silently detecting nothing is exactly how the old system lost `traffic light` and `stop sign`.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from hazardctl.errors import ConfigError


@dataclass(slots=True)
class Box:
    """One detection in frame pixels (x1, y1, x2, y2); track_id is set by the Tracker."""

    class_id: int
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]
    track_id: int | None = None


class Detector(Protocol):
    """What the detect stage needs from a model; one instance serves every camera of a process."""

    model_name: str
    model_version: str
    names: dict[int, str]

    def detect(self, frames: list[np.ndarray]) -> list[list[Box]]:
        """Boxes for each BGR uint8 frame (any size), in that frame's pixels, in input order."""
        ...


def load_detector(
    path: str,
    *,
    device: str = "cpu",
    conf: float = 0.35,
    iou: float = 0.5,
    imgsz: int | None = None,
    classes: list[str] | None = None,
    threads: int | None = None,
    max_det: int = 300,
    runtime: str = "auto",
    precision: str = "auto",
    streams: int = 1,
) -> Detector:
    """Open the model at `path` with the backend its suffix calls for.

    `imgsz` is the input's longer side (None: the model's own, 512 for the CenterNet, else 640);
    `classes` are class names the model must know (None: all of its classes); `threads` is the
    intra-op thread count (None: $HAZARDCTL_DETECT_THREADS, else the runtime's default of one
    per core — which in a container with a CPU limit may be far more than it is allowed).
    `runtime` runs an .onnx model in onnxruntime or OpenVINO (CPU; `precision` auto = bf16 where the CPU
    has it natively, or f32); auto: OpenVINO on the CPU when it is installed, else onnxruntime.
    `streams`: detector calls that may run at once (the stage's inference workers).
    """
    if threads is None and os.environ.get("HAZARDCTL_DETECT_THREADS"):
        try:
            threads = int(os.environ["HAZARDCTL_DETECT_THREADS"])
        except ValueError:
            raise ConfigError(f"HAZARDCTL_DETECT_THREADS={os.environ['HAZARDCTL_DETECT_THREADS']!r}: "
                              f"not a whole number") from None
    if threads is not None and threads < 1:
        raise ConfigError(f"detector threads must be >= 1, got {threads}")
    model = Path(path)
    if not model.is_file():
        raise ConfigError(
            f"model file {path} not found; `make models` fetches the COCO CenterNet ONNX into "
            f".cache/models/centernet-coco.onnx (scripts/fetch_models.sh), or pass --model with a "
            f"YOLOv8/YOLO11 .onnx or .pt file"
        )
    if not 0.0 < conf < 1.0 or not 0.0 < iou <= 1.0:
        raise ConfigError(f"conf and iou must be in (0, 1); got conf={conf}, iou={iou}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be cpu, cuda or cuda:N; got {device!r}")
    suffix = model.suffix.lower()
    if suffix == ".onnx":
        from stages.detect.backend_onnx import open_onnx

        return open_onnx(model, device=device, conf=conf, iou=iou, imgsz=imgsz, classes=classes,
                         threads=threads, max_det=max_det, runtime=resolve_runtime(runtime, device),
                         precision=precision, streams=streams)
    if suffix == ".pt":
        from stages.detect.backend_ultralytics import open_ultralytics

        return open_ultralytics(model, device=device, conf=conf, iou=iou, imgsz=imgsz,
                                classes=classes, threads=threads, max_det=max_det)
    raise ConfigError(f"model {path}: unsupported file type {suffix!r}; use a .onnx or .pt model")


def resolve_runtime(runtime: str, device: str) -> str:
    """auto: OpenVINO for the CPU when it is installed (bf16 on CPUs that have it: ~1.8x cheaper frames,
    docs/detect-backends.md), otherwise onnxruntime (and always for CUDA)."""
    if runtime != "auto":
        return runtime
    if device != "cpu":
        return "onnxruntime"
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "onnxruntime"
    return "openvino"


def select_classes(names: dict[int, str], wanted: list[str] | None, model: str) -> list[int] | None:
    """Class ids for the wanted names, or None for all; any name the model lacks is an error.

    The error lists the model's own names (and the closest one) so a typo such as
    `traffic_light`, or road-user classes asked of a 2-class model, is fixed in one go.
    """
    if wanted is None:
        return None
    by_name = {name: cid for cid, name in names.items()}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        hints = []
        for w in unknown:
            close = difflib.get_close_matches(w.replace("_", " "), list(by_name), n=1, cutoff=0.75)
            hints.append(f"{w!r} (did you mean {close[0]!r}?)" if close else repr(w))
        valid = ", ".join(names[c] for c in sorted(names))
        raise ConfigError(
            f"model {model} has no class {', '.join(hints)}; its classes are: {valid}"
        )
    if not wanted:
        raise ConfigError(f"model {model}: the class list is empty; omit it to detect every class")
    return sorted({by_name[w] for w in wanted})


def parse_names(raw: object) -> dict[int, str]:
    """Class names from model metadata: JSON (`{"0": "person"}`), a Python dict repr as
    ultralytics writes it (`{0: 'person'}`), or a list."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = ast.literal_eval(raw)
    if isinstance(raw, (list, tuple)):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"class names must be a non-empty mapping, got {type(raw).__name__}")
    return {int(k): str(v) for k, v in raw.items()}


def model_fingerprint(path: Path) -> str:
    """The model version detections carry: the first 12 hex digits of the file's sha256, so two
    results can be compared knowing they came from the same weights."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
