"""Write a scenario as a MOT-Challenge sequence folder plus its labels (what `detect --source mot:` reads).

    NAME/seqinfo.ini      [Sequence] name, frameRate, seqLength, imWidth, imHeight (FACTS.md)
    NAME/gt/gt.txt        frame,id,left,top,width,height,conf,class,visibility,coco_class
    NAME/labels.json      kind, hazards (actors, onset, conflict point, min TTC), which MOT ids are
                          which actor (id switches give an actor several), noise, seed

Frame k (from 1) shows the scene at t = (k − 1) / fps. Classes: MOT17 numbers (1 pedestrian,
3 car, 4 bicycle, 5 motorbike; bus and truck as 3) and the COCO name in the 10th column, which
the mot: source prefers when present. Boxes are clipped to the frame; a box mostly outside is not
written (the detector would not see it).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tools.scenarios.noise import Noise, NoisyTracker
from tools.scenarios.physics import HEIGHT, WIDTH, Scenario

MOT_CLASS = {"person": 1, "car": 3, "bicycle": 4, "motorcycle": 5, "bus": 3, "truck": 3}


def frame_times(duration_s: float, fps: float) -> list[float]:
    n = int(duration_s * fps + 1e-9) + 1
    return [k / fps for k in range(n)]


def write(scenario: Scenario, root: Path, fps: float = 2.0, noise: Noise = Noise()) -> Path:
    """The sequence folder of `scenario` under `root` (created or replaced); returns its path."""
    seq = root / scenario.name
    (seq / "gt").mkdir(parents=True, exist_ok=True)
    tracker = NoisyTracker(noise)
    lines = []
    times = frame_times(scenario.duration_s, fps)
    boxes = 0
    for k, t in enumerate(times, start=1):
        for a in scenario.actors:
            i = a.index(t)
            if not a.visible[i]:
                continue
            seen = tracker.observe(a.actor_id, a.box(i))
            if seen is None:
                continue
            tid, (x1, y1, x2, y2) = seen
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(WIDTH), x2), min(float(HEIGHT), y2)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            lines.append(f"{k},{tid},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,{MOT_CLASS[a.cls]},1,{a.cls}")
            boxes += 1
    (seq / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    (seq / "seqinfo.ini").write_text(
        "[Sequence]\n"
        f"name={scenario.name}\nimDir=img1\nframeRate={fps:g}\nseqLength={len(times)}\n"
        f"imWidth={WIDTH}\nimHeight={HEIGHT}\nimExt=.jpg\n")
    labels = {
        "name": scenario.name, "kind": scenario.kind, "note": scenario.note, "fps": fps, "frames": len(times),
        "duration_s": scenario.duration_s, "boxes": boxes, "noise": asdict(noise),
        "hazards": [asdict(h) for h in scenario.hazards],
        "actors": {str(a.actor_id): {"class": a.cls, "role": a.role} for a in scenario.actors},
        "mot_ids": {str(tid): aid for tid, aid in sorted(tracker.id_of.items())},
    }
    (seq / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    return seq


def read_labels(seq: Path) -> dict:
    return json.loads((Path(seq) / "labels.json").read_text())
