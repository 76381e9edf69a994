"""detect throughput: the whole stage vs the bare detector loop, on the same frames, in the same run.

    python scripts/bench_detect.py [--model .cache/models/centernet-coco.onnx] [--seconds 20]
                                   [--cameras 4] [--batch 8] [--threads 1,2] [--no-pt]
                                   [--realtime 6,8,10,12] [--realtime-seconds 20] [--realtime-only]

1. A test video is generated: real people and the bus cut out of tests/data/bus.jpg moving on a
   grey road, 1280x720, --src-fps (10) frames per second, mp4v. Each camera analyses 2 frames/s,
   so every 5th frame; the others are only grabbed, as from a live camera.
2. bare: those sampled frames, decoded into memory beforehand, through detector.detect([frame])
   one at a time (preprocess + inference + postprocess), for each --threads value. For ONNX the
   three parts are also timed apart.
3. stage: stages.detect.run() (the code behind `hazardctl detect --as-fast-as-possible`) on the
   same video: decode → detect → track → group → crops → encode → write to a file, with the same
   detector object. Frames/s come from the results' own `published` timestamps (first to last,
   so model loading and start-up are left out). Overhead = bare frames/s / stage frames/s - 1.
4. capacity: the stage with --cameras copies of the video at once (frames from several cameras
   go to the detector together, up to --batch): sustained frames/s ÷ 2 fps = cameras one machine
   like this one keeps up with. Derived, not observed: see 6.
5. ORT vs ultralytics: the same YOLOv8 weights (the fall-detection test model) as .onnx through
   onnxruntime and as .pt through ultralytics, bare loop, when the [ultralytics] extra is installed.
6. real time: for each N in --realtime, ONE real `hazardctl detect` process (a subprocess, the
   stage's default thread count) with N cameras, each the video paced at real time with --loop,
   --fps 2. Once every camera has had a frame analysed (+ --realtime-warmup), its own /metrics
   (frames read/processed/dropped per camera) are read at the start and the end of a
   --realtime-seconds window, then it gets SIGTERM; the capture→published lags come from the
   `times` of the results it wrote. Sustained = every camera had >= 95 % of its 2 × seconds frames
   analysed and the p95 lag stays < 1 s (in the window and in its second half). The largest
   sustained N is printed next to the derived figure of 4.

7. levers (issue 21, --levers; `--quick` runs only this, shorter): a 1280x720 H.264 25 fps video (a
   keyframe every 0.48 s) and, for today's code (--decode-all --batch 1, fp32 at the 512x512 square, no
   gate, one onnxruntime call at a time) and each lever alone (keyframes-only decoding, batches of 8, the
   int8 model (NNCF, on OpenVINO), the motion gate, the input at the camera's aspect: --imgsz 512, 512x288, inference workers,
   OpenVINO), the defaults and all together, the largest N
   sustained as in 6 (grown x1.5 then bisected); plus the decode CPU per camera both ways, and the load
   average at the start and the end (the machine is shared). Camera i plays rotation i mod 10 of the
   scene (each starts 1 s further in: independent cameras are not all at their busiest second at once);
   --levers-sync gives every camera the same copy from the same start (that worst case).
8. input sizes (issue 21, --sizes 512,416,384): inference ms on 1280x720 frames at 512x512 and at each
   long side with the camera's aspect kept (taking turns frame by frame), and the recall of each size
   against the 512x512 detections on real frames (tests/data photos, vtest.avi, the road scene).
9. precisions (issue 21, --precisions, alone): CPU ms per 512x288 frame (one thread each, taking turns)
   and agreement with onnxruntime f32 (recall, precision; road users at --imgsz 512) for onnxruntime f32,
   OpenVINO f32 and auto (bf16 where the CPU has it), and the int8 model on OpenVINO (f32 and auto between).

Prints a table and writes bench-results/detect.json. Timings on a shared machine are noisy; the
ratios (measured back to back in one run) are what to compare.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2
import numpy as np

from stages.detect import DEFAULT_CLASSES
from stages.detect.backends import load_detector
from stages.detect.inference import physical_cores

ANALYSED_FPS = 2.0
SIZE = (1280, 720)


# ------------------------------------------------------------------ the test video

def cutouts() -> tuple[list[np.ndarray], np.ndarray]:
    bus = cv2.imread(str(ROOT / "tests/data/bus.jpg"))
    if bus is None:
        sys.exit("tests/data/bus.jpg is missing")
    people = [bus[y1:y2, x1:x2] for x1, y1, x2, y2 in [(45, 396, 221, 902), (223, 405, 339, 865)]]
    people = [cv2.resize(p, (round(p.shape[1] * 240 / p.shape[0]), 240), interpolation=cv2.INTER_AREA) for p in people]
    people += [cv2.flip(p, 1) for p in people]
    vehicle = cv2.resize(bus[230:750, 20:790], (420, 284), interpolation=cv2.INTER_AREA)
    return people, vehicle


def scene(t: float, people: list[np.ndarray], vehicle: np.ndarray) -> np.ndarray:
    """The road at time t (s): the bus drives right, four pedestrians walk, two of them together."""
    w, h = SIZE
    img = np.full((h, w, 3), 110, np.uint8)
    cv2.line(img, (0, 600), (w, 600), (200, 200, 200), 4)
    bx = int(-420 + (t * 90) % (w + 420))
    x0, x1 = max(bx, 0), min(bx + vehicle.shape[1], w)
    if x1 > x0:
        img[60:60 + vehicle.shape[0], x0:x1] = vehicle[:, x0 - bx:x1 - bx]
    for i, p in enumerate(people):
        speed = (30, 30, -40, 20)[i]
        x = int((100 + 260 * i + speed * t) % (w - p.shape[1]))
        img[350:350 + p.shape[0], x:x + p.shape[1]] = p
    return img


def make_video(path: Path, seconds: float, src_fps: int) -> list[np.ndarray]:
    """Write the video; return the frames a 2 fps camera samples from it, decoded from the file."""
    people, vehicle = cutouts()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), src_fps, SIZE)
    if not writer.isOpened():
        sys.exit("cv2.VideoWriter cannot write mp4v here")
    n = int(seconds * src_fps)
    for i in range(n):
        writer.write(scene(i / src_fps, people, vehicle))
    writer.release()
    return every_nth_frame(path, round(src_fps / ANALYSED_FPS))


def every_nth_frame(path: Path, step: int) -> list[np.ndarray]:
    """Frames 0, step, 2*step, ... of a video file, decoded (the others grabbed, not converted)."""
    cap, frames, i = cv2.VideoCapture(str(path)), [], 0
    while cap.grab():
        if i % step == 0:
            frames.append(cap.retrieve()[1])
        i += 1
    cap.release()
    return frames


# ------------------------------------------------------------------ measurements

def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bare_loop(detector, frames: list[np.ndarray], warmup: int = 3) -> dict:
    for f in frames[:warmup]:
        detector.detect([f])
    lat, boxes = [], 0
    start, cpu = time.perf_counter(), time.process_time()
    for f in frames:
        t = time.perf_counter()
        boxes += len(detector.detect([f])[0])
        lat.append(time.perf_counter() - t)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    out = {"frames": len(frames), "fps": len(frames) / total, "p50_ms": 1e3 * pct(lat, 0.5),
           "p95_ms": 1e3 * pct(lat, 0.95), "cpu_ms": 1e3 * cpu / len(frames), "boxes_per_frame": boxes / len(frames)}
    if hasattr(detector, "_prepare"):  # onnx: where the time goes
        pre, inf, post = [], [], []
        for f in frames:
            t0 = time.perf_counter()
            x, placement = detector._prepare(f)
            t1 = time.perf_counter()
            y = detector.session.run([detector.output_name], {detector.input_name: x[None]})[0]
            t2 = time.perf_counter()
            detector._postprocess(y[0], placement)
            t3 = time.perf_counter()
            pre.append(t1 - t0), inf.append(t2 - t1), post.append(t3 - t2)
        out.update(pre_ms=1e3 * statistics.median(pre), infer_ms=1e3 * statistics.median(inf),
                   post_ms=1e3 * statistics.median(post))
    return out


def stage_run(detector, video: Path, cameras: int, batch: int, out_dir: Path) -> dict:
    from hazardctl.transports import Endpoints
    from stages.detect import DetectConfig, run
    from stages.detect.sources import ReaderSettings, make_spec

    out = out_dir / f"stage-{cameras}cam-{time.monotonic_ns()}.jsonl"
    cfg = DetectConfig(
        cameras=tuple(make_spec(str(video), f"cam-{i:02d}", ANALYSED_FPS, False) for i in range(cameras)),
        out=str(out), model="(given)", max_batch=batch, reader=ReaderSettings(realtime=False),
        status_every_s=0,
    )
    t0, cpu = time.perf_counter(), time.process_time()
    stats = run(cfg, endpoints=Endpoints(), detector=detector)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu
    published, groups, crops, size = [], 0, 0, 0
    with out.open("rb") as f:
        for line in f:
            msg = json.loads(line)
            published.append(msg["times"]["published"])
            groups += len(msg["groups"])
            crops += sum(1 for g in msg["groups"] if g.get("crop_jpeg_b64"))
            size += len(line)
    out.unlink()
    published.sort()
    n = len(published)
    span = published[-1] - published[0] if n > 1 else float("nan")
    gaps = [b - a for a, b in itertools.pairwise(published)] if cameras == 1 else []
    return {"cameras": cameras, "batch": min(cameras, batch), "frames": n, "batches": stats.batches,
            "cpu_ms": 1e3 * cpu / max(n, 1),
            "fps": (n - 1) / span if n > 1 else float("nan"), "wall_s": wall,
            "fps_incl_startup": n / wall, "groups_per_frame": groups / max(n, 1),
            "crops_per_frame": crops / max(n, 1), "bytes_per_result": size / max(n, 1),
            **({"p50_ms": 1e3 * pct(gaps, 0.5), "p95_ms": 1e3 * pct(gaps, 0.95)} if gaps else {})}


def paired_loops(detectors: dict, frames: list[np.ndarray], warmup: int = 3) -> dict:
    """Several detectors on the same frames, taking turns frame by frame, so that load from
    other processes that comes and goes hits them alike."""
    for d in detectors.values():
        for f in frames[:warmup]:
            d.detect([f])
    lat: dict[str, list[float]] = {k: [] for k in detectors}
    for f in frames:
        for k, d in detectors.items():
            t = time.perf_counter()
            d.detect([f])
            lat[k].append(time.perf_counter() - t)
    return {k: {"frames": len(v), "fps": len(v) / sum(v), "p50_ms": 1e3 * pct(v, 0.5), "p95_ms": 1e3 * pct(v, 0.95)}
            for k, v in lat.items()}


def median_run(runs: list[dict]) -> dict:
    """The run with the median frames/s (a whole run, so its percentiles stay consistent)."""
    return sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]


def side_costs(video: Path, frames: list[np.ndarray], src_fps: int) -> dict:
    """What the stage does besides inference, timed alone: decoding (every frame is grabbed,
    every sampled one converted), tracking, and a crop's JPEG + base64."""
    import base64

    from stages.detect.backends import Box
    from stages.detect.tracking import Tracker

    step = round(src_fps / ANALYSED_FPS)
    cap = cv2.VideoCapture(str(video))
    n, t0 = 0, time.perf_counter()
    while cap.grab():
        if n % step == 0:
            cap.retrieve()
        n += 1
    decode = (time.perf_counter() - t0) / max(1, -(-n // step))
    cap.release()
    tracker = Tracker()
    boxes = [[Box(0, "person", 0.8, (100.0 + 30 * i + 10 * t, 350.0, 160.0 + 30 * i + 10 * t, 590.0)) for i in range(6)]
             for t in range(len(frames))]
    t0 = time.perf_counter()
    for b in boxes:
        tracker.update(b, frames[0].shape[:2])
    track = (time.perf_counter() - t0) / len(boxes)
    crop = frames[0][300:700, 100:700]
    t0 = time.perf_counter()
    for _ in range(10):
        base64.b64encode(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    jpeg = (time.perf_counter() - t0) / 10
    return {"decode": 1e3 * decode, "tracker": 1e3 * track, "crop_jpeg_b64": 1e3 * jpeg}


# ------------------------------------------------------------------ real time: N cameras, one real process

REALTIME_MIN_SHARE = 0.95   # of the 2 fps × seconds a camera should have had analysed
REALTIME_MAX_P95_LAG_S = 1.0


@dataclass(frozen=True)
class CameraCounts:
    """One camera's counters from the stage's own /metrics (cumulative)."""

    read: float = 0.0
    processed: float = 0.0
    dropped: dict[str, float] = field(default_factory=dict)


def parse_camera_counts(metrics_text: str) -> dict[str, CameraCounts]:
    """Per-camera frames read / processed / dropped (by reason) from a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    read: dict[str, float] = {}
    processed: dict[str, float] = {}
    dropped: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            if not s.name.endswith("_total"):
                continue
            cam = s.labels.get("camera")
            if s.name == "hazardctl_detect_frames_read_total":
                read[cam] = s.value
            elif s.name == "hazardctl_detect_frames_processed_total":
                processed[cam] = s.value
            elif s.name == "hazardctl_detect_frames_dropped_total":
                dropped.setdefault(cam, {})[s.labels["reason"]] = s.value
    cams = set(read) | set(processed) | set(dropped)
    return {c: CameraCounts(read.get(c, 0.0), processed.get(c, 0.0), dict(dropped.get(c, {}))) for c in cams}


def counts_between(before: dict[str, CameraCounts], after: dict[str, CameraCounts]) -> dict[str, CameraCounts]:
    """What each camera did between two scrapes (a camera missing from `before` counts from zero)."""
    out = {}
    for cam, a in after.items():
        b = before.get(cam, CameraCounts())
        out[cam] = CameraCounts(a.read - b.read, a.processed - b.processed,
                                {r: v - b.dropped.get(r, 0.0) for r, v in a.dropped.items()})
    return out


STATUS_CAMERA = re.compile(r"(\S+)=(\w+)\(read=(\d+) processed=(\d+)\)")


def parse_status_line(stderr_text: str) -> dict[str, dict]:
    """Per-camera state/read/processed from the stage's last `detect: frames=...` status line."""
    lines = [ln for ln in stderr_text.splitlines() if "detect: frames=" in ln]
    if not lines:
        return {}
    return {cam: {"state": state, "read": int(r), "processed": int(p)}
            for cam, state, r, p in STATUS_CAMERA.findall(lines[-1].split("|", 1)[-1])}


def lag_summary(times: list[tuple[float, float]], start: float, end: float) -> dict:
    """Capture→published lag of the results published in [start, end] (wall clock), whole window
    and each half, so a lag that keeps growing shows as a second half worse than the first."""
    inside = sorted((pub, pub - cap) for cap, pub in times if start <= pub <= end)
    mid = (start + end) / 2
    first = [lag for pub, lag in inside if pub < mid]
    second = [lag for pub, lag in inside if pub >= mid]
    lags = [lag for _, lag in inside]
    nan = float("nan")
    return {"results": len(lags), "p50_s": pct(lags, 0.5) if lags else nan, "p95_s": pct(lags, 0.95) if lags else nan,
            "max_s": max(lags) if lags else nan,
            "p95_first_half_s": pct(first, 0.95) if first else nan, "p95_second_half_s": pct(second, 0.95) if second else nan}


def realtime_verdict(per_camera: dict[str, CameraCounts], cameras: int, window_s: float, lag: dict) -> dict:
    """Sustained = every camera had ≥ 95 % of its 2 fps × window frames analysed, and the p95 lag
    stays under 1 s in the window and in its second half (not creeping up)."""
    expected = ANALYSED_FPS * window_s
    processed = [per_camera[c].processed if c in per_camera else 0.0 for c in camera_ids(cameras)]
    lost = {}
    for c in per_camera.values():
        for reason, v in c.dropped.items():
            if reason != "sampling":  # sampling = frames between samples, by design
                lost[reason] = lost.get(reason, 0.0) + v
    min_share = min(processed) / expected if expected > 0 else 0.0
    lag_ok = lag["p95_s"] < REALTIME_MAX_P95_LAG_S and lag["p95_second_half_s"] < REALTIME_MAX_P95_LAG_S
    return {"cameras": cameras, "window_s": window_s, "expected_per_camera": expected,
            "processed_min": min(processed), "processed_max": max(processed), "processed_total": sum(processed),
            "min_share": min_share, "dropped": lost, "lag": lag,
            "sustained": bool(min_share >= REALTIME_MIN_SHARE and lag_ok)}


def largest_sustained(verdicts: list[dict]) -> str:
    ok = [v["cameras"] for v in verdicts if v.get("sustained")]
    tried = sorted(v["cameras"] for v in verdicts)
    if not tried:
        return "not measured"
    if not ok:
        return f"< {tried[0]} (none of {','.join(map(str, tried))} sustained)"
    best = max(ok)
    return f">= {best} (the largest tried; try more)" if best == tried[-1] else str(best)


def camera_ids(n: int) -> list[str]:
    return [f"cam-{i:02d}" for i in range(n)]


def cpu_ticks(pid: int) -> tuple[float, float, float]:
    """(process utime+stime, machine busy, machine total) in clock ticks, for CPU use over a window."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    proc = float(fields[11]) + float(fields[12])
    cpu = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0.0)
    return proc, sum(cpu) - idle, sum(cpu)


def scrape(port: int) -> dict[str, CameraCounts]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse_camera_counts(r.read().decode())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def realtime_run(model: str, video: Path | list[Path], cameras: int, seconds: float, warmup_s: float, tmpdir: Path,
                 extra: tuple[str, ...] = ()) -> dict:
    """One real `hazardctl detect` with `cameras` copies of the video (camera i plays video[i mod len] when
    given several), paced in real time and looping:
    wait until every camera has had a frame analysed, let it settle, count for `seconds` from its
    /metrics, then SIGTERM it and read the lags from what it wrote."""
    import signal
    import subprocess

    exe = ROOT / ".venv/bin/hazardctl"
    port = free_port()
    out = tmpdir / f"realtime-{cameras}cam.jsonl"
    err = tmpdir / f"realtime-{cameras}cam.stderr"
    cmd = [str(exe), "detect", "--model", model, "--fps", f"{ANALYSED_FPS:g}", "--loop", "--out", str(out),
           "--metrics-port", str(port), *extra]
    videos = video if isinstance(video, list) else [video]
    for i, cid in enumerate(camera_ids(cameras)):
        cmd += ["--source", str(videos[i % len(videos)]), "--camera-id", cid]
    env = {k: v for k, v in os.environ.items() if k != "HAZARDCTL_DETECT_THREADS"}  # the stage's own default
    env["HAZARDCTL_LOG_LEVEL"] = "INFO"
    clk = os.sysconf("SC_CLK_TCK")
    with err.open("wb") as err_f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err_f)
        try:
            t_launch = time.monotonic()
            started = None
            while time.monotonic() - t_launch < 90:
                if proc.poll() is not None:
                    break
                try:
                    counts = scrape(port)
                    if all(counts.get(c, CameraCounts()).processed >= 1 for c in camera_ids(cameras)):
                        started = time.monotonic() - t_launch
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            if started is None:
                raise RuntimeError(f"hazardctl detect with {cameras} cameras did not start analysing (rc={proc.poll()}):\n"
                                   + err.read_text()[-2000:])
            time.sleep(warmup_s)
            before, w0, m0 = scrape(port), time.time(), time.monotonic()
            c0 = cpu_ticks(proc.pid)
            time.sleep(seconds)
            after, w1, m1 = scrape(port), time.time(), time.monotonic()
            c1 = cpu_ticks(proc.pid)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
    times = []
    with out.open("rb") as f:
        for line in f:
            t = json.loads(line)["times"]
            times.append((t["capture"], t["published"]))
    out.unlink()
    window = m1 - m0
    verdict = realtime_verdict(counts_between(before, after), cameras, window, lag_summary(times, w0, w1))
    stderr_text = err.read_text()
    verdict.update(
        exit_code=rc, startup_s=started,
        process_cpu_cores=(c1[0] - c0[0]) / clk / window,
        machine_busy_cores=(c1[1] - c0[1]) / max(c1[2] - c0[2], 1.0) * (os.cpu_count() or 1),
        final_status=parse_status_line(stderr_text),
        command=" ".join(cmd[:cmd.index("--source")]) + f" --source VIDEO --camera-id cam-00 ... (x{cameras})")
    return verdict


def realtime_section(a, video: Path, tmpdir: Path, derived: list[tuple[str, float]]) -> dict:
    counts = [int(n) for n in a.realtime.split(",") if n.strip()]
    threads = physical_cores()
    print(f"\nreal time: ONE `hazardctl detect` process per row, N cameras = N copies of the video, paced at "
          f"real time (--loop, --fps {ANALYSED_FPS:g}), {a.realtime_seconds:g} s counted after every camera's first "
          f"frame + {a.realtime_warmup:g} s; onnxruntime threads: the stage's default (HAZARDCTL_DETECT_THREADS "
          f"unset: one intra-op thread per physical core = {threads} here)")
    print(f"sustained = every camera >= {100 * REALTIME_MIN_SHARE:.0f} % of its {ANALYSED_FPS:g} fps frames analysed "
          f"and p95 capture->published lag < {REALTIME_MAX_P95_LAG_S:g} s (whole window and its second half)")
    print(f"{'N':>3} | {'expected/cam':>12} | {'processed min/cam':>17} | {'total':>5} | {'dropped':>7} | "
          f"{'lag p50':>7} {'p95':>6} {'(1st/2nd half)':>15} | {'cpu detect/machine':>18} | sustained")
    verdicts = []
    for n in counts:
        v = realtime_run(a.model, video, n, a.realtime_seconds, a.realtime_warmup, tmpdir)
        verdicts.append(v)
        lag = v["lag"]
        dropped = sum(v["dropped"].values())
        print(f"{n:>3} | {v['expected_per_camera']:12.1f} | {v['processed_min']:8.0f} ({100 * v['min_share']:5.1f} %) | "
              f"{v['processed_total']:5.0f} | {dropped:7.0f} | {lag['p50_s']:6.2f}s {lag['p95_s']:5.2f}s "
              f"({lag['p95_first_half_s']:5.2f}/{lag['p95_second_half_s']:5.2f}) | "
              f"{v['process_cpu_cores']:7.2f} / {v['machine_busy_cores']:4.2f} cores | "
              f"{'yes' if v['sustained'] else 'no'}" + ("" if v["exit_code"] == 0 else f"  (exit {v['exit_code']})"))
    best = largest_sustained(verdicts)
    print(f"\ncameras at {ANALYSED_FPS:g} fps, onnx backend, this machine ({os.cpu_count()} CPUs):")
    print(f"  measured in real time, one process, default threads ({threads}): largest sustained N = {best}")
    for label, value in derived:
        print(f"  derived, {label}: {value:.1f}")
    return {"threads": threads, "seconds": a.realtime_seconds, "warmup_s": a.realtime_warmup,
            "runs": verdicts, "largest_sustained": best}


# ------------------------------------------------------------------ issue 21: the levers, alone and together

INT8 = ROOT / ".cache/models/centernet-coco-int8.onnx"
LEVER_COPIES = 10
"""rotations of the looped road scene the cameras play (one a second of its 10)"""
#: name -> (model, extra flags). "today" is the code before issue 21: every frame decoded, one frame per
#: inference call, the CenterNet's 512x512 square input (every frame stretched to it), fp32, no motion gate.
#: "defaults" is what `hazardctl detect` runs without flags (keyframes, motion gate, inference workers,
#: OpenVINO, spread sampling: every lever but the input size, which costs recall, a user's choice); "all" adds
#: the input size, on the fp32 model (bf16 here); "all-int8" is the same with the int8 model (6 % less CPU than
#: bf16 here, 97.4 % of fp32's detections against bf16's 99.1 %: docs/detect-backends.md). Motion regions do
#: not raise capacity on this road.
ONE = ("--inference-workers", "1", "--runtime", "onnxruntime")  # before issue 21: one onnxruntime call at a time
LEVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "today": ("fp32", ("--decode-all", "--batch", "1", "--no-motion-gate", *ONE)),
    "keyframes": ("fp32", ("--keyframes-only", "--batch", "1", "--no-motion-gate", *ONE)),
    "batch": ("fp32", ("--decode-all", "--batch", "8", "--no-motion-gate", *ONE)),
    # the NNCF int8 model runs on OpenVINO only: compare it with "openvino" (fp32 model, bf16 here)
    "int8": ("int8", ("--decode-all", "--batch", "1", "--no-motion-gate", "--inference-workers", "1",
                      "--runtime", "openvino")),
    "motion-gate": ("fp32", ("--decode-all", "--batch", "1", "--motion-gate", *ONE)),
    "input-size": ("fp32", ("--decode-all", "--batch", "1", "--no-motion-gate", "--imgsz", "512", *ONE)),
    # one worker per core, each call on one intra-op thread
    "workers": ("fp32", ("--decode-all", "--batch", "1", "--no-motion-gate", "--runtime", "onnxruntime")),
    # the same model in OpenVINO (bf16 where the CPU has it), one call at a time
    "openvino": ("fp32", ("--decode-all", "--batch", "1", "--no-motion-gate", "--inference-workers", "1",
                          "--runtime", "openvino")),
    "defaults": ("fp32", ()),
    "all": ("fp32", ("--imgsz", "512")),
    "all-int8": ("int8", ("--imgsz", "512")),  # literally every lever, the int8 model's agreement aside
}


def make_h264(path: Path, seconds: float, fps: int = 25, gop: int = 12, start_s: float = 0.0) -> None:
    """The real-camera format of issue 21: 1280x720 H.264 (PyAV/libx264, no B-frames) at 25 fps, a
    keyframe every `gop` frames (12: 0.48 s, which keyframe-only decoding at 2 fps needs). `start_s`: the
    copy begins that far into the scene and wraps round to its start (the same frames, rotated)."""
    import av

    people, vehicle = cutouts()
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": "veryfast", "bf": "0", "sc_threshold": "0", "crf": "23"}
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(scene((start_s + i / fps) % seconds, people, vehicle), format="bgr24")
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def staggered_copies(video: Path, seconds: float, copies: int) -> list[Path]:
    """`copies` rotations of the scene, each starting `seconds / copies` later than the one before: camera i
    plays copy i mod copies. Independent cameras are not all at their busiest second at once; N copies
    started together are (the road's busy seconds cost up to 18 % more CPU a frame than its mean, so the
    synchronised copies measure that peak at every camera together: --levers-sync keeps them)."""
    paths = [video]
    for k in range(1, copies):
        path = video.with_name(f"{video.stem}-from{k}{video.suffix}")
        make_h264(path, seconds, start_s=k * seconds / copies)
        paths.append(path)
    return paths


def decode_cost(video: Path, seconds_of_video: float) -> dict:
    """CPU seconds to read one camera's video for a second at 2 fps analysed, both ways, same run."""
    import threading

    from stages.detect.sources import CameraReader, ReaderSettings, make_spec

    out = {}
    for name, keyframes in (("decode-all", False), ("keyframes-only", True)):
        ready = threading.Event()
        reader = CameraReader(make_spec(str(video), "d", ANALYSED_FPS, False),
                              ReaderSettings(realtime=False, keyframes_only=keyframes), ready)
        c0 = time.process_time()
        reader.start()
        n = 0
        while not reader.ended:
            if reader.take() is None:
                ready.wait(0.02)
                ready.clear()
            else:
                n += 1
        reader.join(2)
        cpu = time.process_time() - c0
        out[name] = {"cpu_s_per_video_s": cpu / seconds_of_video, "frames_delivered": n,
                     "read": reader.counters.read}
    out["ratio"] = out["decode-all"]["cpu_s_per_video_s"] / max(out["keyframes-only"]["cpu_s_per_video_s"], 1e-9)
    return out


def largest_for(lever: str, model: str, extra: tuple[str, ...], video: Path | list[Path], a, tmpdir: Path, start: int) -> dict:
    """Grow N (x1.5) from `start` until a run is not sustained, then bisect: the largest sustained N."""
    runs: dict[int, dict] = {}

    def ok(n: int) -> bool:
        if n not in runs:
            v = realtime_run(model, video, n, a.realtime_seconds, a.realtime_warmup, tmpdir, extra)
            runs[n] = v
            print(f"  {lever:>11} N={n:>3}: min {100 * v['min_share']:5.1f} % of due frames, lag p95 "
                  f"{v['lag']['p95_s']:.2f}s, {'sustained' if v['sustained'] else 'not sustained'}", flush=True)
        return runs[n]["sustained"]

    lo, hi = 0, None
    n = max(1, start)
    while hi is None and n <= a.levers_max:
        if ok(n):
            lo, n = n, max(n + 1, int(n * 1.5))
        else:
            hi = n
    if hi is None:
        hi = a.levers_max + 1
    while hi - lo > max(1, lo // 10):  # within 10 %: each run costs real seconds
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return {"largest_sustained": lo, "first_failed": hi, "runs": {str(k): v for k, v in sorted(runs.items())}}


def levers_section(a, tmpdir: Path) -> dict:
    video = tmpdir / "road-h264.mp4"
    make_h264(video, a.levers_video_s)
    copies = 1 if a.levers_sync else LEVER_COPIES
    videos = staggered_copies(video, a.levers_video_s, copies)
    load = os.getloadavg()
    print(f"\nissue 21 levers: {SIZE[0]}x{SIZE[1]} H.264 25 fps (keyframe every 0.48 s), {a.levers_video_s:g} s looped, "
          + ("every camera the same copy, started together (--levers-sync: the busiest second at every camera at once); "
             if copies == 1 else f"camera i plays copy i mod {copies}, each started {a.levers_video_s / copies:g} s further "
             "into the scene (independent cameras; --levers-sync: all the same); ")
          + f"one real `hazardctl detect` per run, {a.realtime_seconds:g} s counted; sustained as above; "
          f"load average at the start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    cost = decode_cost(video, a.levers_video_s)
    print(f"decode per camera (CPU s per video s, 2 fps analysed): decode-all "
          f"{cost['decode-all']['cpu_s_per_video_s']:.3f}, keyframes-only {cost['keyframes-only']['cpu_s_per_video_s']:.3f} "
          f"({cost['ratio']:.1f}x less)")
    models = {"fp32": a.model, "int8": str(INT8)}
    wanted = [x.strip() for x in a.levers.split(",") if x.strip()]
    results, start = {}, a.levers_start
    for lever in wanted:
        model, extra = LEVERS[lever]
        if not Path(models.get(model, "")).is_file():
            print(f"  {lever}: the {model} model is missing (make models)")
            continue
        results[lever] = largest_for(lever, models[model], extra, videos, a, tmpdir,
                                     start if lever == "today" else max(start, results.get("today", {}).get(
                                         "largest_sustained", start)))
    end_load = os.getloadavg()
    base = results.get("today", {}).get("largest_sustained") or 0
    print(f"\ncameras sustained at {ANALYSED_FPS:g} fps (>= {100 * REALTIME_MIN_SHARE:.0f} % of due frames, p95 lag "
          f"< {REALTIME_MAX_P95_LAG_S:g} s), this machine, same run; load average at the end {end_load[0]:.1f}:")
    for lever, r in results.items():
        ratio = f"  ({r['largest_sustained'] / base:.2f}x today)" if base else ""
        print(f"  {lever:>11}: {r['largest_sustained']:>3}{ratio}   flags: {' '.join(LEVERS[lever][1])} model {LEVERS[lever][0]}")
    return {"load_start": load, "load_end": end_load, "decode_cost": cost, "copies": copies, "levers": results}


# ------------------------------------------------------------------ issue 21: the input-size lever

ROAD_USERS = list(DEFAULT_CLASSES)  # the stage's default classes
FOOTAGE = ROOT / ".cache/footage/vtest.avi"


def size_frames() -> dict[str, list[np.ndarray]]:
    """Real frames to compare input sizes on: the shipped photos, every 16th frame of the gate
    benchmark's street footage (768x576, when fetched) and the bench's 1280x720 road scene."""
    sets = {"photos": [cv2.imread(str(ROOT / f"tests/data/{n}.jpg")) for n in ("bus", "zidane")]}
    if FOOTAGE.is_file():
        sets["vtest.avi"] = every_nth_frame(FOOTAGE, 16)
    people, vehicle = cutouts()
    sets["road 1280x720"] = [scene(t + 0.37, people, vehicle) for t in np.linspace(0.0, 9.0, 12)]
    return sets


def detect_at(detector, frame: np.ndarray, size: tuple[int, int] | None):
    """The detector's boxes for `frame` at the model input `size` (width, height); None: the size the
    backend picks. Same preprocessing and postprocessing as the stage."""
    from stages.detect.backend_onnx import stretch

    if size is None:
        return detector.detect([frame])[0]
    img, placement = stretch(frame, *size)
    x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)[None]
    return detector._postprocess(detector.session.run([detector.output_name], {detector.input_name: x})[0][0],
                                 placement)


def matched(ref, got, iou: float = 0.5) -> int:
    """How many of `ref`'s boxes have a box of the same class in `got` with IoU >= iou (each used once)."""
    used, found = set(), 0
    for a in sorted(ref, key=lambda b: -b.confidence):
        best, best_iou = None, iou
        for j, b in enumerate(got):
            if j in used or b.class_id != a.class_id:
                continue
            w = max(0.0, min(a.bbox[2], b.bbox[2]) - max(a.bbox[0], b.bbox[0]))
            h = max(0.0, min(a.bbox[3], b.bbox[3]) - max(a.bbox[1], b.bbox[1]))
            inter = w * h
            union = ((a.bbox[2] - a.bbox[0]) * (a.bbox[3] - a.bbox[1]) + (b.bbox[2] - b.bbox[0]) * (b.bbox[3] - b.bbox[1])
                     - inter)
            if union > 0 and inter / union >= best_iou:
                best, best_iou = j, inter / union
        if best is not None:
            used.add(best)
            found += 1
    return found


def sizes_section(a) -> dict:
    """Inference time per input size on a 1280x720 frame, and each size's agreement with the 512x512
    baseline (the fixed square input before issue 21) on real frames: recall of its detections."""
    from stages.detect.backend_onnx import fit_size

    longs = [int(x) for x in a.sizes.split(",") if x.strip()]
    det = load_detector(a.model, classes=ROAD_USERS, imgsz=512, runtime="onnxruntime")  # the stage's defaults: conf 0.35, threads = cores
    if not det.rect:
        sys.exit(f"{a.model} has a fixed input size: rebuild it with `make models` (scripts/tfjs_to_onnx.py)")
    variants = {"512x512 (before)": lambda w, h: (512, 512),
                **{f"{n} long side": (lambda n: lambda w, h: fit_size(w, h, n, det.stride))(n) for n in longs}}
    load = os.getloadavg()
    print(f"\ninput size (issue 21): {Path(a.model).name}, onnxruntime {det.session.get_session_options().intra_op_num_threads}"
          f" intra-op threads (0 = one per core); load average at the start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    people, vehicle = cutouts()
    frames = [scene(t, people, vehicle) for t in np.linspace(0.0, 9.0, a.sizes_frames)]
    w, h = SIZE
    timing: dict[str, dict[str, list[float]]] = {k: {"infer": [], "frame": []} for k in variants}
    for f in frames[:3]:
        for fit in variants.values():
            detect_at(det, f, fit(w, h))
    from stages.detect.backend_onnx import stretch

    for f in frames:  # taking turns frame by frame, so load that comes and goes hits every size alike
        for k, fit in variants.items():
            size = fit(w, h)
            t0 = time.perf_counter()
            img, placement = stretch(f, *size)
            x = cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32)[None]
            t1 = time.perf_counter()
            y = det.session.run([det.output_name], {det.input_name: x})[0]
            t2 = time.perf_counter()
            det._postprocess(y[0], placement)
            t3 = time.perf_counter()
            timing[k]["infer"].append(t2 - t1)
            timing[k]["frame"].append(t3 - t0)
    sets = size_frames()
    base_key = next(iter(variants))
    agreement: dict[str, dict[str, dict]] = {k: {} for k in variants}
    for name, fs in sets.items():
        ref = [detect_at(det, f, variants[base_key](f.shape[1], f.shape[0])) for f in fs]
        for k, fit in variants.items():
            got = [detect_at(det, f, fit(f.shape[1], f.shape[0])) for f in fs]
            strong = [[b for b in r if b.confidence >= 0.45] for r in ref]
            agreement[k][name] = {
                "frames": len(fs), "frame_size": list(fs[0].shape[1::-1]),
                "input_size": list(fit(fs[0].shape[1], fs[0].shape[0])),
                "baseline": sum(map(len, ref)), "found": sum(matched(r, g) for r, g in zip(ref, got)),
                "baseline_strong": sum(map(len, strong)), "found_strong": sum(matched(r, g) for r, g in zip(strong, got)),
                "detections": sum(map(len, got)),
                "new": sum(len(g) - matched(g, r) for r, g in zip(ref, got))}  # found at this size only
    base_ms = statistics.median(timing[base_key]["infer"])
    print(f"{'input':>17} | {'1280x720 in':>11} | {'infer ms':>8} | {'frame ms':>8} | {'vs 512x512':>10} | "
          + " | ".join(f"recall {n} ({len(fs)} fr)" for n, fs in sets.items()) + " | all sets (conf>=0.45)")
    out = {"load_start": load, "frames_timed": len(frames), "variants": {}}
    for k, fit in variants.items():
        infer, frame = statistics.median(timing[k]["infer"]), statistics.median(timing[k]["frame"])
        cells = []
        for name in sets:
            r = agreement[k][name]
            cells.append(f"{r['found']}/{r['baseline']} = {100 * r['found'] / max(1, r['baseline']):5.1f} %"
                         f" @{r['input_size'][0]}x{r['input_size'][1]}")
        tot = sum(r["baseline"] for r in agreement[k].values())
        fnd = sum(r["found"] for r in agreement[k].values())
        tot_s = sum(r["baseline_strong"] for r in agreement[k].values())
        fnd_s = sum(r["found_strong"] for r in agreement[k].values())
        iw, ih = fit(w, h)
        new_ = sum(r["new"] for r in agreement[k].values())
        print(f"{k:>17} | {f'{iw}x{ih}':>11} | {1e3 * infer:8.1f} | {1e3 * frame:8.1f} | {base_ms / infer:9.2f}x | "
              + " | ".join(cells) + f" | {fnd}/{tot} = {100 * fnd / max(1, tot):.1f} % ({fnd_s}/{tot_s} = "
              f"{100 * fnd_s / max(1, tot_s):.1f} %), {new_} new")
        out["variants"][k] = {"input_1280x720": [iw, ih], "infer_ms_p50": 1e3 * infer, "frame_ms_p50": 1e3 * frame,
                              "speedup": base_ms / infer, "recall": fnd / max(1, tot), "found": fnd, "baseline": tot,
                              "recall_conf_0_45": fnd_s / max(1, tot_s), "new": new_, "sets": agreement[k]}
    end = os.getloadavg()
    print(f"recall = detections of the 512x512 run (conf >= 0.35, road-user classes) found at that size (same class, "
          f"IoU >= 0.5); in brackets those the 512x512 run scored >= 0.45; new = found at that size only; "
          f"load average at the end {end[0]:.1f}")
    out["load_end"] = end
    return out


# ------------------------------------------------------------------ issue 21: precisions and runtimes

def precisions_section(a) -> dict:
    """CPU per 512x288 frame and agreement with onnxruntime f32 for each runtime and precision the stage
    offers on the CPU: one thread each, taking turns frame by frame (load that comes and goes hits all
    alike); agreement at --imgsz 512 on real frames (recall of f32's detections and precision, one-to-one)."""
    variants = {"onnxruntime f32": (a.model, "onnxruntime", "auto"), "OpenVINO f32": (a.model, "openvino", "f32"),
                "OpenVINO auto": (a.model, "openvino", "auto"), "int8 OpenVINO f32": (str(INT8), "openvino", "f32"),
                "int8 OpenVINO auto": (str(INT8), "openvino", "auto")}
    if not INT8.is_file():
        print(f"precisions: {INT8} is missing (make models, with nncf): the int8 rows are left out")
    dets = {k: load_detector(m, classes=ROAD_USERS, imgsz=512, runtime=rt, precision=pr, threads=1)
            for k, (m, rt, pr) in variants.items() if Path(m).is_file()}
    load = os.getloadavg()
    print(f"\nprecisions (issue 21): one thread each, load average at the start {load[0]:.1f}; "
          + ", ".join(f"{k} = {d.precision}" for k, d in dets.items()))
    people, vehicle = cutouts()
    ref_det = dets["onnxruntime f32"]
    # the stage's own preprocessing: a 1280x720 frame at --imgsz 512 is a 512x288 RGB float input
    inputs = [ref_det._prepare(scene(t, people, vehicle))[0][None] for t in np.linspace(0.0, 9.0, a.sizes_frames)]
    # process CPU: whatever threads a runtime uses for a call count (one variant runs at a time)
    cpu: dict[str, list[float]] = {k: [] for k in dets}
    for d in dets.values():
        for x in inputs[:3]:
            d._run(x)
    for x in inputs:
        for k, d in dets.items():
            t0 = time.process_time()
            d._run(x)
            cpu[k].append(time.process_time() - t0)
    sets = size_frames()
    refs = {n: [ref_det.detect([f])[0] for f in fs] for n, fs in sets.items()}
    out: dict = {"load_start": load, "variants": {}}
    base = statistics.median(cpu["onnxruntime f32"])
    print(f"{'variant':>19} | {'CPU ms':>6} | {'vs ort f32':>10} | " + " | ".join(f"{n}: recall, precision" for n in sets))
    for k, d in dets.items():
        cells, row = [], {"precision": d.precision, "cpu_ms_p50": 1e3 * statistics.median(cpu[k]), "sets": {}}
        for n, fs in sets.items():
            got = [d.detect([f])[0] for f in fs]
            tot, ng = sum(map(len, refs[n])), sum(map(len, got))
            fnd = sum(matched(r, g) for r, g in zip(refs[n], got))
            kept = ng - sum(len(g) - matched(g, r) for r, g in zip(refs[n], got))
            row["sets"][n] = {"baseline": tot, "found": fnd, "detections": ng, "matched": kept}
            cells.append(f"{fnd}/{tot} = {100 * fnd / max(1, tot):5.1f} %, {100 * kept / max(1, ng):5.1f} %")
        print(f"{k:>19} | {row['cpu_ms_p50']:6.1f} | {base / statistics.median(cpu[k]):9.2f}x | " + " | ".join(cells))
        out["variants"][k] = row
    print("recall = onnxruntime f32's detections (conf >= 0.35, road users) found (same class, IoU >= 0.5); "
          f"precision = share of the variant's detections f32 also made; load average at the end {os.getloadavg()[0]:.1f}")
    return out


# ------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / ".cache/models/centernet-coco.onnx"))
    ap.add_argument("--seconds", type=float, default=20.0, help="video length (2 analysed frames per second)")
    ap.add_argument("--src-fps", type=int, default=10, help="frames per second of the generated video")
    ap.add_argument("--cameras", type=int, default=4, help="cameras in the capacity run")
    ap.add_argument("--batch", type=int, default=8, help="most frames per detector call in the stage")
    ap.add_argument("--threads", default="1,2", help="intra-op thread counts to measure")
    ap.add_argument("--pt", default=str(ROOT / ".cache/models/fall-yolov8.pt"))
    ap.add_argument("--pt-onnx", default=str(ROOT / ".cache/models/fall-yolov8.onnx"))
    ap.add_argument("--rounds", type=int, default=3, help="bare/stage pairs per thread count (median)")
    ap.add_argument("--no-pt", action="store_true", help="skip the ORT vs ultralytics comparison")
    ap.add_argument("--json", default=str(ROOT / "bench-results/detect.json"))
    ap.add_argument("--realtime", default="6,8,9,10,12", metavar="N1,N2,...",
                    help="camera counts for the real-time runs (one real `hazardctl detect` each); '' skips them")
    ap.add_argument("--realtime-seconds", type=float, default=20.0, help="seconds counted per real-time run")
    ap.add_argument("--realtime-warmup", type=float, default=2.0,
                    help="seconds left out after every camera's first analysed frame")
    ap.add_argument("--realtime-only", action="store_true", help="only the real-time runs")
    ap.add_argument("--levers", default="", metavar="L1,L2,...",
                    help=f"issue 21: largest sustained N for each of {','.join(LEVERS)} on H.264 video ('all' and "
                    "'today' in the same run); '' skips it")
    ap.add_argument("--levers-only", action="store_true", help="only the --levers section")
    ap.add_argument("--levers-start", type=int, default=6, help="first N tried for 'today'")
    ap.add_argument("--levers-max", type=int, default=64, help="largest N tried")
    ap.add_argument("--levers-video-s", type=float, default=10.0, help="seconds of the looped H.264 video")
    ap.add_argument("--levers-sync", action="store_true",
                    help="every camera plays the same copy from the same start (default: staggered rotations)")
    ap.add_argument("--sizes", default="", metavar="L1,L2,...",
                    help="issue 21: model input long sides to compare with 512x512 (e.g. 512,416,384): ms per frame "
                    "and recall on real frames; '' skips it")
    ap.add_argument("--sizes-only", action="store_true", help="only the --sizes section")
    ap.add_argument("--sizes-frames", type=int, default=40, help="1280x720 frames timed per size")
    ap.add_argument("--precisions", action="store_true",
                    help="only the precisions section: onnxruntime f32, OpenVINO f32/auto, int8: CPU ms and agreement")
    ap.add_argument("--quick", action="store_true", help="only the --levers section (all levers), 20 s counted, 1 s warm-up")
    a = ap.parse_args()
    if a.quick:
        a.levers_only, a.realtime_seconds, a.realtime_warmup = True, 20.0, 1.0  # 40 due frames: one late frame is 2.5 %
        a.levers = a.levers or ",".join(LEVERS)
    threads = [int(t) for t in a.threads.split(",")]
    if not Path(a.model).is_file():
        sys.exit(f"{a.model} not found: run `make models`")

    import logging
    logging.basicConfig(level=logging.WARNING)
    import onnxruntime

    report: dict = {"machine": {"cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
                                "opencv": cv2.__version__}, "model": a.model, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        tmpdir = Path(tmp)
        if a.precisions:
            report["precisions"] = precisions_section(a)
        if a.sizes.strip():
            report["sizes"] = sizes_section(a)
        if a.sizes_only or a.precisions:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(report, indent=2))
            print(f"\nwrote {a.json}")
            return 0
        if a.levers_only:
            report["levers"] = levers_section(a, tmpdir)
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            Path(a.json).write_text(json.dumps(report, indent=2))
            print(f"\nwrote {a.json}")
            return 0
        video = tmpdir / "road.mp4"
        frames = make_video(video, a.seconds, a.src_fps)
        print(f"video: {SIZE[0]}x{SIZE[1]} {a.src_fps} fps mp4v, {a.seconds:.0f} s; {len(frames)} frames analysed "
              f"per camera at {ANALYSED_FPS:g} fps; {os.cpu_count()} CPUs (shared: expect noise)")
        print(f"model: {a.model}")
        rows = []
        if not a.realtime_only:
            rows = batched_runs(a, report, video, frames, threads, tmpdir)
        if a.realtime.strip():
            default = physical_cores()
            derived = [(f"{a.cameras} cameras batched as fast as possible, threads={n}"
                        + (" (the default)" if n == default else "") + f": sustained f/s / {ANALYSED_FPS:g}",
                        multi["fps"] / ANALYSED_FPS) for n, _, _, multi, _, _ in rows]
            report["realtime"] = realtime_section(a, video, tmpdir, derived)
        if not a.no_pt and not a.realtime_only:
            report["runs"]["ort_vs_ultralytics"] = compare_pt(a, frames, threads, tmpdir)
        if a.levers.strip():
            report["levers"] = levers_section(a, tmpdir)

    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=2))
    print(f"\nwrote {a.json}")
    return 0


def batched_runs(a, report: dict, video: Path, frames: list[np.ndarray], threads: list[int], tmpdir: Path) -> list:
    """Bare loop, whole stage (1 camera) and the --cameras capacity run, per thread count; prints the tables."""
    costs = side_costs(video, frames, a.src_fps)
    report["side_costs_ms"] = costs
    rows = []
    for n in threads:
        det = load_detector(a.model, threads=n, runtime="onnxruntime")
        # alternate bare and stage runs, keep the median of each: the machine is shared
        pairs = [(bare_loop(det, frames), stage_run(det, video, 1, a.batch, tmpdir)) for _ in range(a.rounds)]
        bare = median_run([p[0] for p in pairs])
        stage = median_run([p[1] for p in pairs])
        multi = stage_run(det, video, a.cameras, a.batch, tmpdir)
        overhead = bare["fps"] / stage["fps"] - 1
        cpu_overhead = stage["cpu_ms"] / bare["cpu_ms"] - 1
        cpus = os.cpu_count() or 1
        report["runs"][f"threads={n}"] = {
            "bare": bare, "stage_1cam": stage, f"stage_{a.cameras}cam": multi,
            "stage_overhead_wall": overhead, "stage_overhead_cpu": cpu_overhead,
            "max_cameras_at_2fps_measured": multi["fps"] / ANALYSED_FPS,
            "max_cameras_at_2fps_from_cpu": 1e3 * min(cpus, n) / multi["cpu_ms"] / ANALYSED_FPS}
        rows.append((n, bare, stage, multi, overhead, cpu_overhead))

    cpus = os.cpu_count() or 1
    print("\nwall clock (frames/s; ms per frame)")
    print(f"{'threads':>7} | {'bare f/s':>8} {'p50':>5} {'p95':>5} (pre/infer/post) | "
          f"{'stage f/s':>9} {'p50':>5} {'p95':>5} | overhead | {a.cameras} cams f/s (batch) | cams @2fps")
    for n, bare, stage, multi, overhead, _ in rows:
        split = (f"({bare['pre_ms']:.1f}/{bare['infer_ms']:.0f}/{bare['post_ms']:.1f})"
                 if "pre_ms" in bare else "")
        print(f"{n:>7} | {bare['fps']:8.2f} {bare['p50_ms']:5.0f} {bare['p95_ms']:5.0f} {split:>16} | "
              f"{stage['fps']:9.2f} {stage['p50_ms']:5.0f} {stage['p95_ms']:5.0f} | {100 * overhead:7.1f}% | "
              f"{multi['fps']:8.2f} ({multi['batch']})        | {multi['fps'] / ANALYSED_FPS:6.1f}")
    print("\nCPU time (all threads of the process, ms per analysed frame): less sensitive to other load")
    print(f"{'threads':>7} | {'bare':>6} | {'stage 1 cam':>11} | overhead | {a.cameras} cams | "
          f"cams @2fps if nothing else runs (on min({cpus} CPUs, threads) cores)")
    for n, bare, stage, multi, _, cpu_overhead in rows:
        print(f"{n:>7} | {bare['cpu_ms']:6.1f} | {stage['cpu_ms']:11.1f} | {100 * cpu_overhead:7.1f}% | "
              f"{multi['cpu_ms']:6.1f} | {1e3 * min(cpus, n) / multi['cpu_ms'] / ANALYSED_FPS:6.1f}")
    s = rows[-1][2]
    print(f"\nstage output: {s['groups_per_frame']:.2f} groups/frame, {s['crops_per_frame']:.2f} crops/frame, "
          f"{s['bytes_per_result'] / 1e3:.0f} kB/result; overhead goal <= 15 %")
    print(f"work outside inference, per analysed frame (one core): decode {costs['decode']:.1f} ms "
          f"(grab {a.src_fps / ANALYSED_FPS:.0f} frames, convert 1), tracker {costs['tracker']:.2f} ms, "
          f"crop JPEG+base64 {costs['crop_jpeg_b64']:.1f} ms per crop")
    return rows


def compare_pt(a, frames: list[np.ndarray], threads: list[int], tmpdir: Path) -> dict:
    """Same YOLOv8 weights through onnxruntime and through ultralytics, bare loop.

    The shipped .onnx has a fixed 640x640 input; ultralytics letterboxes a 16:9 frame to 640x384
    only. So the .pt is also exported here with dynamic axes, which our ONNX backend letterboxes
    the same way: that pair is the like-for-like comparison."""
    os.environ.setdefault("YOLO_VERBOSE", "False")  # before the import: its logger reads it once
    try:
        from ultralytics import YOLO
    except ImportError:
        print("\nORT vs ultralytics: skipped (the [ultralytics] extra is not installed)")
        return {"skipped": "ultralytics not installed"}
    if not (Path(a.pt).is_file() and Path(a.pt_onnx).is_file()):
        print("\nORT vs ultralytics: skipped (run scripts/fetch_test_models.sh)")
        return {"skipped": "models missing"}
    src = tmpdir / "weights.pt"
    src.write_bytes(Path(a.pt).read_bytes())
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # export report
        dynamic = YOLO(str(src)).export(format="onnx", dynamic=True, simplify=False, imgsz=640, verbose=False)
    h, w = frames[0].shape[:2]
    rect = f"640x{-(-round(h * 640 / max(h, w)) // 32) * 32}"
    print(f"\nORT vs ultralytics, same YOLOv8 weights ({Path(a.pt).name}), bare loop, taking turns frame by frame, "
          f"frames/s (p50 ms)")
    print(f"{'threads':>7} | {'ORT static 640x640':>18} | {'ORT dynamic ' + rect:>18} | {'ultralytics ' + rect:>18} | "
          f"ORT dynamic / ultralytics")
    out = {}
    for n in threads:
        dets = {"onnxruntime_static": load_detector(a.pt_onnx, threads=n, runtime="onnxruntime"),
                "onnxruntime_dynamic": load_detector(dynamic, threads=n, runtime="onnxruntime"),
                "ultralytics": load_detector(a.pt, threads=n)}
        res = paired_loops(dets, frames)
        static, dyn, pt = res["onnxruntime_static"], res["onnxruntime_dynamic"], res["ultralytics"]
        out[f"threads={n}"] = {**res, "speedup_like_for_like": dyn["fps"] / pt["fps"]}
        cell = lambda r: f"{r['fps']:7.2f} ({r['p50_ms']:4.0f})"
        print(f"{n:>7} | {cell(static):>18} | {cell(dyn):>18} | {cell(pt):>18} | {dyn['fps'] / pt['fps']:.2f}x")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
