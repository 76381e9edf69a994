"""ultralytics detector for `.pt` weights (the optional `[ultralytics]` extra: ultralytics + torch).

Kept for models only available as PyTorch weights and for GPU boxes; on CPU the onnxruntime
backend is the faster path (docs/detect-backends.md has the figures). Tracking is not done here:
the stage runs one `Tracker` per camera for both backends, so per-camera state never mixes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hazardctl.errors import ConfigError
from stages.detect.backends import Box, model_fingerprint, parse_names, select_classes

INSTALL_HINT = "pip install 'hazardctl[ultralytics]' (or convert the model to .onnx)"


def _import_yolo():
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never phone home or fetch assets at run time
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise ConfigError(f".pt models need the ultralytics extra ({e.name or e} is missing): {INSTALL_HINT}") from None
    return YOLO


def _torch_device(device: str) -> str:
    import torch

    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: torch sees no CUDA device (torch {torch.__version__}); "
                          f"use --device cpu")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    return f"cuda:{index}"


class UltralyticsDetector:
    """A YOLO .pt model run through ultralytics' predictor; frames go in as one batch."""

    def __init__(self, path: Path, *, device: str, conf: float, iou: float, imgsz: int | None,
                 classes: list[str] | None, threads: int | None, max_det: int) -> None:
        YOLO = _import_yolo()
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.device = _torch_device(device)
        try:
            self.model = YOLO(str(path), task="detect")
        except Exception as e:  # noqa: BLE001 -- torch unpickling and ultralytics raise many types
            raise ConfigError(f"model {path}: ultralytics cannot load it: {str(e).splitlines()[0]}") from None
        if getattr(self.model, "task", "detect") != "detect":
            raise ConfigError(f"model {path}: a {self.model.task} model, not a detection model")
        self.names = parse_names(self.model.names)
        self.class_ids = select_classes(self.names, classes, path.name)
        self.model_name = path.stem
        self.model_version = model_fingerprint(path)
        self.kwargs = {"conf": conf, "iou": iou, "imgsz": imgsz or 640, "max_det": max_det, "classes": self.class_ids,
                       "device": self.device, "verbose": False}

    def detect(self, frames: list[np.ndarray]) -> list[list[Box]]:
        if not frames:
            return []
        results = self.model.predict(list(frames), **self.kwargs)  # numpy arrays are read as BGR
        out: list[list[Box]] = []
        for r in results:
            boxes = r.boxes
            xyxy = boxes.xyxy.cpu().numpy().tolist()
            confs = boxes.conf.cpu().numpy().tolist()
            cls = boxes.cls.cpu().numpy().astype(int).tolist()
            out.append([
                Box(c, self.names[c], round(s, 4), tuple(round(v, 1) for v in b))  # type: ignore[arg-type]
                for b, s, c in zip(xyxy, confs, cls)
                if b[2] - b[0] >= 1.0 and b[3] - b[1] >= 1.0
            ])
        return out


def open_ultralytics(path: Path, **kwargs) -> UltralyticsDetector:
    return UltralyticsDetector(path, **kwargs)
