"""Prometheus metrics of the detect stage (the shared ones are in hazardctl.metrics).

Per camera: frames read / dropped (by reason) / processed and the camera state, so a dashboard
shows at a glance which cameras are stale and why frames are not analysed.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from hazardctl.metrics import LATENCY_BUCKETS

FRAMES_READ = Counter("hazardctl_detect_frames_read_total", "Frames read from a camera", ["camera"])
FRAMES_DROPPED = Counter(
    "hazardctl_detect_frames_dropped_total",
    "Frames read but not published: sampling (between samples at --fps), superseded (a newer frame "
    "came before the detector was free), blank, repeated, undecodable, backpressure (output away)",
    ["camera", "reason"],
)
FRAMES_PROCESSED = Counter("hazardctl_detect_frames_processed_total", "Frames run through the detector", ["camera"])
CAMERA_STATE = Gauge("hazardctl_detect_camera_state", "1 for the camera's current state (live/stale/ended)",
                     ["camera", "state"])
RECONNECTS = Counter("hazardctl_detect_camera_reconnects_total", "Times a stale camera came back", ["camera"])
INFERENCE_SECONDS = Histogram("hazardctl_detect_inference_seconds", "Time of one detector call (one batch)",
                              buckets=LATENCY_BUCKETS)
FRAME_LATENCY = Histogram("hazardctl_detect_frame_latency_seconds",
                          "Capture to publish of one frame (read, wait, detect, group, crop, encode)",
                          buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram("hazardctl_detect_batch_size", "Frames per detector call", buckets=(1, 2, 4, 8, 16, 32))
GROUPS_PER_FRAME = Histogram("hazardctl_detect_groups_per_frame", "Groups found in one frame",
                             buckets=(0, 1, 2, 3, 5, 8, 13, 20))
CROPS_DOWNSIZED = Counter("hazardctl_detect_crops_downsized_total",
                          "Crops encoded smaller than --crop-max-side to keep a message under the size limit")
CROPS_DROPPED = Counter("hazardctl_detect_crops_dropped_total",
                        "Crops left out because the message would not fit under the size limit")
BUFFERED_BYTES = Gauge("hazardctl_detect_buffered_bytes", "Detection results held undelivered (bounded)")
ERRORS = Counter("hazardctl_detect_errors_total", "Frames that failed in the stage (detector or bug)", ["where"])
MOTION_REJECTED = Counter(
    "hazardctl_detect_motion_samples_rejected_total",
    "Track boxes left out of motion estimates: bad_box (non-finite, inverted, huge), bad_time, "
    "time_backwards, jump (faster than any road user: an id switch)",
    ["camera", "reason"],
)
OBJECTS_COASTED = Counter("hazardctl_detect_objects_coasted_total",
                          "Tracked road users the detector missed on a frame, published at the box their motion "
                          "predicts (coasted: one missed frame)", ["camera"])
GROUPS_IGNORED = Counter("hazardctl_detect_groups_ignored_total",
                         "Groups entirely inside the camera's ignore zones, never published", ["camera"])
FRAMES_ATTACHED = Counter("hazardctl_detect_group_frames_total",
                          "Earlier crops and thumbnails attached to groups that will be new or suspect tasks")
FRAMES_LEFT_OUT = Counter("hazardctl_detect_group_frames_dropped_total",
                          "Earlier crops and thumbnails left out to keep a message under the size limit")
INFERENCE_SKIPPED = Counter("hazardctl_detect_inference_skipped_total",
                            "Frames published with the camera's last detections because the motion gate saw "
                            "nothing move (--motion-gate)", ["camera"])
INFERENCE_REGIONAL = Counter("hazardctl_detect_inference_regional_total",
                             "Frames the model ran on only in the regions that moved, the last detections "
                             "standing elsewhere (--motion-regions)", ["camera"])
