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
    cores = report["machine"]["cores"]
    loops = ("plain_loop", f"plain_loop_x{cores}")
    assert set(report["systems"]) == {
        "flink_bounded_e2e",
        "flink_steady",
        *loops,
        "kafka_io",
        "udfs_only",
    }
    for name in ("flink_bounded_e2e", *loops):  # their outputs were read back: exactly once
        system = report["systems"][name]
        assert system["exactly_once_checked"] is True, name
        assert system["records_per_s"]["median"] > 0 and system["peak_pss_mb"] > 0, name
        assert system["peak_pss_mb"] <= system["peak_rss_mb"], name
    assert report["systems"]["flink_bounded_e2e"]["startup_s"]["median"] > 0
    assert set(report["ratios"]) == {
        "flink_bounded_e2e_vs_plain_loop",
        f"flink_steady_vs_plain_loop_x{cores}",
        f"flink_bounded_e2e_vs_plain_loop_x{cores}",
    }
    assert set(report["dlq_overhead"]["steady_records_per_s"]) == {"0.00", "0.05", "0.50"}
    assert len(report["commit"]) >= 40
    assert "flink_bounded_e2e" in proc.stdout  # the table
