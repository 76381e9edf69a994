#!/usr/bin/env python3
"""Check the converted detector against the TensorFlow.js runtime: same input, same boxes.

Runs the original TF.js graph (`centernet.json` + `.bin` from @vladmandic/human@3.3.6, which
scripts/fetch_models.sh fetched) in the tfjs runtime from npm (@tensorflow/tfjs-core + the pure-JS
CPU backend, versions pinned by scripts/tfjs/package-lock.json, installed with `npm ci` into
.cache/tfjs) and the converted `centernet-coco.onnx` in onnxruntime, on the detector's own
preprocessing of real images (tests/data/*.jpg: stretched to 512x512, RGB, float32 0..255). Both
outputs are the model's 100 decoded rows (x1, y1, x2, y2 in input pixels, score, class). Every row
with a score >= --min-score in either output must be matched by a row of the same class in the
other, with its box within --tolerance-px in *frame* pixels (input pixels scaled back to the image)
and its score within --score-tolerance. Prints one line per image and exits 1 on any miss.

    scripts/check_tfjs.py                         # the cached models, tests/data/bus.jpg + zidane.jpg
    scripts/check_tfjs.py --onnx other.onnx --images a.jpg
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import cv2
    import numpy as np
    import onnxruntime  # noqa: F401
except ImportError as e:
    print(f"check_tfjs: ERROR: {e}: run it with the project's venv (the [detect] extra: opencv, onnxruntime)",
          file=sys.stderr)
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
RUNTIME_SRC = ROOT / "scripts" / "tfjs"
RUNTIME = CACHE / "tfjs"
INPUT = 512  # the graph's fixed input size (1 x 512 x 512 x 3)


def die(msg: str) -> None:
    print(f"check_tfjs: ERROR: {msg}", file=sys.stderr)
    sys.exit(2)


def ensure_runtime() -> Path:
    """The pinned tfjs packages in .cache/tfjs (npm ci when missing or the lock changed); the runner script."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        die("node and npm are needed to run the TensorFlow.js runtime (Debian: apt-get install nodejs npm)")
    RUNTIME.mkdir(parents=True, exist_ok=True)
    lock = RUNTIME / "package-lock.json"
    fresh = (RUNTIME / "node_modules" / "@tensorflow" / "tfjs-core").is_dir() and lock.is_file() \
        and filecmp.cmp(lock, RUNTIME_SRC / "package-lock.json", shallow=False)
    for name in ("package.json", "package-lock.json", "run_centernet.mjs"):
        shutil.copyfile(RUNTIME_SRC / name, RUNTIME / name)
    if not fresh:
        print("check_tfjs: npm ci (tfjs runtime, pinned) into .cache/tfjs", file=sys.stderr)
        p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=RUNTIME, capture_output=True,
                           text=True, timeout=300)
        if p.returncode != 0:
            die(f"npm ci in {RUNTIME} failed: {(p.stderr or p.stdout).strip()[-500:]}")
    return RUNTIME / "run_centernet.mjs"


def prepare(image: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """The ONNX backend's preprocessing for this model (stretch, BGR → RGB, float32 0..255) and the
    factors from input pixels back to frame pixels."""
    from stages.detect.backend_onnx import stretch

    frame = cv2.imread(str(image))
    if frame is None:
        die(f"cannot read image {image}")
    img, _ = stretch(frame, INPUT, INPUT)
    x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)
    return x, (frame.shape[1] / INPUT, frame.shape[0] / INPUT)


def run_onnx(onnx_path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: x[None]})[0][0] for x in inputs]


def run_tfjs(runner: Path, model_json: Path, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.f32", Path(tmp) / "out.f32"
        np.stack(inputs).astype(np.float32).tofile(src)
        p = subprocess.run(["node", str(runner), str(model_json), str(src), str(len(inputs)), str(dst)],
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            die(f"the tfjs runtime failed: {p.stderr.strip()[-800:]}")
        out = np.fromfile(dst, np.float32).reshape(len(inputs), -1, 6)
    version = next((line for line in p.stderr.splitlines() if line.startswith("tfjs ")), "tfjs")
    return list(out), version


def compare(ort_rows: np.ndarray, tfjs_rows: np.ndarray, scale: tuple[float, float], min_score: float) -> dict:
    """Match the rows above min_score both ways (same class, nearest box); the worst box and score gaps."""
    sx, sy = scale
    factor = np.array([sx, sy, sx, sy], np.float64)

    def one_way(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
        worst_box = worst_score = 0.0
        unmatched = 0
        for row in a[a[:, 4] >= min_score]:
            same = b[b[:, 5] == row[5]]
            if not len(same):
                unmatched += 1
                continue
            gaps = np.abs((same[:, :4].astype(np.float64) - row[:4]) * factor).max(axis=1)
            i = int(gaps.argmin())
            worst_box = max(worst_box, float(gaps[i]))
            worst_score = max(worst_score, float(abs(same[i, 4] - row[4])))
        return worst_box, worst_score, unmatched

    a = one_way(ort_rows, tfjs_rows)
    b = one_way(tfjs_rows, ort_rows)
    return {"rows": int((ort_rows[:, 4] >= min_score).sum()), "box_px": max(a[0], b[0]),
            "score": max(a[1], b[1]), "unmatched": a[2] + b[2]}


def main() -> int:
    models = CACHE / "models"
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--onnx", type=Path, default=models / "centernet-coco.onnx")
    ap.add_argument("--tfjs-json", type=Path, default=models / "centernet.json")
    ap.add_argument("--images", type=Path, nargs="+",
                    default=[ROOT / "tests" / "data" / "bus.jpg", ROOT / "tests" / "data" / "zidane.jpg"])
    ap.add_argument("--tolerance-px", type=float, default=0.001, help="largest box gap, frame pixels")
    ap.add_argument("--score-tolerance", type=float, default=1e-4)
    ap.add_argument("--min-score", type=float, default=0.05, help="rows below this score in both outputs are ignored")
    ap.add_argument("--save-tfjs", type=Path, help="also write the tfjs outputs here (.npy)")
    ap.add_argument("--tfjs-outputs", type=Path, help="compare with tfjs outputs saved by --save-tfjs for the same "
                    "images instead of running tfjs again (for checking other ONNX files against one run)")
    a = ap.parse_args()
    for f in (a.onnx, *(() if a.tfjs_outputs else (a.tfjs_json,))):
        if not f.is_file():
            die(f"{f} is missing: run scripts/fetch_models.sh (make models)")
    prepared = [prepare(img) for img in a.images]
    inputs = [x for x, _ in prepared]
    ort_out = run_onnx(a.onnx, inputs)
    if a.tfjs_outputs:
        tfjs_out, version = list(np.load(a.tfjs_outputs)), f"tfjs outputs saved in {a.tfjs_outputs}"
        if len(tfjs_out) != len(inputs):
            die(f"{a.tfjs_outputs} holds {len(tfjs_out)} outputs for {len(inputs)} images")
    else:
        tfjs_out, version = run_tfjs(ensure_runtime(), a.tfjs_json, inputs)
    if a.save_tfjs:
        np.save(a.save_tfjs, np.stack(tfjs_out))
    ok = True
    for img, (_, scale), o, t in zip(a.images, prepared, ort_out, tfjs_out):
        c = compare(o, t, scale, a.min_score)
        good = c["unmatched"] == 0 and c["rows"] > 0 and c["box_px"] <= a.tolerance_px \
            and c["score"] <= a.score_tolerance
        ok &= good
        print(f"check_tfjs: {img.name}: {c['rows']} boxes (score >= {a.min_score:g}), largest box gap "
              f"{c['box_px']:.6f} px (limit {a.tolerance_px:g}), score gap {c['score']:.2e}, unmatched "
              f"{c['unmatched']}: {'ok' if good else 'MISMATCH'}")
    print(f"check_tfjs: {a.onnx.name} (onnxruntime) vs {a.tfjs_json.name} ({version}): "
          f"{'same boxes' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
