# MarketLag DLQ. `make help` lists the targets. Versions are pinned in versions.env.
include versions.env
export

SHELL := /bin/bash
.DEFAULT_GOAL := help
PY      := .venv/bin/python
VENV_OK := .venv/.installed
JARS_OK := build/lib/.resolved
MVN_ANY := mvn -q -B -f java/pom.xml -Dflink.version=$(FLINK_VERSION) \
           -Dflink.kafka.connector.version=$(FLINK_KAFKA_CONNECTOR_VERSION) \
           -Dscala.binary.version=$(SCALA_BINARY_VERSION)
MVN     := $(MVN_ANY) -Dkafka.version=$(KAFKA_VERSION)
# make test-faults KAFKA_BROKER_VERSION=4.4.0: the three-node cluster's fault suite on another
# broker version (its jars resolved once into build/lib/kafka-<version>; the job's client and
# the single local broker stay as they are).
KAFKA_BROKER_VERSION ?= $(KAFKA_VERSION)
BROKER_LIB := $(CURDIR)/build/lib/kafka-$(KAFKA_BROKER_VERSION)
PYTEST_ARGS ?=
# Integration and e2e tests run on workers side by side (pytest-xdist); a Flink job runs only
# while it holds the one Flink slot (a lock file, bench.harness.flink_lock), so that two jobs
# never compete for the two cores. PYTEST_PARALLEL= runs them one after another.
PYTEST_PARALLEL ?= -n 4 --dist loadgroup

.PHONY: help setup run check test test-faults test-java test-unit lint format kafka-up kafka-down \
        kafka-up-secure kafka-down-secure topics drain savepoint cancel bench bench-ingest \
        cluster-up cluster-down submit clean lambda-package flink-app-package \
        compose-up compose-down compose-test

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: $(VENV_OK) $(JARS_OK) ## Create .venv with the project, resolve the Java artifacts (idempotent)

$(VENV_OK): pyproject.toml
	@test -x $(PY) || python3.11 -m venv .venv || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(JARS_OK): versions.env java/pom.xml $(wildcard java/src/*/java/io/marketlag/dlq/*.java)
	rm -rf build/lib
	$(MVN) package
	@touch $@

BROKERS ?= 1
kafka-up: setup ## Start the local KRaft broker on 127.0.0.1:9092 (BROKERS=3: a three-node cluster on :19192-19194)
	@if [ "$(BROKERS)" = 3 ]; then scripts/kafka-cluster.sh up; else scripts/kafka.sh up; fi

kafka-down: ## Stop the local broker (BROKERS=3: the cluster) by pid and wait for it to exit
	@if [ "$(BROKERS)" = 3 ]; then scripts/kafka-cluster.sh down; else scripts/kafka.sh down; fi

kafka-up-secure: setup ## Start the SASL_SSL broker with ACLs on 127.0.0.1:9094 (CA, users: var/kafka-secure)
	@scripts/kafka.sh up-secure

kafka-down-secure: ## Stop the SASL_SSL broker (by its pid)
	@scripts/kafka.sh down-secure

topics: setup ## Create the topics of SPEC section 2 (idempotent)
	@.venv/bin/dlq topics

drain: setup ## Send what the ingest producers spooled to Kafka, exactly once (dlq spool drain)
	@.venv/bin/dlq spool drain

PROMTOOL := build/tools/promtool
$(PROMTOOL): scripts/promtool.sh
	scripts/promtool.sh

check: $(VENV_OK) ## The fast loop (under a minute): lint and the unit tests; no Maven, no processes
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test: setup $(PROMTOOL) ## Everything CI runs: make check, the Java tests, integration and e2e tests (own brokers)
	$(MAKE) --no-print-directory check
	$(MAKE) --no-print-directory test-java
	$(PY) -m pytest $(PYTEST_PARALLEL) --durations=25 tests/integration tests/e2e $(PYTEST_ARGS)

test-faults: setup ## Only the fault suites (tests/e2e); KAFKA_BROKER_VERSION=x: the cluster's on x
	@if [ "$(KAFKA_BROKER_VERSION)" = "$(KAFKA_VERSION)" ]; then \
	  $(PY) -m pytest -v tests/e2e $(PYTEST_ARGS); \
	else \
	  test -f $(BROKER_LIB)/.resolved || { $(MVN_ANY) -Dkafka.version=$(KAFKA_BROKER_VERSION) \
	    dependency:copy-dependencies -DincludeScope=runtime -DexcludeGroupIds=org.apache.flink \
	    -DoutputDirectory=$(BROKER_LIB) && touch $(BROKER_LIB)/.resolved; }; \
	  KAFKA_CLUSTER_LIB_DIR=$(BROKER_LIB) $(PY) -m pytest -v tests/e2e/test_cluster_faults.py \
	    $(PYTEST_ARGS); \
	fi

test-java: setup ## The Java unit tests (JUnit, by Maven): the frame format against tests/vectors
	$(MVN) test

test-unit: $(VENV_OK) ## Only the unit tests (no processes, no Maven)
	$(PY) -m pytest -v tests/unit $(PYTEST_ARGS)

lint: $(VENV_OK) ## ruff (lint and format check), mypy, the import layers (lint-imports), shellcheck
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/shellcheck scripts/*.sh .ci/run deploy/docker/*.sh

format: $(VENV_OK) ## Apply ruff's fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean: ## Remove the venv, resolved jars and local broker/Flink data
	rm -rf .venv build var java/target

run: kafka-up topics ## The streaming job on the local broker and mini-cluster, live status, Ctrl-C stops
	$(PY) -m jobs.local

cluster-up: setup ## Start a local standalone Flink cluster (JobManager + TaskManager), UI on :8081
	@scripts/flink-cluster.sh up

cluster-down: ## Stop the local Flink cluster (by pid)
	@scripts/flink-cluster.sh down

SAVEPOINT ?=
submit: setup ## Submit the job to the local cluster (flink run, detached); SAVEPOINT=<path> resumes
	@scripts/flink-cluster.sh submit $(SAVEPOINT)

savepoint: ## Stop the submitted job with a savepoint (prints its path)
	@scripts/flink-cluster.sh savepoint

cancel: ## Cancel the submitted job
	@scripts/flink-cluster.sh cancel

lambda-package: $(VENV_OK) ## The ingest handlers as an AWS Lambda zip (python3.11 x86_64): build/dist
	$(PY) deploy/package.py lambda

flink-app-package: setup ## The job as an Amazon Managed Service for Apache Flink zip (FLINK-2_2): build/dist
	$(PY) deploy/package.py flink-app

compose-up: ## The docker-compose stack on the host network (needs a Docker engine; ports: docker-compose.host.yml)
	@scripts/docker.sh up

compose-down: ## The stack down: its containers, networks and volumes gone
	@scripts/docker.sh down

compose-test: setup ## The compose stack's test alone (installs and starts Debian's engine if none runs, stops it after)
	$(PY) -m pytest -v tests/e2e/test_compose.py $(PYTEST_ARGS)

BENCH_RECORDS ?= 1000000
BENCH_BAD_SHARE ?= 0.05
bench: kafka-up ## The benchmark (not part of make test): job vs plain loop, udfs, Kafka I/O; ingest
	BENCH_RECORDS=$(BENCH_RECORDS) BENCH_BAD_SHARE=$(BENCH_BAD_SHARE) $(PY) -m bench.run
	$(PY) -m bench.ingest

bench-ingest: kafka-up ## The ingest side alone: producer vs a bare one, spool drain and replay rates
	$(PY) -m bench.ingest
