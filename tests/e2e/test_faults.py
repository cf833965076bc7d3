"""Exactly once under failure, on a real standalone Flink cluster.

While a producer writes 100,000 records (5% bad, every category) at a steady rate into the
job's inputs (the last 10,000 at a trickle until every fault is done), the TaskManager is
killed with SIGKILL three times and restarted, the broker is stopped and restarted once, and
the job is stopped with a savepoint and resumed from it once.
Then, read_committed, every input must be in clean ∪ DLQ exactly once with an intact envelope;
and read_uncommitted must show duplicates, which proves the faults did hit open transactions.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.conftest import OwnBroker
from tests.e2e.conftest import CLUSTER
from tests.e2e.faults import (
    SteadyProducer,
    corpus,
    count,
    failover_count,
    fault_job_config,
    outputs_after_faults,
    reporter,
    rest,
    sh,
    wait_open_transaction,
    wait_running,
    wait_until,
)

# The standalone cluster (a session fixture) serves the e2e tests: they stay on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.xdist_group("e2e")]


def test_exactly_once_under_kills_broker_restart_and_savepoint(
    own_broker: OwnBroker, cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap = own_broker.bootstrap
    report = reporter(capsys, "faults")
    path = fault_job_config(tmp_path, bootstrap)
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    env = {**os.environ, "JOB_ARGS": f"--config {path} --starting-offsets earliest"}
    job = sh(CLUSTER, "submit", env=env).strip().splitlines()[-1]
    report(f"job {job} submitted")
    wait_running(cluster, job)

    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    records = corpus()
    producer = SteadyProducer(bootstrap, {f: config.feeds[f].input for f in config.feeds}, records)
    producer.start()
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2**32))
    report(f"fault timing seed {seed} (FAULT_SEED={seed} repeats it)")
    rng = random.Random(seed)
    events: Counter[str] = Counter()
    try:
        for step in ("kill", "kill", "broker", "savepoint", "kill"):
            done = wait_running(cluster, job)
            time.sleep(rng.uniform(2.0, 6.0))  # somewhere inside a checkpoint interval
            if step == "kill":
                # Only a kill with records in an open transaction tests exactly once: they
                # are aborted and written again after recovery.
                pending = wait_open_transaction(bootstrap, outputs)
                failovers = failover_count(cluster, job)
                report(
                    f"{pending} records in open transactions; "
                    + sh(CLUSTER, "taskmanager-kill").strip()
                )
                time.sleep(rng.uniform(1.0, 4.0))
                report(sh(CLUSTER, "taskmanager-start").strip())
                # The kill happened: the job failed over (it is in the exception history).
                wait_until(
                    "the job's failover after the kill",
                    lambda j=job, n=failovers: failover_count(cluster, j) > n,  # type: ignore[misc]
                )
            elif step == "broker":
                report(own_broker.run("down"))
                assert not own_broker.running(), "the broker still runs after kafka.sh down"
                time.sleep(8)  # the outage's length, not a wait for anything
                report(own_broker.run("up"))
            else:
                out = sh(CLUSTER, "savepoint")
                savepoint = re.search(r"Savepoint completed\. Path: (\S+)", out)
                assert savepoint, out
                report(f"stopped with savepoint {savepoint.group(1)}")
                stopped = job
                job = sh(CLUSTER, "submit", savepoint.group(1), env=env).strip().splitlines()[-1]
                assert job != stopped and rest(cluster, f"/jobs/{stopped}")["state"] == "FINISHED"
                report(f"resumed from the savepoint as job {job}")
            events[step] += 1
            wait_running(cluster, job, checkpoints_after=0 if step == "savepoint" else done)
        report("faults done; the rest of the input, then the job catching up")
        committed, uncommitted = outputs_after_faults(producer, cluster, job, bootstrap, outputs)
    finally:
        producer.stop()
        subprocess.run([CLUSTER, "cancel"], capture_output=True)

    result = count(producer.sent, committed, uncommitted)
    report(f"faults: {dict(events)}; {result}")
    assert events == {"kill": 3, "broker": 1, "savepoint": 1}  # each one proven as it happened
    result.assert_exactly_once()
