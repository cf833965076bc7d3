"""A tiny benchmark run, so `make bench` cannot rot. It asserts the report's shape and that
every system processed the whole data set, never a timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kafka_helpers import ROOT

pytestmark = pytest.mark.integration


def test_bench_smoke_run_writes_a_complete_report(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {"flink_job", "plain_loop", "kafka_io", "udfs_only"}
    for name, system in report["systems"].items():
        assert system["records_per_s"] > 0 and system["peak_rss_mb"] > 0, name
    for name in ("flink_job", "plain_loop"):  # their outputs were read back: exactly once
        assert report["systems"][name]["exactly_once_checked"] is True, name
    for name in ("plain_loop", "kafka_io", "udfs_only"):
        assert report["systems"][name]["records"] == report["records"] == 2_000, name
    assert set(report["ratios"]) == {
        "flink_vs_plain_loop",
        "flink_vs_udfs_only",
        "flink_vs_kafka_io",
    }
    assert set(report["dlq_overhead"]) == {"0.00", "0.05", "0.50"}
    assert set(report["ratio_by_size"]) == set(report["scale"]) == {"1000", "2000"}
    assert report["machine"]["cores"] >= 1
    assert "flink_job" in proc.stdout  # the table
