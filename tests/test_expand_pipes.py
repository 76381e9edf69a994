"""`hazardctl expand` over pipes and files, run as a real process, plus the line transport under it.

Fixtures are detection results from hazardctl.synthetic written to files; the process is the real
CLI (`python -m hazardctl.cli expand`), so argument parsing, signal handling and exit codes are
exercised as a user meets them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from hazardctl.errors import DeliveryError
from hazardctl.messages import TASK_ID_NAMESPACE, AssessmentTask, DeadLetter, DetectionResult
from hazardctl.synthetic import detection
from hazardctl.transports.pipes import MAX_LINE_BYTES, READ_AHEAD_LINES, LineInput, LineOutput
from tests.conftest import HAZARDCTL, ROOT

pytestmark = pytest.mark.timeout(120)

T0 = 1_800_000_000.0


# ---------------------------------------------------------------- running the real process


def start(tmp_path: Path, args: list[str], stdin: Path | int | None = None, tag: str = "run") -> subprocess.Popen:
    """Start `hazardctl expand ARGS`; stdout/stderr go to files (no pipe to deadlock on)."""
    out, err = open(tmp_path / f"{tag}.out", "wb"), open(tmp_path / f"{tag}.err", "wb")
    src = open(stdin, "rb") if isinstance(stdin, Path) else stdin
    p = subprocess.Popen([*HAZARDCTL, "expand", *args], cwd=ROOT, stdin=src, stdout=out, stderr=err)
    p.tag = tag
    for f in (out, err, src if isinstance(stdin, Path) else None):
        if f is not None:
            f.close()
    return p


def finish(tmp_path: Path, p: subprocess.Popen, timeout: float = 60.0):
    """Wait for the process; returns (exit code, stdout lines, stderr lines)."""
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"{p.tag}: still running after {timeout}s") from None
    out = (tmp_path / f"{p.tag}.out").read_bytes().splitlines()
    err = (tmp_path / f"{p.tag}.err").read_bytes().splitlines()
    return p.returncode, out, err


def peak_rss_mib(pid: int) -> float:
    """VmHWM of the process's own memory map. (ru_maxrss from wait4 is useless here: Linux carries
    the parent's peak over fork + exec, so every child would report pytest's own peak.)"""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def dead_letters(err_lines: list[bytes]) -> list[DeadLetter]:
    return [DeadLetter.model_validate_json(line) for line in err_lines if line.startswith(b"{")]


def log_lines(err_lines: list[bytes]) -> list[str]:
    return [line.decode("utf-8", "replace") for line in err_lines if not line.startswith(b"{")]


def tasks(out_lines: list[bytes]) -> list[AssessmentTask]:
    return [AssessmentTask.model_validate_json(line) for line in out_lines]  # strict: every task validates


def jsonl(dets: list[DetectionResult]) -> bytes:
    return b"".join(d.model_dump_json().encode() + b"\n" for d in dets)


# ---------------------------------------------------------------- the fixture scenario


def scenario() -> tuple[list[DetectionResult], set[tuple[str, str, str]]]:
    """Two cameras, 25 frames 1 s apart, 3 groups each; what the classic gate must send.

    Classic gate: refresh 10 s, TTL 30 s, IoU 0.5. Synthetic groups drift 2 px per frame, far too
    little to count as a change within 10 frames, so an unchanged group is sent at frames 0, 10, 20.
    On cam-a, group g2 gains a bus from frame 5 on: `changed` at 5, then refreshed at 15.
    cam-b's capture time is 0.3 s before its frame time, to show the deadline counts from capture.
    Frame 12 of cam-b has no groups at all.
    """
    dets, expected = [], set()
    for f in range(25):
        for cam in ("cam-a", "cam-b"):
            d = detection(cam, f, T0 + f, groups=3, seed=f)
            if cam == "cam-b":
                d.times.capture = d.frame_ts - 0.3
                if f == 12:
                    d.groups = []
            if cam == "cam-a" and f >= 5:
                d.groups[1].classes = [*d.groups[1].classes, "bus"]
            dets.append(d)
    for cam in ("cam-a", "cam-b"):
        for g in (1, 2, 3):
            frames = {0: "new", 5: "changed", 15: "refresh"} if (cam, g) == ("cam-a", 2) else \
                {0: "new", 10: "refresh", 20: "refresh"}
            expected |= {(f"{cam}:{f}", f"{cam}-g{g}", reason) for f, reason in frames.items()}
    return dets, expected


def test_expand_emits_one_task_per_unsuppressed_group_with_deterministic_ids(tmp_path):
    dets, expected = scenario()
    src = tmp_path / "detections.jsonl"
    src.write_bytes(jsonl(dets))
    by_id = {d.message_id: d for d in dets}
    # run 1: `hazardctl expand < detections.jsonl > tasks.jsonl`; run 2: --in/--out files; in parallel
    # the classic gate: refreshes exactly 10 s after the last send (the danger gate's phase grid and
    # motion cues are pinned in tests/test_gating.py; these groups carry no cues)
    p1 = start(tmp_path, ["--gate", "classic"], stdin=src, tag="stdin")
    p2 = start(tmp_path, ["--gate", "classic", "--in", str(src), "--out", str(tmp_path / "tasks2.jsonl")], tag="files")
    rc1, out1, err1 = finish(tmp_path, p1)
    rc2, out2, err2 = finish(tmp_path, p2)
    assert (rc1, rc2) == (0, 0), (err1, err2)
    assert out2 == []
    out2 = (tmp_path / "tasks2.jsonl").read_bytes().splitlines()
    assert dead_letters(err1) == [] and dead_letters(err2) == []
    assert any(b"gate starts empty" in ln and b"nothing to re-read" in ln for ln in err1), "pipes: the stage says so"

    t1, t2 = tasks(out1), tasks(out2)
    assert {(t.detection_id, t.group.group_id, t.reason) for t in t1} == expected
    assert len(t1) == len(expected), "exactly one task per unsuppressed group"
    assert [t.task_id for t in t1] == [t.task_id for t in t2], "same input, same ids, same order"
    for t in t1:
        assert t.task_id == str(uuid.uuid5(TASK_ID_NAMESPACE, f"{t.detection_id}\x1f{t.group.group_id}"))
        det = by_id[t.detection_id]
        assert t.camera_id == det.camera_id and t.frame_id == det.frame_id and t.frame_ts == det.frame_ts
        assert t.deadline == pytest.approx(det.times.capture + 10.0)
        assert t.group == next(g for g in det.groups if g.group_id == t.group.group_id)
        assert [o.object_id for o in t.objects] == t.group.member_ids
        assert t.times.capture == det.times.capture and t.times.detect == det.times.detect
        assert abs(t.times.expand - time.time()) < 300, "expand stamps its own (wall clock) time"
    assert any(f"in=50 out={len(expected)} dead_letters=0" in line for line in log_lines(err1)), log_lines(err1)


def test_minimal_and_loosely_typed_detections_are_valid_input(tmp_path):
    """Fields with defaults (groups, objects, times) may be left out: no dead letter, no crash;
    without a capture time the deadline counts from the frame time. Values that validation
    coerces ("3" for an object id) still find their objects."""
    base = {"message_id": "m", "camera_id": "cam-min", "frame_id": 1, "frame_ts": T0, "frame_width": 640,
            "frame_height": 480, "detector": {"model": "x"}}
    group = json.loads(detection("cam-min", 1, T0, groups=1).groups[0].model_dump_json())
    loose = json.loads(detection("cam-loose", 1, T0, groups=1).model_dump_json())
    for o in loose["objects"]:
        o["object_id"] = str(o["object_id"])
    lines = [
        {**base, "message_id": "no-groups"},
        {**base, "message_id": "no-objects-no-times", "groups": [group]},
        loose,
    ]
    src = tmp_path / "minimal.jsonl"
    src.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    rc, out, err = finish(tmp_path, start(tmp_path, ["--in", str(src)]))
    assert rc == 0, log_lines(err)
    assert dead_letters(err) == []
    minimal, loose_task = tasks(out)
    assert (minimal.detection_id, minimal.group.group_id, minimal.reason) == \
        ("no-objects-no-times", "cam-min-g1", "new")
    assert minimal.objects == [] and minimal.deadline == T0 + 10.0
    assert minimal.times.capture is None and minimal.times.expand is not None
    assert [o.object_id for o in loose_task.objects] == loose_task.group.member_ids != []


# ---------------------------------------------------------------- bad input corpus


def corpus(tmp_path: Path, huge_bytes: int | None) -> tuple[Path, dict[int, str], list[str]]:
    """Valid lines (each its own camera, so each yields 3 new tasks) around every kind of bad line.

    Returns the file, {line number: expected error_class} and the valid lines' message ids.
    """
    def valid(n: int) -> bytes:
        return detection(f"cam-{n:02d}", 0, T0, groups=3, seed=n).model_dump_json().encode()

    good = valid(0)
    wrong_type = json.loads(good)
    wrong_type["frame_id"] = "seven"
    version = json.loads(good)
    version["schema_version"] = 2
    unknown = json.loads(good)
    unknown["groups"][0]["colour"] = "red"
    lines: list[tuple[bytes, str | None]] = [
        (valid(1), None),
        (good[: len(good) // 2], "malformed_json"),  # truncated
        (valid(2), None),
        (json.dumps(wrong_type).encode(), "validation"),
        (b"", "empty"),
        (b"   \t", "empty"),
        (b"\xff\xfe\x00\x80\x81garbage\xc3(", "malformed_json"),  # not UTF-8 at all
        (json.dumps(version).encode(), "schema_version"),
        (b"[1, 2, 3]", "validation"),  # valid JSON, not an object
        (b"null", "validation"),
        (json.dumps(unknown).encode(), "validation"),
        (good.replace(f'"frame_ts":{T0}'.encode(), b'"frame_ts":NaN'), "validation"),
        (valid(3), None),
    ]
    if huge_bytes:
        huge = detection("cam-huge", 0, T0, groups=1, seed=9).model_dump_json()
        huge = huge.replace('"crop_jpeg_b64":"', '"crop_jpeg_b64":"' + "A" * huge_bytes, 1)
        lines.insert(8, (huge.encode(), "oversized"))
    lines.append((valid(4), None))
    path = tmp_path / ("corpus-huge.jsonl" if huge_bytes else "corpus.jsonl")
    with open(path, "wb") as f:
        f.write(b"\n".join(line for line, _ in lines))  # and no newline after the last line
    bad = {i + 1: cls for i, (_, cls) in enumerate(lines) if cls}
    good_ids = [json.loads(line)["message_id"] for line, cls in lines if cls is None]
    return path, bad, good_ids


def test_every_bad_line_becomes_a_dead_letter_and_the_rest_goes_through(tmp_path):
    """Memory: a 40 MiB line costs at most about the 16 MiB read limit, not the line (compared with
    the same corpus without it, run at the same time). Input comes through a pipe held open until
    every line before the last is handled, so the peak is read while the process is still alive."""
    small, bad_small, _ = corpus(tmp_path, None)
    big, bad, good_ids = corpus(tmp_path, huge_bytes=40 * 1024 * 1024)
    assert MAX_LINE_BYTES < 40 * 1024 * 1024
    runs = {"small": (small, len(bad_small)), "big": (big, len(bad))}
    procs, rss = {}, {}
    for tag, (path, _) in runs.items():
        p = procs[tag] = start(tmp_path, [], stdin=subprocess.PIPE, tag=tag)
        threading.Thread(target=lambda p=p, path=path: (p.stdin.write(path.read_bytes()), p.stdin.flush()),
                         daemon=True).start()
    for tag, (_, n_bad) in runs.items():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # all but the last line (no newline: it waits for EOF)
            err_now = (tmp_path / f"{tag}.err").read_bytes().count(b'{"schema_version"')
            out_now = (tmp_path / f"{tag}.out").read_bytes().count(b"\n")
            if err_now == n_bad and out_now == 3 * (len(good_ids) - 1):
                break
            time.sleep(0.05)
        rss[tag] = peak_rss_mib(procs[tag].pid)
        procs[tag].stdin.close()
    (p_small, rss_small), (p_big, rss_big) = (procs["small"], rss["small"]), (procs["big"], rss["big"])
    rc_s, out_s, err_s = finish(tmp_path, p_small)
    rc, out, err = finish(tmp_path, p_big)
    assert rc == 0 and rc_s == 0, log_lines(err)

    got = tasks(out)
    assert sorted({t.detection_id for t in got}) == sorted(good_ids)
    assert len(got) == 3 * len(good_ids), "every valid line around the bad ones went through"
    assert len(tasks(out_s)) == len(got)

    dls = dead_letters(err)
    assert {d.line: d.error_class for d in dls} == bad, [(d.line, d.error_class, d.reason) for d in dls]
    assert len(dls) == len(bad), "one dead letter per bad line, no more"
    assert {d.line: d.error_class for d in dead_letters(err_s)} == bad_small
    src_lines = big.read_bytes().split(b"\n")
    for d in dls:
        assert d.stage == "expand" and d.source == "stdin" and d.reason and "\n" not in d.reason
        original = src_lines[d.line - 1]
        if d.error_class == "oversized":
            assert "longer than" in d.reason
            assert len(d.payload) <= 4096 and original.startswith(d.payload.encode())
        elif d.payload_encoding == "base64":
            assert base64.b64decode(d.payload).rstrip(b"\n") == original
        else:
            assert d.payload == original.decode()
    reasons = {d.line: d.reason for d in dls}
    assert any("groups.0.colour" in r for r in reasons.values()), "the unknown field is named"
    assert any("frame_id" in r for r in reasons.values()), "the wrongly typed field is named"
    assert "2" in next(d.reason for d in dls if d.error_class == "schema_version")
    assert any("dead_letters=%d" % len(bad) in line for line in log_lines(err))
    # reading up to the limit costs ~2x the limit (readline joins its chunks); holding the 40 MiB line
    # itself (then parsing it) would cost several times the line
    limit_mib = MAX_LINE_BYTES / 2**20
    assert rss_big - rss_small < 2 * limit_mib + 16, f"peak RSS {rss_big:.0f} MiB vs {rss_small:.0f} MiB without it"


def test_dlq_file_receives_the_dead_letters(tmp_path):
    src, bad, good_ids = corpus(tmp_path, None)
    dlq = tmp_path / "dead.jsonl"
    rc, out, err = finish(tmp_path, start(tmp_path, ["--in", str(src), "--dlq", str(dlq)]))
    assert rc == 0, log_lines(err)
    assert dead_letters(err) == [], "with --dlq nothing goes to stderr"
    in_file = [DeadLetter.model_validate_json(line) for line in dlq.read_bytes().splitlines()]
    assert {d.line: d.error_class for d in in_file} == bad
    assert all(d.source == f"file:{src}" for d in in_file)
    assert len(tasks(out)) == 3 * len(good_ids)


@pytest.mark.parametrize("which", ["--dlq", "--out"])
def test_an_output_that_cannot_be_written_is_an_error_not_a_silent_loss(tmp_path, which):
    """/dev/full accepts the open and fails the flush (ENOSPC): the stage must not report success."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    src, _, _ = corpus(tmp_path, None)
    rc, _out, err = finish(tmp_path, start(tmp_path, ["--in", str(src), which, "/dev/full"]))
    text = "\n".join(log_lines(err))
    assert rc == DeliveryError.exit_code, text
    assert "Traceback" not in text
    assert any(line.startswith("hazardctl expand: error:") and "/dev/full" in line for line in log_lines(err)), text


# ---------------------------------------------------------------- SIGTERM while the pipe stays open


def test_sigterm_with_stdin_still_open_drains_and_exits_0(tmp_path):
    dets = [detection(f"cam-{c}", 0, T0, groups=3, seed=c) for c in range(40)]
    p = subprocess.Popen([*HAZARDCTL, "expand"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    try:
        p.stdin.write(jsonl(dets[:20]))
        p.stdin.flush()
        deadline = time.monotonic() + 30
        while len(lines) < 60 and time.monotonic() < deadline:  # the stage is up and working
            time.sleep(0.02)
        assert len(lines) == 60
        p.stdin.write(jsonl(dets[20:]))  # more work arrives; then the stop, mid-stream
        p.stdin.flush()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=15)  # stdin is still open: no EOF will come to end it
        reader.join(5)
        err = p.stderr.read().decode()
    finally:
        p.kill()
        p.stdin.close()
    assert rc == 0, err
    assert "Fatal Python error" not in err
    assert "received SIGTERM: draining" in err
    stats = [line for line in err.splitlines() if "expand: in=" in line][-1]
    n_in = int(stats.split("in=")[1].split()[0])
    n_out = int(stats.split("out=")[1].split()[0])
    assert n_in >= 20 and n_out == 3 * n_in, stats
    assert len(tasks(lines)) == n_out, "every task of every input it took was written before exit"


# ---------------------------------------------------------------- the line transport underneath


def test_line_input_pushes_back_instead_of_buffering_without_bound():
    """A reader that nobody polls stops reading, so the writer blocks (the OS pipe is the backpressure)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    inp = LineInput(os.fdopen(r, "rb"), "pipe")
    line = b"x" * 1023 + b"\n"
    written, stalled = 0, 0
    while stalled < 5 and written < 64 * 1024 * 1024:
        progressed = False
        while True:
            try:
                n = os.write(w, line)
            except BlockingIOError:
                break
            assert n == len(line)
            written += n
            progressed = True
        stalled = 0 if progressed else stalled + 1
        time.sleep(0.02)
    bound = (READ_AHEAD_LINES + 2) * len(line) + 2 * 1024 * 1024  # queue + pipe and read buffers
    assert written < bound, f"the reader took {written >> 20} MiB without anyone polling"

    def drain(n: int) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            got += [rec.value for rec in inp.poll(0.1, 10_000)]
        return got

    assert drain(written // len(line)) == [line] * (written // len(line)), "nothing lost or reordered"
    os.set_blocking(w, True)
    os.write(w, b"after the stall\n")  # the reader woke up again once the queue drained
    assert drain(1) == [b"after the stall\n"]
    os.close(w)
    deadline = time.monotonic() + 5
    while not inp.exhausted and time.monotonic() < deadline:
        assert inp.poll(0.1) == []
    assert inp.exhausted


def test_line_input_numbers_lines_and_cuts_oversized_ones():
    """The line after an oversized one keeps its true number; the oversized one keeps only a head."""
    r, w = os.pipe()
    inp = LineInput(os.fdopen(r, "rb"), "pipe", max_line_bytes=100)
    with os.fdopen(w, "wb") as f:
        f.write(b"one\n" + b"y" * 5000 + b"\n\nlast-without-newline")
    got = []
    deadline = time.monotonic() + 5
    while not inp.exhausted and time.monotonic() < deadline:
        got += inp.poll(0.1)
    assert [(r.line, type(r.value).__name__, len(r.value)) for r in got] == [
        (1, "bytes", 4), (2, "OversizedLine", 101), (3, "bytes", 1), (4, "bytes", 20)]


def test_line_output_reports_delivery_only_after_the_flush(tmp_path):
    path = tmp_path / "out.jsonl"
    out = LineOutput(open(path, "wb"), f"file:{path}", owns_stream=True)
    results: list = []
    out.send(b'{"a":1}', None, results.append)
    out.send(b'{"a":2}', None, results.append)
    assert results == [], "buffered is not delivered"
    out.poll()
    assert results == [None, None]
    assert path.read_bytes() == b'{"a":1}\n{"a":2}\n'
    out.close()


def test_line_output_to_a_closed_pipe_fails_every_unflushed_message():
    r, w = os.pipe()
    out = LineOutput(os.fdopen(w, "wb"), "pipe", owns_stream=True)
    os.close(r)  # downstream went away
    results: list = []
    out.send(b"first", None, results.append)
    out.send(b"second", None, results.append)
    out.poll()
    assert len(results) == 2 and all(isinstance(e, DeliveryError) for e in results), results
    late: list = []
    out.send(b"third", None, late.append)
    out.flush(1.0)
    assert len(late) == 1 and isinstance(late[0], DeliveryError)
    out.close()  # no exception: the failure was already reported
