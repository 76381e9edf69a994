"""`hazardctl zones preview`: a PNG of one camera frame with the camera's zones, lane arrows,
calibration grid and the frame's detections drawn on it (tools/zones_preview.py)."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import command
from hazardctl.errors import ConfigError


@command(
    "zones",
    help="Check a camera's scene config against its view: `zones preview` writes a PNG of one frame with the "
    "zones (tinted by kind), lane arrows, the calibration's ground grid (1 m, bold every 5 m) and that frame's "
    "detections with the zones their ground points are in; the config is validated first (bad zones: one line, "
    "exit 2).\n\n"
    "Example: hazardctl zones preview --cameras config/cameras.yaml --camera junction-north "
    "--source snapshot.jpg --out junction-north.png",
)
def zones_cmd(
    action: str = typer.Argument(..., help="preview"),
    camera: str = typer.Option(..., "--camera", help="Camera id in --cameras."),
    cameras: str = typer.Option("config/cameras.yaml", "--cameras", help="Cameras YAML with the camera's zones."),
    source: Optional[str] = typer.Option(None, "--source", metavar="URL|FILE",
                                         help="Where to take the frame (default: the camera's source)."),
    at: float = typer.Option(0.0, "--at", help="Video files: the frame at this many seconds."),
    out: Optional[str] = typer.Option(None, "--out", help="PNG to write (default: zones-CAMERA.png)."),
    model: str = typer.Option(".cache/models/centernet-coco.onnx", help="Detector for the frame's detections."),
    detect: bool = typer.Option(True, "--detect/--no-detect", help="Run the detector on the frame."),
    conf: float = typer.Option(0.35, help="Minimum detection confidence."),
    classes: str = typer.Option("person,bicycle,car,motorcycle,bus,truck", help="Classes to draw."),
) -> None:
    if action != "preview":
        raise ConfigError(f"zones {action}: the only action is preview")
    try:
        import cv2

        from stages.detect.sources import load_cameras
        from tools import zones_preview as zp
    except ImportError as e:
        raise ConfigError(f"zones preview needs the [detect] extra ({e}); pip install 'hazardctl[detect]'") from None
    specs = {s.camera_id: s for s in load_cameras(cameras)}
    spec = specs.get(camera)
    if spec is None:
        raise ConfigError(f"--camera {camera}: not in {cameras} (cameras: {', '.join(specs) or 'none'})")
    if spec.scene is None:
        raise ConfigError(f"{cameras}: camera {camera} has no zones or calibration to preview")
    src = source or spec.uri
    if src.startswith("mot:"):
        raise ConfigError(f"--source {src}: a MOT replay has no image; give --source a frame of the camera")
    image = zp.grab_frame(src, at)
    dets = zp.detect_frame(image, model, [c.strip() for c in classes.split(",") if c.strip()], conf) if detect else []
    drawn, zones_of = zp.draw(image, spec.scene, dets)
    path = out or f"zones-{camera}.png"
    if not cv2.imwrite(path, drawn):
        raise ConfigError(f"--out {path}: cannot write the PNG")
    h, w = image.shape[:2]
    typer.echo(f"{path}: {w}x{h}, {len(spec.scene.zones)} zones"
               + (", calibrated" if spec.scene.calibration is not None else "") + f", {len(dets)} detections")
    for d, names in zip(dets, zones_of):
        typer.echo(f"  {d.class_name} {d.confidence:.2f} [{', '.join(int(round(v)).__str__() for v in d.bbox)}]"
                   f" in {', '.join(names) or 'no zone'}")
