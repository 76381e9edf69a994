"""schedule: one vision-LLM risk assessment per task, spread over the API-key pool (spec §6).

The life of a task, top to bottom in `Scheduler.handle`:

    receive → stale check → acquire a key → call the LLM → validate → emit → commit

One asyncio loop runs everything. The input is polled on its own thread (a Kafka poll or a pipe
read never blocks the loop); the key pool (`hazardctl.keypool`) decides which key sends when;
`hazardctl.llm_client` makes the calls (openai's AsyncOpenAI, its own retries off), so the retry loop here is the only
one, bounded by the task's deadline. A record is committed only after its result (and its dead
letter, if it failed) is delivered. SIGTERM/SIGINT: stop reading, finish the tasks in flight
(bounded by their deadlines), deliver, commit, exit 0.

Variants (issue 22, `stages/schedule_variants.py`): the camera's route picks the variant (model, base
URL, prompt, language) and the keys that serve it; every result names it. A share of tasks also goes
to a shadow variant, from spare key capacity only (ranked below every task, never the last ready
key), its answer written to `--shadow-out`, never to operators. SIGHUP re-reads the key file and the
routes without dropping a task (`reload`); a file that fails to load is refused and the running
config stays. Without a file to re-read, SIGHUP stops like SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from hazardctl import metrics
from hazardctl.deadletter import BadInput, dead_letter
from hazardctl.errors import DeliveryError
from hazardctl.errors import ConfigError
from hazardctl.from_time import parse_from_time
from hazardctl.keypool import (SHADOW, AsyncKeyPool, Displaced, KeyPool, KeyState, NoKeyInTime, Outcome, rank,
                               should_retry)
from hazardctl.keys import KeysConfig, LLMKey
from hazardctl.answer_watch import AnswerWatch
from hazardctl.llm_client import Call, call_llm, estimate_tokens
from hazardctl.messages import AssessmentTask, RiskAssessmentResult, StageTimes
from hazardctl.prompt import prompt_for_task
from hazardctl.keypool.cover import Cover, paced_room
from hazardctl.transports import Endpoints, Input, Output, Record, Ticket
from hazardctl.transports.base import can_hand_over
from stages.schedule_variants import Clients, VariantPlan, Variants, key_changes

STAGE = "schedule"
log = logging.getLogger("hazardctl.schedule")

LLM_CALLS = Counter("hazardctl_llm_calls_total", "LLM calls by key and outcome", ["key", "outcome"])
RESULTS = Counter("hazardctl_schedule_results_total", "Results by status and error class", ["status", "error_class"])
STALE = Counter("hazardctl_stale_tasks_total", "Tasks already past their deadline when received", ["stage"])
SHED = Counter("hazardctl_schedule_shed_total",
               "Tasks shed under overload (answered stale, no call), by why expand sent them: refreshes go first",
               ["reason"])
LLM_LATENCY = Histogram("hazardctl_llm_latency_seconds", "One LLM HTTP call", ["key"],
                        buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 5, 10, 30))
OVERHEAD = Histogram("hazardctl_schedule_overhead_seconds",
                     "Task dequeued → result produced, minus the LLM calls and the wait for a key",
                     buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1))
KEY_WAIT = Histogram("hazardctl_key_wait_seconds", "Time a task waited for a key (pacing, cooling)",
                     buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
KEY_STATE = Gauge("hazardctl_key_state", "1 for the key's current state", ["key", "state"])
KEY_IN_FLIGHT = Gauge("hazardctl_key_in_flight", "Requests in flight on the key", ["key"])
KEY_TOKENS = Gauge("hazardctl_key_tokens", "Pacing tokens available on the key", ["key"])
KEY_SUCCESS = Gauge("hazardctl_key_success_ratio", "Successful calls / finished calls", ["key"])
KEY_COOLDOWN = Gauge("hazardctl_key_cooldown_seconds", "Seconds until a cooling or disabled key may send", ["key"])
KEY_EFFECTIVE_QPS = Gauge("hazardctl_key_effective_qps",
                          "Requests per second the key may send now (limit, jitter margin, AIMD, slow start, account)",
                          ["key"])
KEY_LAST_ERROR = Gauge("hazardctl_key_last_error", "1 for the class of the key's last error", ["key", "error_class"])
VARIANT_RESULTS = Counter("hazardctl_variant_results_total",
                          "Results by variant, role (primary: to operators; shadow: to --shadow-out) and status",
                          ["variant", "role", "status"])
VARIANT_LLM = Histogram("hazardctl_variant_llm_latency_seconds", "One LLM HTTP call, by variant and role",
                        ["variant", "role"], buckets=(0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 5, 10, 30))
VARIANT_TOKENS = Counter("hazardctl_variant_tokens_total", "Tokens the provider counted, by variant and role",
                         ["variant", "role"])
SHADOW_SHED = Counter("hazardctl_shadow_shed_total",
                      "Shadow requests given up without a call: no spare key in time, or too many shadows waiting",
                      ["variant"])
HANDED_OVER = Gauge("hazardctl_schedule_handed_over", "1 while this shard is out of its consumer group because "
                    "no key can serve a task before its deadline (--hand-over)")
HAND_OVERS = Counter("hazardctl_schedule_hand_overs_total", "Times this shard left its consumer group for lack "
                     "of a usable key (--hand-over)")
DEFAULT_BUDGET_S = 10.0
RELOADS = Counter("hazardctl_schedule_reloads_total", "Key file reloads (SIGHUP) by outcome: ok or refused",
                  ["outcome"])


@dataclass(frozen=True)
class ScheduleConfig:
    workers: int = 256
    """tasks in progress at once (waiting for a key or in a call); more stay in the input"""
    max_pending: int = 5000
    """records read but not yet committed; above this the input is paused"""
    pause_after_s: float = 2.0
    """pause the input only once every worker has been busy this long (a stall: keys cooling), not each
    time the last slot is taken: a Kafka pause drops the consumer's read-ahead and a resume costs a
    fetch (0.2-1 s), so pausing at every full moment read ~`workers` tasks per second, even expired ones"""
    batch: int = 200
    live_every: float = 10.0
    drain_timeout: float = 30.0
    """on stop: longest wait for tasks in flight (each is bounded by its own deadline anyway)"""
    temperature: float = 0.1
    max_tokens: int = 400
    language: str | None = None
    """prompt language en|zh (issue 12); None: the keys file's `language`"""
    bad_answer_warn: float | None = None
    """WARNING above this share of unusable answers of a model; None: the keys file's `bad_answer_warn`"""
    shadow_max: int = 64
    """shadow requests waiting or in a call at once; more are shed at once"""
    hand_over: bool = False
    """--hand-over (Kafka input): leave the consumer group while no key can serve a task before its
    deadline, so the other shards take its partitions; rejoin when a key can again (issue 20.5)"""
    hand_over_hold_s: float = 1.0
    """how long the keys must be unable to serve before the shard leaves"""
    replay_before: float | None = None
    """--from-time: tasks made before this (Unix s) are a replay: their deadline budget counts from when
    they are read, not from their capture (they would all be stale otherwise)"""


def replay_deadline(task: AssessmentTask, replay_before: float | None, now: float) -> float:
    """The deadline a task is judged by: its own, or for a replayed task (made before `replay_before`)
    the same budget (deadline − capture) counted from `now`."""
    made = task.times.expand if task.times.expand is not None else task.frame_ts
    if replay_before is None or made >= replay_before:
        return task.deadline
    start = task.times.capture if task.times.capture is not None else task.frame_ts
    return max(task.deadline, now + (task.deadline - start))


@dataclass
class Assessed:
    """What the retry loop produced for one task, with the time it spent waiting and calling."""

    call: Call
    key: LLMKey | None = None
    attempts: int = 0
    llm_start: float | None = None
    llm_end: float | None = None
    windows: list[tuple[float, float]] = field(default_factory=list)
    """every attempt's HTTP exchange (sent, answered), the last attempt last: `times.llm_attempts`"""
    llm_s: float = 0.0
    key_wait_s: float = 0.0
    error_class: str | None = None
    shed: bool = False
    """no key before the task's deadline minus the expected call time, while keys were busy (overload)"""
    plan: VariantPlan | None = None
    """the variant that judged it"""
    model: str | None = None


class CallTimes:
    """A running P99 of recent LLM call times: how long a call may take, for shedding. Not P90: under
    overload tasks start at the last moment, and one in ten would then be cut short by its deadline,
    a call spent for nothing. Until `min_samples` calls are seen: the longest so far."""

    def __init__(self, n: int = 200, min_samples: int = 20):
        self.recent: deque[float] = deque(maxlen=n)
        self.min_samples = min_samples
        self._expected = 0.0
        self._fresh = 0

    def observe(self, seconds: float) -> None:
        self.recent.append(seconds)
        self._fresh += 1
        if len(self.recent) < self.min_samples:
            self._expected = max(self._expected, seconds)
        elif self._fresh >= 10:  # re-sort every 10 calls, not every one
            self._fresh = 0
            s = sorted(self.recent)
            self._expected = s[int(0.99 * (len(s) - 1))]

    @property
    def expected(self) -> float:
        return self._expected * 1.1  # 10 % of slack: a call started at deadline - P99 has none


@dataclass
class Stats:
    received: int = 0
    ok: int = 0
    failed: int = 0
    stale: int = 0
    dead_letters: int = 0
    delivery_failures: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self, in_flight: int, keys: str) -> str:
        dt = max(1e-9, time.monotonic() - self.started)
        return (f"{STAGE}: in={self.received} ok={self.ok} failed={self.failed} stale={self.stale} "
                f"dead_letters={self.dead_letters} in_flight={in_flight} "
                f"({(self.ok + self.failed) / dt:.1f} results/s) keys: {keys}")


class InputThread:
    """Owns the Input on one thread, so poll, done, pause and commit never race or block the loop."""

    def __init__(self, input_: Input):
        self.input = input_
        self.name = input_.name
        self._ex = ThreadPoolExecutor(1, thread_name_prefix="schedule-input")
        self.read = 0
        self.finished = 0

    async def poll(self, timeout: float, max_records: int) -> list[Record]:
        records = await asyncio.get_running_loop().run_in_executor(self._ex, self.input.poll, timeout, max_records)
        self.read += len(records)
        return records

    @property
    def exhausted(self) -> bool:
        return self.input.exhausted

    @property
    def pending(self) -> int:
        return self.read - self.finished

    def done(self, record: Record) -> None:  # called by Ticket when the record's outputs are delivered
        self.finished += 1
        self._ex.submit(self.input.done, record)

    async def set_paused(self, paused: bool) -> None:
        await asyncio.get_running_loop().run_in_executor(self._ex, self.input.set_paused, paused)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._ex, self.input.close)
        self._ex.shutdown(wait=True)

    async def leave(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._ex, self.input.leave)

    async def rejoin(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._ex, self.input.rejoin)


class Scheduler:
    def __init__(self, keys: KeysConfig, input_: Input, output: Output, dlq: Output,
                 cfg: ScheduleConfig = ScheduleConfig(), trace: list | None = None, *,
                 shadow_out: Output | None = None, reload_keys=None):
        if not keys.keys:
            raise ValueError("no keys")
        self.keys = keys
        self.by_name = {k.name: k for k in keys.keys}  # every key ever loaded: a lease taken before a reload ends well
        self.shadow_out = shadow_out
        self.reload_keys = reload_keys
        """() -> KeysConfig: the key file read again (SIGHUP); None: nothing to re-read, SIGHUP stops"""
        self._shadows: set[asyncio.Task] = set()
        self.input = InputThread(input_)
        self.output, self.dlq, self.cfg = output, dlq, cfg
        self.stats = Stats()
        self.trace = trace  # benchmarks: one (dequeue, key_wait_s, llm_s, result) tuple per task
        self._active: set[asyncio.Task] = set()
        self._slot_free = asyncio.Event()
        self._stop = asyncio.Event()
        self._failed: Exception | None = None
        self._secrets = [k.secret() for k in keys.keys]
        self._last_error: dict[str, str] = {}
        self._m_in = metrics.MESSAGES_IN.labels(STAGE)
        self._m_out = metrics.MESSAGES_OUT.labels(STAGE)
        self._m_inflight = metrics.IN_FLIGHT.labels(STAGE)
        self._m_paused = metrics.PAUSED.labels(STAGE)
        self._m_latency = metrics.STAGE_LATENCY.labels(STAGE)
        self._hops = metrics.Hops(STAGE)
        self.language = cfg.language or keys.language
        self.variants = self.check_variants(keys)
        self.answers = AnswerWatch(STAGE, cfg.bad_answer_warn or keys.bad_answer_warn)
        self.call_times = CallTimes()
        self.count_tokens = any(k.tpm_limit for k in keys.keys) or any(a.tpm for a in keys.accounts.values())
        self.clients = Clients()
        self.cover = Cover(hold_s=cfg.hand_over_hold_s) if cfg.hand_over and can_hand_over(input_) else None
        self._waiting_key: set[asyncio.Task] = set()  # tasks waiting for their first key (handed over on leave)
        self._budget = DEFAULT_BUDGET_S  # a task's deadline budget (deadline − capture), the largest seen lately
        self._probe_task: AssessmentTask | None = None  # a recent task: the payload of a probe while out
        self._probing = False

    def keep_ready(self) -> None:
        if self.keys.shadow is not None:
            self.pool.queue.shadow_reserve = self.keys.shadow.keep_ready

    def open_clients(self) -> None:
        """A client per key and variant now, not at a task's first call (that would cost its time)."""
        for plan in self.variants.plans.values():
            for k in self.keys.keys:
                if plan.only is None or k.name in plan.only:
                    self.clients.get(self.variants.key_for(plan, k))

    def check_variants(self, keys: KeysConfig) -> Variants:
        """The variants of a key file, or ConfigError when this stage cannot run them."""
        try:
            variants = Variants(keys, self.cfg.language)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if keys.shadow is not None and self.shadow_out is None:
            raise ConfigError(f"shadow: variant {keys.shadow.variant!r} needs --shadow-out (a file or kafka://TOPIC "
                              "for its answers; they never go to operators)")
        return variants

    # -- the life of one task ------------------------------------------------------------------------
    async def handle(self, record: Record, dequeued: float) -> None:
        ticket = Ticket(record, self.input)  # counts this record's outputs; marks it done when delivered
        # receive
        try:
            task = self.receive(record)
        except BadInput as e:
            self.emit_dead_letter(ticket, record, e.reason, e.error_class)
            ticket.seal()
            return
        now = time.time()
        if self.cfg.replay_before is not None:  # --from-time: a replayed task's budget starts now
            deadline = replay_deadline(task, self.cfg.replay_before, now)
            if deadline != task.deadline:
                task = task.model_copy(update={"deadline": deadline})
        # stale check: past its deadline (or too close to it for a call) the answer is worthless; say
        # so instead of spending a call
        if now + self.call_times.expected >= task.deadline:
            self.stats.stale += 1
            STALE.labels(STAGE).inc()
            no_call = Assessed(Call(Outcome.ABANDONED), error_class="expired" if now >= task.deadline else "too_late")
            result = self.result(task, "stale", no_call, dequeued)
            self.emit(ticket, record, result)
            ticket.seal()
            self.observe_hops(result.times, no_call)
            return
        if self.cover is not None:
            self.note_budget(task)
        plan = self.variants.for_camera(task.camera_id)  # sticky by camera: one camera, one variant
        shadow = self.variants.shadow_for(task.task_id, plan.name)
        if shadow is not None:
            self.start_shadow(task, shadow)
        # acquire a key → call → validate, retried on other keys within the deadline
        try:
            assessed = await self.assess(task, plan)
            status = "ok" if assessed.call.outcome is Outcome.OK else "stale" if assessed.shed else "failed"
            if assessed.shed:
                self.stats.stale += 1
                STALE.labels(STAGE).inc()
                SHED.labels(task.reason).inc()
            result = self.result(task, status, assessed, dequeued)

        except Exception as e:  # a bug must not lose the task: keep it as a dead letter
            log.exception("%s: unexpected error on task %s", STAGE, task.task_id)
            self.emit_dead_letter(ticket, record, f"internal error: {type(e).__name__}", "internal")
            ticket.seal()
            return
        # emit: the result, and a dead letter with the original task when it failed
        self.emit(ticket, record, result)
        if result.status == "failed":
            self.emit_dead_letter(ticket, record, f"LLM assessment failed: {result.error_class}",
                                  result.error_class or "failed", attempts=assessed.attempts,
                                  last_error=assessed.call.error)
        # commit: the record is done (its offset committable) once everything sent above is delivered
        ticket.seal()
        self.observe(assessed, dequeued, time.time())  # after serialising and handing over the result
        self.observe_hops(result.times, assessed)

    def receive(self, record: Record) -> AssessmentTask:
        if not record.value.strip():
            raise BadInput("empty line", "empty")
        try:
            return AssessmentTask.model_validate_json(record.value)
        except ValidationError as e:
            raise BadInput.from_validation(e, "assessment task") from None

    async def assess(self, task: AssessmentTask, plan: VariantPlan, shadow: bool = False) -> Assessed:
        """The one retry loop: another key after a failure, until OK, a final error, or the deadline.
        A shadow request (`shadow`) ranks below every task, takes no last ready key and is not retried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (task.deadline - time.time())
        place = self.pool.ticket()  # keep our place in the queue across retries
        # suspect > new > changed > refresh when the keys are the bottleneck; refreshes absorb the shortfall
        priority = SHADOW if shadow else rank(task.reason)
        cost = estimate_tokens(task, self.cfg.max_tokens, plan.language) if self.count_tokens else 0
        out = Assessed(Call(Outcome.ABANDONED), plan=plan)
        avoid: set[str] = set()
        bad_responses = 0
        max_attempts = 1 if shadow else self.keys.max_attempts
        # read past a full stage (see _receive): someone ranked below this task gives way, or this refresh does
        if not shadow and len(self._active) > self.cfg.workers and not self.pool.make_room(priority):
            out.shed, out.error_class = True, "shed"
            out.call.error = "shed: the stage is full of tasks that rank at least as high"
            return out
        while out.attempts < max_attempts:
            t0 = loop.time()
            # a key is only worth having while a call of the usual length still ends before the deadline
            me = asyncio.current_task() if out.attempts == 0 and not shadow else None
            if me is not None:
                self._waiting_key.add(me)
            try:
                lease = await self.pool.acquire(deadline, frozenset(avoid), place, priority, cost,
                                                reserve=out.attempts == 0, only=plan.only)
            except NoKeyInTime as e:
                out.key_wait_s += loop.time() - t0
                if isinstance(e, Displaced):
                    out.shed, out.error_class = True, "shed"
                    out.call.error = "shed: gave way to a task that ranks higher while the stage was full"
                    return out
                if out.attempts == 0 and (shadow or self.pool.pool.any_open(loop.time(), plan.only)):
                    out.shed, out.error_class = True, "shed"  # overload: the keys are busy, not broken
                    out.call.error = "shed: no key in time for a call to end before the deadline"
                    return out
                out.error_class = "no_key_in_time" if out.attempts == 0 else "deadline"
                if out.call.error is None:
                    out.call.error = "no key could take the task before its deadline"
                return out
            finally:
                if me is not None:
                    self._waiting_key.discard(me)
            key = self.variants.key_for(plan, self.by_name[lease.key])
            t1 = loop.time()
            out.key_wait_s += t1 - t0
            out.attempts += 1
            out.key = key
            timeout = min(key.timeout, deadline - t1)  # the deadline caps the call, not only the retries
            try:
                call = await call_llm(self.clients.get(key), key, task, max(0.05, timeout),
                                      temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens,
                                      language=plan.language, motion=plan.motion)
            except BaseException:  # cancelled, or a bug: give the lease back, no verdict on the key
                self.pool.release(lease, Outcome.ABANDONED)
                raise
            took = loop.time() - t1
            out.llm_s += call.http_s  # the request alone: body building and reply parsing are our overhead
            if call.window is not None:  # the HTTP exchange itself, not the prompt building or the reading
                out.windows.append(call.window)
                out.llm_start, out.llm_end = call.window
            out.call = call
            if call.outcome is Outcome.OK:
                self.call_times.observe(took)
                self.pool.queue.reserve = self.call_times.expected
            cut_short = call.outcome is Outcome.TIMEOUT and timeout < key.timeout
            self.report(lease, key, call, took, verdict=Outcome.ABANDONED if cut_short else None)
            self.answers.observe(key.model, call.outcome, call.normalized, call.reject_reason)  # the model's, not the key's
            if call.outcome is Outcome.OK:
                return out
            if cut_short:  # our deadline, not the key's fault: no health verdict, no retry
                out.error_class = "deadline"
                return out
            bad_responses += call.outcome is Outcome.BAD_RESPONSE
            if not should_retry(call.outcome, bad_responses):
                break
            avoid.add(key.name)
        out.error_class = out.call.outcome.value
        return out

    def report(self, lease, key: LLMKey, call: Call, took: float, verdict: Outcome | None = None) -> None:
        """Tell the pool how the call ended; count it; log state changes of the key (by name)."""
        before = self.pool.pool.state(key.name, self.pool.now())
        if verdict is None and call.outcome is Outcome.BAD_RESPONSE:
            verdict = Outcome.OK  # the key answered: its health is fine; the wording is the model's (issue 12)
        self.pool.release(lease, verdict or call.outcome, call.retry_after, call.error, call.usage)
        after = self.pool.pool.state(key.name, self.pool.now())
        LLM_CALLS.labels(key.name, call.outcome.value).inc()
        LLM_LATENCY.labels(key.name).observe(took)
        if after is not before and after in (KeyState.DISABLED, KeyState.COOLING):
            why = f"{call.outcome.value}: {self.redact(call.error)}" if call.error else call.outcome.value
            if after is KeyState.DISABLED:
                log.warning("key %s disabled (%s); probing it again every %.0fs", key.name, why,
                            self.keys.reprobe_interval)
            else:
                log.warning("key %s cooling (%s)", key.name, why)
        elif before is KeyState.DISABLED and after is not KeyState.DISABLED:
            log.warning("key %s is back after a probe", key.name)

    def result(self, task: AssessmentTask, status: str, a: Assessed, dequeued: float) -> RiskAssessmentResult:
        ra = a.call.assessment
        plan = a.plan or self.variants.for_camera(task.camera_id)
        times = task.times.model_copy(update={"dequeue": dequeued, "llm_start": a.llm_start, "llm_end": a.llm_end,
                                              "llm_attempts": list(a.windows) or None, "result": time.time()})
        return RiskAssessmentResult(
            task_id=task.task_id, detection_id=task.detection_id, camera_id=task.camera_id,
            group_id=task.group.group_id, frame_id=task.frame_id, frame_ts=task.frame_ts, status=status,
            level=ra.level if ra else None, risk_types=ra.risk_types if ra else [],
            description=ra.description if ra else "", confidence=ra.confidence if ra else None,
            danger_object_ids=ra.danger_object_ids if ra else [],
            key_name=a.key.name if a.key else None, model=a.key.model if a.key else None,
            prompt_version=prompt_for_task(task, plan.language, plan.motion).version,
            answer_normalized=list(a.call.normalized) if ra else [],
            attempts=a.attempts, error_class=a.error_class if status != "ok" else None,
            crop_jpeg_b64=task.group.crop_jpeg_b64, frames=task.group.frames, times=times, variant=plan.name,
            tokens=a.call.usage)

    # -- emitting, with the delivery bookkeeping that makes commits safe --------------------------------
    def emit(self, ticket: Ticket, record: Record, result: RiskAssessmentResult) -> None:
        key = record.key or result.camera_id.encode()
        self.output.send(result.model_dump_json().encode(), key, self._delivered(ticket, self.output))
        self.output.poll(0)
        if result.status == "ok":
            self.stats.ok += 1
        elif result.status == "failed":
            self.stats.failed += 1
        RESULTS.labels(result.status, result.error_class or "").inc()
        self.count_variant(result, "primary")
        self._m_out.inc()

    def count_variant(self, result: RiskAssessmentResult, role: str) -> None:
        variant = result.variant or "-"
        VARIANT_RESULTS.labels(variant, role, result.status).inc()
        t = result.times
        if t.llm_start is not None and t.llm_end is not None:
            VARIANT_LLM.labels(variant, role).observe(t.llm_end - t.llm_start)
        if result.tokens:
            VARIANT_TOKENS.labels(variant, role).inc(result.tokens)

    # -- shadow requests: a candidate variant judges the same task aside, from spare capacity only ------
    def start_shadow(self, task: AssessmentTask, plan: VariantPlan) -> None:
        if self.shadow_out is None or self._stop.is_set():
            return
        if len(self._shadows) >= self.cfg.shadow_max:  # shed first: never a queue of shadows
            SHADOW_SHED.labels(plan.name).inc()
            return
        t = asyncio.ensure_future(self.shadow(task, plan, time.time()))
        self._shadows.add(t)
        t.add_done_callback(self._shadows.discard)

    async def shadow(self, task: AssessmentTask, plan: VariantPlan, dequeued: float) -> None:
        """One call of the shadow variant (no retry), its result on --shadow-out; nothing to operators,
        no dead letter, no commit depends on it."""
        try:
            a = await self.assess(task, plan, shadow=True)
        except Exception:  # a bug in the shadow path must never touch the primary one
            log.exception("%s: shadow request of task %s", STAGE, task.task_id)
            return
        if a.shed or a.attempts == 0:
            SHADOW_SHED.labels(plan.name).inc()
            return
        status = "ok" if a.call.outcome is Outcome.OK else "failed"
        result = self.result(task, status, a, dequeued)
        self.shadow_out.send(result.model_dump_json().encode(), result.camera_id.encode(), self._shadow_delivered)
        self.count_variant(result, "shadow")

    def _shadow_delivered(self, err: Exception | None) -> None:
        if err is not None:
            metrics.DELIVERY_FAILURES.labels(STAGE, self.shadow_out.name).inc()
            log.warning("%s: a shadow result was not delivered: %s", STAGE, err)

    # -- reload: SIGHUP re-reads the key file and the routes ----------------------------------------------
    def request_reload(self) -> None:
        asyncio.ensure_future(self.reload())

    async def reload(self) -> bool:
        """Read the key file again and apply it without dropping a task; a file that fails to load (or
        that this stage cannot run) is refused with one line and the running config stays."""
        try:
            keys = await asyncio.get_running_loop().run_in_executor(None, self.reload_keys)
            if not keys.keys:
                raise ConfigError("no keys")
            variants = self.check_variants(keys)
            added, removed, replaced, retuned = key_changes(self.keys, keys)
            self.pool.reconfigure([k.limits() for k in keys.keys], keys.policy(), keys.account_limits(), replaced)
        except Exception as e:  # ConfigError, or a limit the pool refuses: the running config stays
            RELOADS.labels("refused").inc()
            log.error("%s: reload refused, the running config stays: %s", STAGE, self.redact(str(e)))
            return False
        for k in keys.keys:
            self.by_name[k.name] = k
            if k.secret() not in self._secrets:
                self._secrets.append(k.secret())
        for name in removed:
            self._forget_key_series(name)
        self.keys, self.variants = keys, variants
        self.open_clients()
        self.keep_ready()
        self.count_tokens = any(k.tpm_limit for k in keys.keys) or any(a.tpm for a in keys.accounts.values())
        RELOADS.labels("ok").inc()
        changes = [f"+{n}" for n in added] + [f"-{n}" for n in removed] + [f"~{n} (new secret or address)"
                                                                        for n in replaced] + [f"~{n}" for n in retuned]
        log.warning("%s: reloaded: %d keys (%s); routes: %s", STAGE, len(keys.keys),
                    ", ".join(changes) or "no key changed", variants.describe())
        for line in keys.account_warnings():
            log.warning("%s: %s", STAGE, line)
        return True

    def _forget_key_series(self, name: str) -> None:
        """A removed key's gauges leave /metrics (its counters stay: they are history)."""
        for g, extra in ((KEY_IN_FLIGHT, ()), (KEY_TOKENS, ()), (KEY_SUCCESS, ()), (KEY_COOLDOWN, ()),
                         (KEY_EFFECTIVE_QPS, ())):
            try:
                g.remove(name, *extra)
            except KeyError:
                pass
        for st in KeyState:
            try:
                KEY_STATE.remove(name, st.value)
            except KeyError:
                pass
        if name in self._last_error:
            try:
                KEY_LAST_ERROR.remove(name, self._last_error.pop(name))
            except KeyError:
                pass

    def emit_dead_letter(self, ticket: Ticket, record: Record, reason: str, error_class: str, *,
                         attempts: int = 0, last_error: str | None = None) -> None:
        dl = dead_letter(record, STAGE, reason, error_class, attempts=attempts,
                         last_error=self.redact(last_error) if last_error else None)
        self.dlq.send(dl.model_dump_json().encode(), record.key, self._delivered(ticket, self.dlq))
        self.dlq.poll(0)
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.labels(STAGE, error_class).inc()

    def _delivered(self, ticket: Ticket, output: Output):
        cb = ticket.expect()

        def delivered(err: Exception | None) -> None:
            if err is not None:
                self.stats.delivery_failures += 1
                metrics.DELIVERY_FAILURES.labels(STAGE, output.name).inc()
                if self._failed is None:
                    log.error("%s: %s — the input will not be committed; stopping", STAGE, err)
                    self._failed = err
                self._stop.set()
            cb(err)

        return delivered

    def redact(self, text: str) -> str:
        for s in self._secrets:
            if s and s in text:
                text = text.replace(s, "***")
        return text

    def observe(self, a: Assessed, dequeued: float, produced: float) -> None:
        overhead = max(0.0, (produced - dequeued) - a.llm_s - a.key_wait_s)
        OVERHEAD.observe(overhead)
        KEY_WAIT.observe(a.key_wait_s)
        self._m_latency.observe(produced - dequeued)
        if self.trace is not None:
            self.trace.append((dequeued, a.key_wait_s, a.llm_s, produced, a.attempts))

    def observe_hops(self, t: StageTimes, a: Assessed) -> None:
        """The hops of the `times` record this stage closed, and capture → result with and without the
        LLM's HTTP time and the wait for a key (pacing is queueing, not overhead): docs/latency.md.
        A retried task's earlier attempts are retry time, a hop of its own (first attempt's start →
        the last attempt's start), never our overhead."""
        hop = self._hops.hop
        first = a.windows[0][0] if a.windows else t.llm_start
        hop("expand", "dequeue", t.expand, t.dequeue)
        hop("dequeue", "llm_start", t.dequeue, first)  # to the first attempt: validation, prompt, the key wait
        if len(a.windows) > 1:
            hop("llm_first_start", "llm_start", first, t.llm_start)  # retry time: failed attempts, the next key
        hop("llm_start", "llm_end", t.llm_start, t.llm_end)
        hop("llm_end", "result", t.llm_end, t.result)
        if t.capture is not None and t.result is not None:
            total = t.result - t.capture
            self._hops.span("capture_to_result", total)
            self._hops.span("capture_to_result_excl_llm", total - a.llm_s)
            self._hops.span("capture_to_result_excl_llm_key_wait", total - a.llm_s - a.key_wait_s)

    # -- the loop around it -------------------------------------------------------------------------
    def stop(self) -> None:
        if not self._stop.is_set():
            log.info("%s: stopping: no new tasks; finishing %d in flight", STAGE, len(self._active))
        self._stop.set()
        self._slot_free.set()

    async def run(self) -> Stats:
        loop = asyncio.get_running_loop()
        for line in self.keys.account_warnings():  # "10 keys = 10x" is false there: say so at start
            log.warning("%s: %s", STAGE, line)
        self.pool = AsyncKeyPool(KeyPool([k.limits() for k in self.keys.keys], self.keys.policy(), now=loop.time(),
                                         accounts=self.keys.account_limits()))
        self.open_clients()
        self.keep_ready()
        on_hup = self.request_reload if self.reload_keys is not None else self.stop  # never killed at once
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, on_hup)):
            try:
                loop.add_signal_handler(sig, handler)
            except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (tests)
                pass
        side = [asyncio.ensure_future(self._serve_outputs()), asyncio.ensure_future(self._monitor())]
        if self.cover is not None:
            side.append(asyncio.ensure_future(self._cover()))
        try:
            await self._receive()
            await self._finish_in_flight()
            if self._shadows and not self._stop.is_set():  # the input ended: let the shadows finish too
                await asyncio.wait(set(self._shadows), timeout=self.cfg.drain_timeout)
        finally:
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            for t in list(self._shadows):  # shadows are best effort: not waited for
                t.cancel()
            await asyncio.gather(*self._shadows, return_exceptions=True)
            await self._drain()
            await self.clients.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                try:
                    loop.remove_signal_handler(sig)
                except (ValueError, RuntimeError, NotImplementedError):
                    pass
        log.info(self.stats.line(0, self.key_summary()))
        if self._failed is not None:
            raise DeliveryError(f"{STAGE}: {self._failed}")
        return self.stats

    async def _receive(self) -> None:
        """Poll the input while there is room; pause it (backpressure) when there is not."""
        cfg, inp = self.cfg, self.input
        paused = False
        full_since: float | None = None  # monotonic time since every worker has been busy
        while not self._stop.is_set():
            self._slot_free.clear()  # before counting: a task that ends during an await below wakes the wait
            room = cfg.workers - len(self._active)
            if self.cover is not None:  # unequal shards: hold no more than the open keys serve in a budget
                now = self.pool.now()
                room = min(room, paced_room(self.pool.pool.open_qps(now), self._budget, len(self._active)))
            if room <= 0:
                # full, but refreshes wait for a key: read on, so a suspect behind them in the input is
                # not kept out by them; each task read past the cap makes one refresh give way (`assess`)
                room = self.pool.queue.displaceable() + room
            full = room <= 0 or inp.pending >= cfg.max_pending
            # full: read nothing now; pause (backpressure) only for a stall or too much uncommitted, so a
            # slot that frees a moment later is refilled from the consumer's read-ahead (`pause_after_s`)
            mono = time.monotonic()
            full_since = (full_since or mono) if full else None
            pause = full and (inp.pending >= cfg.max_pending or mono - full_since >= cfg.pause_after_s)
            if pause != paused:
                paused = pause
                await inp.set_paused(paused)
                self._m_paused.set(int(paused))
            if full:
                wait = 0.5 if paused else min(0.5, max(0.01, full_since + cfg.pause_after_s - mono))
                try:
                    await asyncio.wait_for(self._slot_free.wait(), wait)
                except TimeoutError:
                    pass
                continue
            records = await inp.poll(0.05, min(cfg.batch, room))
            if not records:
                if inp.exhausted:
                    return
                continue
            dequeued = time.time()
            self.stats.received += len(records)
            self._m_in.inc(len(records))
            for r in records:
                t = asyncio.ensure_future(self.handle(r, dequeued))
                self._active.add(t)
                t.add_done_callback(self._task_done)

    def _task_done(self, t: asyncio.Task) -> None:
        self._active.discard(t)
        self._slot_free.set()
        if not t.cancelled() and t.exception() is not None:
            log.error("%s: unexpected error in a task: %r", STAGE, t.exception())

    async def _finish_in_flight(self) -> None:
        if self._active:
            done, left = await asyncio.wait(set(self._active), timeout=self.cfg.drain_timeout)
            for t in left:  # their inputs are not committed: they come back on restart
                t.cancel()
            if left:
                log.error("%s: %d tasks still running after %.0fs; left uncommitted", STAGE, len(left),
                          self.cfg.drain_timeout)
                await asyncio.gather(*left, return_exceptions=True)

    async def _serve_outputs(self) -> None:
        """Serve delivery reports (they advance the commit position) while tasks run."""
        while True:
            self.output.poll(0)
            if self.dlq is not self.output:
                self.dlq.poll(0)
            if self.shadow_out is not None and self.shadow_out not in (self.output, self.dlq):
                self.shadow_out.poll(0)
            await asyncio.sleep(0.02)

    async def _drain(self) -> None:
        left = self.output.flush(self.cfg.drain_timeout)
        if self.dlq is not self.output:
            left += self.dlq.flush(self.cfg.drain_timeout)
        if self.shadow_out is not None and self.shadow_out not in (self.output, self.dlq):
            self.shadow_out.flush(self.cfg.drain_timeout)
            self.shadow_out.close()
        if left:
            log.error("%s: %d messages not delivered; their inputs stay uncommitted", STAGE, left)
        await self.input.close()
        self.output.close()
        if self.dlq is not self.output:
            self.dlq.close()

    async def _monitor(self) -> None:
        """Per-key gauges every second; the live line on stderr every `live_every` seconds."""
        next_line = time.monotonic() + self.cfg.live_every
        while True:
            await asyncio.sleep(1.0)
            now = self.pool.now()
            for h in self.pool.pool.snapshot(now):
                for s in KeyState:
                    KEY_STATE.labels(h.name, s.value).set(1 if h.state is s else 0)
                KEY_IN_FLIGHT.labels(h.name).set(h.in_flight)
                KEY_TOKENS.labels(h.name).set(h.tokens)
                KEY_EFFECTIVE_QPS.labels(h.name).set(h.effective_qps)
                if h.success_rate is not None:
                    KEY_SUCCESS.labels(h.name).set(h.success_rate)
                KEY_COOLDOWN.labels(h.name).set(max(0.0, h.cooldown_until - now) if h.cooldown_until else 0.0)
                if h.last_error and self._last_error.get(h.name) != h.last_error:
                    if h.name in self._last_error:
                        KEY_LAST_ERROR.labels(h.name, self._last_error[h.name]).set(0)
                    KEY_LAST_ERROR.labels(h.name, h.last_error).set(1)
                    self._last_error[h.name] = h.last_error
            self._m_inflight.set(self.input.pending)
            if self.cfg.live_every and time.monotonic() >= next_line:
                next_line += self.cfg.live_every
                log.info(self.stats.line(len(self._active), self.key_summary()))

    # -- hand-over (issue 20.5; the decision is keypool/cover.py) -----------------------------------
    def note_budget(self, task: AssessmentTask) -> None:
        """Remember the deadline budget of tasks (and one task, the payload of a probe while out)."""
        start = task.times.capture if task.times.capture is not None else task.frame_ts
        budget = task.deadline - start
        if 0 < budget < 3600:
            self._budget = max(budget, self._budget * 0.99)  # the largest lately, forgetting slowly
        self._probe_task = task

    async def _cover(self) -> None:
        """Leave the group while no key can serve a task within its budget; rejoin when one can; while
        out, probe a disabled key when its probe is due (no task reaches the pool then)."""
        while True:
            await asyncio.sleep(0.25)
            now = self.pool.now()
            pool = self.pool.pool
            act = self.cover.update(now, pool.serving_at(now), self._budget)
            if act == "leave":
                await self._hand_over()
            elif act == "rejoin":
                log.warning("%s: a key can serve again (%s): rejoining the consumer group", STAGE, self.key_summary())
                await self.input.rejoin()
                HANDED_OVER.set(0)
            if self.cover.probe_due(now, pool.next_probe_at()) and not self._probing and self._probe_task:
                asyncio.ensure_future(self._probe())

    async def _hand_over(self) -> None:
        waiting = [t for t in self._waiting_key if not t.done()]
        log.warning("%s: no key can serve a task within its %.0f s budget (%s): leaving the consumer group so "
                    "the other shards take its partitions; %d tasks waiting for a key go back uncommitted",
                    STAGE, self._budget, self.key_summary(), len(waiting))
        for t in waiting:  # never sealed: their offsets stay uncommitted and the partitions' new owners read them
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        self.input.finished += len(waiting)  # not ours any more: no longer pending here
        await self.input.leave()
        HANDED_OVER.set(1)
        HAND_OVERS.inc()

    async def _probe(self) -> None:
        """One call with a recent task as payload, its answer thrown away: only the key's verdict counts."""
        self._probing = True
        try:
            task = self._probe_task.model_copy(update={"deadline": time.time() + self._budget})
            a = await self.assess(task, self.variants.for_camera(task.camera_id))
            log.info("%s: probe while handed over: %s on %s", STAGE, a.call.outcome.value,
                     a.key.name if a.key else "no key")
        except Exception as e:  # a probe must never stop the stage
            log.warning("%s: probe failed: %r", STAGE, e)
        finally:
            self._probing = False

    def key_summary(self) -> str:
        if not hasattr(self, "pool"):
            return "-"
        health = self.pool.pool.snapshot(self.pool.now())
        by_state: dict[str, list[str]] = {}
        for h in health:
            by_state.setdefault(h.state.value, []).append(h.name)
        parts = [f"{len(v)} {s}" + (f" ({', '.join(v)})" if s in ("cooling", "disabled") else "")
                 for s, v in sorted(by_state.items())]
        return ", ".join(parts)


def check_config(keys: KeysConfig, cfg: ScheduleConfig, shadow_spec: str | None) -> None:
    """What the stage would refuse, before anything starts: one ConfigError line (exit 2)."""
    try:
        Variants(keys, cfg.language)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if keys.shadow is not None and shadow_spec is None:
        raise ConfigError(f"shadow: variant {keys.shadow.variant!r} needs --shadow-out (a file or kafka://TOPIC "
                          "for its answers; they never go to operators)")


def run(in_spec: str, out_spec: str, dlq_spec: str | None, *, keys: KeysConfig, endpoints: Endpoints,
        cfg: ScheduleConfig = ScheduleConfig(), group_id: str = "hazardctl-schedule",
        connect_timeout: float = 30.0, shadow_spec: str | None = None, reload_keys=None,
        from_time: str | None = None) -> Stats:
    """`reload_keys`: () -> KeysConfig, called on SIGHUP; `from_time` (ISO 8601 or -2h): rewind the
    group to it before starting (Kafka input only); tasks made before the start are then a replay."""
    check_config(keys, cfg, shadow_spec)
    since = parse_from_time(from_time, time.time()) if from_time is not None else None
    dlq_spec = dlq_spec or endpoints.default_dlq(in_spec)
    endpoints.wait_ready([in_spec, out_spec, dlq_spec, *([shadow_spec] if shadow_spec else [])], connect_timeout)
    if shadow_spec is not None and shadow_spec in (out_spec, dlq_spec):
        raise ConfigError(f"--shadow-out {shadow_spec}: must differ from --out and --dlq (shadow answers never "
                          "reach operators)")
    if since is not None:
        endpoints.rewind(in_spec, group_id, since, from_time)
        cfg = dataclasses.replace(cfg, replay_before=time.time())
    output = endpoints.output(out_spec)
    dlq = output if dlq_spec == out_spec else endpoints.output(dlq_spec)
    shadow_out = endpoints.output(shadow_spec) if shadow_spec else None
    input_ = endpoints.input(in_spec, group_id, STAGE)
    for noisy in ("httpx2", "httpx", "httpcore2", "httpcore", "openai"):  # a line (or a whole body) per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    names = ", ".join(k.name for k in keys.keys)
    log.info("%s: %d keys (%s), strategy %s, %d workers", STAGE, len(keys.keys), names, keys.strategy, cfg.workers)
    scheduler = Scheduler(keys, input_, output, dlq, cfg, shadow_out=shadow_out, reload_keys=reload_keys)
    if keys.variants or keys.shadow:
        log.info("%s: routes: %s", STAGE, scheduler.variants.describe())
    return asyncio.run(scheduler.run())
