"""onnxruntime detector: YOLOv8/YOLO11 exports and the CenterNet layout, no torch.

Two layouts, told apart by the model itself:
  * YOLO (ultralytics export): NCHW RGB 0..1 input, letterboxed to a square; output
    (B, 4+nc, N) rows of cx, cy, w, h, class scores; we pick the best class, apply conf, and
    run class-aware NMS. An end-to-end export (output (B, N, 6) = x1, y1, x2, y2, score, class)
    is accepted too.
  * CenterNet (metadata layout=centernet, scripts/tfjs_to_onnx.py): NHWC RGB 0..255 input,
    plain resize, output (B, N, 6) already decoded; we apply conf, classes and per-class NMS.
The geometry (letterbox, decode, NMS) is pure numpy, unit-tested without a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hazardctl.errors import ConfigError
from stages.detect.backends import Box, model_fingerprint, parse_names, select_classes

log = logging.getLogger("hazardctl.detect.onnx")

# Used only when a YOLO export with 80 classes carries no `names` metadata.
COCO_NAMES = dict(enumerate((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)))

MAX_NMS_CANDIDATES = 30000  # as ultralytics: bounds NMS time when a bad model scores everything
CLASS_OFFSET = 1e5           # shifts boxes per class so one NMS pass never merges two classes


# ---------------------------------------------------------------------------- pure geometry

@dataclass(frozen=True, slots=True)
class Placement:
    """How a frame was fitted into the model input: input = frame * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_w: float
    frame_h: float


def letterbox(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Placement]:
    """Resize keeping aspect ratio and pad (grey 114, centred) to width × height, as ultralytics
    trains and exports its models; distortion would cost accuracy on wide camera frames."""
    h, w = frame.shape[:2]
    r = min(width / w, height / h)
    nw, nh = round(w * r), round(h * r)
    left, top = round((width - nw) / 2 - 0.1), round((height - nh) / 2 - 0.1)
    canvas = np.full((height, width, 3), 114, dtype=np.uint8)
    interp = cv2.INTER_LINEAR if r > 1 else cv2.INTER_AREA
    canvas[top:top + nh, left:left + nw] = (
        cv2.resize(frame, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else frame)
    return canvas, Placement(r, r, left, top, float(w), float(h))


def stretch(frame: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Placement]:
    """Plain resize to width × height (the CenterNet model was trained that way)."""
    h, w = frame.shape[:2]
    out = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) if (w, h) != (width, height) else frame
    return out, Placement(width / w, height / h, 0.0, 0.0, float(w), float(h))


def fit_size(frame_w: int, frame_h: int, long_side: int, stride: int) -> tuple[int, int]:
    """Model input (width, height) for a dynamic-size model that is stretched, not letterboxed: the
    frame's longer side becomes `long_side`, the shorter one keeps the aspect, rounded to the nearest
    multiple of `stride` (at least one stride): 1280x720 at 512 -> 512x288, a square frame -> 512x512."""
    short = min(frame_w, frame_h) * long_side / max(frame_w, frame_h)
    short = max(stride, round(short / stride) * stride)
    return (long_side, short) if frame_w >= frame_h else (short, long_side)


def decode_yolo(pred: np.ndarray, conf: float, class_ids: list[int] | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(4+nc, N) raw YOLO head → xyxy boxes (input pixels), scores, class ids above conf."""
    scores_all = pred[4:]
    if class_ids is not None:
        scores_all = scores_all[class_ids]
    best = scores_all.max(axis=0)
    keep = np.flatnonzero(best >= conf)
    if keep.size == 0:
        return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
    cls = scores_all[:, keep].argmax(axis=0)
    if class_ids is not None:
        cls = np.asarray(class_ids)[cls]
    cx, cy, w, h = pred[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes, best[keep], cls.astype(np.int64)


def decode_rows(rows: np.ndarray, conf: float, class_ids: list[int] | None, num_classes: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 6) decoded rows x1, y1, x2, y2, score, class → boxes, scores, class ids above conf."""
    cls = np.rint(rows[:, 5]).astype(np.int64)
    mask = (rows[:, 4] >= conf) & (cls >= 0) & (cls < num_classes)
    if class_ids is not None:
        mask &= np.isin(cls, class_ids)
    return rows[mask, :4].astype(np.float32), rows[mask, 4].astype(np.float32), cls[mask]


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int) -> np.ndarray:
    """Indices kept by greedy class-aware non-maximum suppression, best score first."""
    if len(boxes) == 0:
        return np.empty(0, np.int64)
    order = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
    shifted = boxes + (classes * CLASS_OFFSET)[:, None]
    x1, y1, x2, y2 = shifted.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.int64)


def to_frame_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, placement: Placement,
                   names: dict[int, str]) -> list[Box]:
    """Map input-pixel boxes back to the frame, clip to it, drop empty ones."""
    p = placement
    out: list[Box] = []
    for (x1, y1, x2, y2), score, cid in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
        x1 = min(max((x1 - p.pad_x) / p.scale_x, 0.0), p.frame_w)
        x2 = min(max((x2 - p.pad_x) / p.scale_x, 0.0), p.frame_w)
        y1 = min(max((y1 - p.pad_y) / p.scale_y, 0.0), p.frame_h)
        y2 = min(max((y2 - p.pad_y) / p.scale_y, 0.0), p.frame_h)
        if x2 - x1 < 1.0 or y2 - y1 < 1.0:
            continue
        out.append(Box(cid, names[cid], round(score, 4), (round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1))))
    return out


# ---------------------------------------------------------------------------- the session

def _providers(device: str, available: list[str]) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"--device {device}: this onnxruntime has no CUDA provider (has {', '.join(available)}); "
            f"install onnxruntime-gpu instead of onnxruntime, or use --device cpu"
        )
    device_id = int(device.split(":", 1)[1]) if ":" in device else 0
    cuda = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" in available:  # TensorRT first where onnxruntime-gpu was built with it
        return [("TensorrtExecutionProvider", {"device_id": device_id, "trt_fp16_enable": True}), *cuda]
    return cuda


def _is_dynamic(dim: object) -> bool:
    return not isinstance(dim, int) or dim <= 0


class OnnxDetector:
    """One onnxruntime session. Frames are batched into one run when the model's batch axis is dynamic,
    except the CenterNet on the CPU, which runs them one by one: a batch of 8 took 13-23 % more CPU per
    frame than 8 single runs on a 2-core Xeon (issue 21, docs/detect-backends.md)."""

    MAX_BATCH = 32

    def __init__(self, path: Path, *, device: str, conf: float, iou: float, imgsz: int | None,
                 classes: list[str] | None, threads: int | None, max_det: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), opts, providers=_providers(device, ort.get_available_providers()))
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own Fail/InvalidGraph/… types
            raise ConfigError(f"model {path}: onnxruntime cannot load it: {str(e).splitlines()[0]}") from None
        if device != "cpu" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ConfigError(f"--device {device}: onnxruntime could not start CUDA for {path} "
                              f"(CUDA/cuDNN libraries missing?); use --device cpu")

        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        self.output_name = self.session.get_outputs()[0].name
        self.layout = meta.get("layout", "yolo")
        self.model_name = path.stem
        self.model_version = model_fingerprint(path)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ConfigError(f"model {path}: expected a 4-D image input, got {inp.name}{shape}")
        self.dynamic_batch = _is_dynamic(shape[0])
        # frames per session run: the CenterNet on the CPU one at a time (measured); YOLO exports batch (not measured)
        one_by_one = device == "cpu" and self.layout == "centernet"
        self.per_call = self.MAX_BATCH if self.dynamic_batch and not one_by_one else 1
        if self.layout == "centernet":
            self.nhwc = True
            h, w = shape[1], shape[2]
        elif self.layout == "yolo":
            self.nhwc = False
            if shape[1] != 3:
                raise ConfigError(f"model {path}: expected an NCHW input with 3 channels "
                                  f"(a YOLOv8/YOLO11 export), got {inp.name}{shape}")
            h, w = shape[2], shape[3]
        else:
            raise ConfigError(f"model {path}: unknown layout {self.layout!r} in its metadata "
                              f"(supported: yolo, centernet)")
        self.stride = int(meta.get("stride", 32))
        dynamic = _is_dynamic(h) or _is_dynamic(w)
        # The CenterNet's default is the square it was trained at (512x512, every frame stretched to it);
        # --imgsz N runs it at the camera's aspect instead (1280x720 at 512: 512x288, 1.7x faster, but 92 %
        # of the square's detections: docs/detect-backends.md, issue 21).
        self.rect = dynamic and not (self.layout == "centernet" and imgsz is None)  # input follows the frame's aspect
        if dynamic and not self.rect:
            h = w = int(meta["imgsz"]) if meta.get("imgsz", "").isdigit() else 512
        elif self.rect:  # any input size: fit each frame's longer side to imgsz, the other to its aspect
            h = w = -(-(imgsz or 640) // self.stride) * self.stride
        elif imgsz is not None and imgsz != h:
            log.info("model %s has a fixed %dx%d input; imgsz %d does not apply", path.name, w, h, imgsz)
        self.width, self.height = int(w), int(h)

        out_shape = self.session.get_outputs()[0].shape
        self.names = self._names(path, meta, out_shape)
        head = out_shape[1] if len(out_shape) == 3 else None
        if (self.layout == "yolo" and isinstance(head, int) and out_shape[-1] != 6
                and head - 4 != len(self.names)):
            raise ConfigError(f"model {path}: its output has {head - 4} class scores but its metadata "
                              f"names {len(self.names)} classes")
        self.class_ids = select_classes(self.names, classes, path.name)

    def _names(self, path: Path, meta: dict[str, str], out_shape: list) -> dict[int, str]:
        if "names" in meta:
            try:
                return parse_names(meta["names"])
            except (ValueError, SyntaxError) as e:
                raise ConfigError(f"model {path}: unreadable class names in its metadata ({e})") from None
        channels = out_shape[1] if len(out_shape) == 3 else None
        if self.layout == "yolo" and channels == 84 or self.layout == "centernet":
            return dict(COCO_NAMES)
        if isinstance(channels, int) and channels > 4:
            return {i: f"class{i}" for i in range(channels - 4)}
        raise ConfigError(f"model {path}: no class names in its metadata and none can be inferred")

    # -- the hot path: preprocess → infer → postprocess

    def _prepare(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        if self.nhwc:
            width, height = self.width, self.height
            if self.rect:  # the aspect kept, so a 16:9 camera costs 56 % of a square input
                width, height = self.input_size(frame.shape[1], frame.shape[0])
            img, placement = stretch(frame, width, height)
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(self.input_dtype), placement
        # a dynamic-size export as ultralytics does for .pt: no padding beyond the next stride multiple
        width, height = self.input_size(frame.shape[1], frame.shape[0])
        img, placement = letterbox(frame, width, height)
        blob = img.transpose(2, 0, 1)[::-1].astype(self.input_dtype)  # BGR HWC → RGB CHW
        blob *= 1 / 255
        return blob, placement

    def input_size(self, frame_w: int, frame_h: int) -> tuple[int, int]:
        """(width, height) of the model input a frame of this size gets."""
        if not self.rect:
            return self.width, self.height
        if self.nhwc:
            return fit_size(frame_w, frame_h, self.width, self.stride)
        r = min(self.width / frame_w, self.height / frame_h)
        return (-(-round(frame_w * r) // self.stride) * self.stride,
                -(-round(frame_h * r) // self.stride) * self.stride)

    def _postprocess(self, out: np.ndarray, placement: Placement) -> list[Box]:
        if out.ndim == 2 and out.shape[-1] == 6 and (self.layout == "centernet" or out.shape[0] != 6):
            boxes, scores, cls = decode_rows(out, self.conf, self.class_ids, max(self.names) + 1)
        else:
            boxes, scores, cls = decode_yolo(out, self.conf, self.class_ids)
        keep = nms(boxes, scores, cls, self.iou, self.max_det)
        cls = cls[keep]
        known = np.isin(cls, list(self.names))
        return to_frame_boxes(boxes[keep][known], scores[keep][known], cls[known], placement, self.names)

    def detect(self, frames: list[np.ndarray]) -> list[list[Box]]:
        prepared = [self._prepare(f) for f in frames]
        by_shape: dict[tuple[int, ...], list[int]] = {}  # only a dynamic-size model sees several
        for i, (blob, _) in enumerate(prepared):
            by_shape.setdefault(blob.shape, []).append(i)
        step = self.per_call
        results: list[list[Box]] = [[] for _ in frames]
        for indices in by_shape.values():
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                batch = np.stack([prepared[i][0] for i in chunk])
                out = self.session.run([self.output_name], {self.input_name: batch})[0]
                for i, o in zip(chunk, out):
                    results[i] = self._postprocess(o, prepared[i][1])
        return results


def open_onnx(path: Path, **kwargs) -> OnnxDetector:
    return OnnxDetector(path, **kwargs)
