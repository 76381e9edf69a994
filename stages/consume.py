"""consume: risk-assessment results → per-camera state and incidents → WebSocket, HTTP, live page (spec §7).

The life of a result: the input thread polls it and validates it (bad input → dead letter) → the
event loop applies it to the `IncidentBoard` (hazardctl.incidents, pure logic) → each event is
encoded once and fanned out to the subscribed clients (stages.consume_ws) → the record is done
(its offset may be committed): consume's output is its in-memory state and the pushes, so a result
is finished once applied. A 0.5 s tick ends quiet incidents. With a store (--data-dir / --store), the
board's decisions are then handed to the store's writer thread (stages.consume_store), which records
them and the offsets it reached on its own time: the push never waits on the database.

Threads: the input (and the dead-letter output) live on one thread, `InputPump`, because a Kafka
consumer must be used from one thread and a poll must never block the event loop. The event loop
owns the board and the sockets. They meet through `call_soon_threadsafe` (batches in) and a deque
(finished records out).

Restart: with a Kafka input the board is rebuilt before serving by replaying the last `replay_s`
seconds of the results topic with each record's own timestamp (same incidents, same ids, no
events); live records below the replay's end offsets are then marked done without applying them.
With pipes there is nothing to re-read: the state starts empty (see docs/consume.md). With a store
the board starts from the store's open incidents and the replay reads only the gap since the
store's offsets (`replay_into` with a recorder).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput, dead_letter
from hazardctl.errors import ConfigError, DeliveryError, ServiceUnavailable
from hazardctl.camera_watch import CameraWatch
from hazardctl.incidents import BoardConfig, Event, IncidentBoard, RecentResults, result_summary
from hazardctl.messages import RiskAssessmentResult
from hazardctl.transports import Endpoints, Input, Output, Record, Ticket, is_kafka, kafka_topic
from stages.consume_auth import AccessPolicy, Guard, select_subprotocol
from stages.consume_history import IncidentApi
from stages.consume_http import HttpApi, load_page
from stages.consume_listeners import start_http, websocket_port_http
from stages.consume_sinks import SinkOptions
from stages.consume_store import IncidentRecorder, StoreOptions
from stages.consume_ws import Hub, subscription_json

STAGE = "consume"
SHARED_ACTION_MAX_AGE_S = 600.0
"""another instance's action older than this (or than --replay) is not applied: the store has it"""
log = logging.getLogger("hazardctl.consume")

RESULTS = Counter("hazardctl_consume_results_total", "Results applied to the board, by outcome "
                  "(applied, duplicate, late, failed)", ["stage", "outcome"])
EVENTS = Counter("hazardctl_consume_events_total", "Events pushed (once each, whatever the client count), by type",
                 ["stage", "type"])
CLIENTS = Gauge("hazardctl_consume_clients", "WebSocket clients connected", ["stage"])
CLIENTS_DROPPED = Counter("hazardctl_consume_clients_dropped_total", "WebSocket clients closed for being too slow",
                          ["stage"])
INCIDENTS_OPEN = Gauge("hazardctl_consume_incidents_open", "Incidents open now", ["stage"])
CAMERAS = Gauge("hazardctl_consume_cameras", "Cameras with state", ["stage"])
CAMERAS_DOWN = Gauge("hazardctl_consume_cameras_down", "Cameras down now by detect's camera status (stale, frozen, "
                     "blank, or detect silent): each has an open camera incident", ["stage"])
FANOUT = Histogram("hazardctl_consume_fanout_seconds", "From a result read to its events written to every "
                   "client's socket (or backlog)", ["stage"], buckets=metrics.LATENCY_BUCKETS)
ALERT_LATENCY = Histogram("hazardctl_consume_alert_latency_seconds", "Frame capture to incident event pushed "
                          "(end to end)", ["stage"], buckets=metrics.LATENCY_BUCKETS)


@dataclass(frozen=True)
class ConsumeOptions:
    ws_host: str = "127.0.0.1"
    ws_port: int = 8765
    http_host: str | None = None
    http_port: int | None = None
    board: BoardConfig = field(default_factory=BoardConfig)
    client_queue: int = 256
    """messages a client may have waiting behind a full socket before it is dropped"""
    replay_s: float = 120.0
    """Kafka input: rebuild state from this many seconds of the results topic on start (0: off)"""
    cache_size: int = 1000
    exit_on_eof: bool = False
    tick_s: float = 0.5
    max_in_flight: int = 5000
    access: AccessPolicy = field(default_factory=AccessPolicy)
    """bearer token, allowed origins, client limit (stages.consume_auth.Guard)"""
    store: StoreOptions | None = None
    """the incident store (stages.consume_store); None: incidents live in memory only"""
    sinks: SinkOptions | None = None
    """alert sinks (stages.consume_sinks); None: incidents go to WebSocket clients only"""
    camera_status: str | None = None
    """detect's camera-status input (stages.consume_cameras), e.g. kafka://camera-status; None: not read"""
    actions: str | None = None
    """operators' actions shared with the other consume instances (stages.consume_shared_actions), e.g.
    kafka://incident-actions; None: an action reaches this instance's clients only"""


def parse_address(spec: str, flag: str) -> tuple[str, int]:
    """HOST:PORT, :PORT, PORT or [v6]:PORT → (host, port); an empty host means 127.0.0.1."""
    host, sep, port = spec.rpartition(":")
    if not sep:
        host, port = "", spec
    try:
        n = int(port)
        if not 0 <= n <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"{flag} {spec!r}: expected HOST:PORT, e.g. 127.0.0.1:8765") from None
    return host.strip("[]") or "127.0.0.1", n


def parse_result(record: Record) -> RiskAssessmentResult:
    if not record.value.strip():
        raise BadInput("empty line", "empty")
    try:
        return RiskAssessmentResult.model_validate_json(record.value)
    except ValidationError as e:
        raise BadInput.from_validation(e, "risk-assessment result") from None


# ---- the input thread ---------------------------------------------------------------------------

Parsed = tuple[Record, RiskAssessmentResult, float]


class InputPump:
    """Owns the input and the dead-letter output on one thread; hands valid results to the loop."""

    def __init__(self, input_: Input, dlq: Output, deliver: Callable[[list[Parsed]], None],
                 on_end: Callable[[Exception | None], None], *, skip_before: dict | None = None,
                 batch: int = 500, max_in_flight: int = 5000):
        self.input, self.dlq, self.deliver, self.on_end = input_, dlq, deliver, on_end
        self.skip_before = skip_before or {}
        self.batch, self.max_in_flight = batch, max_in_flight
        self.dead_letters = 0
        self.skipped = 0
        self._finished: deque[Record] = deque()
        self._in_flight = 0
        self._stop = threading.Event()
        self._failed: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="consume-input", daemon=True)
        self.started = False

    def start(self) -> None:
        self.started = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def done(self, records: list[Record]) -> None:
        """Called from the event loop once the records are applied."""
        self._finished.extend(records)

    def _finish(self) -> None:
        finished, done = self._finished, self.input.done
        while finished:
            done(finished.popleft())
            self._in_flight -= 1

    def _dead_letter(self, record: Record, err: BadInput) -> None:
        self.dead_letters += 1
        metrics.DEAD_LETTERS.labels(STAGE, err.error_class).inc()
        ticket = Ticket(record, self.input)
        cb = ticket.expect()

        def delivered(exc: Exception | None) -> None:
            if exc is not None and self._failed is None:
                log.error("consume: dead letter not delivered (%s); stopping, the input stays uncommitted", exc)
                self._failed = exc
                self._stop.set()
            cb(exc)

        self.dlq.send(dead_letter(record, STAGE, err.reason, err.error_class).model_dump_json().encode(),
                      record.key, delivered)
        ticket.seal()

    def _run(self) -> None:
        inp, m_in = self.input, metrics.MESSAGES_IN.labels(STAGE)
        paused = False
        try:
            while not self._stop.is_set():
                self._finish()
                if (self._in_flight >= self.max_in_flight) != paused:
                    paused = not paused
                    inp.set_paused(paused)
                    metrics.PAUSED.labels(STAGE).set(int(paused))
                if paused:  # the loop is behind: stop reading (bounded memory), keep serving done()
                    time.sleep(0.005)
                    continue
                records = inp.poll(0.05, self.batch)
                if records:
                    m_in.inc(len(records))
                    now = time.time()
                    batch: list[Parsed] = []
                    for r in records:
                        end = self.skip_before.get((r.topic, r.partition))
                        if end is not None and r.offset is not None and r.offset < end:
                            self.skipped += 1  # covered by the replay on start (or older than it)
                            inp.done(r)
                            continue
                        try:
                            batch.append((r, parse_result(r), now))
                        except BadInput as e:
                            self._dead_letter(r, e)
                    if batch:
                        self._in_flight += len(batch)
                        self.deliver(batch)
                elif inp.exhausted:
                    break
                self.dlq.poll(0)
            deadline = time.monotonic() + 10.0
            while self._in_flight > 0 and time.monotonic() < deadline:  # let the loop apply what it has
                self._finish()
                time.sleep(0.005)
            self._finish()
            left = self.dlq.flush(10.0)
            if left:
                log.error("consume: %d dead letters not delivered; their inputs stay uncommitted", left)
            inp.close()
        except ServiceUnavailable as e:  # expected (Kafka refused our login or certificate): its one line
            self._failed = self._failed or e
        except Exception as e:
            log.exception("consume: input failed")
            self._failed = self._failed or e
        self.on_end(self._failed)


# ---- the event loop side ------------------------------------------------------------------------


class ConsumeService:
    """The board, the recent results and the fan-out, driven from the event loop."""

    def __init__(self, board: IncidentBoard, opts: ConsumeOptions):
        self.board = board
        self.opts = opts
        self.recent = RecentResults(opts.cache_size)
        self.hub = Hub(self.snapshot, max_queue=opts.client_queue, on_drop=CLIENTS_DROPPED.labels(STAGE).inc)
        self.seq = 0
        self.results_in = 0
        self.started = time.time()
        self.input_state = "running"
        self.replayed = 0
        self.pump: InputPump | None = None
        self._events = {k: EVENTS.labels(STAGE, k) for k in
                        ("camera_update", "camera_removed", "incident_new", "incident_update", "incident_end",
                         "incident_ack", "incident_resolve", "incident_false_positive")}
        self.recorder: IncidentRecorder | None = None
        """the incident store's side (None: no store): every decision of the board is handed to it"""
        self._results = {k: RESULTS.labels(STAGE, k) for k in ("applied", "duplicate", "late", "failed")}
        self._out = metrics.MESSAGES_OUT.labels(STAGE)
        self._fanout = FANOUT.labels(STAGE)
        self._alert = ALERT_LATENCY.labels(STAGE)
        self._latency = metrics.STAGE_LATENCY.labels(STAGE)
        self._hops = metrics.Hops(STAGE)
        CLIENTS.labels(STAGE).set_function(lambda: len(self.hub.clients))
        INCIDENTS_OPEN.labels(STAGE).set_function(lambda: len(self.board.open))
        CAMERAS.labels(STAGE).set_function(lambda: len(self.board.cameras))
        self.camera_watch = CameraWatch()
        self.camera_inbox: deque = deque()
        self.actions = None
        """the other instances' actions (stages.consume_shared_actions.ActionShare); None: not shared"""
        self.action_inbox: deque = deque()
        """CameraStatus messages from their input thread, applied by the tick (stages.consume_cameras)"""
        CAMERAS_DOWN.labels(STAGE).set_function(self.camera_watch.down)
        self.sinks = None
        """the alert sinks' dispatcher (stages.consume_sinks): every pushed event is offered to it"""

    def snapshot(self, cameras: frozenset[str] | None) -> bytes:
        return orjson.dumps({"type": "snapshot", "seq": self.seq, "ts": time.time(),
                             "subscription": subscription_json(cameras),
                             "config": {"min_level": self.board.cfg.min_level,
                                        "quiet_period_s": self.board.cfg.quiet_period_s},
                             **self._with_camera_health(self.board.snapshot(cameras), cameras)})

    def _with_camera_health(self, snap: dict, cameras: frozenset[str] | None) -> dict:
        snap["incidents"] += self.camera_watch.open_incidents(cameras)
        snap["camera_health"] = self.camera_watch.views(cameras)
        return snap

    def on_batch(self, batch: list[Parsed]) -> None:
        """Apply a batch of results (event loop thread), push the events, mark the records done."""
        board, recent, results = self.board, self.recent, self._results
        t0 = time.perf_counter()
        now = time.time()
        self.results_in += len(batch)
        hops = self._hops
        for _record, result, consumed_at in batch:
            t = result.times
            t.alert = now  # consume's stamp: the result is applied here (incidents and /results carry it)
            hops.hop("result", "alert", t.result, now)
            if t.capture is not None:
                hops.span("capture_to_alert", now - t.capture)
            applied = board.apply(result, now)
            results[applied.outcome].inc()
            recent.add(result_summary(result, applied.outcome, consumed_at))
            if applied.events:
                for ev in applied.events:
                    self.publish(ev, consumed_at)
                sent = time.time()
                self._fanout.observe(sent - consumed_at)
                hops.hop("alert", "ws_send", now, sent)
                if t.capture is not None:
                    hops.span("capture_to_ws_send", sent - t.capture)
            if self.recorder is not None:  # after the push: the store's writer thread takes it from here
                self.recorder.applied(result, applied, now)
        if self.recorder is not None:
            self.recorder.offsets(batch)
        self._latency.observe((time.perf_counter() - t0) / len(batch))
        if self.pump is not None:
            self.pump.done([b[0] for b in batch])

    def publish(self, ev: Event, consumed_at: float | None = None) -> None:
        self.seq += 1
        now = time.time()
        data = orjson.dumps({"type": ev.kind, "event": ev.action, "seq": self.seq, "ts": now,
                             "consumed_at": consumed_at, ev.kind: ev.body})
        self.hub.publish(ev.camera_id, data)
        if self.sinks is not None:  # one hand-over to the sinks' thread; a slow receiver never slows this
            self.sinks.offer(ev.kind, ev.action, ev.body, now)
        self._events[f"{ev.kind}_{ev.action}"].inc()
        self._out.inc()
        if ev.kind == "incident" and ev.action in ("new", "update"):
            capture = ev.body["times"].get("capture")
            if capture:
                self._alert.observe(now - capture)

    def tick(self) -> None:
        now = time.time()
        events = self.board.tick(now)
        for ev in events:
            self.publish(ev)
        camera_events: list[Event] = []
        while self.camera_inbox:
            camera_events += self.camera_watch.apply(self.camera_inbox.popleft(), now)
        camera_events += self.camera_watch.tick(now)
        for ev in camera_events:
            self.publish(ev)
        while self.action_inbox:
            for a in self.actions.foreign(self.action_inbox.popleft(), now):
                self.apply_shared(a)
        if self.recorder is not None:
            self.recorder.events(events)
            self.recorder.camera_events(camera_events)
            self.recorder.maybe_prune(now)

    def act(self, incident_id: str, action: str, note: str | None, actor: str | None = None) -> dict | None:
        """An operator's action on an incident the board or the camera watch holds: applied, pushed to every
        client of its camera (`incident` event `ack` / `resolve` / `false_positive`), recorded and shared;
        the incident as shown, or None when neither holds it (stages.consume_history asks the store)."""
        now = time.time()
        shown = self._apply_action(incident_id, action, note, actor, now)
        if shown is not None:
            self.share(incident_id, shown["camera_id"], action, note, actor, now)
        return shown

    def _apply_action(self, incident_id: str, action: str, note: str | None, actor: str | None,
                      at: float, record_unheld: bool = False) -> dict | None:
        """An action on the board's incident, else on a camera outage (hazardctl/camera_watch.py): its
        events pushed and the action recorded (with `record_unheld`, also when neither holds it: the
        store patches its row); the incident as shown, or None when neither holds it."""
        inc, events = self.board.act(incident_id, action, at)
        shown = inc.as_dict(crop=False) if inc is not None else None
        if inc is None:
            shown, events = self.camera_watch.act(incident_id, action, at)
        for ev in events:
            self.publish(ev)
        if self.recorder is not None and (shown is not None or record_unheld):
            self.recorder.action(incident_id, action, note, at, shown, actor)
        return shown

    def share(self, incident_id: str, camera_id: str, action: str, note: str | None, actor: str | None,
              at: float) -> None:
        """Tell the other consume instances (`--actions`) of an action taken here."""
        if self.actions is not None:
            self.actions.publish(incident_id, camera_id, action, note, actor, at)

    def apply_shared(self, a) -> None:
        """Another instance's action (an IncidentAction): on this board and its clients, and in this store
        (idempotent rows: a store shared with the origin keeps it once)."""
        self._apply_action(a.incident_id, a.action, a.note, a.actor, a.at, record_unheld=True)

    def health(self) -> dict:
        ok = self.input_state != "failed"
        return {"status": "ok" if ok else "failing", "input": self.input_state, "seq": self.seq,
                "cameras": len(self.board.cameras), "incidents_open": len(self.board.open),
                "clients": len(self.hub.clients), "clients_dropped": self.hub.dropped,
                "results_cached": len(self.recent), "replayed": self.replayed,
                "dead_letters": self.pump.dead_letters if self.pump else 0,
                "uptime_s": round(time.time() - self.started, 1),
                **({"actions_shared": self.actions.sent, "actions_applied": self.actions.applied}
                   if self.actions is not None else {}),
                **(self.recorder.health() if self.recorder is not None else {})}


def metrics_response() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


# ---- start, serve, stop -------------------------------------------------------------------------


def replay_into(board: IncidentBoard, endpoints: Endpoints, topic: str, window_s: float,
                recorder: IncidentRecorder | None = None) -> tuple[dict, int]:
    """Rebuild the board from the last `window_s` seconds of `topic`; returns (end offsets, count).
    With a store: only the gap since the store's offsets (partitions it has none for: the window), and
    what is applied is recorded."""
    t0 = time.monotonic()
    window_start = time.time() - window_s
    since, stored = (recorder.replay_plan(topic, window_s, time.time()) if recorder is not None
                     else (window_start, {}))
    replay = endpoints.kafka.replay(topic, since)
    n = 0
    try:
        for records in replay.batches():
            batch = []
            for r in records:
                ts = r.extra.get("ts") or time.time()
                start = stored.get(r.partition)
                if (r.offset < start) if start is not None else ts < window_start:
                    continue  # stored already (or older than the window where the store has no offset)
                try:
                    result = parse_result(r)
                except BadInput:
                    continue  # it became a dead letter when it was first consumed
                applied = board.apply(result, ts)
                if recorder is not None:
                    recorder.applied(result, applied, ts, block=True)
                    batch.append((r, result))
                n += 1
            if recorder is not None and batch:
                recorder.offsets(batch, block=True)
    finally:
        replay.close()
    ended = board.tick(time.time())  # end what went quiet while we were down; events are not pushed
    if recorder is not None:
        recorder.events(ended, block=True)
    log.info("consume: rebuilt state from %d results of the last %.0fs of %s in %.2fs (%d cameras, %d open incidents)",
             n, window_s, topic, time.monotonic() - t0, len(board.cameras), len(board.open))
    return replay.ends, n


async def serve(service: ConsumeService, input_: Input, dlq: Output, *, skip_before: dict | None = None) -> None:
    """Run until SIGTERM/SIGINT (or the end of the input with exit_on_eof); drain and return."""
    opts = service.opts
    if not log.isEnabledFor(logging.DEBUG):  # websockets logs every connection and HTTP GET at INFO
        logging.getLogger("websockets").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    input_done = loop.create_future()

    def on_end(exc: Exception | None) -> None:  # from the input thread
        loop.call_soon_threadsafe(_input_ended, exc)

    def _input_ended(exc: Exception | None) -> None:
        service.input_state = "failed" if exc else "ended"
        if not input_done.done():
            input_done.set_result(exc)
        if exc is not None:
            stop.set()
        elif not stop.is_set():
            if opts.exit_on_eof:
                stop.set()
            else:
                log.info("consume: input ended; still serving (SIGINT/SIGTERM to stop)")

    pump = InputPump(input_, dlq, lambda b: loop.call_soon_threadsafe(service.on_batch, b), on_end,
                     skip_before=skip_before, max_in_flight=opts.max_in_flight)
    service.pump = pump

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before we announce the ports: a signal from then on drains
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(service, pump, stop, input_done)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP drains too (issue 22)
            loop.remove_signal_handler(sig)
        if not pump.started:
            input_.close()
            dlq.close()


async def _serve(service: ConsumeService, pump: InputPump, stop: asyncio.Event, input_done: asyncio.Future) -> None:
    from websockets.asyncio.server import serve as ws_serve

    opts = service.opts
    loop = asyncio.get_running_loop()
    api = HttpApi(service, b"", metrics_response)
    api.incidents = IncidentApi(service)  # history over the store, actions (POST and the WebSocket's "action")
    service.hub.on_action = api.incidents.on_ws_message
    guard = Guard(opts.access, lambda: len(service.hub.clients), STAGE)
    try:
        ws_server = await ws_serve(service.hub.handler, opts.ws_host, opts.ws_port,
                                   process_request=websocket_port_http(api, guard), max_size=64 * 1024,
                                   select_subprotocol=select_subprotocol,
                                   compression=None,  # per-client deflate would re-encode every event per client
                                   write_limit=service.hub.high_water, ping_interval=20, ping_timeout=20,
                                   close_timeout=5)
    except OSError as e:
        raise ConfigError(f"--ws {opts.ws_host}:{opts.ws_port}: cannot listen ({e.strerror})") from None
    ws_port = ws_server.sockets[0].getsockname()[1]
    api.page = load_page().replace(b"{{WS_PORT}}", str(ws_port).encode())  # the page finds the socket
    http_runner, http_port = None, ws_port
    if opts.http_port is not None:
        try:
            http_runner, http_port = await start_http(api, opts.http_host or opts.ws_host, opts.http_port, guard)
        except BaseException:
            ws_server.close()
            raise
    guard.page_ports = {ws_port, http_port}  # a page served from either is our own origin
    http_host = opts.http_host if opts.http_port is not None else opts.ws_host
    guard.listen_hosts = {opts.ws_host, http_host}  # Host names answered besides loopback (DNS rebinding)
    if not guard.required and not all(h in ("127.0.0.1", "localhost", "::1") for h in (opts.ws_host, http_host)):
        log.warning("consume: serving on a non-loopback address without a token: anyone who can reach it can "
                    "read every camera (set --token-file or HAZARDCTL_CONSUME_TOKEN)")
    log.info("consume: serving websocket=ws://%s:%d/ws http=http://%s:%d/ (min level %s, quiet %.0fs)",
             opts.ws_host, ws_port, http_host, http_port, opts.board.min_level, opts.board.quiet_period_s)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(opts.tick_s)
            service.tick()

    tick_task = loop.create_task(ticker())
    pump.start()
    try:
        await stop.wait()
    finally:
        log.info("consume: stopping")
        pump.stop()
        failure = await input_done  # the pump drains: the loop keeps applying what it handed over
        tick_task.cancel()
        ws_server.close()  # closes clients with 1001 (going away)
        await ws_server.wait_closed()
        await service.hub.close()
        if http_runner is not None:
            await http_runner.cleanup()
    log.info("consume: results=%d events=%d clients_dropped=%d dead_letters=%d", service.results_in,
             service.seq, service.hub.dropped, pump.dead_letters)
    if failure is not None:
        if isinstance(failure, ServiceUnavailable):
            raise failure  # exit 3, the line says what to fix
        raise DeliveryError(f"{STAGE}: {failure}")


def run(in_spec: str, dlq_spec: str | None, *, opts: ConsumeOptions, endpoints: Endpoints,
        group_id: str = "hazardctl-consume", connect_timeout: float = 30.0) -> ConsumeService:
    dlq_spec = dlq_spec or endpoints.default_dlq(in_spec)
    endpoints.wait_ready([in_spec, dlq_spec], connect_timeout)
    service = ConsumeService(IncidentBoard(opts.board), opts)
    recorder = None
    if opts.store is not None:  # exit 3 with one line when the database cannot be reached
        recorder = service.recorder = IncidentRecorder(opts.store)
        recorder.restore(service.board)
        recorder.restore_cameras(service.camera_watch, time.time())
        recorder.start()
    close_sinks = camera_pump = actions_pump = None
    try:
        if opts.sinks is not None:
            from stages.consume_sinks import start_dispatcher

            service.sinks, close_sinks = start_dispatcher(opts.sinks, endpoints=endpoints, dlq_spec=dlq_spec,
                                                          store_url=opts.store.url if opts.store else None)
        if opts.camera_status:
            from stages.consume_cameras import start_camera_status

            camera_pump = start_camera_status(opts.camera_status, endpoints=endpoints, dlq_spec=dlq_spec,
                                              group_id=group_id, deliver=service.camera_inbox.extend)
        if opts.actions:
            from stages.consume_shared_actions import start_sharing

            service.actions, actions_pump = start_sharing(
                opts.actions, endpoints=endpoints, dlq_spec=dlq_spec, group_id=group_id,
                deliver=service.action_inbox.append, max_age_s=max(opts.replay_s, SHARED_ACTION_MAX_AGE_S))
        skip_before: dict = {}
        if is_kafka(in_spec) and (opts.replay_s > 0 or recorder is not None):
            skip_before, service.replayed = replay_into(service.board, endpoints, kafka_topic(in_spec),
                                                        opts.replay_s, recorder)
        asyncio.run(serve(service, endpoints.input(in_spec, group_id, STAGE), endpoints.output(dlq_spec),
                          skip_before=skip_before))
    finally:
        if camera_pump is not None:
            camera_pump.stop()
        if actions_pump is not None:
            actions_pump.stop()
            service.actions.close()
        if close_sinks is not None:
            close_sinks()
        if recorder is not None:
            recorder.stop(10.0)
    return service
