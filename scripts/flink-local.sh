#!/usr/bin/env bash
# flink-local.sh — a real standalone Apache Flink session cluster on 127.0.0.1, without Docker:
# JobManager and TaskManager as separate JVMs, started from the apache-flink wheel in .venv-flink
# (the wheel IS a Flink distribution: pyflink/bin/jobmanager.sh, taskmanager.sh, flink).
#
# Usage: scripts/flink-local.sh env | up | down | status | kill-tm | start-tm [SLOTS] | stop-tm | pids
#   env       .venv-flink (apache-flink 2.2.1 + what the job imports) + the Kafka connector jar (mvn)
#             + the job's small Java adapters jar (javac); idempotent (what `make flink-env` runs)
#   up        start JobManager + TaskManager, wait for the REST API and a registered slot
#   down      stop both (and any TaskManager started by start-tm); wait until the JVMs are gone
#   status    0 running / 3 not running
#   kill-tm   kill -9 the TaskManager(s) and their Python workers (a lost host, for tests); start-tm starts a new one
#             (of SLOTS task slots, default FLINK_LOCAL_SLOTS); stop-tm stops every TaskManager (TERM: they deregister)
#   pids      "jobmanager PID" / "taskmanager PID" lines of the live JVMs
# Env:   FLINK_LOCAL_HOME     state dir: conf/ log/ run/ checkpoints/ savepoints/ (default <repo>/.cache/flink)
#        FLINK_LOCAL_PORT     REST port (default 18081); JobManager RPC = port+1
#        FLINK_LOCAL_PROM     Prometheus reporter port range (default 19250-19259; JM and TM take one each)
#        FLINK_LOCAL_SLOTS    task slots per TaskManager (default 1: thread mode runs one GIL per JVM; start-tm adds one)
#        FLINK_LOCAL_TIMEOUT  seconds `up` waits (default 90)
# Logs: $FLINK_LOCAL_HOME/log (flink-*-standalonesession-*.log, flink-*-taskexecutor-*.log, and the
# Python workers' output inside the TaskManager log). Checkpoints: $FLINK_LOCAL_HOME/checkpoints.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-flink"
PYF="$VENV/bin/python"
FLINK_VERSION=2.2.1
CONNECTOR=org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2
LIB="$ROOT/.cache/flink/lib"
FHOME_STATE="${FLINK_LOCAL_HOME:-$ROOT/.cache/flink}"
PORT="${FLINK_LOCAL_PORT:-18081}"
RPC_PORT=$((PORT + 1))
PROM="${FLINK_LOCAL_PROM:-19250-19259}"
SLOTS="${FLINK_LOCAL_SLOTS:-1}"
TIMEOUT="${FLINK_LOCAL_TIMEOUT:-90}"

say() { echo "flink-local: $*"; }
die() { echo "flink-local: ERROR: $*" >&2; exit 1; }

flink_home() {
  [[ -x "$PYF" ]] || die "$VENV missing: run \`make flink-env\`"
  "$PYF" -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))'
}

cmd_env() {
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  if [[ ! -f "$VENV/.installed-$FLINK_VERSION" ]]; then
    say "creating $VENV (apache-flink==$FLINK_VERSION, ~1 min)"
    [[ -x "$PYF" ]] || python3 -m venv "$VENV"
    "$PYF" -m pip install -q --upgrade pip
    # what the job imports from this project (hazardctl.gating/messages/deadletter, stages.expand):
    # pydantic 2 and orjson have no conflict with the wheel's numpy<2.2/protobuf<6/pyarrow pins
    "$PYF" -m pip install -q "apache-flink==$FLINK_VERSION" "pydantic>=2.7,<3" "orjson>=3.10" "pyyaml>=6" \
      "prometheus-client>=0.20" "confluent-kafka>=2.6"
    "$PYF" -m pip install -q --no-deps -e "$ROOT"
    touch "$VENV/.installed-$FLINK_VERSION"
  fi
  mkdir -p "$LIB"
  local jar="$LIB/flink-sql-connector-kafka-5.0.0-2.2.jar"
  if [[ ! -f "$jar" ]]; then
    command -v mvn >/dev/null || die "mvn not found (needed once to download $CONNECTOR)"
    say "fetching $CONNECTOR from Maven Central"
    mvn -q dependency:copy -Dartifact="$CONNECTOR" -DoutputDirectory="$LIB"
  fi
  local src="$ROOT/stages/expand/java/KeyedRecords.java" out="$LIB/hazardctl-flink.jar"
  if [[ ! -f "$out" || "$src" -nt "$out" ]]; then
    command -v javac >/dev/null || die "javac not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
    local fh tmp; fh="$(flink_home)"; tmp="$(mktemp -d)"
    javac -nowarn -d "$tmp" -cp "$fh/lib/*:$jar" "$src"
    jar cf "$out.tmp" -C "$tmp" . && mv "$out.tmp" "$out"
    rm -rf "$tmp"
    say "built $out"
  fi
  say "ready: $VENV, $jar"
}

# JVMs of this cluster: java processes whose command line names our conf dir
cluster_pids() {  # $1 = StandaloneSessionClusterEntrypoint | TaskManagerRunner
  local conf="$FHOME_STATE/conf" p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "$1" || continue
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "$conf" || continue
    echo "${p#/proc/}"
  done
}

rest_up() { curl -fsS -m 2 "http://127.0.0.1:$PORT/overview" 2>/dev/null; }

write_conf() {
  local fh="$1" conf="$FHOME_STATE/conf"
  mkdir -p "$conf" "$FHOME_STATE/log" "$FHOME_STATE/run" "$FHOME_STATE/checkpoints" "$FHOME_STATE/savepoints"
  cp "$fh/conf/"log4j*.properties "$conf/"
  # the cluster's lib/: the wheel's lib/ + flink-python from opt/ (runs the job's Python operators);
  # the Kafka connector and the job's adapters travel with each job (pipeline.jars)
  rm -rf "$FHOME_STATE/cluster-lib" && mkdir -p "$FHOME_STATE/cluster-lib"
  ln -s "$fh"/lib/*.jar "$fh"/opt/flink-python-*.jar "$FHOME_STATE/cluster-lib/"
  cat >"$conf/config.yaml" <<EOF
# written by scripts/flink-local.sh — a small standalone session cluster on loopback
env:
  java:
    opts:
      all: $(grep -A3 '^env:' "$fh/conf/config.yaml" | sed -n 's/^ *all: //p')
  pid:
    dir: $FHOME_STATE/run
  log:
    dir: $FHOME_STATE/log
jobmanager:
  bind-host: 127.0.0.1
  rpc: {address: 127.0.0.1, port: $RPC_PORT}
  memory: {process: {size: 768m}}
  execution: {failover-strategy: region}
taskmanager:
  bind-host: 127.0.0.1
  host: 127.0.0.1
  numberOfTaskSlots: $SLOTS
  memory: {process: {size: 1536m}}
rest: {address: 127.0.0.1, bind-address: 127.0.0.1, port: $PORT}
parallelism: {default: 1}
heartbeat: {timeout: 15000, interval: 2000}
execution:
  checkpointing:
    dir: file://$FHOME_STATE/checkpoints
    savepoint-dir: file://$FHOME_STATE/savepoints
    externalized-checkpoint-retention: RETAIN_ON_CANCELLATION
python:
  executable: $PYF
  client: {executable: $PYF}
metrics:
  reporter:
    prom:
      factory: {class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory}
      port: $PROM
EOF
}

flink_env() {  # the environment the wheel's scripts need
  export FLINK_HOME="$1" FLINK_CONF_DIR="$FHOME_STATE/conf" FLINK_LOG_DIR="$FHOME_STATE/log"
  export FLINK_PID_DIR="$FHOME_STATE/run" FLINK_LIB_DIR="$FHOME_STATE/cluster-lib" PATH="$VENV/bin:$PATH"
  # python_mode: thread runs the job's Python inside the TaskManager JVM (pemja): give it the venv
  export PYTHONPATH="$("$PYF" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'):$ROOT"
}

wait_slots() {
  local deadline=$((SECONDS + TIMEOUT)) ov
  until ov="$(rest_up)" && [[ "$ov" =~ \"slots-total\":([1-9][0-9]*) ]]; do
    ((SECONDS < deadline)) || die "no TaskManager registered within ${TIMEOUT}s; see $FHOME_STATE/log"
    sleep 1
  done
}

cmd_up() {
  command -v java >/dev/null || die "java not found: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  local fh; fh="$(flink_home)"
  if [[ -n "$(cluster_pids StandaloneSessionClusterEntrypoint)" ]] && rest_up >/dev/null; then
    say "already running: http://127.0.0.1:$PORT"; return 0
  fi
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is taken by another program; set FLINK_LOCAL_PORT"
  write_conf "$fh"
  flink_env "$fh"
  "$fh/bin/jobmanager.sh" start >/dev/null
  "$fh/bin/taskmanager.sh" start >/dev/null
  wait_slots
  say "up: http://127.0.0.1:$PORT (JobManager $(cluster_pids StandaloneSessionClusterEntrypoint)," \
      "TaskManager $(cluster_pids TaskManagerRunner | tr '\n' ' ')), logs in $FHOME_STATE/log"
}

cmd_start_tm() {  # $1 = task slots of this TaskManager (default: the cluster's)
  local fh; fh="$(flink_home)"; flink_env "$fh"
  "$fh/bin/taskmanager.sh" start ${1:+-D taskmanager.numberOfTaskSlots=$1} >/dev/null
  wait_slots
  say "TaskManager $(cluster_pids TaskManagerRunner | tr '\n' ' ')"
}

descendants() {  # every process below the given pids (any depth)
  local p c
  for p in "$@"; do
    for c in $(pgrep -P "$p" 2>/dev/null || true); do echo "$c"; descendants "$c"; done
  done
}

cmd_kill_tm() {  # as when the TaskManager's host or container dies: the JVM and its Python workers at once
  local pids; pids="$(cluster_pids TaskManagerRunner)"
  [[ -n "$pids" ]] || die "no TaskManager running"
  local workers; workers="$(descendants $pids | tr '\n' ' ')"
  # shellcheck disable=SC2086
  kill -9 $pids $workers 2>/dev/null || true
  say "killed TaskManager $pids (and its workers: ${workers:-none})"
}

stop_pids() {  # TERM, wait, then KILL what is left
  local pids="$*" i
  [[ -n "${pids// /}" ]] || return 0
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  for i in $(seq 1 60); do
    local alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [[ -z "$alive" ]] && return 0
    ((i == 40)) && kill -9 $alive 2>/dev/null || true
    sleep 0.25
  done
}

cmd_stop_tm() {
  stop_pids $(cluster_pids TaskManagerRunner)
  say "TaskManagers stopped"
}

cmd_down() {
  local tms jms
  tms="$(cluster_pids TaskManagerRunner)"; jms="$(cluster_pids StandaloneSessionClusterEntrypoint)"
  stop_pids $tms
  stop_pids $jms
  rm -f "$FHOME_STATE/run/"*.pid
  say "down"
}

cmd_status() {
  if rest_up >/dev/null && [[ -n "$(cluster_pids StandaloneSessionClusterEntrypoint)" ]]; then
    say "running: http://127.0.0.1:$PORT $(rest_up)"; return 0
  fi
  say "not running"; return 3
}

cmd_pids() {
  local p
  for p in $(cluster_pids StandaloneSessionClusterEntrypoint); do echo "jobmanager $p"; done
  for p in $(cluster_pids TaskManagerRunner); do echo "taskmanager $p"; done
}

case "${1:-}" in
  env) cmd_env ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  kill-tm) cmd_kill_tm ;;
  start-tm) cmd_start_tm "${2:-}" ;;
  stop-tm) cmd_stop_tm ;;
  pids) cmd_pids ;;
  *) echo "usage: $0 env|up|down|status|kill-tm|start-tm [SLOTS]|stop-tm|pids" >&2; exit 1 ;;
esac
