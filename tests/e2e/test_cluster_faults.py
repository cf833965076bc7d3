"""Exactly once on a replicated Kafka cluster and a Flink cluster of two TaskManagers.

The job runs on the standalone Flink cluster (two TaskManagers, its slots spread over both)
against the local three-node Kafka cluster (replication 3, min.insync.replicas 2). While
100,000 records (5% bad, every category) flow in, one run injects, each while the sinks hold
records in open transactions:

- SIGKILL of the leader of a clean partition, then of the leader of a DLQ partition;
- SIGKILL of the broker coordinating an open transaction of one of the job's sinks;
- SIGKILL of the active KRaft controller;
- a rolling restart of all three nodes (SIGTERM, one at a time, each back in sync first);
- SIGKILL of one TaskManager;
- stop-with-savepoint and resume at parallelism 2, then again at parallelism 3.

Every fault is proven as it happens (leadership or the controller moved away from the killed
node, the job failed over, the resumed job runs at the new parallelism); a killed node is
started again and the cluster is back in sync before the next fault. Then, read_committed:
every input in clean ∪ DLQ exactly once, each envelope's bytes equal to its input's; and
read_uncommitted: duplicates, which proves the faults hit open transactions.

A second test raises one clean topic's ``min.insync.replicas`` to 3 with a node down: the
brokers refuse its writes, the topic holds nothing, the job fails over and its log says why;
with the node back every input is there exactly once.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from jobs.sample import generate
from kafkaio.admin import ensure_project_topics
from kafkaio.scan import consumer, watermarks
from settings.config import load_config
from tests.conftest import KAFKA_CLUSTER
from tests.e2e.conftest import CLUSTER as FLINK
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
from tests.kafka_helpers import ROOT, make_job_config, produce, read_all

# The standalone cluster (a session fixture) serves the e2e tests: they stay on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.flink, pytest.mark.xdist_group("e2e")]
STEPS = (
    "clean-leader",
    "dlq-leader",
    "coordinator",
    "controller",
    "rolling-restart",
    "taskmanager",
    "rescale-down",
    "rescale-up",
)
TRANSACTION_LOG_PARTITIONS = (
    3  # transaction.state.log.num.partitions, conf/kafka/cluster.properties
)


@pytest.fixture
def two_taskmanagers(cluster: str) -> Iterator[str]:
    """The standalone cluster with a second TaskManager, taken away again at the end."""
    sh(FLINK, "taskmanager-start")
    wait_until("two TaskManagers", lambda: rest(cluster, "/overview")["taskmanagers"] >= 2)
    try:
        yield cluster
    finally:
        subprocess.run([FLINK, "taskmanager-kill-one"], capture_output=True)
        # Until the JobManager has noticed, the next suite's job could be given its slots.
        wait_until("one TaskManager left", lambda: rest(cluster, "/overview")["taskmanagers"] <= 1)


def leader(admin: AdminClient, topic: str, partition: int) -> int:
    """The node id of the partition's leader now (-1 while there is none).

    From a metadata request, which librdkafka sends to a broker that is up: an admin request
    (describe_topics) may go to the node just killed and wait out its timeout.
    """
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


def out_of_sync(admin: AdminClient, topics: list[str]) -> list[str]:
    """Partitions of ``topics`` whose in-sync replicas are not all their replicas."""
    md = admin.list_topics(timeout=10)
    return [
        f"{name}[{p.id}]"
        for name in topics
        for p in md.topics[name].partitions.values()
        if len(p.isrs) < len(p.replicas)
    ]


def controller() -> int | None:
    """The node id of the active KRaft controller (None while the quorum has none to say)."""
    out = subprocess.run([KAFKA_CLUSTER, "controller"], capture_output=True, text=True)
    return int(out.stdout) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def open_sink_transactions(prefix: str) -> list[tuple[str, int]]:
    """(transactional id, coordinator node) of the job's sinks' open transactions, as the
    brokers list them (Kafka's TransactionsCommand)."""
    rows = []
    for line in sh(KAFKA_CLUSTER, "transactions").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[0].startswith(prefix) and fields[3] == "Ongoing":
            rows.append((fields[0], int(fields[1])))
    return rows


def test_exactly_once_on_a_replicated_cluster_under_broker_controller_and_taskmanager_faults(
    kafka_cluster: str,
    two_taskmanagers: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = two_taskmanagers

    report = reporter(capsys, "cluster faults")
    path = fault_job_config(tmp_path, kafka_cluster)
    config = load_config(path)
    admin = AdminClient({"bootstrap.servers": kafka_cluster})
    ensure_project_topics(config, admin)
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    inputs = [f.input for f in config.feeds.values()]
    internal = ["__transaction_state", "__consumer_offsets"]
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2**32))

    def submit(savepoint: str = "", parallelism: int = 3) -> str:
        job_args = f"--config {path} --starting-offsets earliest --parallelism {parallelism}"
        env = {**os.environ, "JOB_ARGS": job_args}
        return sh(FLINK, "submit", *([savepoint] if savepoint else []), env=env).splitlines()[-1]

    def in_sync() -> None:
        wait_until(
            "every replica back in sync",
            lambda: not out_of_sync(admin, inputs + outputs + internal),
            300,
        )

    rng = random.Random(seed)

    def kill_and_restart(node: int, proof: str, moved: Callable[[], object]) -> None:
        """SIGKILL ``node``; ``moved()`` proves the fault took effect; then the node is
        started again and the cluster back in sync."""
        report(sh(KAFKA_CLUSTER, "kill", str(node)).strip())
        wait_until(proof, moved, 120)
        time.sleep(rng.uniform(1.0, 4.0))  # the outage's length, not a wait for anything
        report(sh(KAFKA_CLUSTER, "start", str(node)).strip())
        in_sync()

    job = submit()
    report(f"job {job} submitted")
    wait_running(cluster, job)
    producer = SteadyProducer(
        kafka_cluster, {f: config.feeds[f].input for f in config.feeds}, records=corpus()
    )
    producer.start()
    report(f"fault timing seed {seed} (FAULT_SEED={seed} repeats it)")
    events: Counter[str] = Counter()
    prefix = config.kafka.transactional_id_prefix
    try:
        for step in STEPS:
            done = wait_running(cluster, job)
            time.sleep(rng.uniform(1.0, 4.0))  # somewhere inside a checkpoint interval
            if step in ("clean-leader", "dlq-leader"):
                feed = rng.choice(sorted(config.feeds))
                topic = (
                    config.feeds[feed].clean if step == "clean-leader" else config.feeds[feed].dlq
                )
                part = rng.randrange(config.partitions)
                pending = wait_open_transaction(kafka_cluster, outputs)
                node = leader(admin, topic, part)
                report(f"{pending} records in open transactions; {topic}[{part}] led by {node}")
                kill_and_restart(
                    node,
                    f"a new leader of {topic}[{part}]",
                    lambda t=topic, p=part, n=node: leader(admin, t, p) not in (n, -1),
                )
            elif step == "coordinator":
                wait_open_transaction(kafka_cluster, outputs)
                opened = wait_until(
                    "an open sink transaction", lambda: open_sink_transactions(prefix)
                )
                tid, node = rng.choice(opened)
                report(f"transaction {tid} of a sink is open, coordinated by node {node}")
                # Proof: the node leads no partition of the transaction state log any more, so
                # it coordinates no transaction; the log's leaders took over its transactions.
                kill_and_restart(
                    node,
                    f"the transaction state log led by nodes other than {node}",
                    lambda n=node: all(
                        leader(admin, "__transaction_state", p) not in (n, -1)
                        for p in range(TRANSACTION_LOG_PARTITIONS)
                    ),
                )
            elif step == "controller":
                pending = wait_open_transaction(kafka_cluster, outputs)
                node = controller()
                assert node is not None, "no active controller"
                report(f"{pending} records in open transactions; node {node} is the controller")
                kill_and_restart(
                    node,
                    f"a controller other than node {node}",
                    lambda n=node: controller() not in (None, n),
                )
            elif step == "rolling-restart":
                for node in (1, 2, 3):
                    pending = wait_open_transaction(kafka_cluster, outputs)
                    report(f"{pending} records in open transactions")
                    report(sh(KAFKA_CLUSTER, "restart", str(node)).strip())
                    in_sync()
            elif step == "taskmanager":
                pending = wait_open_transaction(kafka_cluster, outputs)
                failovers = failover_count(cluster, job)
                report(
                    f"{pending} records in open transactions; "
                    + sh(FLINK, "taskmanager-kill-one").strip()
                )
                wait_until(
                    "the job's failover after the TaskManager kill",
                    lambda j=job, n=failovers: failover_count(cluster, j) > n,  # type: ignore[misc]
                )
                time.sleep(rng.uniform(1.0, 4.0))
                report(sh(FLINK, "taskmanager-start").strip())
            else:
                parallelism = 2 if step == "rescale-down" else 3
                out = sh(FLINK, "savepoint")
                savepoint = re.search(r"Savepoint completed\. Path: (\S+)", out)
                assert savepoint, out
                stopped = job
                job = submit(savepoint.group(1), parallelism)
                assert job != stopped and rest(cluster, f"/jobs/{stopped}")["state"] == "FINISHED"
                vertices = rest(cluster, f"/jobs/{job}")["vertices"]
                assert {v["parallelism"] for v in vertices} == {parallelism}, vertices
                report(f"savepoint {savepoint.group(1)}; resumed at parallelism {parallelism}")
            events[step] += 1
            wait_running(
                cluster, job, checkpoints_after=None if step.startswith("rescale") else done
            )
        report("faults done; the rest of the input, then the job catching up")
        committed, uncommitted = outputs_after_faults(
            producer, cluster, job, kafka_cluster, outputs
        )
    finally:
        producer.stop()
        subprocess.run([FLINK, "cancel"], capture_output=True)

    result = count(producer.sent, committed, uncommitted)
    report(f"faults: {dict(events)}; {result}")
    assert events == dict.fromkeys(STEPS, 1)  # each one proven as it happened
    # Broker faults do not abort the sinks' transactions (the clients move to the new leader
    # and coordinator), and the one TaskManager kill may abort none with records in them:
    # each fault's open transaction is proven as it lands instead.
    result.assert_exactly_once(rewritten=False)


def high_watermarks(bootstrap: str, topic: str) -> list[int]:
    """Each partition's high watermark: what the brokers hold, committed or not."""
    probe = consumer({"bootstrap.servers": bootstrap}, "read_uncommitted")
    try:
        return [high for _, high in watermarks(probe, [topic]).values()]
    finally:
        probe.close()


def test_a_topic_below_its_min_insync_replicas_gets_no_write_and_the_job_says_so(
    kafka_cluster: str, cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One clean topic asks for three in-sync replicas while a node is down: the brokers refuse
    its writes (NOT_ENOUGH_REPLICAS), so the topic holds nothing written with fewer copies;
    the job fails over and its log names the error and the topic; once the node is back,
    every input is in clean ∪ DLQ exactly once."""
    report = reporter(capsys, "min ISR")
    path, _ = make_job_config(
        tmp_path,
        kafka_cluster,
        **{
            # The Java producer retries NOT_ENOUGH_REPLICAS until its delivery timeout (120 s
            # by default); the sink then declines checkpoints until a call blocks out its
            # max.block.ms (60 s) and fails the task: shorter ones for the test.
            "kafka.sink": {
                "delivery.timeout.ms": 5000,
                "request.timeout.ms": 2000,
                "max.block.ms": 5000,
            },
            "flink.conf": {
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": "1000",
                "restart-strategy.fixed-delay.delay": "2 s",
            },
        },
    )
    config = load_config(path)
    admin = AdminClient({"bootstrap.servers": kafka_cluster})
    ensure_project_topics(config, admin)
    strict = config.feeds["polymarket"].clean
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    setting = ConfigEntry("min.insync.replicas", "3", incremental_operation=AlterConfigOpType.SET)
    for future in admin.incremental_alter_configs(
        [ConfigResource(ResourceType.TOPIC, strict, incremental_configs=[setting])]
    ).values():
        future.result(30)
    node = 3
    report(sh(KAFKA_CLUSTER, "kill", str(node)).strip())
    job = ""
    try:
        wait_until(
            f"{strict} with two in-sync replicas",
            lambda: len(out_of_sync(admin, [strict])) == config.partitions,
            120,
        )
        env = {**os.environ, "JOB_ARGS": f"--config {path} --starting-offsets earliest"}
        job = sh(FLINK, "submit", env=env).splitlines()[-1]
        wait_running(cluster, job)
        sent = {
            (m.topic, m.partition, m.offset): m.value
            for feed in config.feeds
            for m in produce(kafka_cluster, config.feeds[feed].input, generate(feed, 1000, 0.05))
        }
        report(f"job {job}; {len(sent)} records sent with node {node} down")

        wait_until("the job's failover", lambda: failover_count(cluster, job) > 0, 180)
        refused = wait_until(
            f"the TaskManager's log naming NOT_ENOUGH_REPLICAS on {strict}",
            lambda: [
                line
                for log in (ROOT / "var" / "flink" / "log").glob("*taskexecutor*.log")
                for line in log.read_text(errors="replace").splitlines()
                if "NOT_ENOUGH_REPLICAS" in line and strict in line
            ],
            60,
        )
        report(refused[-1].strip()[:300])
        assert high_watermarks(kafka_cluster, strict) == [0] * config.partitions

        report(sh(KAFKA_CLUSTER, "start", str(node)).strip())
        wait_until(f"{strict} back in sync", lambda: not out_of_sync(admin, [strict]), 300)
        wait_until(
            "every input in the outputs",
            lambda: len(read_all(kafka_cluster, outputs, timeout_s=60)) >= len(sent),
            300,
        )
        done = rest(cluster, f"/jobs/{job}/checkpoints")["counts"]["completed"]
        wait_running(cluster, job, checkpoints_after=done + 1)
        result = count(
            sent,
            read_all(kafka_cluster, outputs, timeout_s=60),
            read_all(kafka_cluster, outputs, "read_uncommitted", timeout_s=60),
        )
        report(f"failovers {failover_count(cluster, job)}; {result}")
        assert not result.lost and result.duplicated == 0 and result.committed == len(sent)
        assert not result.out_of_order, result.out_of_order[:3]  # order per key kept
        assert sum(high_watermarks(kafka_cluster, strict)) > 0
    finally:
        if job:
            subprocess.run([FLINK, "cancel"], capture_output=True)
        subprocess.run([KAFKA_CLUSTER, "start", str(node)], capture_output=True)
