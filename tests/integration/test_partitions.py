"""Scaling the inputs without stopping the pipeline: an input topic that grows a partition.

The README's advice for scaling out is to add partitions to the input topics. A DLQ keeps its
input's partition, so a DLQ with fewer partitions than its input cannot take a record of the
new ones: `dlq topics` grows the clean topics and DLQs with their inputs, the job refuses to
start on a DLQ that lacks partitions, and a running job that discovers a new partition before
its DLQ has grown still writes every record, exactly once, and keeps both feeds going.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from bench.harness import free_port, start_job
from jobs.local import stop_process_group
from jobs.sample import generate
from kafkaio.admin import ensure_project_topics
from settings.config import JobConfig, load_config
from tests.kafka_helpers import (
    Message,
    dlq_cli,
    make_job_config,
    produce,
    read_all,
    rest,
    run_job,
    running_job_conf,
    source_position,
    wait_for,
)

pytestmark = pytest.mark.integration


def feed_records(
    config: JobConfig, feed: str, n: int, seed: int, partition: int | None = None
) -> dict[tuple[str, int, int], bytes | None]:
    """n records of the feed (10% bad), produced; their positions and values."""
    records = [(k, v, h, partition) for k, v, h in generate(feed, n, 0.1, seed=seed)]
    return {
        m.position: m.value
        for m in produce(config.kafka.librdkafka(), config.feeds[feed].input, records)
    }


def grow_input(config: JobConfig, feed: str, partitions: int) -> None:
    admin = AdminClient(config.kafka.librdkafka())
    topic = config.feeds[feed].input
    admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(30)
    wait_for(
        "the new partition in the metadata",
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == partitions,
        30,
    )


def outputs_exactly_once(
    config: JobConfig, sent: dict[tuple[str, int, int], bytes | None]
) -> list[Message]:
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    committed = read_all(config.kafka.librdkafka(), outputs)
    seen = Counter(source_position(m.value) for m in committed)
    assert set(seen) == set(sent), f"lost {len(set(sent) - set(seen))}"
    assert max(seen.values()) == 1, "duplicated"
    return committed


def test_a_dlq_behind_its_input_stops_the_job_at_start_until_dlq_topics_grows_it(
    bootstrap: str, tmp_path: Path
) -> None:
    path, _ = make_job_config(tmp_path, bootstrap)
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    sent = feed_records(config, "rss", 300, 1) | feed_records(config, "polymarket", 300, 2)
    grow_input(config, "polymarket", 4)
    sent |= feed_records(config, "polymarket", 200, 3, partition=3)

    refused = run_job(path, check=False, timeout_s=120)
    dlq = config.feeds["polymarket"].dlq
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert (
        f"{dlq} has 3 partitions, its input {config.feeds['polymarket'].input} 4" in refused.stderr
    )
    assert "dlq topics" in refused.stderr
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    assert read_all(bootstrap, outputs) == [], "it wrote before refusing"

    grown = dlq_cli(path, "topics")
    assert grown.returncode == 0, grown.stderr
    for topic in (dlq, config.feeds["polymarket"].clean):
        assert any(line.split()[:2] == [topic, "grown"] for line in grown.stdout.splitlines())

    run_job(path)
    committed = outputs_exactly_once(config, sent)
    new = [m for m in committed if m.topic == dlq and source_position(m.value)[1] == 3]
    assert new and {m.partition for m in new} == {3}, "a DLQ record keeps its input's partition"


@pytest.mark.flink
def test_an_input_grown_under_a_running_job_is_picked_up_and_stops_neither_feed(
    bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    source = {**load_config(None, {}).source_properties, "partition.discovery.interval.ms": 1000}
    path, _ = make_job_config(
        tmp_path, bootstrap, **{"flink.conf": running_job_conf(port), "kafka.source": source}
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    sent = feed_records(config, "rss", 300, 1) | feed_records(config, "polymarket", 300, 2)
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    proc = start_job(path)
    try:
        job = wait_for(
            "the job", lambda: [j["jid"] for j in rest(port, "/jobs/overview")["jobs"]], 120, proc
        )[0]
        wait_for(
            "the first records",
            lambda: len(read_all(bootstrap, outputs, timeout_s=20)) >= len(sent),
            180,
            proc,
        )
        # Only the input grows (the operator has not run `dlq topics` yet).
        grow_input(config, "rss", 4)
        sent |= feed_records(config, "rss", 200, 3, partition=3)
        sent |= feed_records(config, "polymarket", 200, 4)  # the other feed keeps flowing
        wait_for(
            "every record",
            lambda: len(read_all(bootstrap, outputs, timeout_s=20)) >= len(sent),
            180,
            proc,
        )
        failures = rest(port, f"/jobs/{job}/exceptions")["exceptionHistory"]["entries"]
    finally:
        stop_process_group(proc)
    committed = outputs_exactly_once(config, sent)
    assert failures == [], "the job failed over on the grown input"
    dlq = config.feeds["rss"].dlq
    moved = [m for m in committed if m.topic == dlq and source_position(m.value)[1] == 3]
    assert moved, "no bad record came from the new partition"
    assert {m.partition for m in moved} == {0}, "partition 3 of a 3-partition DLQ is 3 mod 3"
    assert {orjson.loads(m.value or b"")["source"]["partition"] for m in moved} == {3}


def test_a_job_without_its_topics_exits_2_naming_them(bootstrap: str, tmp_path: Path) -> None:
    path, _ = make_job_config(tmp_path, bootstrap)  # nobody made these topics
    config = load_config(path)

    job = run_job(path, check=False)

    assert job.returncode == 2, job.stderr[-2000:]
    for topic in (config.feeds["rss"].input, config.feeds["polymarket"].dlq):
        assert f"topic '{topic}' does not exist (make topics)" in job.stderr
