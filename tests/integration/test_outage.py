"""The broker down for 60 s under a running job: the job recovers by itself (restarts from its
checkpoint with the shipped restart strategy), and every input, produced before, during the
wait and after the outage, is in clean ∪ DLQ exactly once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from bench.harness import free_port, start_job
from jobs.local import stop_process_group
from jobs.sample import generate
from kafkaio.admin import ensure_project_topics, wait_for_broker
from settings.config import load_config
from tests.conftest import OwnBroker
from tests.corpus import shipped_processor
from tests.kafka_helpers import (
    make_job_config,
    produce,
    read_all,
    rest,
    running_job_conf,
    source_position,
    wait_for,
)
from udfs.pipeline import Failed
from udfs.record import SourceRecord

pytestmark = [pytest.mark.integration, pytest.mark.flink]
OUTAGE_S = 60


def test_broker_down_for_a_minute_loses_and_duplicates_nothing(
    own_broker: OwnBroker, tmp_path: Path
) -> None:
    bootstrap = own_broker.bootstrap
    port = free_port()
    # The shipped restart strategy, not a test's: the outage must fit what users run.
    path, _ = make_job_config(tmp_path, bootstrap, **{"flink.conf": running_job_conf(port)})
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    sent: dict[tuple[str, int, int], bytes | None] = {}

    def send(seed: int) -> None:
        for feed in ("rss", "polymarket"):
            records = generate(feed, 300, 0.1, seed=seed)
            for m in produce(bootstrap, config.feeds[feed].input, records):
                sent[(m.topic, m.partition, m.offset)] = m.value

    send(1)
    proc = start_job(path)
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    try:
        job_id = wait_for(
            "the job to run",
            lambda: [j["jid"] for j in rest(port, "/jobs/overview")["jobs"]],
            120,
            proc,
        )[0]
        wait_for(
            "the first records committed",
            lambda: len(read_all(bootstrap, outputs, timeout_s=20)) >= len(sent),
            120,
            proc,
        )
        own_broker.run("down")
        assert not own_broker.running(), "the broker still runs after kafka.sh down"
        time.sleep(OUTAGE_S)  # the outage's length, not a wait for anything
        own_broker.run("up")
        wait_for_broker({"bootstrap.servers": bootstrap}, 60)
        send(2)
        wait_for(
            "every input in the outputs",
            lambda: len(read_all(bootstrap, outputs, timeout_s=20)) >= len(sent),
            300,
            proc,
        )
        # Two more checkpoints complete: a duplicate would be committed by then.
        done = checkpoints(port, job_id)
        wait_for("two more checkpoints", lambda: checkpoints(port, job_id) >= done + 2, 60, proc)
        committed = read_all(bootstrap, outputs, timeout_s=60)
        failures = len(rest(port, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"])
        state = rest(port, f"/jobs/{job_id}")["state"]
    finally:
        stop_process_group(proc)
    seen = Counter(source_position(m.value) for m in committed)
    assert set(seen) == set(sent), f"lost {len(set(sent) - set(seen))}"
    assert max(seen.values()) == 1, "duplicated"
    assert state == "RUNNING"
    assert failures >= 1, "the job never failed: the outage did not reach it"
    print(f"outage {OUTAGE_S} s: {len(sent)} inputs exactly once; job failures {failures}")


def checkpoints(port: int, job_id: str) -> int:
    return int(rest(port, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])


def test_dlq_topic_deleted_under_the_job_fails_loudly_and_recovers(
    bootstrap: str, tmp_path: Path
) -> None:
    """An operator deletes a DLQ topic while the job runs: the DLQ sink fails (the broker does
    not auto-create topics), the job restarts and keeps failing instead of dropping the
    failed records, and once `dlq topics` recreates the topic every record that arrived
    after the deletion is in clean ∪ DLQ exactly once."""
    port = free_port()
    # A send to the deleted topic fails after the producer's timeouts; shortened from the
    # defaults (60 s metadata wait, 120 s delivery) so that the failure shows well within
    # the wait below however the producer meets the deletion.
    timeouts = {"request.timeout.ms": 5_000, "delivery.timeout.ms": 10_000, "max.block.ms": 10_000}
    sink = {**load_config(None, {}).sink_properties, **timeouts}
    path, _ = make_job_config(
        tmp_path, bootstrap, **{"flink.conf": running_job_conf(port), "kafka.sink": sink}
    )
    config = load_config(path)
    assert config.sink_properties["delivery.timeout.ms"] == "10000"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_project_topics(config, admin)
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]

    def send(seed: int) -> dict[tuple[str, int, int], bytes | None]:
        sent = {}
        for feed in ("rss", "polymarket"):
            for m in produce(
                bootstrap, config.feeds[feed].input, generate(feed, 200, 0.2, seed=seed)
            ):
                sent[(m.topic, m.partition, m.offset)] = m.value
        return sent

    before = send(1)
    proc = start_job(path)
    try:
        job_id = wait_for(
            "the job", lambda: [j["jid"] for j in rest(port, "/jobs/overview")["jobs"]], 120, proc
        )[0]
        wait_for(
            "the first inputs committed",
            lambda: len(read_all(bootstrap, outputs, timeout_s=20)) >= len(before),
            120,
            proc,
        )
        dlq = config.feeds["rss"].dlq
        for f in admin.delete_topics([dlq], operation_timeout=30).values():
            f.result()
        after = send(2)

        def failing() -> bool:
            # The failure surfaces either at the sink's next write (naming the topic) or at
            # the next checkpoint's flush (then as a declined checkpoint): either restarts it.
            return bool(rest(port, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"])

        assert not failing(), "the job failed before the deletion"
        wait_for("the job to fail on the deleted DLQ topic", failing, 180, proc)
        ensure_project_topics(config, admin)  # what `dlq topics` does

        def caught_up() -> bool:
            got = {source_position(m.value) for m in read_all(bootstrap, outputs, timeout_s=20)}
            return set(after) <= got

        wait_for("the records after the deletion", caught_up, 300, proc)
        done = checkpoints(port, job_id)
        wait_for("two more checkpoints", lambda: checkpoints(port, job_id) >= done + 2, 60, proc)
        committed = read_all(bootstrap, outputs, timeout_s=60)
        assert rest(port, f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        stop_process_group(proc)
    seen = Counter(source_position(m.value) for m in committed)
    assert max(seen.values()) == 1, "duplicated"
    assert set(after) <= set(seen), "records that arrived after the deletion were lost"
    # From before the deletion only the deleted topic's own records may be missing.
    rss = shipped_processor("rss", "o")
    for pos in set(before) - set(seen):
        record = SourceRecord(*pos, None, None, before[pos], ())
        assert pos[0] == config.feeds["rss"].input and isinstance(rss.process(record), Failed)
