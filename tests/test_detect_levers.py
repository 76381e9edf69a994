"""Issue 21's levers: motion gating (pure gate and in the stage), the int8 model's agreement with
fp32, and --device cuda on a machine without a GPU. Real CenterNet models (make models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hazardctl.messages import DetectionResult
from hazardctl.transports import Endpoints
from stages.detect.motion_gate import MotionGate, MotionGateConfig
from tests.conftest import ROOT

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
INT8 = ROOT / ".cache/models/centernet-coco-int8.onnx"
needs_model = pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first")
pytestmark = pytest.mark.timeout(120)


def road(x: int, w: int = 640, h: int = 360) -> np.ndarray:
    """A grey road with a dark car-sized block at x (and mild sensor noise, fixed seed)."""
    img = np.full((h, w, 3), 110, np.uint8)
    img += np.random.default_rng(x).integers(0, 3, img.shape, dtype=np.uint8)
    cv2.rectangle(img, (x, 200), (x + 60, 240), (30, 30, 160), -1)
    return img


# --- the pure gate (fake clock: the timestamps passed in) -----------------------------------------

def test_static_frames_skip_inference_until_forced():
    gate = MotionGate(MotionGateConfig(force_every_s=2.0))
    decisions = [gate.infer(road(100), t) for t in (0.0, 0.5, 1.0, 1.5, 1.99, 2.0, 2.5)]
    assert decisions == [True, False, False, False, False, True, False]
    assert (gate.inferred, gate.skipped) == (2, 5)


def test_a_moving_object_is_inferred_and_slow_motion_adds_up():
    gate = MotionGate(MotionGateConfig(force_every_s=60.0))
    assert gate.infer(road(100), 0.0)
    assert gate.infer(road(130), 0.5)        # the block moved 30 px
    # 1 px per frame is below the threshold once, but the reference is the last *analysed* frame
    steps = [gate.infer(road(130 + k), 1.0 + k * 0.5) for k in range(1, 8)]
    assert not steps[0] and any(steps)


def test_threshold_and_reset():
    loose = MotionGate(MotionGateConfig(force_every_s=60.0, min_changed=0.5))
    assert loose.infer(road(100), 0.0) and not loose.infer(road(160), 0.5)  # half the frame must change
    loose.reset()
    assert loose.infer(road(160), 1.0)       # nothing to compare with after a reset
    gate = MotionGate(MotionGateConfig(force_every_s=2.0))
    assert gate.infer(road(100), 10.0) and gate.infer(road(100), 5.0)  # a clock going back: infer


# --- in the stage, with the real detector ---------------------------------------------------------

class CallCounter:
    """The real detector, counting the frames it is given."""

    def __init__(self, inner):
        self.inner, self.frames = inner, 0
        self.model_name, self.model_version, self.names = inner.model_name, inner.model_version, inner.names

    def detect(self, frames):
        self.frames += len(frames)
        return self.inner.detect(frames)


def _run(tmp_path: Path, name: str, images: list[np.ndarray], gate: MotionGateConfig | None):
    import stages.detect as detect
    from stages.detect.backends import load_detector
    from stages.detect.sources import ReaderSettings, make_spec

    folder = tmp_path / name
    folder.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    counter = CallCounter(load_detector(str(MODEL)))
    out = tmp_path / f"{name}.jsonl"
    cfg = detect.DetectConfig(cameras=(make_spec(str(folder), name, 2.0, False),), out=str(out), status_every_s=0,
                              reader=ReaderSettings(realtime=False), motion_gate=gate)
    stats = detect.run(cfg, endpoints=Endpoints(), detector=counter)
    return counter.frames, stats, [DetectionResult.model_validate_json(x) for x in out.read_text().splitlines()]


@needs_model
def test_stage_repeats_detections_of_a_static_camera_and_infers_a_moving_one(tmp_path):
    bus = cv2.imread(str(ROOT / "tests/data/bus.jpg"))
    cfg = MotionGateConfig(force_every_s=2.0)
    # 8 frames 0.5 s apart (media clock of an image folder at --fps 2): inferred at 0 s and 2 s (forced)
    inferred, stats, rs = _run(tmp_path, "static", [bus] * 8, cfg)
    assert inferred == 2 and stats.inference_skipped == 6 and stats.published == 8
    assert [r.frame_id for r in rs] == list(range(8))
    first = [(o.class_name, o.bbox) for o in rs[0].objects]
    assert first and all([(o.class_name, o.bbox) for o in r.objects] == first for r in rs)
    assert all(o.track_id is not None for r in rs[2:] for o in r.objects)  # the tracker saw every frame

    canvas = [cv2.copyMakeBorder(bus, 0, 0, 40 * k, 320 - 40 * k, cv2.BORDER_CONSTANT, value=(110, 110, 110))
              for k in range(6)]  # the whole scene slides 40 px a frame
    inferred, stats, rs = _run(tmp_path, "moving", canvas, cfg)
    assert inferred == 6 and stats.inference_skipped == 0
    assert len({o.bbox for r in rs for o in r.objects if o.class_name == "bus"}) == 6

    inferred, stats, _ = _run(tmp_path, "ungated", [bus] * 8, None)  # the default: every frame
    assert inferred == 8 and stats.inference_skipped == 0


# --- int8 -----------------------------------------------------------------------------------------

def agreement() -> dict[str, int]:
    """fp32 detections (onnxruntime f32) and how many the int8 model found on its default runtime (OpenVINO;
    same class, IoU >= 0.5, one-to-one), with the stage's road-user classes at its --imgsz 512 input, on real
    street footage the calibration never saw (every 32nd frame of vtest.avi), the shipped photos and the
    bench's road scene at times the calibration never saw; also the int8 model's own detections and how many
    of them fp32 made too (its precision)."""
    from scripts.bench_detect import FOOTAGE, cutouts, every_nth_frame, matched, scene
    from stages.detect import DEFAULT_CLASSES
    from stages.detect.backends import load_detector

    fp32 = load_detector(str(MODEL), runtime="onnxruntime", imgsz=512, classes=list(DEFAULT_CLASSES))
    int8 = load_detector(str(INT8), imgsz=512, classes=list(DEFAULT_CLASSES))
    assert int8.runtime == "openvino"
    people, vehicle = cutouts()
    frames = [cv2.imread(str(ROOT / f"tests/data/{n}.jpg")) for n in ("bus", "zidane")]
    frames += [scene(t + 0.37, people, vehicle) for t in np.linspace(0.0, 8.0, 8)]
    frames += every_nth_frame(FOOTAGE, 32)
    n = dict.fromkeys(("fp32", "found", "fp32_confident", "found_confident", "int8", "int8_also_fp32"), 0)
    for frame in frames:
        ref, got = fp32.detect([frame])[0], int8.detect([frame])[0]
        confident = [a for a in ref if a.confidence >= 0.45]
        n["fp32"] += len(ref)
        n["found"] += matched(ref, got)
        n["fp32_confident"] += len(confident)
        n["found_confident"] += matched(confident, got)
        n["int8"] += len(got)
        n["int8_also_fp32"] += matched(got, ref)
    return n


def quantized_convs(path: Path) -> tuple[int, int]:
    """(convolutions, those whose input comes through a DequantizeLinear): an NNCF run that quantized nothing
    would agree 100 % with fp32."""
    import onnx

    graph = onnx.load(str(path)).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    return len(convs), sum(made_by.get(c.input[0]) == "DequantizeLinear" for c in convs)


needs_int8 = pytest.mark.skipif(not INT8.is_file(), reason="make models writes the int8 model (scripts/quantize_model.py)")


@needs_model
@needs_int8
def test_int8_model_agrees_with_fp32():
    from scripts.bench_detect import FOOTAGE
    from stages.detect.backends import load_detector

    if not FOOTAGE.is_file():
        pytest.skip("make models fetches vtest.avi (scripts/fetch_footage.sh)")
    int8 = load_detector(str(INT8))
    assert int8.layout == "centernet" and int8.names == load_detector(str(MODEL)).names
    convs, quantized = quantized_convs(INT8)
    assert convs > 50 and quantized >= 0.9 * convs, (convs, quantized)  # NNCF: 87 of 89 (the head's squeeze-excite pair stays float)
    n = agreement()
    # Issue 21 asks >= 95 % of fp32's detections. Measured (2026-12-07): 233/238 = 97.9 %, 157/157 of the
    # confident ones (fp32 >= 0.45); the model onnxruntime's per-tensor quantizer made found 214/238 = 89.9 %.
    assert n["fp32"] >= 150 and n["found"] / n["fp32"] >= 0.95, n
    assert n["fp32_confident"] >= 100 and n["found_confident"] / n["fp32_confident"] >= 0.97, n
    assert n["int8_also_fp32"] / n["int8"] >= 0.90, n  # and it does not add boxes of its own
    print(f"\nint8 found {n['found']}/{n['fp32']} = {100 * n['found'] / n['fp32']:.1f} % of fp32's detections; "
          f"{n['int8_also_fp32']}/{n['int8']} of its own were fp32's too")


@needs_model
@needs_int8
def test_int8_model_on_onnxruntime_is_one_line_exit_2():
    """onnxruntime (1.32) loads the NNCF model but cannot run it (its QLinearConv takes one zero point per
    input): the stage says so at start, not at the first camera frame. An onnxruntime that learns to run it
    fails this test: then the int8 model may run there too, and the docs should say so."""
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "detect", "--model", str(INT8), "--runtime",
                        "onnxruntime", "--source", str(ROOT / "tests/data/bus.jpg")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    ours = [x for x in p.stderr.splitlines() if x.startswith("hazardctl detect: error:")]
    assert len(ours) == 1 and "first inference failed" in ours[0] and "--runtime openvino" in ours[0], p.stderr
    assert p.stdout == ""


# --- --device cuda without a GPU --------------------------------------------------------------------

@needs_model
def test_device_cuda_without_a_gpu_is_one_line_exit_2():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "detect", "--device", "cuda",
                        "--source", str(ROOT / "tests/data/bus.jpg")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "--device cuda" in lines[0] and "onnxruntime-gpu" in lines[0], p.stderr
    assert p.stdout == ""


# --- decode only what is needed (keyframes) -------------------------------------------------------

def h264_clip(path: Path, frames: int, fps: int = 25, gop: int = 12, size=(320, 180)) -> Path:
    """An H.264 file (PyAV, libx264, no B-frames) whose frame i shows a block at x = 4 * i."""
    import av

    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": "ultrafast", "bf": "0", "sc_threshold": "0"}
        for i in range(frames):
            img = np.full((h, w, 3), 110, np.uint8)
            img[60:120, 4 * i:4 * i + 20] = 20
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def read_all(path: Path, keyframes_only: bool, fps: float = 2.0):
    import threading

    from stages.detect.sources import CameraReader, ReaderSettings, make_spec

    ready = threading.Event()
    reader = CameraReader(make_spec(str(path), "k", fps, False),
                          ReaderSettings(realtime=False, media_clock=True, keyframes_only=keyframes_only), ready)
    reader.start()
    got = []
    while not reader.ended:
        f = reader.take()
        if f is None:
            ready.wait(0.05)
            ready.clear()
        else:
            got.append(f)
    reader.join(2)
    return got, reader.counters


def block_x(image: np.ndarray) -> int:
    cols = np.flatnonzero(image[90, :, 0] < 60)
    return int(cols[0]) if cols.size else -1


def test_keyframes_only_decodes_the_keyframe_nearest_each_due_time(tmp_path):
    from stages.detect.sources import keyframe_gap_s

    clip = h264_clip(tmp_path / "gop12.mp4", 50)  # 2 s at 25 fps, a keyframe every 0.48 s
    assert keyframe_gap_s(str(clip)) == pytest.approx(0.48, abs=1e-6)
    frames, counters = read_all(clip, keyframes_only=True)
    # due every 0.5 s: 0, 0.5, 1.0, 1.5, 2.0 -> keyframes 0, 0.48, 0.96, 1.44, 1.92 (within 0.24 s of each)
    assert [f.frame_id for f in frames] == [0, 12, 24, 36, 48]
    t0 = frames[0].media_ts
    assert [round(f.media_ts - t0, 3) for f in frames] == [0.0, 0.48, 0.96, 1.44, 1.92]
    assert all(f.capture_ts == f.media_ts for f in frames)  # --media-clock
    assert [block_x(f.image) for f in frames] == [4 * f.frame_id for f in frames]  # the right pictures
    assert counters.read == 50 and counters.dropped == {"sampling": 45}

    every, counters = read_all(clip, keyframes_only=False)  # decode every frame: the first at/after each due time
    assert [f.frame_id for f in every] == [0, 13, 25, 38]
    assert [block_x(f.image) for f in every] == [4 * f.frame_id for f in every]
    assert counters.read == 50


def test_a_gop_longer_than_the_sampling_period_decodes_every_frame(tmp_path):
    from stages.detect.sources import keyframe_gap_s

    clip = h264_clip(tmp_path / "gop50.mp4", 50, gop=50)  # one keyframe: P-frames need their predecessors
    assert keyframe_gap_s(str(clip)) is None or keyframe_gap_s(str(clip)) > 0.5
    frames, _ = read_all(clip, keyframes_only=True)
    assert [f.frame_id for f in frames] == [0, 13, 25, 38]
    assert [block_x(f.image) for f in frames] == [4 * f.frame_id for f in frames]


# --- batches across cameras -----------------------------------------------------------------------

@needs_model
def test_default_model_batches_on_a_gpu_and_a_batch_equals_single_frames():
    from stages.detect.backends import load_detector

    det = load_detector(str(MODEL), classes=None, runtime="onnxruntime")
    assert det.dynamic_batch  # scripts/tfjs_to_onnx.py: dynamic_batch()
    assert det.per_call == 1  # on the CPU one frame per run: batches cost more CPU per frame here
    det.per_call = det.MAX_BATCH  # as with --device cuda
    bus, zidane = (cv2.imread(str(ROOT / f"tests/data/{n}.jpg")) for n in ("bus", "zidane"))
    frames = [bus, zidane, cv2.flip(bus, 1), road(100, 1280, 720)]
    calls = []
    run = det.session.run
    det.session.run = lambda names, feed: calls.append(len(next(iter(feed.values())))) or run(names, feed)
    batched = det.detect(frames)
    assert calls == [4]                                   # one inference call for the four cameras
    singles = [det.detect([f])[0] for f in frames]
    assert [len(b) for b in batched] == [len(s) for s in singles] and sum(map(len, singles)) >= 5
    for b_boxes, s_boxes in zip(batched, singles):
        for b, s in zip(b_boxes, s_boxes):
            assert b.class_id == s.class_id and abs(b.confidence - s.confidence) <= 1e-3
            assert np.allclose(b.bbox, s.bbox, atol=0.05)


def test_tensorrt_goes_first_where_onnxruntime_has_it():
    from stages.detect.backend_onnx import _providers

    with_trt = _providers("cuda:1", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [p[0] if isinstance(p, tuple) else p for p in with_trt] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert with_trt[0][1]["device_id"] == 1 == with_trt[1][1]["device_id"]
    assert _providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CUDAExecutionProvider", {"device_id": 0})


def test_motion_gate_keeps_the_gate_benchmarks_hazard_onsets(capsys):
    """scripts/bench_gate_motion.py --quick: exit 0 only when >= 98 % of the onsets covered without the
    gate are covered with it (real detect | expand processes on the rendered scenes). ≈ 15 s."""
    import re

    from scripts.bench_gate_motion import main

    assert main(["--quick"]) == 0
    out = capsys.readouterr().out
    skipped = float(re.search(r"\(([\d.]+) % skipped\)", out).group(1))
    covered = re.search(r"ungated (\d+)/(\d+), gated (\d+)/", out).groups()
    assert skipped > 5.0, out                     # the gate did skip frames: the figure means something
    assert int(covered[0]) >= 1 and covered[0] == covered[2], out


def test_the_capacity_benchmark_staggers_its_cameras_over_rotations_of_the_same_scene(tmp_path):
    """`make bench-detect`'s cameras play rotations of one looped scene (independent cameras are not all at
    their busiest second at once): copy k starts k/copies of the way in and wraps round, the same frames."""
    import av

    from scripts.bench_detect import make_h264, staggered_copies

    seconds = 2.0
    video = tmp_path / "road.mp4"
    make_h264(video, seconds)
    copies = staggered_copies(video, seconds, 2)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]

    base, rotated = frames(copies[0]), frames(copies[1])
    assert copies[0] == video and len(base) == len(rotated) == 50
    half = len(base) // 2

    def diff(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b).mean())

    assert diff(rotated[0], base[half]) < 3.0 < diff(rotated[0], base[0])  # H.264 noise vs a moved scene
    assert diff(rotated[half], base[0]) < 3.0
