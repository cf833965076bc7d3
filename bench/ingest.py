"""The cost of the producers' side of the DLQ (``python -m bench.ingest``, run by ``make bench``).

- ``ingest_producer`` against ``bare_producer``: the same records (RSS items of ~300 bytes,
  serialised before timing) through ``IngestProducer.send`` and through a bare
  confluent-kafka producer with the same settings (idempotent, acks=all, linger 5 ms, murmur2,
  delivery reports for failures only, a produce loop with no per-record poll), no failures.
  Every batch runs in a process of its own, as a cold Lambda sends its first batch (client
  start and connection timed, both sides alike); the two take turns on the same broker and
  topic, each first in turn, and every pair gives one ratio (ingest rate / bare rate), so the
  machine's drift and whatever one process happens to get hit both sides alike. The broker
  runs on a core of its own meanwhile, as if it were another machine. Published: the median
  ratio over the pairs with a distribution-free 95% confidence interval (order statistics of
  the binomial), and the same for the CPU time of the sending process (Python and
  librdkafka's threads).
- ``spool_drain``: ``dlq spool drain`` over a spool of N records, as a user runs it (start-up
  included), exactly once (records/s = N / wall time).
- ``replay``: ``dlq replay --to TOPIC`` over a DLQ of N envelopes, start-up included.

Writes bench/results/ingest.json with the commit it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.harness import isolated_config
from bench.run import git_commit
from ingest.producer import IngestProducer, OutRecord
from ingest.spool import LocalSpool, SpooledRecord
from kafkaio.admin import ensure_project_topics
from kafkaio.scan import consumer, topic_size
from settings.config import ROOT, JobConfig, load_config
from udfs.envelope import build_delivery_envelope, encode

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
RESULTS = ROOT / "bench" / "results"
DLQ = str(ROOT / ".venv" / "bin" / "dlq")


def config(tmp: Path) -> tuple[Path, JobConfig]:
    """conf/job.yaml with this run's own topics and spool."""
    folder = tmp / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    path, _ = isolated_config(folder, BOOTSTRAP, **{"ingest.spool": str(folder / "spool")})
    cfg = load_config(path)
    ensure_project_topics(cfg, AdminClient({"bootstrap.servers": BOOTSTRAP}))
    return path, cfg


def generate(n: int, offset: int = 0) -> Iterator[tuple[bytes, bytes]]:
    """Key and JSON value of ``n`` RSS items, made one after another as a fetcher makes them."""
    for i in range(offset, offset + n):
        item = {
            "event_id": f"e-{i}",
            "source": "bench",
            "title": f"Markets move on item {i}",
            "link": f"https://news.example/{i}",
            "published_at": "2026-11-30T18:05:00Z",
            "summary": "A summary of moderate length for a benchmark record " * 3,
        }
        yield f"e-{i}".encode(), orjson.dumps(item)


def items(n: int, offset: int = 0) -> list[tuple[bytes, bytes]]:
    return list(generate(n, offset))


@contextlib.contextmanager
def broker_on_its_own_core() -> Iterator[None]:
    """Pins the local broker's threads to the last core and this process to the others, as
    when the broker is another machine: a pair's two sides then share the producer's cores
    alone, not with the broker's bursts. Both are given back all cores afterwards."""
    cores = sorted(os.sched_getaffinity(0))
    pid_file = ROOT / "var" / "kafka" / "kafka.pid"
    if len(cores) < 2 or not pid_file.exists():
        yield
        return
    tasks = Path(f"/proc/{pid_file.read_text().strip()}/task")

    def pin_broker(to: set[int]) -> None:
        for task in tasks.iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), to)

    pin_broker({cores[-1]})
    os.sched_setaffinity(0, set(cores[:-1]))
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cores))
        pin_broker(set(cores))


def bare_client(cfg: JobConfig, failed: list[Any]) -> Producer:
    """A bare confluent-kafka producer with the ingest producer's settings."""

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    return Producer(
        {
            **cfg.kafka.librdkafka(),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "delivery.report.only.error": True,
            "on_delivery": report,
            **cfg.ingest.producer,
        }
    )


Timing = tuple[float, float]  # wall seconds, CPU seconds of this process


def bare(cfg: JobConfig, records: list[tuple[bytes, bytes]]) -> Timing:
    """The loop a user writes: a client, produce, wait for room when the queue is full, flush.
    Timed from the client's start, as ``wrapped`` is (the ingest producer starts its client
    in its first send)."""
    start, cpu = time.perf_counter(), time.process_time()
    failed: list[Any] = []
    producer, topic = bare_client(cfg, failed), cfg.feeds["rss"].input
    produce = producer.produce
    for key, value in records:
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.005)
    assert producer.flush(60) == 0 and not failed, failed[:3]
    return time.perf_counter() - start, time.process_time() - cpu


def wrapped(producer: IngestProducer, batch: list[OutRecord]) -> Timing:
    start, cpu = time.perf_counter(), time.process_time()
    report = producer.send("rss", batch)
    took = time.perf_counter() - start, time.process_time() - cpu
    assert report.acknowledged == len(batch), report
    return took


def median_ci(values: list[float]) -> dict[str, Any]:
    """Median, distribution-free 95% confidence interval of the median (the order statistics
    whose rank the binomial(n, 1/2) bounds), min and max."""
    xs, n = sorted(values), len(values)
    k = 0  # the largest k with P(Binomial(n, 1/2) <= k) <= 0.025
    while sum(math.comb(n, i) for i in range(k + 2)) / 2**n <= 0.025:
        k += 1
    return {
        "median": round(statistics.median(xs), 3),
        "ci95": [round(xs[k], 3), round(xs[n - 1 - k], 3)] if n >= 6 else None,
        "min": round(xs[0], 3),
        "max": round(xs[-1], 3),
        "pairs": n,
    }


def one_batch(system: str, config_path: Path, n: int) -> Timing:
    """One batch of ``system`` in this process, as a cold Lambda sends its first: the input
    built untimed the way its user builds it, record after record (tuples for the bare
    loop, ``OutRecord`` for send); client start and connection inside the timing."""
    cfg = load_config(config_path)
    if system == "bare_producer":
        return bare(cfg, items(n))
    batch = [OutRecord(k, v) for k, v in generate(n)]
    return wrapped(IngestProducer(cfg), batch)


def producer_pairs(tmp: Path, n: int, pairs: int) -> dict[str, list[Timing]]:
    """``pairs`` turns of both producers (after one untimed turn), each first in turn, every
    batch in a process of its own: nothing a process happens to get (its memory layout, its
    connection) stays with one side."""
    path, cfg = config(tmp)
    timings: dict[str, list[Timing]] = {"bare_producer": [], "ingest_producer": []}
    cmd = [sys.executable, "-m", "bench.ingest", "--config", str(path), "--records", str(n)]
    try:
        with broker_on_its_own_core():
            for p in range(-1, pairs):  # pair 0 warms the broker and the topic, untimed
                for name in list(timings)[:: -1 if p % 2 else 1]:
                    out = subprocess.run(
                        [*cmd, "--one-batch", name],
                        cwd=ROOT,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        check=True,
                    )
                    wall, cpu = json.loads(out.stdout.strip().splitlines()[-1])
                    if p >= 0:
                        timings[name].append((wall, cpu))
    finally:
        drop(cfg)
    return timings


def timed_cli(args: list[str]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    proc = subprocess.run([DLQ, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dlq {args[2:4]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return took, json.loads(proc.stdout)


def drain_run(path: Path, cfg: JobConfig, n: int) -> float:
    spool = LocalSpool(cfg.ingest.spool)
    rss = cfg.feeds["rss"]
    for start in range(0, n, 5000):
        spool.append(
            [
                SpooledRecord("record", rss.input, rss.dlq, k, v)
                for k, v in items(min(5000, n - start), start)
            ]
        )
    took, doc = timed_cli(["--config", str(path), "spool", "drain", "--json"])
    assert doc["drained"] == n, doc
    return n / took


def replay_run(path: Path, cfg: JobConfig, n: int) -> float:
    rss = cfg.feeds["rss"]
    producer = Producer({**cfg.kafka.librdkafka(), "linger.ms": 20, "enable.idempotence": True})
    for key, value in items(n):
        env = build_delivery_envelope(
            topic=rss.input,
            key=key,
            value=value,
            headers=(),
            timestamp=None,
            error_name="_MSG_TIMED_OUT",
            message="bench",
            retriable=True,
            possibly_persisted=False,
            attempts=1,
            producer="bench",
        )
        while True:
            try:
                producer.produce(rss.dlq, key=key, value=encode(env))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    target = f"{rss.input}.replayed"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(target, cfg.partitions, 1)])[target].result(30)
    took, doc = timed_cli(
        ["--config", str(path), "replay", "--topic", rss.dlq, "--to", target, "--json"]
    )
    assert doc["replayed"] == n, doc
    c = consumer(cfg.kafka.librdkafka())
    try:
        # every record exactly once: n records plus one commit marker per transaction at most
        assert topic_size(c, target) >= n
    finally:
        c.close()
    return n / took


def drop(cfg: JobConfig) -> None:
    """Deletes a run's topics (benchmark data must not fill the disk)."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topics = [t for f in cfg.feeds.values() for t in (f.input, f.clean, f.dlq)]
    topics += [cfg.parking_topic, cfg.ledger_topic, f"{cfg.feeds['rss'].input}.replayed"]
    existing = set(admin.list_topics(timeout=30).topics)
    gone = [t for t in topics if t in existing]
    if gone:
        for future in admin.delete_topics(gone).values():
            future.result(60)


def spread(rates: list[float]) -> dict[str, Any]:
    return {
        "records_per_s": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
        "runs": [round(r) for r in rates],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000, help="Records per producer batch.")
    ap.add_argument("--pairs", type=int, default=61, help="Batches of each producer, in turn.")
    ap.add_argument("--drain-records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=5, help="Rounds of drain and replay.")
    ap.add_argument("--tmp", type=Path, default=ROOT / "var" / "bench-ingest")
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    ap.add_argument("--one-batch", metavar="SYSTEM", help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_batch:  # a child of producer_pairs: prints [wall, cpu]
        print(json.dumps(one_batch(args.one_batch, args.config, args.records)))
        return
    args.tmp.mkdir(parents=True, exist_ok=True)
    n = args.records
    mb = sum(len(k) + len(v) for k, v in generate(n)) / 2**20
    timings = producer_pairs(args.tmp, n, args.pairs)
    runs: dict[str, list[float]] = {
        name: [n / wall for wall, _ in t] for name, t in timings.items()
    }
    pairs = list(zip(timings["ingest_producer"], timings["bare_producer"], strict=True))
    rate_ratio = [bw / iw for (iw, _), (bw, _) in pairs]
    cpu_ratio = [ic / bc for (_, ic), (_, bc) in pairs]
    cpu_us = {name: [c / n * 1e6 for _, c in t] for name, t in timings.items()}
    print(f"producer pairs: rate ratio {median_ci(rate_ratio)}", file=sys.stderr)
    runs |= {"spool_drain": [], "replay": []}
    for r in range(-1, args.rounds):  # round 0 warms up, untimed
        path, cfg = config(args.tmp)
        try:
            drain = drain_run(path, cfg, args.drain_records)
            replay = replay_run(path, cfg, args.drain_records)
        finally:
            drop(cfg)
        print(
            f"round {r + 1}{' (warm-up)' if r < 0 else ''}: spool_drain {drain:,.0f}/s, "
            f"replay {replay:,.0f}/s",
            file=sys.stderr,
        )
        if r >= 0:
            runs["spool_drain"].append(drain)
            runs["replay"].append(replay)
    result = {
        "commit": git_commit(),
        "records": args.records,
        "record_mb": round(mb, 1),
        "pairs": args.pairs,
        "drain_and_replay_records": args.drain_records,
        "rounds": args.rounds,
        "systems": {name: spread(rates) for name, rates in runs.items()},
        "ingest_vs_bare": median_ci(rate_ratio),
        "ingest_vs_bare_cpu": median_ci(cpu_ratio),
        "cpu_us_per_record": {name: round(statistics.median(us), 3) for name, us in cpu_us.items()},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["systems"], indent=1))
    print(f"ingest_vs_bare {result['ingest_vs_bare']}; written to {args.out}")


if __name__ == "__main__":
    main()
