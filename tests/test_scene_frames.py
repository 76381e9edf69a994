"""Frames over time and the zones preview (issue 19.4, 19.5) with the real detector on a generated video
(real people cut out of bus.jpg walking along a road, tests/detect_scenes.py), through real processes:
`hazardctl detect --cameras YAML | hazardctl expand`, the real schedule stage against the simulated
provider, and `hazardctl zones preview` (its PNG is kept in test-artifacts/ under make test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import pytest
import yaml

from hazardctl.messages import AssessmentTask
from tests.conftest import HAZARDCTL, ROOT
from tests.detect_scenes import walk, write_video
from tools.llm_sim.tokens import image_size, image_tokens

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
ARTIFACTS = ROOT / "test-artifacts"
CMD = " ".join(HAZARDCTL)
BUDGET = 1024

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first")]

# the walkers' feet are at y ≈ 540 of 720: the band y 432-648 is a roadway (no crosswalk: every walker
# in it is a pedestrian in the roadway, a `suspect` cue), the top of the frame is a sidewalk
ZONES = [{"name": "main-road", "kind": "roadway", "polygon": [[0, 0.6], [1, 0.6], [1, 0.9], [0, 0.9]],
          "direction": [[0.1, 0.75], [0.5, 0.75]]},
         {"name": "north-pavement", "kind": "sidewalk", "polygon": [[0, 0.3], [1, 0.3], [1, 0.6], [0, 0.6]]}]
CALIBRATION = {"image": [[0.3, 0.6], [0.7, 0.6], [0.9, 0.9], [0.1, 0.9]], "ground": [[0, 12], [8, 12], [8, 0], [0, 0]]}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("frames")
    video = write_video(walk(), tmp / "walk.mp4")
    cams = tmp / "cameras.yaml"
    cams.write_text(yaml.safe_dump({"cameras": [{"id": "walk", "source": str(video), "zones": ZONES,
                                                 "calibration": CALIBRATION}]}))
    return cams


def run(cams: Path, *flags: str) -> tuple[list[dict], list[dict]]:
    det = cams.parent / f"det{'-'.join(flags)}.jsonl"
    proc = subprocess.run(f"{CMD} detect --cameras {cams} --as-fast-as-possible --fps 2 --conf 0.3 --classes person "
                          f"--media-clock --model {MODEL} {' '.join(flags)} | tee {det} | {CMD} expand",
                          shell=True, capture_output=True, text=True, timeout=200, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ([json.loads(x) for x in det.read_text().splitlines()],
            [json.loads(x) for x in proc.stdout.splitlines()])


def task_images(t: dict) -> list[tuple[int, int]]:
    g = t["group"]
    sizes = [tuple(g["crop_size"])] if g.get("crop_jpeg_b64") else []
    return sizes + [tuple(f["size"]) for f in g.get("frames") or []]


def test_suspect_tasks_carry_three_frames_and_a_thumbnail_within_the_budget_and_calls_do_not_change(scene):
    dets, tasks = run(scene, "--thumbnail", "--image-token-budget", str(BUDGET))
    assert {t["reason"] for t in tasks} >= {"suspect"}
    framed = [t for t in tasks if t["group"].get("frames")]
    assert framed and all(t["reason"] in ("suspect", "new") for t in framed)  # never changed/refresh
    # frame k of the 10 fps video is at k / 10 s of the file's clock, which the frames' offsets use
    late = [t for t in tasks if t["reason"] in ("suspect", "new") and t["frame_id"] / 10 >= 2.0]
    assert late, [(t["reason"], t["frame_id"]) for t in tasks]
    for t in late:  # once the camera has 2 s of past: 2 earlier crops + the latest = 3 frames, + the thumbnail
        g = t["group"]
        assert "pedestrian_in_roadway" in g["cues"]["flags"] and "main-road" in g["zones"]
        # the ring keeps frames about 1 s apart (>= 0.75 s): each earlier crop is the kept frame nearest
        # 2 s / 1 s back, within half a spacing, so a task on the other half-second phase gets -2.5 / -1.5
        kinds = [(f["kind"], f["offset_s"]) for f in g["frames"]]
        assert [k for k, _ in kinds] == ["crop", "crop", "context"] and kinds[2][1] == 0.0, kinds
        assert abs(kinds[0][1] + 2.0) <= 0.5 and abs(kinds[1][1] + 1.0) <= 0.5 and kinds[0][1] < kinds[1][1] < 0, kinds
        for f in g["frames"]:  # the sizes the message states are the JPEGs' own
            assert image_size("data:image/jpeg;base64," + f["jpeg_b64"]) == tuple(f["size"])
        assert sum(image_tokens(s) for s in task_images(t)) <= BUDGET
    # the same video without frames: the same tasks (calls per camera-second unchanged), no frames
    _, plain = run(scene, "--frames", "1", "--no-thumbnail")
    key = lambda t: (t["frame_id"], t["reason"], tuple(t["group"]["member_ids"]))  # noqa: E731
    assert [key(t) for t in plain] == [key(t) for t in tasks]
    assert not any(t["group"].get("frames") for t in plain)
    # what the simulated provider receives for a framed suspect task: all four images, named in the text
    from tests.test_schedule_stage import keys_for, run_stage, sim_keys
    from tools.llm_sim import SimConfig, SimServer

    task = AssessmentTask.model_validate(late[0])
    task.deadline = time.time() + 60  # a batch run's capture times are long past: not what is tested here
    with SimServer(SimConfig(keys=sim_keys(1), latency="fixed:0.02", port=0)) as sim:
        results, dead, _ = run_stage(scene.parent, keys_for(sim, 1), [task])
        (req,) = sim.requests()
    assert not dead and results[0]["status"] == "ok"
    # the result carries what the model saw besides the crop, so consume keeps it all as evidence
    assert [f["jpeg_b64"] for f in results[0]["frames"]] == [f.jpeg_b64 for f in task.group.frames]
    from hazardctl.prompt import MOTION_PROMPTS, prompt_for_task

    assert results[0]["prompt_version"] == prompt_for_task(task).version != MOTION_PROMPTS["en"].version  # says "scene"
    assert [tuple(s) for s in req["images"]] == [task_images(late[0])[k] for k in (1, 2, 0, 3)]  # time order
    text = next(x["text"] for x in req["texts"] if x["role"] == "user")
    assert "image 1: 2.0 s earlier" in text and "image 3: now" in text and "image 4: the whole camera view" in text
    assert "in main-road" in text
    assert req["prompt_tokens"] >= sum(image_tokens(tuple(s)) for s in req["images"])


def test_zones_preview_png_of_the_test_video(scene):
    out = scene.parent / "zones-walk.png"
    proc = subprocess.run([*HAZARDCTL, "zones", "preview", "--cameras", str(scene), "--camera", "walk", "--at", "2",
                           "--model", str(MODEL), "--conf", "0.3", "--classes", "person", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (720, 1280, 3)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{out}: 1280x720, 2 zones, calibrated, 5 detections", proc.stdout
    assert sum("in main-road" in ln for ln in lines[1:]) == 5  # every walker's feet are on the road
    raw = cv2.VideoCapture(str(scene.parent / "walk.mp4"))
    raw.set(cv2.CAP_PROP_POS_MSEC, 2000)
    ok, frame = raw.read()
    raw.release()
    assert ok
    # the roadway (rows 432-648, left of the walkers) is tinted, the sky above the pavement is untouched
    assert abs(img[640, 20].astype(int) - frame[640, 20].astype(int)).max() > 20
    assert (img[100, 20] == frame[100, 20]).all()
    if ARTIFACTS.is_dir():
        shutil.copy(out, ARTIFACTS / "zones-preview.png")


def test_zones_preview_refuses_a_bad_config_in_one_line(tmp_path):
    cams = tmp_path / "cams.yaml"
    cams.write_text(yaml.safe_dump({"cameras": [{"id": "c", "source": "rtsp://127.0.0.1:9/x",
                                                 "zones": [{"name": "z", "kind": "lawn", "polygon": [[0, 0], [1, 0], [1, 1]]}]}]}))
    proc = subprocess.run([*HAZARDCTL, "zones", "preview", "--cameras", str(cams), "--camera", "c"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "camera c, zone z: unknown kind 'lawn'" in proc.stderr
