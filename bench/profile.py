"""Where the job's CPU goes: CPU seconds per process kind for one bounded run, and a py-spy
profile of its Python side.

    .venv/bin/python -m bench.profile [--records N] [--bad-share S] [--no-py-spy] [--jfr]

Produces the benchmark data set (as `make bench` does), runs the bounded job on it once and
samples the CPU time of every process of the run: the JVM (Kafka source and sinks, the
Java operators, the Python runner's data plane) and Python (the client and, on the embedded
mini-cluster, the Python workers, which run inside it). Subtracting an empty run's figures
leaves the cost per record. With py-spy (default) the Python side is also sampled into
bench/results/profile-python.txt (the hottest functions, by own time). With --jfr the JVM
records a Java Flight Recording, summarised into bench/results/profile-jvm.txt (the hottest
methods by own time, and the share of samples per component). Results:
bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.run import RESULTS, dataset, fresh_outputs
from settings.config import ROOT


class CpuByKind(threading.Thread):
    """Keeps the last seen CPU time (user + system) of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.seen: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                for p in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        t = p.cpu_times()
                        kind = "jvm" if p.name() == "java" else "python"
                        self.seen[p.pid] = (kind, t.user + t.system)
            time.sleep(0.25)

    def totals(self) -> dict[str, float]:
        out = {"jvm": 0.0, "python": 0.0}
        for kind, cpu in self.seen.values():
            out[kind] += cpu
        return out


def run_once(
    cfg: Path, tmp: Path, tag: str, spy: Path | None, jfr: Path | None = None
) -> dict[str, Any]:
    with fresh_outputs(cfg, tmp, tag) as job:
        return _run(job, spy, jfr)


def _run(job: Path, spy: Path | None, jfr: Path | None) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "jobs" / "dlq_job.py"), "--config", str(job)]
    cmd += ["--bounded", "--starting-offsets", "earliest"]
    start = time.monotonic()
    env = dict(os.environ)
    if jfr is not None:  # PyFlink passes JVM_ARGS to the JVM it starts
        env["JVM_ARGS"] = f"-XX:StartFlightRecording=filename={jfr},settings=profile"
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    cpu = CpuByKind(proc.pid)
    cpu.start()
    spy_proc = None
    if spy is not None:
        spy_cmd = [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses"]
        spy_cmd += ["--pid", str(proc.pid)]
        spy_cmd += ["--rate", "50", "--format", "raw", "--output", str(spy), "--nonblocking"]
        spy_proc = subprocess.Popen(
            spy_cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    _, err = proc.communicate(timeout=3600)
    wall = time.monotonic() - start
    cpu.stop.set()
    cpu.join()
    if spy_proc is not None:
        spy_proc.wait(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"job exited {proc.returncode}: {err[-3000:]!r}")
    return {"wall_s": wall, "cpu_s": cpu.totals()}


def hottest(raw: Path, top: int = 25) -> list[tuple[str, int]]:
    """Own-time samples per function from py-spy's raw (collapsed stacks) output."""
    own: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
    return sorted(own.items(), key=lambda kv: -kv[1])[:top]


# Components of the JVM side, by the first matching frame prefix of a sample's stack.
COMPONENTS = [
    ("io.marketlag.", "project Java (frames, batcher, splitter)"),
    ("org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer", "Kafka producer"),
    ("org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer", "Kafka consumer"),
    ("org.apache.flink.kafka.shaded.", "Kafka client, other"),
    ("org.apache.flink.connector.kafka.", "Flink Kafka connector"),
    ("org.apache.beam.", "Beam (Python data plane)"),
    ("org.apache.flink.python.", "Flink Python operators"),
    ("org.apache.flink.runtime.checkpoint", "checkpoints"),
    ("org.apache.flink.", "Flink runtime"),
]


def jvm_summary(jfr: Path, top: int = 30) -> list[str]:
    """Own-time methods and components of the execution samples of a recording."""
    text = subprocess.run(
        ["jfr", "print", "--events", "jdk.ExecutionSample", "--stack-depth", "64", str(jfr)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    own: dict[str, int] = {}
    parts: dict[str, int] = {}
    total = 0
    for event in text.split("jdk.ExecutionSample")[1:]:
        frames = [
            line.strip().split("(")[0]
            for line in event.split("stackTrace = [", 1)[-1].splitlines()[1:]
            if "line:" in line
        ]
        if not frames:
            continue
        total += 1
        own[frames[0]] = own.get(frames[0], 0) + 1
        # the innermost frame of a known component owns the sample (JDK frames count for
        # their caller: a HashMap lookup inside the producer is the producer's)
        label = next(
            (name for f in frames for prefix, name in COMPONENTS if f.startswith(prefix)),
            "other (JDK, GC, JIT)",
        )
        parts[label] = parts.get(label, 0) + 1
    lines = [f"{total} samples", "", "component share:"]
    lines += [
        f"{n / total:>7.1%}  {name}" for name, n in sorted(parts.items(), key=lambda x: -x[1])
    ]
    lines += ["", "own time:"]
    lines += [f"{n:>7}  {m}" for m, n in sorted(own.items(), key=lambda x: -x[1])[:top]]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--bad-share", type=float, default=0.05)
    ap.add_argument("--no-py-spy", action="store_true")
    ap.add_argument("--jfr", action="store_true", help="also a Java Flight Recording")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile-"))
    tag = f"p{os.getpid()}"
    empty = run_once(dataset(0, args.bad_share, tmp), tmp, tag + "e", None)
    spy = None if args.no_py_spy else tmp / "python.txt"
    jfr = tmp / "job.jfr" if args.jfr else None
    full = run_once(dataset(args.records, args.bad_share, tmp), tmp, tag, spy, jfr)
    per_record = {
        kind: (full["cpu_s"][kind] - empty["cpu_s"][kind]) / args.records * 1e6
        for kind in ("jvm", "python")
    }
    result = {
        "records": args.records,
        "bad_share": args.bad_share,
        "empty_run": empty,
        "run": full,
        "cpu_us_per_record": {k: round(v, 1) for k, v in per_record.items()},
        "records_per_s": round(args.records / max(full["wall_s"] - empty["wall_s"], 1e-3)),
    }
    (RESULTS / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if spy is not None and spy.exists():
        lines = [f"{n:>8}  {name}" for name, n in hottest(spy)]
        (RESULTS / "profile-python.txt").write_text("\n".join(lines) + "\n")
        print("\nPython, own time (py-spy samples at 50 Hz):\n" + "\n".join(lines))
    if jfr is not None and jfr.exists():
        lines = jvm_summary(jfr)
        (RESULTS / "profile-jvm.txt").write_text("\n".join(lines) + "\n")
        print("\nJVM (Java Flight Recorder execution samples):\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
