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


def _bench(module: str, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # It waits for the Flink slot before each of its runs, behind the other tests' jobs.
        timeout=2700,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_bench_smoke_run_writes_a_complete_report(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = _bench("bench.run", bootstrap, "--smoke", "--out", str(out))
    report = json.loads(out.read_text())
    cores = report["machine"]["cores"]
    loops = ("plain_loop", f"plain_loop_x{cores}")
    assert set(report["systems"]) == {
        "flink_bounded_e2e",
        "flink_steady",
        *loops,
        "kafka_io",
        "udfs_only",
        "flink_floor_java",
        "flink_floor_python",
    }
    for name in ("flink_bounded_e2e", *loops):  # their outputs were read back: exactly once
        system = report["systems"][name]
        assert system["exactly_once_checked"] is True, name
        assert system["records_per_s"]["median"] > 0 and system["peak_pss_mb"] > 0, name
        assert system["peak_pss_mb"] <= system["peak_rss_mb"], name
        cpu = system["cpu_us_per_record"]  # the CPU by process adds up, the broker's included
        assert cpu["broker"] > 0 and cpu["total"] > 0, (name, cpu)
        assert abs(sum(v for k, v in cpu.items() if k != "total") - cpu["total"]) < 1, cpu
    for name in ("flink_floor_java", "flink_floor_python"):  # every input in the clean topics
        floor = report["systems"][name]
        assert floor["passed_through_checked"] is True, name
        assert floor["records_per_s"]["median"] > 0 and floor["startup_s"]["median"] > 0, name
    floors = {
        k: report["systems"][f"flink_floor_{k}"]["cpu_us_per_record"] for k in ("java", "python")
    }
    assert "python_worker" not in floors["java"] and floors["python"]["python_worker"] > 0, floors
    assert all(
        report["systems"][k]["cpu_us_per_record"]["total"] > 0 for k in ("kafka_io", "udfs_only")
    )
    job = report["systems"]["flink_bounded_e2e"]
    assert job["startup_s"]["median"] > 0
    assert job["cpu_us_per_record"]["python_worker"] > 0, job["cpu_us_per_record"]
    phases = job["phases_s"]  # the moments in order (the sources may read before the Python
    # operators' subtasks run; a run this tiny can start its last subtask, or read its last
    # record and finish, between two polls of its counters (one a second once it reads), so
    # those two moments may be missing here, never in a real run's seconds of work)
    order = ["job_created", "first_record_read", "exit"]
    assert None not in [phases[k] for k in order], phases
    if phases["last_record_read"] is not None:
        order.insert(2, "last_record_read")
    assert [phases[k] for k in order] == sorted(phases[k] for k in order), phases
    if phases["all_subtasks_running"] is not None:
        assert phases["job_created"] < phases["all_subtasks_running"] <= phases["exit"], phases
    parts = job["peak_pss_parts"]  # the peak's breakdown adds up to the peak
    assert {"launcher", "jvm", "python_worker"} <= set(parts), parts
    assert abs(sum(p["mb"] for p in parts.values()) - job["peak_pss_mb"]) <= len(parts), parts
    assert set(report["ratios"]) == {
        "flink_bounded_e2e_vs_plain_loop",
        f"flink_steady_vs_plain_loop_x{cores}",
        f"flink_bounded_e2e_vs_plain_loop_x{cores}",
    }
    over = report["dlq_overhead"]
    assert (
        set(over["steady_records_per_s"])
        == set(over["cpu_us_per_record"])
        == {
            "0.00",
            "0.05",
            "0.50",
        }
    )
    assert all(c["total"] > c["jvm"] > 0 for c in over["cpu_us_per_record"].values()), over
    assert len(report["commit"]) >= 40
    assert "flink_bounded_e2e" in proc.stdout  # the table


def test_latency_of_job_and_plain_loop_counts_every_good_record(
    bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "latency.json"
    _bench(
        "bench.run", bootstrap, "--latency-only", "400", "--latency-seconds", "3", "--out", str(out)
    )
    doc = json.loads(out.read_text())
    assert set(doc["systems"]) == {"flink_job", "plain_loop"}
    for system, by_share in doc["systems"].items():
        assert set(by_share) == {"0%", "5%"}, system
        clean, mixed = by_share["0%"], by_share["5%"]
        assert clean["good"] == clean["produced"] > 0, system
        assert 0 < mixed["good"] < mixed["produced"], system  # the bad ones went elsewhere
        for fig in (clean, mixed):  # every good record reached its clean topic, and was timed
            assert fig["received"] == fig["good"], (system, fig)
            assert 0 < fig["p50_ms"] <= fig["p99_ms"] <= fig["max_ms"], (system, fig)


def test_ingest_bench_smoke_run_writes_a_complete_report(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    args = ("--records", "2000", "--pairs", "6", "--drain-records", "300", "--rounds", "1")
    _bench("bench.ingest", bootstrap, *args, "--tmp", str(tmp_path), "--out", str(out))
    doc = json.loads(out.read_text())
    assert set(doc["systems"]) == {"bare_producer", "ingest_producer", "spool_drain", "replay"}
    assert all(s["records_per_s"] > 0 for s in doc["systems"].values())
    for key in ("ingest_vs_bare", "ingest_vs_bare_cpu"):
        fig = doc[key]
        assert fig["pairs"] == 6 and fig["min"] <= fig["ci95"][0] <= fig["median"], fig
        assert fig["median"] <= fig["ci95"][1] <= fig["max"], fig
