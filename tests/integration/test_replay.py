"""Replay is exactly once even when killed half-way, and parks records replayed too often.

These tests write real envelopes (built by the job's own code) straight into a DLQ topic, so
they need the broker but not Flink.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dlq.replay import load_ledger
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.kafka_helpers import ROOT, dlq_cli, fill_dlq, make_job_config, read_all, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def config_path(bootstrap: str, tmp_path: Path) -> Path:
    path, _ = make_job_config(tmp_path, bootstrap)
    ensure_project_topics(load_config(path), AdminClient({"bootstrap.servers": bootstrap}))
    return path


def test_replay_killed_half_way_and_rerun_writes_each_record_once(
    bootstrap: str, config_path: Path
) -> None:
    config = load_config(config_path)
    n = 400
    fill_dlq(bootstrap, config, n)
    cmd = [
        str(ROOT / ".venv" / "bin" / "dlq"),
        "--config",
        str(config_path),
        "replay",
        "--topic",
        config.feeds["rss"].dlq,
        "--rate",
        "60",
        "--json",
    ]
    first = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    conf = {"bootstrap.servers": bootstrap}
    deadline = time.monotonic() + 60
    while not load_ledger(conf, config.ledger_topic, config.feeds["rss"].dlq):
        assert first.poll() is None and time.monotonic() < deadline, "no transaction committed"
        time.sleep(0.3)
    rss = config.feeds["rss"].input

    def open_transaction() -> bool:  # records written that no commit has made visible yet
        committed = len(read_all(bootstrap, [rss], timeout_s=20))
        return len(read_all(bootstrap, [rss], "read_uncommitted", timeout_s=20)) > committed

    wait_for("records in an open replay transaction", open_transaction, 60, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    done_before = len(load_ledger(conf, config.ledger_topic, config.feeds["rss"].dlq))
    assert 0 < done_before < n, "the kill did not land half-way"

    second = dlq_cli(config_path, "replay", "--topic", config.feeds["rss"].dlq, "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["replayed"] == n - done_before
    assert doc["already_replayed"] == done_before

    written = read_all(bootstrap, [config.feeds["rss"].input])
    per_record = Counter(m.key for m in written)
    assert len(written) == n, f"{len(written)} records written for {n} selected"
    assert set(per_record.values()) == {1}
    for m in written:
        i = int((m.key or b"e-0").decode().split("-")[1])
        assert m.partition == i % 3, "written back to the original partition"
        assert m.headers == (("seq", str(i).encode()), ("dlq.replay.count", b"1"))
        assert json.loads(m.value or b"") == {"event_id": f"e-{i}", "title": "t"}


def test_records_replayed_too_often_go_to_the_parking_lot(
    bootstrap: str, config_path: Path
) -> None:
    config = load_config(config_path)
    fill_dlq(bootstrap, config, 5, replay_count=2)
    dlq = read_all(bootstrap, [config.feeds["rss"].dlq])
    proc = dlq_cli(
        config_path, "replay", "--topic", config.feeds["rss"].dlq, "--max-replays", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["selected"], doc["parked"], doc["replayed"]) == (5, 5, 0)
    parked = read_all(bootstrap, [config.parking_topic])
    assert sorted((m.key, m.value) for m in parked) == sorted((m.key, m.value) for m in dlq)
    assert read_all(bootstrap, [config.feeds["rss"].input]) == []


def test_usage_and_connection_errors_exit_2(bootstrap: str, tmp_path: Path) -> None:
    path, _ = make_job_config(tmp_path, bootstrap)
    assert dlq_cli(path, "replay", "--topic", "x", "--since", "soon").returncode == 2
    assert dlq_cli(path, "replay", "--topic", "x", "--fix", "no_such_module:f").returncode == 2
    down = dlq_cli(path, "--bootstrap-servers", "127.0.0.1:1", "stats")
    assert down.returncode == 2 and "no Kafka broker answered" in down.stderr
    spool = dlq_cli(path, "spool", "drain", "--spool", "s3://")
    assert spool.returncode == 2 and "an S3 location is s3://BUCKET" in spool.stderr, spool.stderr
