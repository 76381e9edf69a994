"""Inference workers: several detector calls at once, each on one core, and the frames' results (issue 21).

One onnxruntime session with two intra-op threads runs a 512x288 CenterNet frame in 22 ms of wall
time but 35 ms of CPU, and its second thread spins between calls; two threads each running the same
session with one intra-op thread finish 1.3x more frames per second on two cores (27 ms of CPU per
frame; measured on the 2-core Xeon, docs/detect-backends.md). So on the CPU the stage hands frames to
one worker per physical core (and one more), each call on one thread.

A worker also turns its frames into results (tracking, motion, groups, crops, JSON): the main thread
only takes frames, asks the motion gate and sends what the workers made. The JPEG crops (the largest
cost after inference) and inference run in parallel; the Python parts share the GIL. The stage never
gives a camera's next frame to a worker while its previous one is still there, so each camera's
state is touched by one thread at a time and its results leave in order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def physical_cores() -> int:
    """Cores (not hyper-threads) this process may use: what onnxruntime sizes its pool by."""
    pairs = set()
    for d in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        try:
            pairs.add(((d / "physical_package_id").read_text().strip(), (d / "core_id").read_text().strip()))
        except OSError:
            pass
    cores = len(pairs) or os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = cores
    return max(1, min(cores, allowed))


def default_workers(device: str, thread_safe: bool) -> int:
    """On the CPU, for a detector that may be called from several threads at once: one worker per
    physical core and one more, so that a core never waits while a worker does the Python part of its
    frame (tracking, groups, JSON: measured, 2 workers sustained 22-26 cameras on 2 cores with 0.4 of a
    core idle, 3 workers 28). One on a GPU (its frames are batched instead) and for any other detector."""
    return physical_cores() + 1 if device == "cpu" and thread_safe else 1


@dataclass
class Job:
    """Frames for one detector call (several only when the detector batches them) and, per frame, the
    regions to look at (None: the whole frame); or frames whose boxes are `given` (no call). A worker
    returns each frame's result in `built`."""

    frames: list[Any]
    regions: list[Sequence[tuple[int, int, int, int]] | None]
    given: list[list[Any]] | None = None
    still: Sequence[tuple[float, float, float, float]] = ()
    """with regions: the camera's last boxes inside them on which nothing moved (motion_gate.merge_boxes)"""
    done_at: float = 0.0
    """when the detector finished (or the boxes were given): the results' `times.detect`"""
    seconds: float = 0.0
    """the detector call's duration"""
    built: list[Any] | None = None
    error: BaseException | None = None


class InferencePool:
    """`workers` threads calling `run(job)`; finished jobs are collected by the main thread."""

    def __init__(self, run: Callable[[Job], list[Any]], workers: int, on_done: Callable[[], None]) -> None:
        self.workers = max(1, workers)
        self._run = run
        self._on_done = on_done
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="detect-infer")
        self._pending: list[tuple[Job, Future]] = []

    @property
    def free(self) -> int:
        return self.workers - len(self._pending)

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def submit(self, job: Job) -> None:
        future = self._executor.submit(self._call, job)
        future.add_done_callback(lambda _f: self._on_done())
        self._pending.append((job, future))

    def _call(self, job: Job) -> Job:
        try:
            job.built = self._run(job)
        except Exception as e:  # noqa: BLE001 -- reported by the main thread with the frames it lost
            job.error = e
        return job

    def finished(self, wait_s: float = 0.0) -> list[Job]:
        """Jobs done now (or within wait_s when none is), in the order they were given."""
        if wait_s > 0 and self._pending:
            wait([f for _, f in self._pending], timeout=wait_s, return_when=FIRST_COMPLETED)
        done, pending = [], []
        for job, f in self._pending:
            (done if f.done() else pending).append((job, f))
        self._pending = pending
        return [job for job, _ in done]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)

