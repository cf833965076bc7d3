"""The cost of the producers' side of the DLQ (``python -m bench.ingest``, run by ``make bench``).

- ``ingest_producer`` against ``bare_producer``: the same records (RSS items of ~300 bytes,
  serialised once before timing) through ``IngestProducer.send`` and through a bare
  confluent-kafka producer with the same settings (idempotent, acks=all, linger 5 ms, murmur2,
  delivery reports for failures only), no failures; from the first produce to the last
  acknowledgement, connection set-up included for both. Rounds interleave, each first in turn,
  after a warm-up round (all four measured, none kept) on the same broker.
- ``spool_drain``: ``dlq spool drain`` over a spool of N records, as a user runs it (start-up
  included), exactly once (records/s = N / wall time).
- ``replay``: ``dlq replay --to TOPIC`` over a DLQ of N envelopes, start-up included.

Writes bench/results/ingest.json with the commit it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.run import git_commit
from ingest.producer import IngestProducer, OutRecord
from ingest.spool import LocalSpool, SpooledRecord
from jobs.local import isolated_config
from kafkaio.admin import ensure_project_topics
from kafkaio.scan import consumer, topic_size
from udfs.config import ROOT, JobConfig, load_config
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


def items(n: int, offset: int = 0) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(offset, offset + n):
        item = {
            "event_id": f"e-{i}",
            "source": "bench",
            "title": f"Markets move on item {i}",
            "link": f"https://news.example/{i}",
            "published_at": "2026-11-30T18:05:00Z",
            "summary": "A summary of moderate length for a benchmark record " * 3,
        }
        out.append((f"e-{i}".encode(), orjson.dumps(item)))
    return out


def bare(cfg: JobConfig, records: list[tuple[bytes, bytes]]) -> float:
    failed = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    # The same settings as the ingest producer, its cheap failure-only reports included.
    producer = Producer(
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

    topic = cfg.feeds["rss"].input
    start = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]
    return time.perf_counter() - start


def wrapped(cfg: JobConfig, batch: list[OutRecord]) -> float:
    producer = IngestProducer(cfg)
    start = time.perf_counter()
    report = producer.send("rss", batch)
    took = time.perf_counter() - start
    assert report.acknowledged == len(batch), report
    return took


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
    ap.add_argument("--records", type=int, default=500_000, help="Records per producer round.")
    ap.add_argument("--drain-records", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tmp", type=Path, default=ROOT / "var" / "bench-ingest")
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    args = ap.parse_args()
    args.tmp.mkdir(parents=True, exist_ok=True)
    records = items(args.records)
    batch = [OutRecord(k, v) for k, v in records]  # the ingest API's input, built untimed
    mb = sum(len(k) + len(v) for k, v in records) / 2**20
    producers: dict[str, Callable[[JobConfig], float]] = {
        "bare_producer": lambda cfg: bare(cfg, records),
        "ingest_producer": lambda cfg: wrapped(cfg, batch),
    }
    runs: dict[str, list[float]] = {name: [] for name in (*producers, "spool_drain", "replay")}
    for r in range(-1, args.rounds):  # round 0 warms the broker and the process, untimed
        order = list(producers.items())
        rates: dict[str, float] = {}
        for name, fn in order[:: -1 if r % 2 else 1]:  # interleaved, each first in turn
            _, cfg = config(args.tmp)
            try:
                rates[name] = len(records) / fn(cfg)
            finally:
                drop(cfg)
        path, cfg = config(args.tmp)
        try:
            rates["spool_drain"] = drain_run(path, cfg, args.drain_records)
            rates["replay"] = replay_run(path, cfg, args.drain_records)
        finally:
            drop(cfg)
        print(
            f"round {r + 1}{' (warm-up)' if r < 0 else ''}: "
            + ", ".join(f"{name} {rate:,.0f}/s" for name, rate in rates.items()),
            file=sys.stderr,
        )
        if r >= 0:
            for name, rate in rates.items():
                runs[name].append(rate)
    ratios = [i / b for i, b in zip(runs["ingest_producer"], runs["bare_producer"], strict=True)]
    result = {
        "commit": git_commit(),
        "records": args.records,
        "record_mb": round(mb, 1),
        "drain_and_replay_records": args.drain_records,
        "rounds": args.rounds,
        "systems": {
            "bare_producer": spread(runs["bare_producer"]),
            "ingest_producer": spread(runs["ingest_producer"]),
            "spool_drain": spread(runs["spool_drain"]),
            "replay": spread(runs["replay"]),
        },
        "ingest_vs_bare": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
            "per_round": [round(x, 3) for x in ratios],
        },
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["systems"], indent=1))
    print(f"ingest_vs_bare {result['ingest_vs_bare']}; written to {args.out}")


if __name__ == "__main__":
    main()
