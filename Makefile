# healthmon: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
RUN_DIR := .local/run
export HEALTHMON_KAFKA_PORT ?= 9092
export HEALTHMON_REDIS_PORT ?= 6379
export HEALTHMON_BROKER ?= kafka://127.0.0.1:$(HEALTHMON_KAFKA_PORT)
export HEALTHMON_REDIS_URL ?= redis://127.0.0.1:$(HEALTHMON_REDIS_PORT)/0
export HEALTHMON_DATA_DIR ?= $(RUN_DIR)/faust

.PHONY: help install run stop status stack stack-stop test lint format bench clean

help:
	@echo "make run    start Kafka + Redis + a worker and feed the sample customer base"
	@echo "make stop   stop the worker and the local stack that make run started"
	@echo "make test   install, start the test stack, run the whole suite, stop it"
	@echo "make lint   ruff check + format check"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

stack:
	@.ci/stack.sh up

stack-stop:
	@.ci/stack.sh down

status:
	@.ci/stack.sh status || true
	@if [ -f $(RUN_DIR)/worker.pid ] && kill -0 $$(cat $(RUN_DIR)/worker.pid) 2>/dev/null; then \
	  echo "worker: running, pid $$(cat $(RUN_DIR)/worker.pid), log $(RUN_DIR)/worker.log"; else echo "worker: stopped"; fi

run: install stack
	@mkdir -p $(RUN_DIR)
	$(BIN)/healthmon topics create
	@if [ -f $(RUN_DIR)/worker.pid ] && kill -0 $$(cat $(RUN_DIR)/worker.pid) 2>/dev/null; then \
	  echo "worker already running (pid $$(cat $(RUN_DIR)/worker.pid))"; \
	else \
	  nohup $(BIN)/healthmon worker -l info > $(RUN_DIR)/worker.log 2>&1 & echo $$! > $(RUN_DIR)/worker.pid; \
	  echo "worker started (pid $$(cat $(RUN_DIR)/worker.pid), log $(RUN_DIR)/worker.log)"; \
	fi
	@for i in $$(seq 1 60); do grep -q "Worker ready" $(RUN_DIR)/worker.log 2>/dev/null && break; sleep 1; done
	$(BIN)/healthmon replay "$$($(BIN)/healthmon sample)"
	@echo
	@echo "healthmon is running. Where to look:"
	@echo "  $(BIN)/healthmon tail cs.health            # account snapshots (compacted: latest per account)"
	@echo "  $(BIN)/healthmon tail cs.deadletter        # rejected events with the reason"
	@echo "  tail -f $(RUN_DIR)/worker.log              # the worker"
	@echo "  make status / make stop"

stop:
	@if [ -f $(RUN_DIR)/worker.pid ]; then kill $$(cat $(RUN_DIR)/worker.pid) 2>/dev/null || true; rm -f $(RUN_DIR)/worker.pid; echo "worker stopped"; fi
	@.ci/stack.sh down

test: install
	@.ci/test.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: stop
	rm -rf .local $(VENV)
