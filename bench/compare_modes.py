"""Thread versus process Python execution mode, side by side in one run, same data.

    .venv/bin/python -m bench.compare_modes [RECORDS_PER_FEED]

Produces sample data (5% bad) once into fresh topics, then runs the bounded job over it
alternately in each mode (fresh output topics each time), and writes wall times (job start to
exit, start-up included) to bench/results/modes.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient

from dlq.admin import ensure_project_topics
from dlq.sample import generate
from tests.kafka_helpers import ROOT, make_job_config, produce, run_job
from udfs.config import load_config

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def main() -> None:
    per_feed = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    tmp = Path(tempfile.mkdtemp())
    base_path, base = make_job_config(tmp, BOOTSTRAP)
    config = load_config(base_path)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    ensure_project_topics(config, admin)
    for feed in ("rss", "polymarket"):
        produce(BOOTSTRAP, config.feeds[feed].input, generate(feed, per_feed, 0.05))
    prefix = base["kafka"]["transactional_id_prefix"]
    runs: dict[str, list[float]] = {"thread": [], "process": []}
    for rnd in range(2):
        for mode in ("thread", "process"):
            run_dir = tmp / f"{mode}{rnd}"
            run_dir.mkdir()
            overrides = {
                "job.python_execution_mode": mode,
                "checkpoint.interval_ms": 5000,
                "kafka.transactional_id_prefix": f"{prefix}-{mode}{rnd}",
            }
            for feed in ("rss", "polymarket"):
                overrides[f"topics.{feed}.input"] = config.feeds[feed].input
            path, _ = make_job_config(run_dir, BOOTSTRAP, **overrides)
            ensure_project_topics(load_config(path), admin)
            start = time.monotonic()
            run_job(path)
            runs[mode].append(time.monotonic() - start)
            print(f"{mode:8} round {rnd}: {runs[mode][-1]:.1f} s", flush=True)
    result = {
        "records": 2 * per_feed,
        "bad_share": 0.05,
        "parallelism": base["job"]["parallelism"],
        "wall_s": runs,
        "records_per_s_incl_startup": {
            m: [round(2 * per_feed / s) for s in v] for m, v in runs.items()
        },
        "machine": {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()},
    }
    out = ROOT / "bench" / "results" / "modes.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
