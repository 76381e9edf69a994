#!/usr/bin/env bash
# kafka-local.sh — run a real single-node Apache Kafka 4.x broker (KRaft, combined
# broker+controller) on 127.0.0.1 without Docker. The jars come from Maven Central.
#
# Usage: scripts/kafka-local.sh up | down [--wipe] | status | fetch   [--secure]
#        scripts/kafka-local.sh cluster up | down [--wipe] | status | kill N | start N | bootstrap
#          (three brokers on 127.0.0.1:19092-19094; see "cluster mode" below)
# Env:   KAFKA_LOCAL_HOME    cache/state dir          (default <repo>/.cache/kafka, secure: .cache/kafka-secure)
#        KAFKA_LOCAL_PORT    broker port              (default 9092, secure: 9192; controller = port+1)
#        KAFKA_LOCAL_TIMEOUT seconds `up` waits       (default 60)
#        KAFKA_LOCAL_WIPE=1  `down` also deletes the data dir
#        KAFKA_LOCAL_VERSION kafka_2.13 version       (default 4.1.0)
#        KAFKA_LOCAL_LIBS    jar folder               (default $KAFKA_LOCAL_HOME/libs; secure: the
#                                                      plaintext broker's .cache/kafka/libs, shared)
#        KAFKA_LOCAL_READY=log  `up` trusts the broker's "Kafka Server started" log line (and the open
#                            port) instead of a client round trip with a Java tool (tests; saves a JVM)
# Secured mode (`--secure` or KAFKA_LOCAL_SECURE=1): a second, independent broker whose only client
# listener is SASL_SSL with SCRAM-SHA-256 (the controller stays on plaintext loopback). On first `up`
# it makes a throwaway CA and a server certificate for 127.0.0.1/localhost (openssl, PEM files that
# Kafka 4 reads directly), formats the storage with two SCRAM users (`admin` for the broker itself,
# KAFKA_LOCAL_SCRAM_USER for clients, default `hazardctl`; passwords random unless
# KAFKA_LOCAL_SCRAM_PASSWORD is set) and writes, mode 0600, in its home:
#   client.env   HAZARDCTL_KAFKA_* variables for the stages (bootstrap, SASL_SSL, user, password, CA)
#   client.yaml  the same as a config/kafka.yaml (the password as ${HAZARDCTL_KAFKA_SASL_PASSWORD})
#   tls/ca.pem   the CA the clients must trust
# Secrets are never printed. `down --secure` stops only the secured broker.
# Notes: auto.create.topics.enable=false — create topics explicitly (AdminClient or
# TopicCommand) so tests never depend on a topic silently appearing with defaults.
# Exit codes: status -> 0 running / 3 not running; others 0 ok / 1 error.
set -euo pipefail

SECURE="${KAFKA_LOCAL_SECURE:-0}"
ARGS=()
for a in "$@"; do
  if [[ "$a" == --secure ]]; then SECURE=1; else ARGS+=("$a"); fi
done
set -- "${ARGS[@]+"${ARGS[@]}"}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "$SECURE" == 1 ]]; then
  KHOME="${KAFKA_LOCAL_HOME:-$ROOT/.cache/kafka-secure}"
  PORT="${KAFKA_LOCAL_PORT:-9192}"
  LIBS="${KAFKA_LOCAL_LIBS:-$ROOT/.cache/kafka/libs}"   # one download serves both brokers
else
  KHOME="${KAFKA_LOCAL_HOME:-$ROOT/.cache/kafka}"
  PORT="${KAFKA_LOCAL_PORT:-9092}"
  LIBS="${KAFKA_LOCAL_LIBS:-}"
fi
mkdir -p "$KHOME" && KHOME="$(cd "$KHOME" && pwd)"   # absolute, works from any cwd
LIBS="${LIBS:-$KHOME/libs}"
VERSION="${KAFKA_LOCAL_VERSION:-4.1.0}"
LOG4J_VERSION=2.24.3                                  # the log4j2 line Kafka 4.1 builds against
CPORT=$((PORT + 1))
TIMEOUT="${KAFKA_LOCAL_TIMEOUT:-60}"
DATA="$KHOME/data" PIDF="$KHOME/kafka.pid" LOG="$KHOME/kafka.log"
TLS="$KHOME/tls" SECRETS="$KHOME/secrets.env"
SCRAM_USER="${KAFKA_LOCAL_SCRAM_USER:-hazardctl}"
MODE="$([[ "$SECURE" == 1 ]] && echo "SASL_SSL+SCRAM-SHA-256" || echo "PLAINTEXT")"
MARKER="$LIBS/.fetched-$VERSION"
CP="$LIBS/*"

say() { echo "kafka-local: $*"; }
die() { echo "kafka-local: ERROR: $*" >&2; exit 1; }

# Running = pid file names a live process that really is our broker (guards pid reuse).
running_pid() {
  local pid
  pid="$(cat "$PIDF" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Kafka CLI tools log to tools.log through the same log4j2 config, not to the console.
# daemon PIDFILE CMD... &  (always in the background): CMD in its own session (it outlives the calling
# shell or terminal) with only stdin/stdout/stderr: a descriptor the caller holds (a `flock` lock, a
# pipe) must not stay open for the broker's lifetime. Each step exec's the next, so no shell stays
# behind holding one; the inner bash writes its own pid and exec's CMD: the pid file is the JVM's.
daemon() {
  # shellcheck disable=SC2016  # $$, $f and $@ expand in the inner bash
  exec setsid bash -c 'echo $$ >"$0"; for f in /proc/$$/fd/*; do n=${f##*/}; ((n > 2)) && eval "exec $n>&-"; done 2>/dev/null
                       exec "$@"' "$@"
}

KJAVA=(java -Xmx256m -Dlog4j2.configurationFile="$KHOME/log4j2.properties"
  -Dkafka.local.logfile="$KHOME/tools.log" -cp "$CP")

cmd_fetch() {
  if [[ -f "$MARKER" ]]; then say "jars for kafka $VERSION already in $LIBS"; return 0; fi
  command -v mvn >/dev/null || die "mvn not found (needed once to download the jars)"
  say "fetching kafka_2.13:$VERSION + kafka-tools + log4j2 from Maven Central into $LIBS"
  rm -rf "$LIBS"   # no mixing of jar versions after a version change or a failed fetch
  # Kafka 4.1 still resolves slf4j-api 1.7.36, so the log4j2 binding must be the SLF4J-1.x
  # one (log4j-slf4j-impl, as in Kafka's own tarball); log4j-slf4j2-impl => silent NOP logger.
  # kafka-tools is only here for TopicCommand; connect-runtime (jetty, jersey: 11 MB) is not needed.
  dep() { echo "<dependency><groupId>$1</groupId><artifactId>$2</artifactId><version>$3</version></dependency>"; }
  cat >"$KHOME/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
  <groupId>local.hazardctl</groupId><artifactId>kafka-local</artifactId><version>1</version>
  <packaging>pom</packaging><dependencies>
    $(dep org.apache.kafka kafka_2.13 "$VERSION")
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>$VERSION</version><exclusions><exclusion><groupId>org.apache.kafka</groupId>
      <artifactId>connect-runtime</artifactId></exclusion></exclusions></dependency>
    $(dep org.apache.logging.log4j log4j-core "$LOG4J_VERSION")
    $(dep org.apache.logging.log4j log4j-slf4j-impl "$LOG4J_VERSION")
</dependencies></project>
EOF
  mvn -q -B -f "$KHOME/pom.xml" dependency:copy-dependencies -DoutputDirectory="$LIBS" \
    -DincludeScope=runtime >"$KHOME/mvn.log" 2>&1 \
    || { tail -n 30 "$KHOME/mvn.log" >&2; die "mvn dependency download failed (log $KHOME/mvn.log)"; }
  ls "$LIBS"/kafka_2.13-"$VERSION".jar >/dev/null 2>&1 || die "kafka_2.13-$VERSION.jar missing after fetch"
  touch "$MARKER"
  local jars=("$LIBS"/*.jar)
  say "fetched ${#jars[@]} jars ($(du -sh "$LIBS" | cut -f1))"
}

# ---- secured mode: certificates, SCRAM secrets, client settings -------------------------------

# A CA and a server certificate (SAN 127.0.0.1 + localhost), remade when missing or expiring within
# a day. PEM throughout: Kafka 4 reads a PEM keystore (unencrypted PKCS#8 key + chain) directly.
make_certs() {
  mkdir -p "$TLS" && chmod 700 "$TLS"
  if [[ -f "$TLS/server-keystore.pem" ]] && openssl x509 -checkend 86400 -noout -in "$TLS/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  command -v openssl >/dev/null || die "openssl not found (needed to make the test CA)"
  local days="${KAFKA_LOCAL_CERT_DAYS:-30}"
  (
    cd "$TLS"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
      -subj "/CN=hazardctl kafka-local test CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
      -extfile server.ext -out server.pem
    cat server.key server.pem ca.pem >server-keystore.pem
    chmod 600 ca.key server.key server-keystore.pem
    rm -f server.csr server.ext
  ) >"$KHOME/openssl.log" 2>&1 || die "making the test certificates failed (see $KHOME/openssl.log)"
  say "made a test CA and a server certificate for 127.0.0.1 in $TLS (CA: $TLS/ca.pem)"
}

# Passwords are made once, with the storage (SCRAM credentials live in the metadata log).
make_secrets() {
  [[ -f "$SECRETS" ]] && return 0
  [[ -f "$DATA/meta.properties" ]] && die "$DATA is formatted but $SECRETS is missing: run 'down --wipe --secure', then up"
  local pw="${KAFKA_LOCAL_SCRAM_PASSWORD:-$(openssl rand -hex 24)}"
  [[ "$pw" =~ ^[A-Za-z0-9._~+/=-]{8,}$ ]] || die "KAFKA_LOCAL_SCRAM_PASSWORD: 8+ characters of A-Z a-z 0-9 . _ ~ + / = -"
  [[ "$SCRAM_USER" =~ ^[A-Za-z0-9._-]+$ ]] || die "KAFKA_LOCAL_SCRAM_USER: letters, digits, . _ - only"
  (umask 077; printf 'ADMIN_PASSWORD=%s\nCLIENT_USER=%s\nCLIENT_PASSWORD=%s\n' \
    "$(openssl rand -hex 24)" "$SCRAM_USER" "$pw" >"$SECRETS")
}

load_secrets() {
  ADMIN_PASSWORD="$(sed -n 's/^ADMIN_PASSWORD=//p' "$SECRETS")"
  CLIENT_USER="$(sed -n 's/^CLIENT_USER=//p' "$SECRETS")"
  CLIENT_PASSWORD="$(sed -n 's/^CLIENT_PASSWORD=//p' "$SECRETS")"
}

write_client_files() {
  (umask 077
  cat >"$KHOME/client.env" <<EOF
# Generated by scripts/kafka-local.sh --secure: the stages' settings for the secured local broker.
HAZARDCTL_KAFKA_BOOTSTRAP=127.0.0.1:$PORT
HAZARDCTL_KAFKA_SECURITY_PROTOCOL=SASL_SSL
HAZARDCTL_KAFKA_SASL_MECHANISM=SCRAM-SHA-256
HAZARDCTL_KAFKA_SASL_USERNAME=$CLIENT_USER
HAZARDCTL_KAFKA_SASL_PASSWORD=$CLIENT_PASSWORD
HAZARDCTL_KAFKA_SSL_CA=$TLS/ca.pem
EOF
  cat >"$KHOME/client.yaml" <<EOF
# Generated by scripts/kafka-local.sh --secure (a config/kafka.yaml for the secured local broker).
# The password comes from the environment: set -a; . $KHOME/client.env; set +a
bootstrap_servers: 127.0.0.1:$PORT
security_protocol: SASL_SSL
sasl_mechanism: SCRAM-SHA-256
sasl_username: $CLIENT_USER
sasl_password: \${HAZARDCTL_KAFKA_SASL_PASSWORD}
ssl_ca_location: $TLS/ca.pem
EOF
  # the Java tools' view (readiness check, kafka-topics by hand): the broker's own admin user
  cat >"$KHOME/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$ADMIN_PASSWORD";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
EOF
  )
}

write_config() {
  if [[ "$SECURE" == 1 ]]; then
    (umask 077; cat >"$KHOME/server.properties" <<EOF
# Generated by scripts/kafka-local.sh --secure — edits are overwritten on every 'up'.
process.roles=broker,controller
node.id=1
listeners=SASL_SSL://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=SASL_SSL://127.0.0.1:$PORT
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-256
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$ADMIN_PASSWORD";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/server-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
ssl.client.auth=none
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
EOF
    )
  else
  cat >"$KHOME/server.properties" <<EOF
# Generated by scripts/kafka-local.sh — edits are overwritten on every 'up'.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
EOF
  fi
  cat >>"$KHOME/server.properties" <<EOF
log.dirs=$DATA
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  # log4j2: everything to a file (path from a system property), nothing on the console.
  cat >"$KHOME/log4j2.properties" <<'EOF'
appender.file.type=File
appender.file.name=file
appender.file.fileName=${sys:kafka.local.logfile}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
EOF
}

cmd_up() {
  local pid
  if pid="$(running_pid)"; then say "already running (pid $pid) on 127.0.0.1:$PORT"; return 0; fi
  port_open "$PORT" && die "127.0.0.1:$PORT is already in use by another process"
  cmd_fetch
  local scram=() ready_conf=()
  if [[ "$SECURE" == 1 ]]; then
    make_certs
    make_secrets
    load_secrets
    write_client_files
    # SCRAM users are created with the storage (KRaft keeps credentials in the metadata log)
    scram=(--add-scram "SCRAM-SHA-256=[name=admin,password=$ADMIN_PASSWORD]"
           --add-scram "SCRAM-SHA-256=[name=$CLIENT_USER,password=$CLIENT_PASSWORD]")
    ready_conf=(--command-config "$KHOME/admin.properties")
  fi
  write_config
  if [[ ! -f "$DATA/meta.properties" ]]; then   # format once; re-formatting would fail
    local id
    if [[ "$SECURE" == 1 ]]; then   # a cluster id is 16 random bytes, base64url: no JVM needed for that
      # (not starting with '-', as Kafka's own random-uuid ensures: the CLI would read it as an option)
      id="-"
      while [[ "$id" == -* ]]; do id="$(openssl rand -base64 16 | tr '+/' '-_' | tr -d '=\n')"; done
    else
      id="$("${KJAVA[@]}" kafka.tools.StorageTool random-uuid | tail -n1)"
    fi
    "${KJAVA[@]}" kafka.tools.StorageTool format -t "$id" -c "$KHOME/server.properties" --standalone \
      "${scram[@]+"${scram[@]}"}" >/dev/null || die "storage format failed (see $KHOME/tools.log)"
    say "formatted storage in $DATA (cluster id $id)${scram[*]:+, SCRAM-SHA-256 users admin and $CLIENT_USER}"
  fi
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"   # keep the previous run's log, bounded
  daemon "$PIDF" java -Xms256m -Xmx512m -XX:+UseG1GC \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KHOME/log4j2.properties" \
    -Dkafka.local.logfile="$LOG" -cp "$CP" kafka.Kafka "$KHOME/server.properties" \
    </dev/null >>"$KHOME/kafka.out" 2>&1 &
  local t0=$SECONDS deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! running_pid >/dev/null; then sleep 0.5; running_pid >/dev/null || break; fi
    local left=$((deadline - SECONDS)); ((left > 0)) || break
    # TCP accept first (cheap), then a real Kafka-protocol round trip (metadata request);
    # the tool's own wait is capped so the overall timeout holds.
    # secured mode: no JVM round trip before the broker says it started (each costs seconds of CPU)
    if [[ "$SECURE" == 1 || "${KAFKA_LOCAL_READY:-}" == log ]] && ! grep -q "Kafka Server started" "$LOG" 2>/dev/null; then
      sleep 0.5; continue
    fi
    if port_open "$PORT" && { [[ "${KAFKA_LOCAL_READY:-}" == log ]] || timeout "$((left < 20 ? left : 20))" "${KJAVA[@]}" \
         org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$PORT" --list \
         "${ready_conf[@]+"${ready_conf[@]}"}" >/dev/null 2>&1; }; then
      say "up: pid $(cat "$PIDF"), bootstrap 127.0.0.1:$PORT ($MODE), ready after $((SECONDS - t0))s (log $LOG)"
      [[ "$SECURE" == 1 ]] && say "client settings: $KHOME/client.env (user $CLIENT_USER; the password is in that file, mode 0600)"
      return 0
    fi
    sleep 1
  done
  echo "kafka-local: ERROR: broker not ready within ${TIMEOUT}s; last 30 log lines:" >&2
  tail -n 30 "$LOG" >&2 || true
  [[ -s "$KHOME/kafka.out" ]] && tail -n 10 "$KHOME/kafka.out" >&2   # JVM-level errors
  cmd_down >/dev/null 2>&1 || true
  exit 1
}

cmd_down() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then say "no exit after 30s, sending SIGKILL"; kill -KILL "$pid"; fi
    say "stopped (pid $pid)"
  else
    say "not running"
  fi
  rm -f "$PIDF"
  if [[ "${KAFKA_LOCAL_WIPE:-0}" == 1 ]]; then rm -rf "$DATA"; say "wiped $DATA"; fi
}

# ---- cluster mode: three brokers on loopback (issue 20) -----------------------------------------
# `cluster up|down [--wipe]|status|kill N|start N|bootstrap`: three combined broker+controller nodes
# (node ids 1..3, a static KRaft voter set), each with its own home under $KAFKA_CLUSTER_HOME (default
# .cache/kafka-cluster/bN) and the jars of .cache/kafka/libs. Client ports 19092..19094, controller
# ports 19192..19194 (KAFKA_CLUSTER_PORT / KAFKA_CLUSTER_CPORT move the first of each): clear of the
# single broker (9092/9093) and the secured one (9192/9193). Internal topics are replicated 3 with
# min.insync.replicas 2, so any one broker may die. Small heaps (-Xmx384m, KAFKA_CLUSTER_HEAP): three
# JVMs on a 2-core machine. `kill N` is kill -9 (a crash, for chaos tests); `start N` brings that
# broker back on its old data.
CL_HOME="${KAFKA_CLUSTER_HOME:-$ROOT/.cache/kafka-cluster}"
CL_PORT="${KAFKA_CLUSTER_PORT:-19092}"
CL_CPORT="${KAFKA_CLUSTER_CPORT:-19192}"
CL_HEAP="${KAFKA_CLUSTER_HEAP:-384m}"
CL_N=3

cl_home() { echo "$CL_HOME/b$1"; }
cl_port() { echo $((CL_PORT + $1 - 1)); }
cl_pid() {  # the live JVM of broker N, or nothing
  local pid
  pid="$(cat "$(cl_home "$1")/kafka.pid" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}
cl_bootstrap() { local i out=(); for i in $(seq $CL_N); do out+=("127.0.0.1:$(cl_port "$i")"); done; (IFS=,; echo "${out[*]}"); }
cl_check_n() { [[ "${1:-}" =~ ^[1-3]$ ]] || { echo "usage: $0 cluster kill|start N   (N = 1, 2 or 3)" >&2; exit 2; }; }

cl_config() {  # server.properties of broker N (rewritten on every start)
  local n="$1" h voters="" i
  h="$(cl_home "$n")"
  for i in $(seq $CL_N); do voters+="${voters:+,}$i@127.0.0.1:$((CL_CPORT + i - 1))"; done
  mkdir -p "$h"
  cat >"$h/server.properties" <<EOF
# Generated by scripts/kafka-local.sh cluster — edits are overwritten on every start.
process.roles=broker,controller
node.id=$n
listeners=PLAINTEXT://127.0.0.1:$(cl_port "$n"),CONTROLLER://127.0.0.1:$((CL_CPORT + n - 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$(cl_port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
controller.quorum.voters=$voters
log.dirs=$h/data
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=2
background.threads=2
# a crashed broker is fenced (its partitions get new leaders) 3 s after its last heartbeat, not 9 s:
# a task's deadline is 10 s end to end, and the controller's own failover takes ~2 s of that
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
EOF
  cp "$KHOME/log4j2.properties" "$h/log4j2.properties"
}

cl_start() {  # start broker N (formatting its storage once, with the cluster's id)
  local n="$1" h pid
  h="$(cl_home "$n")"
  if pid="$(cl_pid "$n")"; then say "broker $n already running (pid $pid) on 127.0.0.1:$(cl_port "$n")"; return 0; fi
  port_open "$(cl_port "$n")" && die "127.0.0.1:$(cl_port "$n") is already in use by another process"
  cl_config "$n"
  if [[ ! -f "$h/data/meta.properties" ]]; then
    [[ -s "$CL_HOME/cluster.id" ]] || "${KJAVA[@]}" kafka.tools.StorageTool random-uuid | tail -n1 >"$CL_HOME/cluster.id"
    "${KJAVA[@]}" kafka.tools.StorageTool format -t "$(cat "$CL_HOME/cluster.id")" -c "$h/server.properties" \
      >/dev/null || die "storage format of broker $n failed (see $KHOME/tools.log)"
  fi
  [[ -f "$h/kafka.log" ]] && mv -f "$h/kafka.log" "$h/kafka.log.1"
  daemon "$h/kafka.pid" java -Xms128m -Xmx"$CL_HEAP" -XX:+UseSerialGC \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$h/log4j2.properties" \
    -Dkafka.local.logfile="$h/kafka.log" -cp "$CP" kafka.Kafka "$h/server.properties" \
    </dev/null >>"$h/kafka.out" 2>&1 &
  sleep 0.2
}

cl_wait() {  # until every named broker logged its start and accepts connections
  local deadline=$((SECONDS + ${KAFKA_LOCAL_TIMEOUT:-120})) n waiting=()
  while ((SECONDS < deadline)); do
    waiting=()
    for n in "$@"; do
      if ! cl_pid "$n" >/dev/null; then
        sleep 1
        cl_pid "$n" >/dev/null || die "broker $n exited; last log lines: $(tail -n 5 "$(cl_home "$n")/kafka.log" 2>/dev/null)"
      fi
      { grep -q "Kafka Server started" "$(cl_home "$n")/kafka.log" 2>/dev/null && port_open "$(cl_port "$n")"; } || waiting+=("$n")
    done
    ((${#waiting[@]} == 0)) && return 0
    sleep 1
  done
  die "broker(s) ${waiting[*]} not ready within ${KAFKA_LOCAL_TIMEOUT:-120}s (logs $CL_HOME/bN/kafka.log)"
}

cl_stop() {  # SIGTERM broker N, SIGKILL after 30 s
  local n="$1" pid
  if pid="$(cl_pid "$n")"; then
    kill -TERM "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    say "broker $n stopped (pid $pid)"
  fi
  rm -f "$(cl_home "$n")/kafka.pid"
}

cmd_cluster() {
  local sub="${1:-}" n pid t0=$SECONDS
  mkdir -p "$CL_HOME"
  case "$sub" in
    up)
      cmd_fetch >/dev/null
      [[ -f "$KHOME/log4j2.properties" ]] || write_config
      for n in $(seq $CL_N); do cl_start "$n"; done
      # shellcheck disable=SC2046
      cl_wait $(seq $CL_N)
      say "cluster up: bootstrap $(cl_bootstrap) (3 brokers, KRaft voters 1-3), ready after $((SECONDS - t0))s (logs $CL_HOME/bN/kafka.log)" ;;
    down)
      # all at once: a voter left alone without its quorum would wait out its shutdown timeout
      for n in $(seq $CL_N); do pid="$(cl_pid "$n")" && kill -TERM "$pid"; done
      for n in $(seq $CL_N); do cl_stop "$n"; done
      if [[ "${2:-}" == --wipe || "${KAFKA_LOCAL_WIPE:-0}" == 1 ]]; then rm -rf "$CL_HOME"; say "wiped $CL_HOME"; fi
      say "cluster down" ;;
    status)
      local up=0
      for n in $(seq $CL_N); do
        if pid="$(cl_pid "$n")"; then say "broker $n running (pid $pid) on 127.0.0.1:$(cl_port "$n")"; up=$((up + 1))
        else say "broker $n not running"; fi
      done
      ((up > 0)) || exit 3 ;;
    kill)
      cl_check_n "${2:-}"; n="$2"
      if pid="$(cl_pid "$n")"; then kill -KILL "$pid"; rm -f "$(cl_home "$n")/kafka.pid"; say "broker $n killed (kill -9, pid $pid)"
      else say "broker $n not running"; fi ;;
    start)
      cl_check_n "${2:-}"; n="$2"
      cl_start "$n"; cl_wait "$n"
      say "broker $n up on 127.0.0.1:$(cl_port "$n") after $((SECONDS - t0))s" ;;
    bootstrap) cl_bootstrap ;;
    *) echo "usage: $0 cluster up | down [--wipe] | status | kill N | start N | bootstrap" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  cluster) shift; cmd_cluster "$@" ;;
  fetch) cmd_fetch ;;
  up) cmd_up ;;
  down) [[ "${2:-}" == --wipe ]] && KAFKA_LOCAL_WIPE=1; cmd_down ;;
  status) if pid="$(running_pid)"; then say "running (pid $pid) on 127.0.0.1:$PORT ($MODE)"; exit 0; fi
          say "not running"; exit 3 ;;
  *) echo "usage: $0 up | down [--wipe] | status | fetch   [--secure] | cluster up|down|status|kill N|start N" >&2; exit 2 ;;
esac
