"""`hazardctl detect --source mot:PATH`: MOT-Challenge boxes replayed through kinematics, grouping and
cues with no model (real subprocesses), and the box-file parser on its own."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from hazardctl.messages import DeadLetter, DetectionResult
from stages.detect.mot_format import mot_info, parse_boxes, parse_line
from tests.conftest import HAZARDCTL, ROOT

pytestmark = pytest.mark.timeout(60)

# A car (id 11) drives right at 100 px/s (50 px per frame at 2 fps) towards a pedestrian (id 22)
# standing 390 px ahead of its front, in the same band of y; a distractor (class 8) is ignored;
# a bus (COCO name in column 10) parks far away; line 4 is not a box.
RATE = 2.0
CAR_X0, PED_X = 150.0, 700.0


def write_sequence(folder: Path, frames: int = 8, rate: float = RATE, bad_line: bool = True) -> Path:
    (folder / "gt").mkdir(parents=True)
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname=crossing\nimDir=img1\nframeRate={rate:g}\nseqLength={frames}\n"
        "imWidth=1280\nimHeight=720\nimExt=.jpg\n")
    lines = []
    for k in range(1, frames + 1):
        t = (k - 1) / rate
        lines.append(f"{k},11,{CAR_X0 + 100 * t:.1f},300,160,90,1,3,1")
        lines.append(f"{k},22,{PED_X},290,40,100,1,1,0.8")
        lines.append(f"{k},33,1000,600,60,60,0,8,0.1")
        lines.append(f"{k},44,1100,50,150,80,1,-1,1,bus")
    if bad_line:
        lines.insert(3, "2,11,abc,300,160,90,1,3,1")
    (folder / "gt" / "gt.txt").write_text("\n".join(lines) + "\n")
    return folder


def detect(*args: str, timeout: float = 50) -> subprocess.CompletedProcess:
    return subprocess.run([*HAZARDCTL, "detect", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def results(proc: subprocess.CompletedProcess) -> list[DetectionResult]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [DetectionResult.model_validate_json(line) for line in proc.stdout.splitlines()]


def dead_letters(text: str) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(line) for line in text.splitlines() if line.startswith("{")]


def test_replay_gives_motion_cues_and_a_dead_letter_for_the_bad_line(tmp_path):
    seq = write_sequence(tmp_path / "crossing")
    proc = detect("--source", f"mot:{seq}", "--camera-id", "cam-m", "--as-fast-as-possible")
    rs = results(proc)
    assert [r.frame_id for r in rs] == list(range(1, 9))
    assert all((r.camera_id, r.frame_width, r.frame_height, r.detector.model) == ("cam-m", 1280, 720, "mot") for r in rs)
    # capture times follow the file's frame rate, not the wall clock
    assert [round(b.frame_ts - a.frame_ts, 6) for a, b in zip(rs, rs[1:])] == [0.5] * 7
    first, last = rs[0], rs[-1]
    assert sorted((o.track_id, o.class_name) for o in first.objects) == [(11, "car"), (22, "person"), (44, "bus")]
    assert all(o.motion is None for o in first.objects)  # first sighting
    car = next(o for o in last.objects if o.track_id == 11)
    ped = next(o for o in last.objects if o.track_id == 22)
    assert car.motion.vx == pytest.approx(100.0, abs=0.5) and car.motion.vy == 0.0 and car.motion.samples == 4
    assert ped.motion.speed == 0.0 and ped.motion.stopped_s == pytest.approx(3.0)
    # frame 8 (t = 3.5 s): car front at 150 + 350 + 160 = 660 px, 40 px from the pedestrian → TTC 0.4 s
    (g,) = [g for g in last.groups if set(g.member_ids) == {car.object_id, ped.object_id}]
    assert g.crop_jpeg_b64 is None and g.cues.conflict_possible
    assert g.cues.min_ttc_s == pytest.approx(0.4, abs=0.01)
    assert g.cues.pair.kind == "vehicle-pedestrian" and g.cues.pair.object_ids == (car.object_id, ped.object_id)
    assert g.cues.max_closing_speed == pytest.approx(100.0, abs=0.5)
    # frame 2: the car is 340 px away (beyond 0.75 × size ≈ 110 px) but within 40 px in 3 s: grouped already
    second = rs[1]
    assert any(len(g.member_ids) == 2 and g.cues and g.cues.conflict_possible for g in second.groups)
    (dl,) = dead_letters(proc.stderr)
    assert (dl.stage, dl.error_class, dl.line, dl.payload) == ("detect", "bad_mot_line", 4, "2,11,abc,300,160,90,1,3,1")
    assert "bb_left" in dl.reason and dl.source.endswith("gt/gt.txt") and dl.key == "cam-m"


def test_no_motion_flag_gives_the_old_output(tmp_path):
    seq = write_sequence(tmp_path / "crossing", bad_line=False)
    rs = results(detect("--source", f"mot:{seq}", "--as-fast-as-possible", "--no-motion"))
    assert rs[0].camera_id == "crossing"
    assert all(o.motion is None for r in rs for o in r.objects)
    assert all(g.cues is None for r in rs for g in r.groups)
    assert not rs[1].groups  # without predicted proximity the far car is alone


def test_a_bare_box_file_needs_fps_and_takes_its_frame_size_from_the_boxes(tmp_path):
    box_file = tmp_path / "boxes.txt"
    box_file.write_text("1,1,10,20,30,40\n2,1,20,20,30,40\n3,1,30,20,30,40\n")
    proc = detect("--source", f"mot:{box_file}", "--as-fast-as-possible")
    assert proc.returncode == 2 and "--fps" in proc.stderr and "Traceback" not in proc.stderr
    rs = results(detect("--source", f"mot:{box_file}", "--fps", "4", "--as-fast-as-possible"))
    assert [(r.frame_id, r.frame_width, r.frame_height) for r in rs] == [(1, 60, 60), (2, 60, 60), (3, 60, 60)]  # rightmost edge 30 + 30
    assert rs[2].frame_ts - rs[0].frame_ts == pytest.approx(0.5)
    assert rs[2].objects[0].class_name == "person" and rs[2].objects[0].motion.vx == pytest.approx(40.0)


def test_a_line_that_is_not_utf8_is_a_dead_letter_with_its_bytes(tmp_path):
    import base64

    box_file = tmp_path / "boxes.txt"
    box_file.write_bytes(b"1,1,10,20,30,40\n2,1,\xe9t\xe9,20,30,40\n3,1,30,20,30,40\n")
    proc = detect("--source", f"mot:{box_file}", "--fps", "2", "--as-fast-as-possible")
    assert len(results(proc)) == 3
    (dl,) = dead_letters(proc.stderr)
    assert dl.line == 2 and dl.payload_encoding == "base64"
    assert base64.b64decode(dl.payload) == b"2,1,\xe9t\xe9,20,30,40"


def test_missing_path_is_one_line_exit_2(tmp_path):
    proc = detect("--source", f"mot:{tmp_path / 'nope'}")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_fps_below_the_frame_rate_samples_frames_and_speeds_stay_right(tmp_path):
    seq = write_sequence(tmp_path / "fast", frames=20, rate=10.0, bad_line=False)
    rs = results(detect("--source", f"mot:{seq}", "--fps", "2", "--as-fast-as-possible"))
    assert [r.frame_id for r in rs] == [1, 6, 11, 16]
    car = next(o for o in rs[-1].objects if o.class_name == "car")
    assert car.motion.vx == pytest.approx(100.0, abs=0.5)


def test_a_cameras_yaml_entry_replays_at_the_sequence_rate_not_the_files_default_fps(tmp_path):
    seq = write_sequence(tmp_path / "fast", frames=4, rate=10.0, bad_line=False)
    cams = tmp_path / "cameras.yaml"
    cams.write_text(f"fps: 2\ncameras:\n  - id: replay-1\n    source: mot:{seq}\n")
    rs = results(detect("--cameras", str(cams), "--as-fast-as-possible"))
    assert [r.frame_id for r in rs] == [1, 2, 3, 4] and {r.camera_id for r in rs} == {"replay-1"}
    assert rs[1].frame_ts - rs[0].frame_ts == pytest.approx(0.1)


def test_mot_ids_track_runs_the_boxes_through_bytetrack(tmp_path):
    seq = write_sequence(tmp_path / "crossing", bad_line=False)
    rs = results(detect("--source", f"mot:{seq}", "--as-fast-as-possible", "--mot-ids", "track"))
    ids = {o.track_id for r in rs[1:] for o in r.objects}
    assert None not in ids and not ids & {11, 22, 44}  # ByteTrack's own ids, not the file's
    car = next(o for o in rs[-1].objects if o.class_name == "car")
    assert car.motion.vx == pytest.approx(100.0, abs=0.5)


def test_dead_letters_to_a_file_and_realtime_pacing(tmp_path):
    seq = write_sequence(tmp_path / "crossing", frames=6, rate=10.0)
    dlq = tmp_path / "dead.jsonl"
    t0 = time.monotonic()
    rs = results(detect("--source", f"mot:{seq}", "--dlq", str(dlq)))
    assert time.monotonic() - t0 >= 0.5  # 6 frames at 10 fps, paced: the last is due 0.5 s after the first
    assert len(rs) == 6
    (dl,) = dead_letters(dlq.read_text())
    assert dl.line == 4


@pytest.mark.kafka
def test_over_kafka_results_keyed_by_camera_and_the_bad_line_on_the_dead_letter_topic(tmp_path, make_topic,
                                                                                       hazardctl_env):
    from tests.kafka_util import consume_until

    out, dead = make_topic("mot-out", 1), make_topic("mot-dead", 1)
    seq = write_sequence(tmp_path / "crossing")
    proc = subprocess.run([*HAZARDCTL, "detect", "--source", f"mot:{seq}", "--camera-id", "cam-k",
                           "--as-fast-as-possible", "--out", f"kafka://{out}", "--dlq", f"kafka://{dead}"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=hazardctl_env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bootstrap = hazardctl_env["HAZARDCTL_KAFKA_BOOTSTRAP"]
    msgs = consume_until(bootstrap, out, lambda ms: len(ms) >= 8, timeout=30)
    assert len(msgs) == 8 and {m.key() for m in msgs} == {b"cam-k"}
    last = DetectionResult.model_validate_json(msgs[-1].value())
    assert any(g.cues and g.cues.conflict_possible for g in last.groups)
    (letter,) = consume_until(bootstrap, dead, lambda ms: len(ms) >= 1, timeout=30)
    dl = DeadLetter.model_validate_json(letter.value())
    assert (dl.line, dl.error_class, letter.key()) == (4, "bad_mot_line", b"cam-k")


def test_schema_shows_motion_and_cues():
    proc = subprocess.run([*HAZARDCTL, "schema", "detection-result"], capture_output=True, text=True, cwd=ROOT,
                          timeout=30)
    schema = json.loads(proc.stdout)
    defs = schema["$defs"]
    assert {"vx", "vy", "speed", "heading_deg", "stopped_s", "samples"} <= set(defs["Motion"]["properties"])
    assert "motion" in defs["DetectedObject"]["properties"] and "cues" in defs["Group"]["properties"]
    assert {"ttc_s", "closing_speed", "min_gap", "min_gap_in_s"} <= set(defs["PairCue"]["properties"])


# --- the parser alone -----------------------------------------------------------------------------

@pytest.mark.parametrize("line, reason", [
    ("1,2,3,4,5", "columns"),
    ("1,2,3,4,5,6,1,1,1,bus,extra", "columns"),
    ("0,1,10,10,5,5", "frame"),
    ("1.5,1,10,10,5,5", "frame"),
    ("1,1,nan,10,5,5", "bb_left"),
    ("1,1,10,inf,5,5", "bb_top"),
    ("1,1,10,10,-5,5", "bb_width"),
    ("1,1,10,10,5,0", "bb_width and bb_height"),
    ("1,1,1e9,10,5,5", "out of range"),
    ("1,1,10,10,5,5,1,13", "class 13"),
    ("1,1,10,10,5,5,1,1,1,spaceship", "spaceship"),
])
def test_bad_lines_name_their_fault(line, reason):
    with pytest.raises(ValueError, match=reason):
        parse_line(line, None)


def test_classes_map_to_coco_and_the_others_are_ignored():
    def name(line, classes=None):
        box = parse_line(line, classes)
        return None if box is None else box.class_name

    assert [name(f"1,1,0,0,5,5,1,{c},1") for c in (1, 2, 3, 4, 5, 6, 7, 8, 12, -1)] == [
        "person", "person", "car", "bicycle", "motorcycle", None, "person", None, None, "person"]
    assert name("1,1,0,0,5,5,1,3,1,truck") == "truck"
    assert name("1,1,0,0,5,5,1,-1,-1,-1") == "person"  # MOT15: world coordinates, no class
    assert name("1,1,0,0,5,5,1,3,1", frozenset({"person"})) is None  # not asked for


def test_conf_is_a_confidence_only_when_it_looks_like_one():
    assert parse_line("1,1,0,0,5,5,0.6", None).confidence == 0.6
    assert parse_line("1,1,0,0,5,5,0,1,1", None).confidence == 1.0      # gt "ignore" flag
    assert parse_line("1,1,0,0,5,5,37.5", None).confidence == 1.0       # a detector's own scale
    assert parse_line("1,-1,0,0,5,5", None).track_id is None
    assert parse_line("3.0,7.0,1,2,3,4", None).bbox == (1.0, 2.0, 4.0, 6.0)


def test_a_parsed_file_keeps_bad_lines_with_numbers_and_rejects_a_repeated_id():
    seq = parse_boxes(["1,1,0,0,5,5\n", "\n", "x\n", "1,1,9,9,5,5\n", "2,1,1,0,5,5,1,9,1\n", "3,1,2,0,5,5\n"])
    assert [(b.line, b.reason.split()[0]) for b in seq.bad] == [(3, "expected"), (4, "id")]
    assert sorted(seq.frames) == [1, 3] and seq.ignored == 1 and seq.max_id == 1


def test_seqinfo_is_found_beside_or_above_a_box_file(tmp_path):
    seq = write_sequence(tmp_path / "s", bad_line=False)
    info = mot_info(f"mot:{seq / 'gt' / 'gt.txt'}")
    assert (info.name, info.frame_rate, info.width, info.height, info.length) == ("crossing", 2.0, 1280, 720, 8)
    (seq / "seqinfo.ini").write_text("[Sequence]\nframeRate=zero\n")
    with pytest.raises(Exception, match="frameRate"):
        mot_info(f"mot:{seq}")


def test_a_road_user_missed_on_one_frame_is_coasted_and_keeps_its_pair_cue(tmp_path):
    seq = write_sequence(tmp_path / "crossing", bad_line=False)
    gt = seq / "gt" / "gt.txt"
    # the detector loses the car on frame 6 (t = 2.5 s) and the pedestrian on frames 7 and 8
    gt.write_text("".join(line + "\n" for line in gt.read_text().splitlines()
                          if not line.startswith(("6,11,", "7,22,", "8,22,"))))
    rs = results(detect("--source", f"mot:{seq}", "--camera-id", "cam-c", "--as-fast-as-possible"))
    six, seven, eight = rs[5], rs[6], rs[7]
    car = next(o for o in six.objects if o.track_id == 11)
    assert car.coasted is True and car.object_id == len(six.objects) - 1  # appended: detected ids keep their meaning
    assert car.bbox[0] == pytest.approx(CAR_X0 + 100 * 2.5, abs=1.0)  # where 100 px/s puts it
    (g,) = [g for g in six.groups if car.object_id in g.member_ids]
    ped = next(o for o in six.objects if o.track_id == 22)
    assert ped.coasted is None and ped.object_id in g.member_ids
    assert g.cues.pair.object_ids == (car.object_id, ped.object_id)
    assert g.cues.min_ttc_s == pytest.approx(1.4, abs=0.02)  # front 150 + 250 + 160 = 560 px, 140 px at 100 px/s
    ped7 = next(o for o in seven.objects if o.track_id == 22)
    assert ped7.coasted is True and not any(o.coasted for o in seven.objects if o.track_id == 11)
    # a second missed frame in a row is not guessed: the pedestrian is absent from frame 8
    assert all(o.track_id != 22 for o in eight.objects)
    off = results(detect("--source", f"mot:{seq}", "--camera-id", "cam-c", "--as-fast-as-possible", "--no-coast"))
    assert [len(r.objects) for r in off] == [len(r.objects) - sum(bool(o.coasted) for o in r.objects) for r in rs]
    assert not any(o.coasted for r in off for o in r.objects)


def test_an_id_switch_is_not_coasted_beside_the_new_id(tmp_path):
    seq = write_sequence(tmp_path / "crossing", bad_line=False)
    gt = seq / "gt" / "gt.txt"
    # from frame 6 on the tracker calls the pedestrian 77: track 22 is gone, a box of its class is where it was
    gt.write_text("".join((line.replace(",22,", ",77,", 1) if int(line.split(",")[0]) >= 6 else line) + "\n"
                          for line in gt.read_text().splitlines()))
    rs = results(detect("--source", f"mot:{seq}", "--camera-id", "cam-s", "--as-fast-as-possible"))
    people = [(o.track_id, o.coasted) for o in rs[5].objects if o.class_name == "person"]
    assert people == [(77, None)]  # no ghost of 22 on top of 77
