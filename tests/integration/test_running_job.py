"""A running (unbounded) job: nothing is visible read_committed before the first checkpoint
completes, and the job's DLQ counters can be read back from Flink's REST API."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from bench.harness import free_port, start_job
from jobs.local import stop_process_group
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.corpus import build_corpus
from tests.kafka_helpers import (
    make_job_config,
    produce,
    read_all,
    rest,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
# No periodic checkpoint during the test: the one checkpoint is triggered through the REST API
# once the "before" state has been looked at, so the check does not race the clock.
CHECKPOINT_MS = 3_600_000


def job_metrics(port: int, job_id: str) -> dict[str, float]:
    """Sum over subtasks of every user metric of the feed groups, by 'feed.metric[.category]'."""
    totals: Counter[str] = Counter()
    for vertex in rest(port, f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
        ids = [m["id"] for m in rest(port, base) if ".feed." in m["id"]]
        if not ids:
            continue
        for m in rest(port, f"{base}?get={','.join(ids)}"):
            name = m["id"].split(".feed.", 1)[1]  # e.g. rss.category.validation.records_dlq
            totals[name] += float(m["value"])
    return dict(totals)


def test_running_job_commits_on_checkpoints_and_counts(bootstrap: str, tmp_path: Path) -> None:
    port = free_port()
    path, _ = make_job_config(
        tmp_path,
        bootstrap,
        **{
            "checkpoint.interval_ms": CHECKPOINT_MS,
            "flink.conf": {"rest.bind-port": str(port)},
            "enrich.rss": "tests.integration.hooks:flaky",
            "retry.backoff_ms": 10,
        },
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    cases = build_corpus()
    for feed in ("rss", "polymarket"):
        produce(
            bootstrap,
            config.feeds[feed].input,
            [(c.key, c.value, c.headers) for c in cases if c.feed == feed],
        )
    outputs = [
        t for f in ("rss", "polymarket") for t in (config.feeds[f].clean, config.feeds[f].dlq)
    ]

    proc = start_job(path, "--parallelism", "2")
    try:
        job_id = wait_for(
            "the job to run",
            lambda: [
                j["jid"] for j in rest(port, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"
            ],
            120,
            proc,
        )[0]

        # Every record is processed and written inside open transactions ...
        wait_for(
            "all outputs written (uncommitted)",
            lambda: (
                len(read_all(bootstrap, outputs, "read_uncommitted", timeout_s=10)) >= len(cases)
            ),
            60,
            proc,
        )
        counts = rest(port, f"/jobs/{job_id}/checkpoints")["counts"]
        committed = read_all(bootstrap, outputs, "read_committed", timeout_s=10)
        counts_after = rest(port, f"/jobs/{job_id}/checkpoints")["counts"]
        # ... but until a checkpoint completes, read_committed sees none of it.
        assert counts["completed"] == counts_after["completed"] == 0
        assert committed == [], "records visible before the first checkpoint completed"

        # After the first checkpoint, everything is visible exactly once.
        trigger = urllib.request.Request(
            f"http://127.0.0.1:{port}/jobs/{job_id}/checkpoints",
            data=json.dumps({"checkpointType": "FULL"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(trigger, timeout=10) as response:
            assert response.status in (200, 202)
        wait_for(
            "the first checkpoint",
            lambda: rest(port, f"/jobs/{job_id}/checkpoints")["counts"]["completed"] >= 1,
            90,
            proc,
        )
        visible = read_all(bootstrap, outputs, "read_committed")
        assert len(visible) == len(cases)

        want: Counter[str] = Counter()
        for c in cases:
            want[f"{c.feed}.records_in"] += 1
            if c.clean is not None:
                want[f"{c.feed}.records_clean"] += 1
            else:
                want[f"{c.feed}.category.{c.category}.records_dlq"] += 1
        got = wait_for(
            "the counters",
            lambda: (
                (m if all(m.get(k) == v for k, v in want.items()) else None)
                if (m := job_metrics(port, job_id)) is not None
                else None
            ),
            60,
            proc,
        )
        for key, value in want.items():
            assert got[key] == value, key
    finally:
        stop_process_group(proc)
