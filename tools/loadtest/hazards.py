"""The loadtest's labelled hazards (scene.py `--motion`) and what became of them: recall and calls.

The cameras note, for every hazard group (a car approaching a pedestrian), when it was on the road
and which tasks the gate predicted for it; after the run, each is matched with the ledger's rows:

* a hazard counts when its car reached the labelled onset (true TTC 1.5 s) and one more frame within
  the run (a hazard cut off by the end of the run is not counted against anyone);
* it is **recalled** when one of its `suspect` tasks came back `ok` within its deadline (the result
  on the results topic no later than capture + deadline);
* every `suspect` task of the run, ok within its deadline or not, is counted beside them;
* **calls per camera-second** = tasks expand produced per second in the steady window / cameras: what
  the danger-aware gate really spends, against `--rate` (the road's activity, what the classic gate
  would pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hazardctl.messages import task_id_for
from tools.loadtest.scene import hazard_onset_s


@dataclass
class HazardLog:
    """Per hazard group: first and last capture time on the road, and its predicted (task id, reason)."""

    groups: dict[str, dict] = field(default_factory=dict)

    def note(self, group_id: str | None, msg: dict, predicted: list[tuple[str, str]], at: float) -> None:
        if group_id is None:
            return
        g = self.groups.setdefault(group_id, {"first": at, "last": at, "tasks": []})
        g["last"] = at
        tid = task_id_for(msg["message_id"], group_id)
        g["tasks"] += [(t, r) for t, r in predicted if t == tid]


def in_time(row, deadline_s: float) -> bool:
    return (row is not None and row.outcome == "ok" and row.on_topic is not None and row.capture is not None
            and row.on_topic <= row.capture + deadline_s)


def figures(log: HazardLog, rows: list, cameras: int, tasks_per_s: float, deadline_s: float, fps: float) -> dict:
    by_id = {r.task_id: r for r in rows}
    need = hazard_onset_s() + 1.0 / fps - 1e-6
    counted = [g for g in log.groups.values() if g["last"] - g["first"] >= need]
    recalled = sum(any(r == "suspect" and in_time(by_id.get(t), deadline_s) for t, r in g["tasks"]) for g in counted)
    suspects = [r for r in rows if r.reason == "suspect"]
    ok = sum(in_time(r, deadline_s) for r in suspects)
    return {"calls_per_camera_s": round(tasks_per_s / cameras, 4) if cameras else None,
            "hazards": len(counted), "hazards_recalled": recalled,
            "hazard_recall": round(recalled / len(counted), 5) if counted else None,
            "suspect_tasks": len(suspects), "suspect_ok_in_deadline": ok,
            "suspect_ok_share": round(ok / len(suspects), 5) if suspects else None}
