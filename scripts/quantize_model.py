"""Statically quantize the CenterNet ONNX model to int8 (onnxruntime.quantization.quantize_static).

    python scripts/quantize_model.py .cache/models/centernet-coco.onnx .cache/models/centernet-coco-int8.onnx

Calibration frames are ones the project ships or makes, no download: tests/data/*.jpg, their
mirror images and crops, and frames of the bench's synthetic road scene (cut-outs of bus.jpg on a
grey road). Only the convolutions are quantized (QDQ, per-channel weights): they are nearly all of
the work, and the decode tail (TopK, Gather, the box arithmetic) stays fp32 so boxes keep their
precision. The CenterNet metadata (layout, names) is copied, so the backend treats it as the fp32
model. `make models` runs this after the conversion (scripts/fetch_models.sh).

Not a capacity lever on the 2-core Xeon measured (issue 21): every onnxruntime variant tried (QDQ or
QOperator, Conv only or every op but the decode tail, reduce_range, depthwise convs left fp32) ran at
0.87-1.02x fp32's speed and found 87-90 % of its detections (docs/detect-backends.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def calibration_frames() -> list[np.ndarray]:
    """BGR frames: the shipped images, flips and crops of them, and the bench's road scene."""
    frames = []
    for p in sorted((ROOT / "tests/data").glob("*.jpg")):
        img = cv2.imread(str(p))
        if img is None:
            continue
        h, w = img.shape[:2]
        frames += [img, cv2.flip(img, 1), img[: h * 2 // 3, : w * 2 // 3], img[h // 3:, w // 3:]]
    from scripts.bench_detect import cutouts, scene

    people, vehicle = cutouts()
    frames += [scene(t, people, vehicle) for t in np.linspace(0.0, 9.0, 10)]
    return frames


def model_input(frame: np.ndarray, size: int) -> np.ndarray:
    """As the backend prepares CenterNet input: plain resize, RGB, 0..255 float, NHWC."""
    img = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)[None]


def quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    inp = model.graph.input[0]
    size = inp.type.tensor_type.shape.dim[1].dim_value or 512
    batches = [model_input(f, size) for f in calibration_frames()]

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter({inp.name: b} for b in batches)

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Frames(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    out = onnx.load(str(dst))
    del out.metadata_props[:]
    for p in model.metadata_props:
        out.metadata_props.add(key=p.key, value=p.value)
    onnx.save(out, str(dst))
    print(f"quantize_model: {dst} ({dst.stat().st_size / 1e6:.1f} MB, {len(batches)} calibration frames)",
          file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    quantize(a.src, a.dst)


if __name__ == "__main__":
    main()
