"""Beyond one broker: the local three-node cluster (make kafka-up BROKERS=3).

`dlq topics` creates every project topic replicated three times with min.insync.replicas 2
there (the transaction state log and the offsets topic too), and a replay with a broker
SIGKILLed half-way, run again, writes every selected record exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource

from settings.config import load_config
from tests.conftest import KAFKA_CLUSTER as CLUSTER
from tests.kafka_helpers import ROOT, dlq_cli, fill_dlq, make_job_config, read_all, wait_for

# One three-node cluster (the module fixture) serves every test here: one worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("kafka-cluster")]


def test_dlq_topics_replicates_every_project_topic_three_times(
    kafka_cluster: str, tmp_path: Path
) -> None:
    path, _ = make_job_config(tmp_path, kafka_cluster)
    config = load_config(path)
    created = dlq_cli(path, "topics")
    assert created.returncode == 0, created.stderr
    admin = AdminClient({"bootstrap.servers": kafka_cluster})
    # The transaction state log exists once a transactional producer has started.
    producer = Producer({"bootstrap.servers": kafka_cluster, "transactional.id": path.stem})
    producer.init_transactions(60)
    topics = [t for f in config.feeds.values() for t in (f.input, f.clean, f.dlq)]
    topics += [config.parking_topic, config.ledger_topic, "__transaction_state"]
    wait_for(
        "the transaction state log",
        lambda: "__transaction_state" in admin.list_topics(timeout=10).topics,
        60,
    )
    for name, future in admin.describe_topics(TopicCollection(topics)).items():
        for p in future.result(30).partitions:
            assert len(p.replicas) == 3, f"{name}[{p.id}] has {len(p.replicas)} replicas"
    for name in topics:
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        configs = admin.describe_configs([res])[res].result(30)
        isr = int(configs["min.insync.replicas"].value)
        assert isr == 2, f"{name}: min.insync.replicas {isr}"


def test_replay_with_a_broker_killed_half_way_and_run_again_writes_each_record_once(
    kafka_cluster: str, tmp_path: Path
) -> None:
    path, _ = make_job_config(tmp_path, kafka_cluster)
    config = load_config(path)
    assert dlq_cli(path, "topics").returncode == 0
    n = 600
    fill_dlq(kafka_cluster, config, n)
    seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2**32))
    node = random.Random(seed).choice([1, 2, 3])
    print(f"fault seed {seed}: node {node} is killed (FAULT_SEED={seed} repeats it)")
    dlq = config.feeds["rss"].dlq
    cmd = [str(ROOT / ".venv" / "bin" / "dlq"), "--config", str(path)]
    first = subprocess.Popen(
        [*cmd, "replay", "--topic", dlq, "--rate", "100", "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    rss = config.feeds["rss"].input
    try:
        wait_for(
            "a committed replay transaction",
            lambda: len(read_all(kafka_cluster, [rss], timeout_s=20)) > 0,
            60,
            first,
        )
        assert first.poll() is None, "the replay ended before the fault"
        killed = subprocess.run([CLUSTER, "kill", str(node)], capture_output=True, text=True)
        assert killed.returncode == 0, killed.stderr  # the fault happened
        status = subprocess.run([CLUSTER, "status"], capture_output=True, text=True)
        assert "2 of 3 nodes running" in status.stdout
        first.wait(300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
        subprocess.run([CLUSTER, "start", str(node)], check=True, capture_output=True)
    second = dlq_cli(path, "replay", "--topic", dlq, "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    written = Counter(m.key for m in read_all(kafka_cluster, [rss]))
    assert len(written) == n and set(written.values()) == {1}, "lost or duplicated"
    assert doc["already_replayed"] + doc["replayed"] == n
    print(f"first replay exited {first.returncode}; the second replayed {doc['replayed']}")
