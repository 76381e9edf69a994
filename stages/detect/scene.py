"""detect's scene knowledge per camera: zones and zone cues on objects and groups, and frames over time.

The thin shell around the pure parts (hazardctl/zones.py, hazardctl/zone_cues.py,
stages/detect/frames.py), called by the stage for each frame of a camera that has a scene:

* `place(objects, ts, w, h)`: zone names (and ground speed when calibrated) onto each object;
* `with_flagged_alone(...)`: a flagged road user that is in no group becomes a group of its own (a
  pedestrian alone in the roadway, a car alone against its lane are hazards without a neighbour);
* `annotate(groups, ...)`: zone names, zone flags into `GroupCues.flags` (the gate's `suspect`), the
  ground gap of the worst pair, groups entirely in `ignore` zones removed (counted by the stage),
  groups all on a sidewalk with no vehicle marked calm;
* `attach_frames(...)`: earlier crops for the groups expand will send as `new` or `suspect`, known by
  running a shadow of its gate (the same pure `hazardctl.gating.decide`, default settings) here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hazardctl.gating import GateConfig, GroupGate, view_of
from hazardctl.grouping import Cluster, GroupingConfig, spatial_features
from hazardctl.messages import DetectedObject, Group, GroupCues, GroupFrame
from hazardctl.zone_cues import FrameZones, SceneCues
from hazardctl.zones import Scene, footpoints
from stages.detect.crops import CropConfig
from stages.detect.frames import FrameHistory, FramesConfig, group_frames

if TYPE_CHECKING:
    from stages.detect.sources import SourceSpec



@dataclass
class SceneRun:
    cues: SceneCues | None
    history: FrameHistory | None
    crops: CropConfig = CropConfig()
    gate: GroupGate = field(default_factory=lambda: GroupGate(GateConfig()))
    """a shadow of expand's gate (the same pure `decide`, default settings) over this camera's groups:
    it says which groups expand will send as `new` or `suspect`, so only those carry frames"""
    _scene: Scene | None = None
    """the scene in the pixels of the camera's latest frame"""

    @classmethod
    def for_camera(cls, spec: SourceSpec, frames: FramesConfig, crops: CropConfig) -> SceneRun | None:
        cues = SceneCues(spec.scene) if spec.scene is not None else None
        history = FrameHistory(frames) if frames.enabled and spec.kind != "mot" else None
        if cues is None and history is None:
            return None
        return cls(cues, history, crops)

    def reset(self) -> None:
        if self.cues is not None:
            self.cues.reset()

    def drawable(self) -> Scene | None:
        """The scene in the pixels of the latest frame placed (for the camera's snapshot), if any."""
        return self._scene

    def place(self, objects: list[DetectedObject], ts: float, w: int, h: int) -> FrameZones | None:
        if self.cues is None:
            return None
        fz = self.cues.observe(objects, ts, w, h)
        self._scene = self.cues.sized(w, h)
        for o, names, kmh in zip(objects, fz.zones, fz.speed_kmh):
            o.zones = names
            if kmh is not None and o.motion is not None:
                o.motion.speed_kmh = round(kmh, 2)
        return fz

    @staticmethod
    def with_flagged_alone(objects: list[DetectedObject], clusters: list[Cluster], fz: FrameZones,
                           grouping: GroupingConfig) -> list[Cluster]:
        grouped = {i for c in clusters for i in c.members}
        alone = [i for i in fz.flagged if i not in grouped and objects[i].class_name in grouping.road_users]
        if not alone:
            return clusters
        out = list(clusters)
        for i in alone:
            b = np.asarray([objects[i].bbox], np.float64)
            out.append(Cluster((i,), tuple(objects[i].bbox), spatial_features(b, [objects[i].class_name])))
        return sorted(out, key=lambda c: c.members[0])

    def annotate(self, groups: list[Group], objects: list[DetectedObject], fz: FrameZones) -> tuple[list[Group], int]:
        """(the groups to publish, how many were dropped for lying entirely in ignore zones)."""
        kept, ignored = [], 0
        scene = self._scene
        for g in groups:
            names, flags, in_ignore, sidewalk = fz.group(g.member_ids)
            if in_ignore:
                ignored += 1
                continue
            g.zones = names
            if flags:
                cues = g.cues or GroupCues(conflict_possible=True)
                cues.flags = sorted(set(cues.flags) | set(flags))
                g.cues = cues
            elif sidewalk:
                if g.cues is None:
                    g.cues = GroupCues(conflict_possible=False)
                else:
                    g.cues.conflict_possible = False
            if scene is not None and scene.calibration is not None and g.cues is not None and g.cues.pair is not None:
                by_id = {o.object_id: o for o in objects}
                a, b = (by_id.get(k) for k in g.cues.pair.object_ids)
                if a is not None and b is not None:
                    pa, pb = footpoints([a.bbox, b.bbox])
                    d = scene.calibration.distance_m(tuple(pa), tuple(pb))
                    if d is not None:
                        g.cues.pair.gap_m = round(d, 2)
            kept.append(g)
        return kept, ignored

    def attach_frames(self, camera_id: str, groups: list[Group], objects: list[DetectedObject], image,
                      capture_ts: float, media_ts: float) -> list[Group]:
        """Frames onto the groups the shadow gate sends as `new` or `suspect` (at the frame's capture time,
        as expand decides); the earlier frames are picked on the media clock. Returns those groups."""
        assert self.history is not None
        tracks = {o.object_id: o.track_id for o in objects}
        out = []
        for g in groups:
            view = view_of(g.group_id, g.member_ids, g.classes, g.bbox, tracks, g.cues)
            if self.gate.check(camera_id, g.group_id, view, capture_ts) not in ("new", "suspect"):
                continue
            frames = group_frames(self.history, media_ts, image, g.bbox, g.crop_size, self.crops)
            if frames:
                g.frames = [GroupFrame(offset_s=min(0.0, f.offset_s), kind=f.kind, jpeg_b64=f.crop.jpeg_b64,  # type: ignore[arg-type]
                                       size=f.crop.size) for f in frames]
                out.append(g)
        return out
