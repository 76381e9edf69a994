"""A generated video through `hazardctl detect` with the real COCO detector (CenterNet ONNX).

Five real pedestrians (cut out of bus.jpg) walk together; then two of them walk away. The group
keeps its id while they are together; when they split, the three who stay keep it and the two who
leave get a new id, which then stays theirs.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import HAZARDCTL, ROOT
from tests.detect_scenes import SPLIT_FROM, walk, who, write_video

MODEL = ROOT / ".cache/models/centernet-coco.onnx"
LINK_K = 0.75

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason="run scripts/fetch_models.sh (make models) first")


def link_threshold(truth) -> float:
    """Gap at which persons 2 and 3 stop being linked under the grouping rule, from the true boxes."""
    d = [math.hypot(b[2] - b[0], b[3] - b[1]) for b in (truth[2], truth[3])]
    return LINK_K * sum(d) / 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("track", ["--no-track", "--track"])
def test_group_ids_stay_while_together_and_change_on_split(tmp_path: Path, track: str):
    scene = walk()
    video = write_video(scene, tmp_path / "walk.mp4")
    proc = subprocess.run(
        [*HAZARDCTL, "detect", "--source", str(video), "--camera-id", "walk", "--as-fast-as-possible",
         "--fps", "2", "--conf", "0.3", "--classes", "person", "--link-k", str(LINK_K), "--model", str(MODEL),
         track],
        capture_output=True, text=True, timeout=110, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    # 8 s of 10 fps video sampled at 2 fps: frames 0, 5, ..., 75, all of them, in order
    assert [r["frame_id"] for r in results] == list(range(0, 80, 5))
    assert len({r["message_id"] for r in results}) == len(results)
    assert all(r["camera_id"] == "walk" and r["frame_width"] == 1280 for r in results)

    together_id = None
    leaving_ids = set()
    checked_together = checked_apart = 0
    for r in results:
        truth = scene.truth[r["frame_id"]]
        person = {o["object_id"]: who(o["bbox"], truth, min_iou=0.3) for o in r["objects"]}
        groups = [(g["group_id"], {person[m] for m in g["member_ids"]} - {None}, g) for g in r["groups"]]
        for _, _, g in groups:  # every group carries its crop, once
            img = cv2.imdecode(np.frombuffer(base64.b64decode(g["crop_jpeg_b64"]), np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and max(img.shape[:2]) <= 768 and tuple(g["crop_size"]) == (img.shape[1], img.shape[0])
        gap, limit = scene.gap(r["frame_id"]), link_threshold(truth)
        if gap < 0.8 * limit:  # clearly together: one group of (at least four of) the five
            assert len(groups) == 1, (r["frame_id"], groups)
            gid, members, _ = groups[0]
            assert len(members) >= 4, (r["frame_id"], members)
            together_id = together_id or gid
            assert gid == together_id, f"frame {r['frame_id']}: group id changed while together"
            checked_together += 1
        elif gap > 1.2 * limit:  # clearly apart: the three who stay keep the id, the two who leave get a new one
            assert len(groups) == 2, (r["frame_id"], groups)
            by_side = {("stay" if members <= {0, 1, 2} else "leave"): gid for gid, members, _ in groups}
            assert set(by_side) == {"stay", "leave"}, groups
            assert by_side["stay"] == together_id
            assert by_side["leave"] != together_id
            leaving_ids.add(by_side["leave"])
            checked_apart += 1
    assert checked_together >= 8 and checked_apart >= 3
    assert len(leaving_ids) == 1, f"the departing pair changed id again: {leaving_ids}"
    if track == "--track":  # tracking was in effect (a new track gets its id on its second frame)
        later = [o["track_id"] for r in results[1:] for o in r["objects"]]
        assert sum(t is not None for t in later) >= 0.5 * len(later)
        # motion in px per second of the video (40 px/s before the split), though processed as fast as
        # possible: the file's clock, not the wall clock (which would make everyone several times faster)
        vx = [o["motion"]["vx"] for r in results if r["frame_id"] <= SPLIT_FROM * 0.9
              for o in r["objects"] if o["motion"] and o["motion"]["samples"] >= 3]
        assert len(vx) >= 10 and all(25 < v < 55 for v in vx), vx
    else:
        assert all(o["motion"] is None for r in results for o in r["objects"])  # no track ids, no motion
