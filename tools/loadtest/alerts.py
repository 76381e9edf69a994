"""The operator's end of the pipeline: a WebSocket client of consume that times every alert.

It connects like the live page does (all cameras), and for every incident event consume pushes
because of a result (`new`, or an `update` that changed what an operator sees; these carry
`consumed_at`) records when it arrived; the incident carries the `times` of that result, so
capture → alert at a client is exact per event. consume's periodic re-sends of unchanged incidents
(no `consumed_at`, older times) are not alerts and are left out, as are the probe camera's events.
"""

from __future__ import annotations

import asyncio
import threading
import time

import orjson

from tools.loadtest.ledger import WARMUP_PREFIX


class AlertWatcher:
    def __init__(self, port: int):
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.lock = threading.Lock()
        self.samples: list[tuple[float, float, str]] = []  # (arrived, capture, task id)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="alerts", daemon=True)

    def start(self) -> "AlertWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    async def _run(self) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, max_size=None, open_timeout=10) as ws:
                while not self._stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    now = time.time()
                    msg = orjson.loads(raw)
                    if msg.get("type") != "incident" or msg.get("event") not in ("new", "update"):
                        continue
                    if msg.get("consumed_at") is None:  # a periodic re-send of an unchanged incident, not an alert
                        continue
                    body = msg["incident"]
                    capture = (body.get("times") or {}).get("capture")
                    if capture and not body.get("camera_id", "").startswith(WARMUP_PREFIX):
                        with self.lock:
                            self.samples.append((now, capture, body.get("task_id", "")))
        except Exception as e:  # consume gone (stopped, killed): what was seen stands
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"

    def latencies(self) -> list[float]:
        with self.lock:
            return [arrived - capture for arrived, capture, _ in self.samples]
