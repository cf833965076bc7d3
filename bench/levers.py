"""Performance levers of the job, side by side in one run on the same data.

    .venv/bin/python -m bench.levers [--records N] [--rounds R] [LEVER ...]

Produces the benchmark data set once (5% bad), then runs the bounded job once per lever per
round, the levers interleaved so that the machine's drift hits each alike, and reports
records/s the way `make bench` does (from the first record read to the last committed).
Results go to bench/results/levers.json. A lever is a set of changes to conf/job.yaml; the
floors (``floor_java``, ``floor_python``) run the job with its validate step swapped
(bench/floor.py) to measure what the rest of the graph costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import set_paths
from bench.run import (
    FLOORS,
    JOB,
    RESULTS,
    cpu_model,
    cpu_per_record,
    dataset,
    flink_run,
    git_commit,
)

# name -> (what it changes, job.yaml changes; "flink.conf" entries merge into flink.conf)
LEVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "shipped": ("conf/job.yaml as shipped", {}),
    "unbatched": (
        "one record per batch: a Python crossing per record (as before batching)",
        {"batch.max_records": 1},
    ),
    "batch_100": ("batches of up to 100 records", {"batch.max_records": 100}),
    "batch_10k": (
        "batches of up to 10,000 records or 8 MiB",
        {"batch.max_records": 10_000, "batch.max_bytes": 8 * 1024 * 1024},
    ),
    "parallelism_1": ("one subtask per operator", {"job.parallelism": 1}),
    "parallelism_3": (
        "three subtasks per operator (one per input partition, a Python worker each)",
        {"job.parallelism": 3},
    ),
    "thread_mode": ("Python inside the TaskManager JVM", {"job.python_execution_mode": "thread"}),
    "loopback": (
        "PyFlink's mini-cluster default: every Python worker inside the client process, one GIL",
        {"env": {"_python_worker_execution_mode": "loopback"}},
    ),
    "no_object_reuse": (
        "Flink copies every record between chained operators",
        {"flink.conf": {"pipeline.object-reuse": "false"}},
    ),
    "bundle_10k_5s": (
        "bigger Python bundles",
        {
            "flink.conf": {
                "python.fn-execution.bundle.size": "10000",
                "python.fn-execution.bundle.time": "5000",
            }
        },
    ),
    "bundle_100": (
        "small Python bundles",
        {"flink.conf": {"python.fn-execution.bundle.size": "100"}},
    ),
    "jvm_defaults": (
        "the JVM's own choices for the mini-cluster: tiered JIT up to C2, G1, default sizes",
        {"flink.local_jvm_options": []},
    ),
    "jit_c2": (
        "tiered JIT up to C2 (the rest of the shipped JVM options kept)",
        {
            "flink.local_jvm_options": [
                "-XX:+UseSerialGC",
                "-Xmx768m",
                "-Xmn192m",
                "-XX:MetaspaceSize=256m",
            ]
        },
    ),
    "gc_g1": (
        "the G1 collector with its own young sizing (C1 and the heap cap kept)",
        {"flink.local_jvm_options": ["-XX:TieredStopAtLevel=1", "-Xmx768m"]},
    ),
    "heap_1536m": (
        "the mini-cluster JVM's heap capped at 1.5 GiB, 512 MiB of it young",
        {"env": {"JVM_ARGS": "-Xmx1536m -Xmn512m"}},
    ),
    "producer_defaults": (
        "the sinks' producers with Kafka's default batching (16 KiB, 5 ms linger)",
        {"kafka.sink": {"linger.ms": "5", "batch.size": "16384"}},
    ),
    "checkpoint_30s": ("checkpoint every 30 s", {"checkpoint.interval_ms": 30_000}),
    "bounded_5s": (
        "a --bounded run checkpoints every 5 s like a streaming one (not every second)",
        {"checkpoint.bounded_interval_ms": 5_000},
    ),
    "checkpoint_2s": ("checkpoint every 2 s", {"checkpoint.interval_ms": 2_000}),
    # Floors, not levers: the shipped job with its validate step swapped (bench/floor.py).
    "floor_java": (
        "no Python: the batches pass through a Java map, every record to the clean topic",
        {"job": FLOORS["floor_java"]},
    ),
    "floor_python": (
        "the batches cross into the Python workers, which only turn frames into sink frames",
        {"job": FLOORS["floor_python"]},
    ),
}


@contextlib.contextmanager
def environment(changes: dict[str, str]) -> Iterator[None]:
    """The job's environment with ``changes`` (levers that PyFlink reads from it)."""
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def variant(base: Path, tmp: Path, name: str, changes: dict[str, Any]) -> Path:
    """A copy of the data set's config with one lever's changes."""
    tree = json.loads(base.read_text())
    tree["flink"]["conf"].update(changes.get("flink.conf", {}))
    set_paths(tree, {k: v for k, v in changes.items() if k not in ("flink.conf", "env", "job")})
    path = tmp / f"lever-{name}.json"
    path.write_text(json.dumps(tree))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("levers", nargs="*", metavar="LEVER", help=f"of {', '.join(LEVERS)}")
    args = ap.parse_args()
    args.levers = args.levers or list(LEVERS)
    if unknown := set(args.levers) - set(LEVERS):
        ap.error(f"unknown levers: {', '.join(sorted(unknown))}")
    tmp = Path(tempfile.mkdtemp(prefix="levers-"))
    base = dataset(args.records, 0.05, tmp)
    startup: dict[str, list[float]] = {name: [] for name in args.levers}
    rates: dict[str, list[float]] = {name: [] for name in args.levers}
    rss: dict[str, list[float]] = {name: [] for name in args.levers}
    e2e: dict[str, list[float]] = {name: [] for name in args.levers}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in args.levers}  # CPU s by kind
    for rnd in range(args.rounds):
        for name in args.levers:
            changes = LEVERS[name][1]
            tag = f"l{os.getpid()}-{name.replace('_', '')}{rnd}"
            with environment(changes.get("env", {})):
                cfg = variant(base, tmp, name, changes)
                run = flink_run(cfg, tmp, tag, args.records, job=changes.get("job", JOB))
            startup[name].append(run.startup_s or 0.0)
            rates[name].append(run.steady_per_s or args.records / run.e2e_s)
            rss[name].append(run.pss_mb)
            e2e[name].append(args.records / run.e2e_s)
            cpu[name].append(run.cpu_s)
            per = cpu_per_record([run.cpu_s], args.records)
            print(
                f"round {rnd + 1}: {name:<15} {rates[name][-1]:>8,.0f} records/s steady "
                f"(launch to exit {run.e2e_s:.1f} s, start-up {startup[name][-1]:.1f} s, "
                f"peak PSS {run.pss_mb:,.0f} MB, CPU us/record "
                f"{', '.join(f'{k} {v:.1f}' for k, v in per.items())})",
                flush=True,
            )
    result = {
        "records": args.records,
        "bad_share": 0.05,
        "rounds": args.rounds,
        "levers": {
            name: {
                "what": LEVERS[name][0],
                "changes": LEVERS[name][1],
                "records_per_s": round(statistics.median(rates[name])),
                "runs": [round(r) for r in rates[name]],
                "e2e_records_per_s": round(statistics.median(e2e[name])),
                "e2e_runs": [round(r) for r in e2e[name]],
                "startup_s": round(statistics.median(startup[name]), 1),
                "peak_pss_mb": round(max(rss[name])),
                # CPU time per record, launch to exit, by process kind (median of the rounds)
                "cpu_us_per_record": cpu_per_record(cpu[name], args.records),
            }
            for name in args.levers
        },
        "commit": git_commit(),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model()},
    }
    out = RESULTS / "levers.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'lever':<16}{'steady/s':>10}{'e2e/s':>10}  runs")
    for name, r in result["levers"].items():
        print(f"{name:<16}{r['records_per_s']:>10,}{r['e2e_records_per_s']:>10,}  {r['runs']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
