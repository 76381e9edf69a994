"""The converted detector against the TensorFlow.js runtime (scripts/check_tfjs.py): the original tfjs
graph, run by the pinned tfjs packages from npm, and the ONNX file in onnxruntime give the same boxes on
a real image; an ONNX whose weights are off by one part in a million is caught."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

MODELS = ROOT / ".cache" / "models"
SCRIPT = [sys.executable, str(ROOT / "scripts" / "check_tfjs.py"), "--images", str(ROOT / "tests" / "data" / "bus.jpg")]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_onnx_matches_the_tfjs_runtime_and_a_tampered_model_does_not(tmp_path):
    if not (MODELS / "centernet-coco.onnx").is_file() or not (MODELS / "centernet.json").is_file():
        pytest.skip("run `make models` first (make test does)")
    saved = tmp_path / "tfjs.npy"
    p = subprocess.run([*SCRIPT, "--save-tfjs", str(saved)], capture_output=True, text=True, timeout=230, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert "bus.jpg: 100 boxes" in p.stdout and ": ok" in p.stdout and "same boxes" in p.stdout
    assert "tfjs 4.22.0 (cpu)" in p.stdout  # the tfjs runtime really ran, the pinned version

    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(MODELS / "centernet-coco.onnx")
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and a.size > 100:
            init.CopyFrom(numpy_helper.from_array((a * 1.000001).astype(np.float32), init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    p = subprocess.run([*SCRIPT, "--onnx", str(tampered), "--tfjs-outputs", str(saved)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 1, p.stdout + p.stderr[-3000:]
    assert "MISMATCH" in p.stdout and "DIFFERENT" in p.stdout
