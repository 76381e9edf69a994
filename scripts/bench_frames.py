#!/usr/bin/env python
"""What frames over time cost (issue 19.4): the same camera with the single latest crop and with 3 frames
(+ a thumbnail), side by side in one run.

What runs: a 30 s clip of real footage (OpenCV's vtest.avi, 768x576, people walking; `make models`
fetches it) with zones (a roadway across the middle of the street, sidewalks beside it: walkers in the
roadway are `pedestrian_in_roadway` suspects), through the real `hazardctl detect` (real detector,
--fps 2) twice: `--frames 1 --no-thumbnail` (today's single crop) and `--frames 3 --thumbnail`, both
`--as-fast-as-possible --media-clock` — no sampled frame lost and capture times on the video's own
clock, so both runs analyse the same frames at the same times and are gated as in real time (paced
in real time on a loaded 2-core box, runs skipped different frames). Each detection stream goes
through expand's gate (stages/expand/tasks.py + hazardctl/gating.py, in this process: the same code
`hazardctl expand` runs).

Per run, per task: bytes (the task's JSON), image tokens (one per 28x28 px, every image), tokens as
schedule estimates them before a call (images + prompt text + max_tokens 300,
hazardctl.llm_client.estimate_tokens); calls per camera-second; tokens per second per camera and how
many such cameras one qwen-vl-plus account (1,000,000 tokens per minute, 1,200 requests per minute)
serves. The ratio column is frames / single crop.

Usage:  make bench-frames          (~45 s)
        python scripts/bench_frames.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FOOTAGE = ROOT / ".cache" / "footage" / "vtest.avi"
MODEL = ROOT / ".cache" / "models" / "centernet-coco.onnx"
TPM, RPM = 1_000_000, 1_200
ZONES = [
    {"name": "street", "kind": "roadway", "polygon": [[0.0, 0.45], [1.0, 0.45], [1.0, 0.75], [0.0, 0.75]],
     "direction": [[0.2, 0.6], [0.8, 0.6]]},
    {"name": "north-side", "kind": "sidewalk", "polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 0.45], [0.0, 0.45]]},
    {"name": "south-side", "kind": "sidewalk", "polygon": [[0.0, 0.75], [1.0, 0.75], [1.0, 1.0], [0.0, 1.0]]},
]


def clip(seconds: float, out: Path) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(FOOTAGE))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for _ in range(int(seconds * fps)):
        ok, img = cap.read()
        if not ok:
            break
        writer.write(img)
    writer.release()
    cap.release()
    return out


def gate(dets: list[dict]) -> list[dict]:
    from hazardctl.gating import GroupGate
    from stages.expand.tasks import ExpandConfig, expand, parse

    g, cfg, tasks = GroupGate(), ExpandConfig(), []
    for d in dets:
        det, raw = parse(json.dumps(d).encode())
        tasks += expand(det, raw, g, cfg, det.frame_ts)
    return tasks


def figures(dets: list[dict], tasks: list[dict]) -> dict:
    from hazardctl.llm_client import estimate_tokens
    from hazardctl.messages import AssessmentTask
    from tools.llm_sim.tokens import image_tokens

    span = dets[-1]["frame_ts"] - dets[0]["frame_ts"] + 0.5  # + one frame interval: n frames cover n × 0.5 s
    sizes = [len(json.dumps(t, separators=(",", ":"))) for t in tasks]
    imgs = [sum(image_tokens(tuple(s)) for s in ([t["group"]["crop_size"]] if t["group"].get("crop_size") else [])
                + [f["size"] for f in t["group"].get("frames") or []]) for t in tasks]
    est = [estimate_tokens(AssessmentTask.model_validate(t), 300) for t in tasks]
    calls = len(tasks) / span
    tok_s = sum(est) / span
    framed = [t for t in tasks if t["group"].get("frames")]
    return {
        "tasks": len(tasks), "reasons": {r: sum(t["reason"] == r for t in tasks) for r in ("suspect", "new", "changed", "refresh")},
        "calls_per_cam_s": calls, "bytes_mean": statistics.mean(sizes) if sizes else 0,
        "bytes_max": max(sizes, default=0), "image_tokens_mean": statistics.mean(imgs) if imgs else 0,
        "image_tokens_max": max(imgs, default=0), "tokens_mean": statistics.mean(est) if est else 0,
        "tokens_per_cam_s": tok_s, "cameras_per_account": min(TPM / 60 / tok_s if tok_s else 1e9,
                                                              RPM / 60 / calls if calls else 1e9),
        "tasks_with_frames": len(framed), "detection_bytes_mean": statistics.mean(len(json.dumps(d)) for d in dets),
        "span_s": span,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=None, help="keep the detections and tasks here")
    args = ap.parse_args()
    for f, how in ((FOOTAGE, "scripts/fetch_footage.sh"), (MODEL, "make models")):
        if not f.is_file():
            print(f"bench_frames: {f} is missing: run {how}", file=sys.stderr)
            return 2
    import yaml

    work = args.out or Path(tempfile.mkdtemp(prefix="bench-frames-"))
    work.mkdir(parents=True, exist_ok=True)
    video = clip(args.seconds, work / "vtest-clip.mp4")
    cams = work / "cameras.yaml"
    cams.write_text(yaml.safe_dump({"cameras": [{"id": "vtest", "source": str(video), "zones": ZONES}]}))
    runs = {"single crop": ["--frames", "1", "--no-thumbnail"], "3 frames + thumbnail": ["--frames", "3", "--thumbnail"]}
    res, analysed = {}, {}
    for name, flags in runs.items():
        out = work / f"det-{flags[1]}.jsonl"
        p = subprocess.run([sys.executable, "-m", "hazardctl.cli", "detect", "--cameras", str(cams), "--fps", "2",
                            "--model", str(MODEL), "--as-fast-as-possible", "--media-clock", *flags],
                           stdout=out.open("wb"), stderr=subprocess.DEVNULL, cwd=ROOT,
                           timeout=args.seconds * 4 + 60)
        if p.returncode != 0:
            print(f"bench_frames: detect ({name}) exited {p.returncode}", file=sys.stderr)
            return 1
        analysed[name] = [json.loads(x) for x in out.read_text().splitlines()]
    both = set.intersection(*({d["frame_id"] for d in dets} for dets in analysed.values()))
    for name, dets in analysed.items():
        dets = [d for d in dets if d["frame_id"] in both]
        tasks = gate(dets)
        (work / f"tasks-{name.split()[0]}.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
        res[name] = figures(dets, tasks)
    a, b = res["single crop"], res["3 frames + thumbnail"]
    rows = [("tasks", "tasks", "{:.0f}"), ("calls per camera-second", "calls_per_cam_s", "{:.3f}"),
            ("bytes per task (mean)", "bytes_mean", "{:,.0f}"), ("bytes per task (max)", "bytes_max", "{:,.0f}"),
            ("image tokens per task (mean)", "image_tokens_mean", "{:.0f}"),
            ("image tokens per task (max)", "image_tokens_max", "{:.0f}"),
            ("tokens per task, estimated (mean)", "tokens_mean", "{:.0f}"),
            ("tokens per second per camera", "tokens_per_cam_s", "{:.0f}"),
            ("cameras per 1M-TPM / 1200-RPM account", "cameras_per_account", "{:.0f}"),
            ("tasks carrying frames", "tasks_with_frames", "{:.0f}"),
            ("detection message bytes (mean)", "detection_bytes_mean", "{:,.0f}")]
    skipped = sum(len(d) for d in analysed.values()) - 2 * len(both)
    print(f"bench-frames: {args.seconds:g} s of vtest.avi, --fps 2, --media-clock, zones (a roadway across the street); "
          f"{len(both)} frames analysed by both runs ({skipped} by one run only, left out)")
    print(f"{'':40} {'single crop':>14} {'3 frames+thumb':>15} {'ratio':>7}")
    for label, key, fmt in rows:
        ratio = b[key] / a[key] if a[key] else float("nan")
        print(f"{label:40} {fmt.format(a[key]):>14} {fmt.format(b[key]):>15} {ratio:>7.2f}")
    print(f"reasons: single {a['reasons']}  frames {b['reasons']}")
    full = sum(1 for t in tasks if sum(f["kind"] == "crop" for f in t["group"].get("frames") or []) == 2)
    print(f"tasks with 2 earlier crops (3 frames): {full} of {len(tasks)}; the others were sent in the clip's first "
          "2 s (no past yet) or their region's earlier crops did not fit the budget")
    print(f"detections and tasks: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
