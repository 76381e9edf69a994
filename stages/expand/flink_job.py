"""expand as a PyFlink job (spec §5): the same gate and task builder as the local engine, on Flink.

    KafkaSource (committed offsets; earliest on a first start; Row(key, Row(partition, offset, value)))
      → key by the record key (the camera id; in the JVM) → Gate (KeyedProcessFunction:
        `stages.expand.tasks.parse` + `expand`, whose gate is `hazardctl.gating.decide` over one keyed
        ValueState per key: JSON {camera_id: [written, {group_id: entry}, memory]}, state TTL)
      → SplitLines (Java: the gate's one row per detection → a record per task)
      → KafkaSink (key = camera id, AT_LEAST_ONCE)       tasks topic
      ↘ side output "dead-letters" → KafkaSink           DeadLetter JSON, the other stages' format

Run with `.venv-flink/bin/python` (PyFlink lives only there). Two ways, one file:
- directly: `python stages/expand/flink_job.py --bootstrap … --in … --out … --dlq …` runs a local
  mini-cluster in the foreground until SIGTERM/SIGINT, which cancels the job and exits 0;
- `flink run -py stages/expand/flink_job.py -- …` (what `hazardctl expand --jobmanager` does) submits
  it to a session cluster.
Checkpointing is on: source offsets are committed and the sink flushes on every checkpoint, and the
gate state is restored from it after a failure (or from a savepoint: `flink run -s PATH`).
Metrics (Python UDF counters, group `hazardctl`): records_in, tasks_out, suppressed_groups,
dead_letters, and suppressed_by_reason under the key-value group reason=calm|unchanged|cooldown|stale-replay;
exported by whatever reporter the cluster has (the session cluster: Prometheus).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script (flink run -py): make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402

from hazardctl.deadletter import BadInput, dead_letter  # noqa: E402
from hazardctl.gating import (HELD, Assessed, GateConfig, GateEntry, GroupView, Reason, decide,  # noqa: E402
                              entry_from_state, entry_to_state)
from hazardctl.transports.base import Record  # noqa: E402
from stages.expand import flink_conf  # noqa: E402
from stages.expand.tasks import ExpandConfig, expand, parse  # noqa: E402

STAGE = "expand"
JOB_NAME = "hazardctl-expand"


class CameraGates:
    """`hazardctl.gating.decide` over the gate entries of one key, held in ONE ValueState per key, as
    JSON (orjson): {camera_id: [last write (processing time, s), {group_id: entry}, [[track id, last
    assessed], ...]]}, an entry being `gating.entry_to_state` (plain lists), the third element the
    camera's `gating.Assessed` memory. A value written by an older job (a dict of pickled `GateEntry`
    dataclasses, with or without the memory) is read too, so its savepoints restore with their gate.

    One state read and one write per detection (a MapState costs a read and a write per group, each a
    round trip between the Python worker and the JVM's state backend). The key is the Kafka record key,
    i.e. the camera id, so the dict normally holds one camera; it is keyed by camera anyway so that a
    producer keying by something else (a site, no key at all) stays correct, only less parallel.

    Bounded like the local engine's dict: a group its camera has not shown for `ttl_s` of the camera's
    own event time is dropped when the camera's next detection is stored (`decide` would call it `new`
    anyway); a camera not written for `state_ttl_s` is dropped from a shared dict, and the whole value
    by the state TTL (processing time) when its key falls silent."""

    def __init__(self, cfg: GateConfig, state_ttl_s: float):
        self.cfg, self.state_ttl_s, self.suppressed = cfg, state_ttl_s, 0
        self.held: Counter[str] = Counter()
        self.groups: dict[str, GateEntry] = {}
        self.assessed = Assessed()

    def load(self, value: bytes | dict | None, camera_id: str) -> dict:
        """The key's cameras (other cameras' slots stay JSON lists); `camera_id`'s gate decoded into self."""
        if value is None:
            cams = {}
        elif isinstance(value, (bytes, bytearray)):
            cams = orjson.loads(value)
        else:  # an older job's value: GateEntry objects, the memory a dict (or absent)
            cams = {c: [v[0], {g: entry_to_state(e) for g, e in v[1].items()},
                        list(v[2].items()) if len(v) > 2 else []] for c, v in value.items()}
        slot = cams.get(camera_id)
        self.groups = {g: entry_from_state(e) for g, e in slot[1].items()} if slot else {}
        self.assessed = Assessed(dict(slot[2]) if slot else None)
        return cams

    def store(self, cams: dict, camera_id: str, ts: float, now: float) -> bytes:
        """The value to write back: `cams` with this camera's gate, as JSON bytes."""
        ttl = self.cfg.ttl_s
        groups = {g: entry_to_state(e) for g, e in self.groups.items() if ts - e.seen_ts <= ttl}
        if len(cams) > 1 or (cams and camera_id not in cams):
            cams = {c: v for c, v in cams.items() if now - v[0] <= self.state_ttl_s}
        cams[camera_id] = [now, groups, list(self.assessed.bounded(ts, self.cfg).items())]
        return orjson.dumps(cams)

    def check(self, camera_id: str, group_id: str, view: GroupView, ts: float) -> Reason | None:
        reason, entry, held = decide(self.groups.get(group_id), self.assessed.mark(view, ts, self.cfg), ts, self.cfg)
        if entry is None:
            self.groups.pop(group_id, None)
        else:
            self.groups[group_id] = entry
        if reason is not None:
            self.assessed.sent(view, ts)
        if held is not None:
            self.suppressed += 1
            self.held[held] += 1
        return reason


_watching = False


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def exit_with_taskmanager(every_s: float = 1.0) -> None:
    """Process mode: end this Python worker as soon as its TaskManager is gone.

    After a `kill -9` of the TaskManager, a worker whose bundle thread waits for a state or data response
    never gets one, and Beam's harness joins that thread on exit: the worker (~210 MB) would stay
    forever. The worker is started as TaskManager → pyflink-udf-runner.sh → this process; when the
    runner is re-parented, the TaskManager died. Linux (/proc) only; a no-op in thread mode."""
    global _watching
    if _watching:
        return
    runner = os.getppid()
    try:
        if b"pyflink-udf-runner" not in Path(f"/proc/{runner}/cmdline").read_bytes():
            return  # thread mode (inside the JVM) or another launcher
    except OSError:
        return
    tm = _ppid(runner)
    if tm is None or tm <= 1:
        return
    _watching = True

    def watch():
        while True:
            time.sleep(every_s)
            if _ppid(runner) != tm:
                print(f"hazardctl: TaskManager (pid {tm}) is gone: this Python worker exits", file=sys.stderr,
                      flush=True)
                os._exit(1)

    threading.Thread(target=watch, name="taskmanager-watch", daemon=True).start()


def build(env, *, bootstrap: str, src: str, dst: str, dlq: str, group: str, settings: flink_conf.FlinkSettings,
          kafka_props: dict[str, str] | None = None) -> None:
    """Add the job's graph to `env`."""
    from pyflink.common import Row, Types, WatermarkStrategy
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.common.time import Time
    from pyflink.datastream import DataStream, OutputTag
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import (KafkaOffsetResetStrategy, KafkaOffsetsInitializer,
                                                     KafkaRecordSerializationSchema, KafkaSink, KafkaSource)
    from pyflink.datastream.data_stream import KeyedStream
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    g = settings.gate
    cfg = ExpandConfig(g.gate_config(), deadline_s=g.deadline_s)
    state_ttl_ms = int(g.state_ttl_s * 1000)
    par = settings.parallelism
    out_type = Types.ROW([Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])  # Row(camera id, bytes)
    dead_tag = OutputTag("dead-letters", out_type)
    in_type = Types.ROW([Types.INT(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())])  # partition, offset, value
    keyed_type = Types.ROW([Types.STRING(), in_type])

    class Gate(KeyedProcessFunction):
        def open(self, ctx: RuntimeContext):
            exit_with_taskmanager()
            # ReturnExpiredIfNotCleanedUp: NeverReturnExpired switches PyFlink's state cache off (process
            # mode: every update() a synchronous round trip to the JVM); an expired value read back is
            # harmless, `store` drops its stale groups and cameras. Incremental cleanup only: background
            # cleanup hangs the task INITIALIZING in thread mode (FLINK-40628).
            ttl = (StateTtlConfig.new_builder(Time.milliseconds(state_ttl_ms))
                   .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
                   .set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)
                   .cleanup_incrementally(10, False)
                   .disable_cleanup_in_background()
                   .build())
            desc = ValueStateDescriptor("gates", Types.PICKLED_BYTE_ARRAY())
            desc.enable_time_to_live(ttl)
            self.state = ctx.get_state(desc)
            self.gate = CameraGates(cfg.gate, g.state_ttl_s)
            m = ctx.get_metrics_group().add_group("hazardctl")
            self.records_in, self.tasks_out = m.counter("records_in"), m.counter("tasks_out")
            self.suppressed, self.dead = m.counter("suppressed_groups"), m.counter("dead_letters")
            # by why, as a key-value group: Prometheus shows it as the label reason="calm" etc.
            self.held = {h: m.add_group("reason", h).counter("suppressed_by_reason") for h in HELD}

        def process_element(self, row, ctx: "KeyedProcessFunction.Context"):
            value = bytes(row[2])
            self.records_in.inc()
            try:
                det, raw = parse(value)
            except BadInput as e:
                self.dead.inc()
                key = ctx.get_current_key() or None  # the record key as UTF-8 ("" when none)
                rec = Record(value=value, key=key and key.encode(), source=f"kafka:{src}", topic=src,
                             partition=row[0], offset=row[1])
                letter = dead_letter(rec, STAGE, e.reason, e.error_class)
                yield dead_tag, Row(key, letter.model_dump_json().encode())
                return
            before, now = self.gate.suppressed, time.time()
            cams = self.gate.load(self.state.value(), det.camera_id)
            tasks = expand(det, raw, self.gate, cfg, now)
            self.state.update(self.gate.store(cams, det.camera_id, det.frame_ts, now))
            if self.gate.suppressed != before:
                self.suppressed.inc(self.gate.suppressed - before)
                for h, n in self.gate.held.items():
                    self.held[h].inc(n)
                self.gate.held.clear()
            if tasks:
                # one row per detection, a task per line (hazardctl.flink.KeyedRecords.SplitLines makes
                # them records in the JVM): one Python → Java conversion per detection, not one per task
                self.tasks_out.inc(len(tasks))
                yield Row(det.camera_id, b"\n".join(map(orjson.dumps, tasks)))

    starting = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    builder = (KafkaSource.builder().set_bootstrap_servers(bootstrap).set_topics(src).set_group_id(group)
               .set_starting_offsets(starting).set_property("commit.offsets.on.checkpoint", "true"))
    for k, v in (kafka_props or {}).items():
        builder.set_property(k, v)
    # Row(record key, Row(partition, offset, value)): a value-only deserializer would lose where a dead
    # letter came from; and this is the shape PyFlink's key_by makes with a Python operator (AddKey), so the
    # stream is keyed by the record key (the camera id) in the JVM, without a Python hop before the gate
    builder._j_builder.setDeserializer(jvm.hazardctl.flink.KeyedRecords.KeyedSourceRecords())
    source = KafkaSource(builder._j_builder.build())
    records = (env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka:" + src, type_info=keyed_type)
               .set_parallelism(par.source).uid("source"))
    keyed = KeyedStream(records._j_data_stream.keyBy(jvm.org.apache.flink.streaming.api.functions.python
                                                      .KeyByKeySelector(),
                                                      Types.ROW([Types.STRING()]).get_java_type_info()),
                        in_type, records)
    gated = keyed.process(Gate(), output_type=out_type).name("gate").uid("gate").set_parallelism(par.process)
    tasks = DataStream(gated._j_data_stream.flatMap(jvm.hazardctl.flink.KeyedRecords.SplitLines(),
                                                    out_type.get_java_type_info()))
    tasks = tasks.name("tasks").uid("split-tasks").set_parallelism(par.process)

    def sink(topic: str):
        ser = KafkaRecordSerializationSchema(
            jvm.org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema.builder()
            .setTopic(topic)
            .setKeySerializationSchema(jvm.hazardctl.flink.KeyedRecords.FirstColumnKey())
            .setValueSerializationSchema(
                jvm.org.apache.flink.python.util.PythonConnectorUtils.SecondColumnSerializationSchema(
                    ByteArraySchema()._j_serialization_schema))
            .build())
        b = (KafkaSink.builder().set_bootstrap_servers(bootstrap).set_record_serializer(ser)
             .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
             .set_property("linger.ms", str(settings.latency.sink_linger_ms)))
        for k, v in (kafka_props or {}).items():
            b.set_property(k, v)
        return b.build()

    tasks.sink_to(sink(dst)).name("kafka:" + dst).uid("sink-tasks").set_parallelism(par.sink)
    gated.get_side_output(dead_tag).sink_to(sink(dlq)).name("kafka:" + dlq).uid("sink-dlq").set_parallelism(1)


def environment(settings: flink_conf.FlinkSettings, extra: dict[str, str] | None = None):
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    conf = Configuration()
    conf.set_string("pipeline.jars", ";".join(p.as_uri() for p in settings.jars()))
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.execution-mode", settings.python_mode)
    # records passed between chained operators (gate → SplitLines → sink) are not deep-copied: none of
    # them keeps or changes a record it has handed on
    conf.set_string("pipeline.object-reuse", "true")
    conf.set_string("execution.checkpointing.dir", settings.checkpoints.uri())
    conf.set_string("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
    conf.set_string("execution.checkpointing.timeout", f"{int(settings.checkpoints.timeout_s * 1000)} ms")
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(settings.restart.attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", f"{int(settings.restart.delay_s * 1000)} ms")
    for k, v in settings.latency.flink_options().items():
        conf.set_string(k, v)
    for k, v in (extra or {}).items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.enable_checkpointing(int(settings.checkpoints.interval_s * 1000), CheckpointingMode.EXACTLY_ONCE)
    env.set_parallelism(max(settings.parallelism.source, settings.parallelism.process, settings.parallelism.sink))
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--in", dest="src", required=True, help="input topic (detection results)")
    ap.add_argument("--out", dest="dst", required=True, help="output topic (assessment tasks)")
    ap.add_argument("--dlq", required=True, help="dead-letters topic")
    ap.add_argument("--group", default="hazardctl-expand-flink", help="Kafka consumer group (committed offsets)")
    ap.add_argument("--config", default=None, help="config/flink.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting, e.g. parallelism.process=2 or gate.refresh_interval_s=0")
    ap.add_argument("--kafka-config", default=None,
                    help="hazardctl's config/kafka.yaml (default: it, or $HAZARDCTL_KAFKA_CONFIG; $HAZARDCTL_KAFKA_* "
                         "override): security protocol, SASL and CA become the Java clients' properties")
    ap.add_argument("--kafka-prop", action="append", default=[], metavar="KEY=VALUE",
                    help="a Java Kafka client property for source and sinks (after --kafka-config's)")
    ap.add_argument("--flink-conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a raw Flink option, e.g. python.fn-execution.bundle.time=100")
    ap.add_argument("--name", default=JOB_NAME)
    a = ap.parse_args(argv)
    settings = flink_conf.with_overrides(flink_conf.load(a.config), a.set)
    from hazardctl.config import load_kafka_settings

    # the password comes from the file or the environment, never from the command line (ps, logs)
    props = {**flink_conf.java_kafka_props(load_kafka_settings(a.kafka_config)),
             **dict(p.split("=", 1) for p in a.kafka_prop)}
    if settings.python_mode == "thread":
        # the interpreter embedded in the JVM (pemja) does not know this venv: tell it (mini-cluster;
        # scripts/flink-local.sh does the same for its TaskManager)
        import sysconfig

        paths = [sysconfig.get_paths()["purelib"], str(Path(__file__).resolve().parents[2])]
        os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = environment(settings, dict(c.split("=", 1) for c in a.flink_conf))
    build(env, bootstrap=a.bootstrap, src=a.src, dst=a.dst, dlq=a.dlq, group=a.group, settings=settings,
          kafka_props=props)
    if os.environ.get("FLINK_CLI_MODE") or _submitted_by_flink_cli():
        env.execute(a.name)  # `flink run`: the CLI submits (detached with -d) and prints the job id
        return 0
    return run_foreground(env, a.name)


def _submitted_by_flink_cli() -> bool:
    # `flink run -py` starts this script with the gateway of the CLI's JVM
    return "PYFLINK_GATEWAY_PORT" in os.environ


def run_foreground(env, name: str) -> int:
    """Mini-cluster: run until the job ends or SIGTERM/SIGINT, which cancels it (exit 0)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    client = env.execute_async(name)
    print(f"flink job {client.get_job_id()} running on a local mini-cluster (SIGTERM stops it)", flush=True)
    result = client.get_job_execution_result()
    while not stop.is_set() and not result.done():
        stop.wait(0.5)
    if result.done():
        result.result()  # raises when the job failed
        return 0
    client.cancel().result()
    print("flink job cancelled", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
