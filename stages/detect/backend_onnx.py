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
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hazardctl.errors import ConfigError
from stages.detect.backends import Box, model_fingerprint, parse_names, select_classes
from stages.detect.motion_gate import widen_span

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
    thread_safe = True
    """onnxruntime's Run may be called from several threads at once (stages/detect/inference.py)"""

    def __init__(self, path: Path, *, device: str, conf: float, iou: float, imgsz: int | None,
                 classes: list[str] | None, threads: int | None, max_det: int, runtime: str = "onnxruntime",
                 precision: str = "auto", streams: int = 1) -> None:
        import onnxruntime as ort

        if runtime == "openvino" and device != "cpu":
            raise ConfigError(f"--runtime openvino runs on the CPU; use --runtime onnxruntime for --device {device}")
        opts = ort.SessionOptions()
        # beside OpenVINO the session only reads the model's metadata and shapes: no graph rewriting to fail or wait on
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if runtime == "openvino"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
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

        self.runtime = runtime
        self.precision = "f32"
        if runtime == "openvino":  # onnxruntime still reads the model's metadata and shapes below
            ov = OpenVinoRunner(path, threads=threads, streams=streams, precision=precision)
            self.precision, self._run = ov.precision, ov
        elif runtime != "onnxruntime":
            raise ConfigError(f"--runtime {runtime}: use onnxruntime or openvino")
        else:
            self._run = lambda batch: self.session.run([self.output_name], {self.input_name: batch})[0]
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
                out = self._run(batch)
                for i, o in zip(chunk, out):
                    results[i] = self._postprocess(o, prepared[i][1])
        return results

    # -- motion regions (issue 21): the model on the parts of a frame that moved, at the frame's own scale

    REGION_STEP = 64
    """region inputs are whole multiples of this many input pixels on each side (at least the stride): OpenVINO
    compiles once per input shape (~30 ms of CPU; 3x a small run), so few distinct shapes must recur, and the
    extra context lifts the crop's scores (the model's squeeze-excite blocks pool the whole input)"""

    @property
    def supports_regions(self) -> bool:
        """True when the input height and width are dynamic, so a region can be fed at its own size."""
        shape = self.session.get_inputs()[0].shape
        h, w = (shape[1], shape[2]) if self.nhwc else (shape[2], shape[3])
        return _is_dynamic(h) and _is_dynamic(w)

    def region_scale(self, frame_w: int, frame_h: int) -> tuple[float, float]:
        """Input pixels per frame pixel (x, y) the whole frame gets, which each region gets too."""
        in_w, in_h = self.input_size(frame_w, frame_h)
        if self.nhwc:  # stretched
            return in_w / frame_w, in_h / frame_h
        r = min(in_w / frame_w, in_h / frame_h)  # letterboxed
        return r, r

    def detect_regions(self, frame: np.ndarray, regions: Sequence[tuple[int, int, int, int]]) -> list[Box]:
        """Boxes (frame pixels) found in these regions (x1, y1, x2, y2, frame pixels) of one BGR frame.

        Each region is seen at the scale the whole frame would be (objects keep the size the model
        detects them at in detect()), widened inside the frame to a whole number of REGION_STEPs of input
        (more context instead of distortion; stretched or padded only where the frame ends), one
        session run per region, then NMS across regions. No state on self: safe from several threads."""
        if not self.supports_regions:
            raise ValueError(f"model {self.model_name}: fixed input size, regions need a dynamic one")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
        fh, fw = frame.shape[:2]
        sx, sy = self.region_scale(fw, fh)
        whole_w, whole_h = self.input_size(fw, fh)
        s = max(self.stride, self.REGION_STEP)
        found: list[Box] = []
        for region in regions:
            x1, x2 = _widen(region[0], region[2], fw, sx, s)
            y1, y2 = _widen(region[1], region[3], fh, sy, s)
            if x2 <= x1 or y2 <= y1:
                continue
            crop = frame[y1:y2, x1:x2]  # a whole axis gets the whole frame's input size on it
            in_w = whole_w if x2 - x1 == fw else max(s, round((x2 - x1) * sx / s) * s)
            in_h = whole_h if y2 - y1 == fh else max(s, round((y2 - y1) * sy / s) * s)
            if self.nhwc:  # CenterNet: plain resize, as _prepare
                img, placement = stretch(crop, in_w, in_h)
                blob = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(self.input_dtype)
            else:  # YOLO: the frame's scale, padded (grey 114, right/bottom) up to the stride
                nw, nh = min(in_w, max(1, round((x2 - x1) * sx))), min(in_h, max(1, round((y2 - y1) * sy)))
                img = np.full((in_h, in_w, 3), 114, np.uint8)
                img[:nh, :nw] = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_LINEAR if sx > 1 else cv2.INTER_AREA)
                placement = Placement(nw / (x2 - x1), nh / (y2 - y1), 0.0, 0.0, float(x2 - x1), float(y2 - y1))
                blob = img.transpose(2, 0, 1)[::-1].astype(self.input_dtype)
                blob *= 1 / 255
            out = self._run(blob[None])[0]
            for b in self._postprocess(out, placement):
                bx1, by1, bx2, by2 = b.bbox
                b.bbox = (round(bx1 + x1, 1), round(by1 + y1, 1), round(bx2 + x1, 1), round(by2 + y1, 1))
                found.append(b)
        if len(regions) < 2 or not found:
            return found
        keep = nms(np.array([b.bbox for b in found], np.float32), np.array([b.confidence for b in found], np.float32),
                   np.array([b.class_id for b in found], np.int64), self.iou, self.max_det)
        return [found[i] for i in sorted(keep.tolist())]


def _widen(lo: int, hi: int, limit: int, scale: float, stride: int) -> tuple[int, int]:
    """[lo, hi) of frame pixels widened (centred, inside [0, limit)) so that at `scale` it spans a whole
    number of strides (at least one); where the frame is too small, as much as it has."""
    lo, hi = max(0, int(lo)), min(limit, int(hi))
    strides = max(1, math.ceil((hi - lo) * scale / stride - 1e-9))
    want = min(limit, max(math.ceil(strides * stride / scale - 1e-9), hi - lo))
    lo, hi = widen_span(lo, hi, want, limit)
    return max(0, lo), hi


class OpenVinoRunner:
    """The same ONNX file run by OpenVINO's CPU runtime instead of onnxruntime (issue 21).

    Why: on a CPU with native bfloat16 (AVX512-BF16 or AMX: recent Xeons, Zen 4) OpenVINO runs the
    CenterNet in bf16 — 12 ms of CPU for a 512x288 frame (compiled for that shape) against onnxruntime's
    29 ms in f32 — and finds 97-100 % of the f32 boxes (docs/detect-backends.md); in f32 (`precision="f32"`,
    or a CPU without bf16) it costs 22 ms and finds the same boxes. One stream per inference worker, each worker
    thread with its own infer request (a request is not thread-safe; the compiled model is)."""

    def __init__(self, path: Path, *, threads: int | None, streams: int, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("--runtime openvino: the openvino package is not installed "
                              "(pip install openvino, or use --runtime onnxruntime)") from None
        import threading

        from stages.detect.inference import physical_cores

        if precision not in ("auto", "f32", "bf16"):
            raise ConfigError(f"--precision {precision}: use auto, f32 or bf16")
        streams = max(1, streams)
        config: dict[str, object] = {"NUM_STREAMS": streams,
                                     "INFERENCE_NUM_THREADS": streams * (threads or max(1, physical_cores() // streams))}
        if precision != "auto":  # auto: OpenVINO's own choice, bf16 where the CPU has it natively, else f32
            config["INFERENCE_PRECISION_HINT"] = precision
        self._core, self._config = ov.Core(), config
        try:
            self._model = self._core.read_model(str(path))
            self.compiled = self._core.compile_model(self._model, "CPU", config)
        except Exception as e:  # noqa: BLE001 -- OpenVINO raises RuntimeError with its own text
            raise ConfigError(f"model {path}: OpenVINO cannot load it: {str(e).splitlines()[0]}") from None
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "bf16", "f32"
        self._static: dict[tuple[int, ...], object] = {}
        self._compiling = threading.Lock()
        self._local = threading.local()

    STATIC_SHAPES = 4
    """input shapes that get a model compiled for exactly their size (in the order first seen; others run
    on the any-size model). A static 1x288x512x3 CenterNet costs 12 ms of CPU a frame against 16.6 ms for
    the same call on the model compiled for any shape (2-core Xeon, bf16, issue 21); compiling one takes
    ~0.3 s, once per shape: a camera resolution each, and motion regions may add some"""

    def _compiled_for(self, shape: tuple[int, ...]):
        compiled = self._static.get(shape)
        if compiled is not None or len(self._static) >= self.STATIC_SHAPES:
            return compiled or self.compiled
        with self._compiling:  # workers meeting a new shape together compile it once
            if shape not in self._static and len(self._static) < self.STATIC_SHAPES:
                model = self._model.clone()
                try:
                    model.reshape({model.inputs[0]: list(shape)})
                    self._static[shape] = self._core.compile_model(model, "CPU", self._config)
                except Exception as e:  # noqa: BLE001 -- the any-size model still runs it
                    log.warning("OpenVINO could not compile the model for input %s (%s): it runs at any size",
                                shape, str(e).splitlines()[0])
                    self._static[shape] = self.compiled
            return self._static.get(shape, self.compiled)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        compiled = self._compiled_for(batch.shape)
        requests = self._local.__dict__.setdefault("requests", {})  # a request is not thread-safe: one per thread
        request = requests.get(id(compiled))
        if request is None:
            request = requests[id(compiled)] = compiled.create_infer_request()
        # the batch is a fresh array for this call: OpenVINO may read it in place (saves a copy, 3 % of a call)
        return request.infer({0: batch}, share_inputs=True)[0]


def open_onnx(path: Path, **kwargs) -> OnnxDetector:
    return OnnxDetector(path, **kwargs)
