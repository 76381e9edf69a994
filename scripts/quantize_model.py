"""Statically quantize the CenterNet ONNX model to int8 with NNCF (OpenVINO's quantizer).

    python scripts/quantize_model.py .cache/models/centernet-coco.onnx .cache/models/centernet-coco-int8.onnx

Calibration frames are ones the project ships or makes, no download: tests/data/*.jpg, their
mirror images and crops, and frames of the bench's synthetic road scene (cut-outs of bus.jpg on a
grey road), each at the square 512x512 input and at a 16:9 camera's 512x288. Only the convolutions are
quantized (QDQ, per-channel int8 weights, fast bias correction): they are nearly all of the work, and the
decode tail (TopK, Gather, the box arithmetic) and the hard-swish chains stay in float so boxes keep their
precision. The CenterNet metadata (layout, names) is copied, so the backend treats it as the fp32 model.
`make models` runs this after the conversion (scripts/fetch_models.sh).

Why NNCF and not onnxruntime's quantize_static (issue 21): NNCF quantizes the activations into a
depthwise convolution per channel and corrects the bias the rounding shifts; on this MobileNetV3 that is
the difference between finding 78-90 % of fp32's detections (onnxruntime, seven variants) and 97 %
(road users, `python scripts/bench_detect.py --precisions`). The model runs on OpenVINO (the CPU default,
`--runtime auto`), where it is the cheapest precision: 14.1 ms of CPU a 512x288 frame against 15.0 in bf16
and 22.7 in f32 (docs/detect-backends.md). onnxruntime cannot
run it (its QLinearConv takes one zero point per input): `--runtime onnxruntime` or `--device cuda` with it
fail at start with one line.
"""

from __future__ import annotations

import argparse
import sys
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


def model_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """As the backend prepares CenterNet input for `size` (width, height): plain resize, RGB, 0..255 float, NHWC."""
    from stages.detect.backend_onnx import stretch

    img, _ = stretch(frame, *size)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)[None]


def quantize(src: Path, dst: Path) -> None:
    import logging

    import nncf

    nncf.set_log_level(logging.WARNING)  # not a line per node it leaves in float (~190 lines)
    model = onnx.load(str(src))
    inp = model.graph.input[0]
    h, w = (d.dim_value for d in inp.type.tensor_type.shape.dim[1:3])  # NHWC; 0 where dynamic
    sizes = [(w or 512, h)] if h else [(w or 512, w or 512), (w or 512, (w or 512) * 9 // 16)]
    frames = calibration_frames()
    batches = [model_input(f, size) for size in sizes for f in frames]
    floats = sorted({n.op_type for n in model.graph.node} - {"Conv"})  # everything but the convolutions
    out = nncf.quantize(model, nncf.Dataset(batches, lambda x: {inp.name: x}), subset_size=len(batches),
                        target_device=nncf.TargetDevice.CPU, ignored_scope=nncf.IgnoredScope(types=floats))
    del out.metadata_props[:]
    for p in model.metadata_props:
        out.metadata_props.add(key=p.key, value=p.value)
    onnx.save(out, str(dst))
    print(f"quantize_model: {dst} ({dst.stat().st_size / 1e6:.1f} MB, {len(batches)} calibration inputs)",
          file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    a = ap.parse_args()
    quantize(a.src, a.dst)


if __name__ == "__main__":
    main()
