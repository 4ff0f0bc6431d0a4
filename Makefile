# healthmon: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
RUN_DIR := .local/run
INGEST_ENV := $(RUN_DIR)/ingest.env
export HEALTHMON_KAFKA_PORT ?= 9092
export HEALTHMON_REDIS_PORT ?= 6379
export HEALTHMON_BROKER ?= kafka://127.0.0.1:$(HEALTHMON_KAFKA_PORT)
export HEALTHMON_REDIS_URL ?= redis://127.0.0.1:$(HEALTHMON_REDIS_PORT)/0
export HEALTHMON_DATA_DIR ?= $(RUN_DIR)/faust
DEMO_SMTP_PORT ?= 8025
# The demo's simulated customer base: accounts, days of history replayed before going live, pace.
DEMO_ACCOUNTS ?= 100
DEMO_DAYS ?= 60
DEMO_RATE ?= 1500

.PHONY: help install run _start stop status stack stack-stop test test-faults lint format bench clean
.PHONY: test-kafka4 _demo_reset ingest-secrets

help:
	@echo "make run    start Kafka + Redis + a worker (+ serve, ingest, deliver) and feed a simulated customer base"
	@echo "make stop   stop the worker and the local stack that make run started"
	@echo "make clean  stop, then delete all local state (.local: topics, tables) and the venv"
	@echo "make test   install, start the test stack, run the whole suite, stop it"
	@echo "make test-kafka4  the integration suite on Kafka 4.x (CI runs it after make test)"
	@echo "make lint   ruff check + format check + mypy"
	@echo "make bench  benchmarks on the local stack (results in bench/results/)"

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
	@for n in simulator worker tasks readmodel serve ingest deliver mail; do \
	  if [ -f $(RUN_DIR)/$$n.pid ] && kill -0 $$(cat $(RUN_DIR)/$$n.pid) 2>/dev/null; then \
	    echo "$$n: running, pid $$(cat $(RUN_DIR)/$$n.pid), log $(RUN_DIR)/$$n.log"; else echo "$$n: stopped"; fi; \
	done

# The demo simulates a customer base (personas drifting towards churn, payment trouble, growth):
# DEMO_DAYS of history up to now are replayed at DEMO_RATE events/s on event time, then the simulator
# goes on live. Alerts are delivered by email to a local SMTP sink that writes .local/run/mail.log.
run: install _demo_reset stack $(INGEST_ENV)
	@mkdir -p $(RUN_DIR)
	$(BIN)/healthmon topics create
	@$(MAKE) --no-print-directory _start NAME=mail CMD="$(PY) -m aiosmtpd -n -c aiosmtpd.handlers.Debugging -l 127.0.0.1:$(DEMO_SMTP_PORT)"
	@HEALTHMON_CLOCK=live HEALTHMON_READMODEL_ENABLED=false $(MAKE) --no-print-directory _start NAME=worker CMD="$(BIN)/healthmon worker -l info"
	@HEALTHMON_CLOCK=live $(MAKE) --no-print-directory _start NAME=tasks CMD="$(BIN)/healthmon tasks-worker -l info"
	@$(MAKE) --no-print-directory _start NAME=readmodel CMD="$(BIN)/healthmon readmodel"
	@$(MAKE) --no-print-directory _start NAME=serve CMD="$(BIN)/healthmon serve"
	@set -a && . $(INGEST_ENV) && set +a && $(MAKE) --no-print-directory _start NAME=ingest CMD="$(BIN)/healthmon ingest"
	@HEALTHMON_SMTP_PORT=$(DEMO_SMTP_PORT) $(MAKE) --no-print-directory _start NAME=deliver CMD="$(BIN)/healthmon deliver"
	@for i in $$(seq 1 60); do grep -q "Worker ready" $(RUN_DIR)/worker.log 2>/dev/null && break; sleep 1; done
	@$(MAKE) --no-print-directory _start NAME=simulator CMD="$(BIN)/healthmon simulate --accounts $(DEMO_ACCOUNTS) --days $(DEMO_DAYS) --seed 7 --truth $(RUN_DIR)/truth.json --produce --rate $(DEMO_RATE) --follow"
	@echo
	@echo "healthmon is running: $(DEMO_ACCOUNTS) simulated accounts, $(DEMO_DAYS) days of history replaying (a few minutes), then live."
	@echo "Dashboard (portfolio, at-risk accounts, renewals; live): http://$${HEALTHMON_SERVE_HOST:-127.0.0.1}:$${HEALTHMON_SERVE_PORT:-8080}/"
	@echo "Where to look:"
	@echo "  $(BIN)/healthmon tail cs.health.changes --from-end   # accounts moving between bands, with the why"
	@echo "  $(BIN)/healthmon tail cs.alerts --from-end           # alerts firing / resolving, with the playbook step"
	@echo "  $(BIN)/healthmon tail cs.health --latest             # latest snapshot per account: score, band, drivers"
	@echo "  $(BIN)/healthmon tail cs.deadletter                  # rejected events with the reason"
	@echo "  set -a; . $(INGEST_ENV); set +a                     # the ingest demo secrets, then the curl calls of README 'Ingest'"
	@echo "  redis-cli -p $(HEALTHMON_REDIS_PORT) zrange healthmon:scores 0 9 withscores   # the ten least healthy (read model)"
	@echo "  less $(RUN_DIR)/mail.log                             # the CSMs' alert emails (after group_wait, 30 s)"
	@echo "  $(BIN)/healthmon mail-preview                        # what a CSM really gets per day (the replay's mail is grouped on the wall clock)"
	@echo "  $(BIN)/healthmon evaluate $(RUN_DIR)/truth.json      # once the history is in: does the score predict churn?"
	@echo "  tail -f $(RUN_DIR)/worker.log $(RUN_DIR)/simulator.log; make status; make stop"

# `make run` starts the demo from scratch: the simulator replays DEMO_DAYS of history, and replaying it
# onto the state a previous run left (`make stop` keeps it) would count that history twice. So when a
# previous demo's state is there and its simulator is not running, it is reset first (topics, tables,
# read model, mail log). `make clean` deletes all local state and the venv.
_demo_reset:
	@if [ -f $(RUN_DIR)/demo.state ] && ! { [ -f $(RUN_DIR)/simulator.pid ] && kill -0 $$(cat $(RUN_DIR)/simulator.pid) 2>/dev/null; }; then \
	  echo "resetting the previous demo's state (topics, tables, read model): its history is replayed from scratch"; \
	  $(MAKE) --no-print-directory stop >/dev/null; \
	  .ci/stack.sh clean; \
	  rm -rf $(HEALTHMON_DATA_DIR) $(RUN_DIR)/truth.json $(RUN_DIR)/mail.log $(RUN_DIR)/*.log; \
	fi
	@mkdir -p $(RUN_DIR) && touch $(RUN_DIR)/demo.state

# The ingest service's demo secrets (a Segment write key, Stripe/Zendesk/webhook signing secrets):
# random, generated once into $(INGEST_ENV) (mode 600). The service has no default secret and refuses
# to start without them; docker-compose.yml reads the same file.
ingest-secrets: $(INGEST_ENV)

$(INGEST_ENV):
	@mkdir -p $(RUN_DIR)
	@umask 077 && $(PYTHON) -c 'import secrets as s; print("\n".join([ \
	  "HEALTHMON_INGEST_SEGMENT_WRITE_KEYS=wk_" + s.token_hex(16), \
	  "HEALTHMON_INGEST_STRIPE_SECRET=whsec_" + s.token_hex(24), \
	  "HEALTHMON_INGEST_ZENDESK_SECRET=" + s.token_urlsafe(32), \
	  "HEALTHMON_INGEST_WEBHOOK_SECRET=" + s.token_urlsafe(32)]))' > $@.tmp && mv $@.tmp $@
	@echo "ingest demo secrets written to $@"

_start:
	@if [ -f $(RUN_DIR)/$(NAME).pid ] && kill -0 $$(cat $(RUN_DIR)/$(NAME).pid) 2>/dev/null; then \
	  echo "$(NAME) already running (pid $$(cat $(RUN_DIR)/$(NAME).pid))"; \
	else \
	  nohup $(CMD) > $(RUN_DIR)/$(NAME).log 2>&1 & echo $$! > $(RUN_DIR)/$(NAME).pid; \
	  echo "$(NAME) started (pid $$(cat $(RUN_DIR)/$(NAME).pid), log $(RUN_DIR)/$(NAME).log)"; \
	fi

stop:
	@for n in simulator deliver ingest serve readmodel tasks worker mail; do \
	  if [ -f $(RUN_DIR)/$$n.pid ]; then kill $$(cat $(RUN_DIR)/$$n.pid) 2>/dev/null || true; rm -f $(RUN_DIR)/$$n.pid; echo "$$n stopped"; fi; \
	done
	@.ci/stack.sh down

test: install
	@.ci/test.sh

# The integration suite again on Kafka 4.x (KRaft only, KIP-896 removed old protocol versions), on a
# stack of its own (ports 19192/16479 unless HEALTHMON_TEST_KAFKA4_PORT / _REDIS4_PORT say otherwise).
KAFKA4_VERSION ?= 4.4.0
# The engine's crash scenarios alone (make test runs them too) and issue 22's scale run (5 min), e.g. in a loop:
#   for i in 1 2 3 4 5; do make test-faults || break; done
test-faults: install
	@HEALTHMON_SCALE_TEST=1 .ci/test.sh -m engine_crash tests/integration/test_engine_faults.py tests/integration/test_rocksdb_kafka.py

test-kafka4: install
	@HEALTHMON_KAFKA_VERSION=$(KAFKA4_VERSION) HEALTHMON_TEST_LINT=0 \
	  HEALTHMON_TEST_KAFKA_PORT=$${HEALTHMON_TEST_KAFKA4_PORT:-19192} \
	  HEALTHMON_TEST_REDIS_PORT=$${HEALTHMON_TEST_REDIS4_PORT:-16479} \
	  HEALTHMON_TEST_STACK_DIR=$(CURDIR)/.local/test-stack-kafka4 .ci/test.sh tests/integration

# The end-to-end benchmark (raw Kafka vs pipeline, latency, memory) and the scale points (100k/1M
# accounts on RocksDB, SIGKILL recovery, 1/2/4 workers) on the local stack; see bench/.
bench: install stack
	$(PY) bench/bench_rules.py --json bench/results/rules.json
	$(PY) bench/bench_driver.py --json bench/results/driver.json
	$(PY) bench/bench_pipeline.py --skewed --json bench/results/pipeline.json
	$(PY) bench/bench_scale.py --json bench/results/scale.json
	$(PY) bench/bench_ingest.py --json bench/results/ingest.json

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) -m mypy streams rules alerts

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: stop
	rm -rf .local $(VENV)
