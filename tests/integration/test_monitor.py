"""`dlq monitor` serves the DLQ figures as Prometheus metrics and follows new failures."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import free_port
from ingest.spool import LocalSpool, SpooledRecord
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.kafka_helpers import (
    ROOT,
    fill_dlq,
    make_job_config,
    produce,
)

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_monitor_serves_dlq_metrics_and_follows_growth(bootstrap: str, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    path, _ = make_job_config(tmp_path, bootstrap, **{"ingest": {"spool": str(spool_dir)}})
    held = [SpooledRecord("record", "rss.events", "dlq.rss.events", b"k", b"{}")] * 4
    LocalSpool(spool_dir).append(held)
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    rss_dlq = config.feeds["rss"].dlq
    fill_dlq(bootstrap, config, 30)
    produce(bootstrap, config.feeds["rss"].input, [(b"k", b"{}", [])] * 7)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "dlq"),
            "--config",
            str(path),
            "monitor",
            "--port",
            str(port),
            "--refresh",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:

        def lag(m: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
            return sum(
                v
                for (name, labels), v in m.items()
                if name == "marketlag_input_consumer_lag"
                and ("topic", config.feeds["rss"].input) in labels
            )

        def wait_for(count: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                try:
                    m = scrape(port)
                    records = m.get(("marketlag_dlq_records", (("topic", rss_dlq),)))
                    if records == count and lag(m) > 0:
                        return m
                except OSError:
                    pass
                time.sleep(0.5)
            raise AssertionError(f"marketlag_dlq_records never reached {count}")

        m = wait_for(30)
        assert (
            m[
                (
                    "marketlag_dlq_records_by_category",
                    (("category", "validation"), ("topic", rss_dlq)),
                )
            ]
            == 30
        )
        assert (
            m[("marketlag_dlq_records_by_type", (("topic", rss_dlq), ("type", "ValidationError")))]
            == 30
        )
        assert m[("marketlag_dlq_growth_per_minute", (("topic", rss_dlq),))] == 30 / 5
        assert m[("marketlag_dlq_records", (("topic", config.feeds["polymarket"].dlq),))] == 0
        assert lag(m) == 7, "the job never ran: all 7 input records are lag"

        fill_dlq(bootstrap, config, 12)  # new failures arrive while it runs
        m = wait_for(42)
        assert m[("marketlag_dlq_monitor_kafka_up", ())] == 1
        assert m[("marketlag_spool_records", (("location", str(spool_dir)),))] == 4
        oldest = m[
            ("marketlag_spool_oldest_record_timestamp_seconds", (("location", str(spool_dir)),))
        ]
        assert 0 <= time.time() - oldest < 300
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0
