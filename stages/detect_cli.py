"""`hazardctl detect`: parse the flags, build DetectConfig, run the stage."""

from __future__ import annotations

from typing import Optional

import typer
from hazardctl.cli_common import KAFKA_CONFIG_HELP, OUT_HELP, command
from hazardctl.errors import ConfigError


@command(
    "detect",
    help="Read cameras, detect road users, group the ones close together, publish detection results "
    "with one JPEG crop per group.\n\n"
    "Example: hazardctl detect --source tests/data/bus.jpg\n\n"
    "Example: hazardctl detect --source rtsp://10.0.0.5/stream1 --camera-id cam-01 --source lobby.mp4 "
    "--camera-id cam-02 --out kafka://detection-results --metrics-port 9101\n\n"
    "Example: hazardctl detect --cameras config/cameras.yaml --out kafka://detection-results "
    "(zones, lane directions, calibration per camera: docs/detect.md#scene-zones-calibration-frames)\n\n"
    "Example (replay MOT-Challenge boxes, no model): hazardctl detect --source mot:MOT17-09 --as-fast-as-possible",
)
def detect_cmd(
    source: Optional[list[str]] = typer.Option(
        None, "--source", metavar="URL|FILE|DEVICE|DIR", help="rtsp:// or http(s):// URL, video file, device index, image folder or image, or "
        "mot:PATH (a MOT-Challenge sequence folder or box .txt, replayed without a model; docs/detect.md); "
        "repeat for several cameras."),
    camera_id: Optional[list[str]] = typer.Option(
        None, "--camera-id", metavar="ID", help="Id of the --source in the same position (default: from the source's name)."),
    cameras: Optional[str] = typer.Option(None, "--cameras", help="Cameras YAML (see config/cameras.yaml)."),
    fps: Optional[float] = typer.Option(None, help="Frames analysed per second per camera (default: 2; mot: the "
                                        "sequence's frameRate, and a bare box file's frame rate)."),
    model: str = typer.Option(".cache/models/centernet-coco.onnx", help="Detector: .onnx (onnxruntime) or .pt "
                              "(ultralytics)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    classes: str = typer.Option("person,bicycle,car,motorcycle,bus,truck,traffic light,stop sign",
                                help="Comma-separated class names the model must know; 'all' for every class."),
    conf: float = typer.Option(0.35, help="Minimum detection confidence."),
    iou: float = typer.Option(0.5, help="NMS IoU threshold."),
    imgsz: Optional[int] = typer.Option(None, help="Detector input's longer side; the shorter keeps the frame's "
                                        "aspect (a multiple of 32) where the model allows. Default: 640 for YOLO; "
                                        "the CenterNet's own 512x512 square (--imgsz 512: 512x288 for a 16:9 "
                                        "camera, 1.7x faster, 92 % of the square's detections)."),
    out: str = typer.Option("-", "--out", help=OUT_HELP),
    metrics_port: Optional[int] = typer.Option(None, help="Serve Prometheus /metrics on this port."),
    metrics_bind: str = typer.Option("127.0.0.1", "--metrics-bind", help="Address of the --metrics-port listener "
                                     "(default: this host only; 0.0.0.0 when Prometheus scrapes from another host)."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible",
                                             help="Files: do not pace at real time, lose no sampled frame."),
    loop: bool = typer.Option(False, "--loop", help="Files: start again at the end."),
    media_clock: bool = typer.Option(False, "--media-clock", help="Files: stamp each frame with its place on the "
                                     "file's own clock (as mot: replays do), so an --as-fast-as-possible run is gated "
                                     "(refreshes, cooldowns) as in real time; latency figures of such a run mean nothing."),
    max_message_bytes: Optional[int] = typer.Option(
        None, help="Keep each result under this size by shrinking crops (default: the Kafka topic's "
        "max.message.bytes, 1000000 for pipes)."),
    buffer_mb: float = typer.Option(64.0, help="Results held undelivered while the output is away; beyond "
                                    "this the oldest are dropped (counted)."),
    batch: int = typer.Option(8, help="Most frames per detector call (frames ready across cameras)."),
    link_k: float = typer.Option(0.75, help="Group road users whose box gap ≤ k × their mean box diagonal."),
    max_group: int = typer.Option(8, help="Split groups with more members than this."),
    group_memory: float = typer.Option(5.0, help="Seconds a camera remembers a group, so one that comes back "
                                       "(or shares a track id with it) keeps its id."),
    crop_max_side: int = typer.Option(768, help="Longest side of a group crop, pixels."),
    jpeg_quality: int = typer.Option(85, help="JPEG quality of crops."),
    track: bool = typer.Option(True, "--track/--no-track", help="Track objects (ByteTrack) for stable group ids."),
    motion: bool = typer.Option(True, "--motion/--no-motion",
                                help="Motion of tracked objects, pair cues (TTC, closing speed) and grouping on "
                                "predicted proximity."),
    horizon: float = typer.Option(3.0, help="Seconds ahead the smallest gap of a pair is predicted (cues, grouping)."),
    min_closing: float = typer.Option(8.0, help="Closing speed (px/s) below which a pair is not approaching "
                                      "(also at least 0.1 × the pair's size per second)."),
    motion_window: float = typer.Option(1.5, help="Seconds of a track's boxes behind its velocity (least squares)."),
    coast: bool = typer.Option(True, "--coast/--no-coast",
                               help="Publish a track the detector missed on one frame at the box its motion "
                                    "predicts (\"coasted\": true), so its pair cues go on."),
    mot_ids: str = typer.Option("keep", help="mot: sources: 'keep' the file's ids as track ids, or 'track' "
                                "them with ByteTrack like a camera."),
    dlq: Optional[str] = typer.Option(None, "--dlq", help="Dead letters (bad mot: lines): default stderr, "
                                      "kafka://dead-letters when --out is Kafka."),
    status_out: Optional[str] = typer.Option(
        None, "--status-out", help="Send each camera's health (live, stale, frozen, blank, ended) here on every "
        "change and as a heartbeat, e.g. kafka://camera-status; consume --camera-status reads it and opens a "
        "camera incident while a camera is down. Default: not sent."),
    heartbeat: float = typer.Option(10.0, help="Seconds between two camera-status heartbeats (--status-out)."),
    snapshot_every: float = typer.Option(10.0, help="Seconds between two camera snapshots (--status-out): a small "
                                         "frame with the zones, lanes and detections drawn on it, shown on consume's "
                                         "page; 0: none."),
    frames: int = typer.Option(3, "--frames", help="Images of a group's region per new or suspect task, the latest "
                               "crop included (earlier crops --frame-spacing apart; 1: the latest crop only)."),
    frame_spacing: float = typer.Option(1.0, "--frame-spacing", help="Seconds between those images."),
    thumbnail: bool = typer.Option(False, "--thumbnail/--no-thumbnail",
                                   help="Also a downscaled whole frame for context (signals, lanes)."),
    image_token_budget: int = typer.Option(
        1024, "--image-token-budget", help="Image tokens per task, all images (one per 28x28 px, Qwen-VL): the "
        "earlier images shrink to fit beside the latest crop."),
    keyframes_only: bool = typer.Option(True, "--keyframes-only/--decode-all",
                                        help="Video files whose keyframes come at least every 1/--fps s: decode "
                                        "only the keyframes and analyse the one nearest each due time "
                                        "(docs/detect.md#decode-only-what-is-needed)."),
    motion_gate: bool = typer.Option(True, "--motion-gate/--no-motion-gate",
                                     help="Skip inference on a frame in which nothing moved since the camera's last "
                                     "analysed frame (a grey frame difference) and repeat its detections; on by "
                                     "default (docs/detect.md#motion-gating)."),
    motion_regions: bool = typer.Option(False, "--motion-regions/--no-motion-regions",
                                        help="With --motion-gate: run the model only on the regions of a frame "
                                        "that moved, the last detections standing elsewhere (a model with a "
                                        "dynamic input size). Off by default: the CenterNet scores a region "
                                        "lower than the whole frame (docs/detect.md#motion-gating)."),
    motion_gate_force: float = typer.Option(2.0, "--motion-gate-force", help="Seconds: with --motion-gate, the "
                                            "model still runs at least this often per camera."),
    motion_gate_min_changed: float = typer.Option(0.001, "--motion-gate-min-changed", help="Fraction of the "
                                                  "downscaled frame's pixels that must change for inference."),
    runtime: str = typer.Option("auto", "--runtime", help="An .onnx model's runtime: onnxruntime, openvino (CPU) "
                                "or auto (openvino on the CPU when installed, else onnxruntime; "
                                "docs/detect-backends.md#runtimes)."),
    precision: str = typer.Option("auto", "--precision", help="With openvino: auto (bf16 on CPUs that have it "
                                  "natively, else f32), f32 or bf16."),
    inference_workers: Optional[int] = typer.Option(
        None, "--inference-workers", help="Detector calls at once, each on its own thread: default one per "
        "physical core on the CPU for an .onnx model (each on one intra-op thread), else 1 "
        "(docs/detect.md#inference-workers)."),
    kafka_config: Optional[str] = typer.Option(None, help=KAFKA_CONFIG_HELP),
) -> None:
    from hazardctl.cues import CueConfig
    from hazardctl.grouping import GroupingConfig
    from hazardctl.kinematics import KinematicsConfig
    from hazardctl.metrics import serve_metrics
    from hazardctl.transports import Endpoints

    try:
        import stages.detect as detect
        from stages.detect.crops import CropConfig
        from stages.detect.frames import FramesConfig
        from stages.detect.motion_gate import MotionGateConfig
        from stages.detect.sources import ReaderSettings, load_cameras, make_spec, unique_ids
    except ImportError as e:  # cv2/numpy are the [detect] extra
        raise ConfigError(f"detect needs the [detect] extra ({e}); pip install 'hazardctl[detect]'") from None

    if bool(source) == bool(cameras):
        raise ConfigError("give either --source (repeatable) or --cameras FILE")
    if cameras:
        specs = load_cameras(cameras, fps, loop or None)
    else:
        ids = list(camera_id or [])
        if len(ids) > len(source):
            raise ConfigError(f"{len(ids)} --camera-id for {len(source)} --source")
        ids += [None] * (len(source) - len(ids))
        specs = unique_ids([make_spec(s, i, fps, loop) for s, i in zip(source, ids)],
                           {i for i in ids if i})
    class_list = None if classes.strip().lower() == "all" else tuple(c.strip() for c in classes.split(",") if c.strip())
    for name, value, ok in (("--batch", batch, batch >= 1), ("--link-k", link_k, link_k > 0),
                            ("--max-group", max_group, max_group >= 2), ("--buffer-mb", buffer_mb, buffer_mb > 0),
                            ("--crop-max-side", crop_max_side, crop_max_side >= 64),
                            ("--jpeg-quality", jpeg_quality, 1 <= jpeg_quality <= 100),
                            ("--horizon", horizon, 0 < horizon <= 60), ("--min-closing", min_closing, min_closing >= 0),
                            ("--motion-window", motion_window, 0 < motion_window <= 30),
                            ("--mot-ids", mot_ids, mot_ids in ("keep", "track")),
                            ("--group-memory", group_memory, 0 < group_memory <= 600),
                            ("--heartbeat", heartbeat, heartbeat > 0), ("--snapshot-every", snapshot_every,
                                                                         snapshot_every >= 0),
                            ("--frames", frames, 1 <= frames <= 10), ("--frame-spacing", frame_spacing, frame_spacing > 0),
                            ("--image-token-budget", image_token_budget, image_token_budget >= 16),
                            ("--motion-gate-force", motion_gate_force, 0 < motion_gate_force <= 3600),
                            ("--motion-gate-min-changed", motion_gate_min_changed, 0 <= motion_gate_min_changed < 1),
                            ("--inference-workers", inference_workers, inference_workers is None or 1 <= inference_workers <= 64),
                            ("--runtime", runtime, runtime in ("auto", "onnxruntime", "openvino")),
                            ("--precision", precision, precision in ("auto", "f32", "bf16"))):
        if not ok:
            raise ConfigError(f"{name} {value}: out of range")
    cfg = detect.DetectConfig(
        cameras=tuple(specs), out=out, model=model, device=device, classes=class_list, conf=conf, iou=iou,
        imgsz=imgsz, track=track, max_batch=batch, max_message_bytes=max_message_bytes,
        buffer_bytes=int(buffer_mb * 1024 * 1024),
        grouping=GroupingConfig(link_k=link_k, max_size=max_group),
        crops=CropConfig(max_side=crop_max_side, jpeg_quality=jpeg_quality),
        reader=ReaderSettings(realtime=not as_fast_as_possible, media_clock=media_clock,
                              keyframes_only=keyframes_only),
        group_memory_s=group_memory, motion=motion,
        kinematics=KinematicsConfig(window_s=motion_window, **({} if coast else {"coast_intervals": 0.0})),
        cues=CueConfig(horizon_s=horizon, min_closing_px_s=min_closing), mot_ids=mot_ids, dlq=dlq,
        status_out=status_out, heartbeat_s=heartbeat, snapshot_s=snapshot_every,
        frames=FramesConfig(count=frames, spacing_s=frame_spacing, thumbnail=thumbnail,
                            token_budget=image_token_budget),
        motion_gate=MotionGateConfig(force_every_s=motion_gate_force, min_changed=motion_gate_min_changed,
                                     regions=motion_regions)
        if motion_gate else None,
        inference_workers=inference_workers, runtime=runtime, precision=precision,
    )
    serve_metrics(metrics_port, metrics_bind)
    detect.run(cfg, endpoints=Endpoints(kafka_config))
