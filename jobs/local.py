"""`make run`: the streaming job in the embedded mini-cluster with a live status line.

Seeds sample data once (only into empty input topics), starts ``jobs/dlq_job.py`` in its own
process group, and shows per feed: records in, clean, DLQ and records/s, until Ctrl-C. Then
it stops the job (and its JVM) by process group and leaves only the broker running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from kafkaio.scan import topic_size, watermarks
from udfs.config import FEEDS, ROOT, JobConfig
from udfs.sample import generate


def seed_once(config: JobConfig, count: int, bad_share: float) -> dict[str, int]:
    """Produces sample data into each input topic that is still empty."""
    conf = config.kafka.librdkafka()
    probe = Consumer({**conf, "group.id": "marketlag-seed-probe"})
    producer = Producer({**conf, "enable.idempotence": True, "linger.ms": 20})
    seeded = {}
    try:
        for feed in FEEDS:
            topic = config.feeds[feed].input
            if topic_size(probe, topic) > 0:
                continue
            for key, value, headers in generate(feed, count, bad_share):
                producer.produce(topic, key=key, value=value, headers=list(headers))
                producer.poll(0)
            seeded[feed] = count
        producer.flush(60)
    finally:
        probe.close()
    return seeded


class CommittedCounter(threading.Thread):
    """Counts the records visible under read_committed in the clean and DLQ topics."""

    def __init__(self, config: JobConfig) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.counts: Counter[str] = Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.config.kafka.librdkafka(),
                "group.id": f"marketlag-status-{os.getpid()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        topics = [t for f in FEEDS for t in (self.config.feeds[f].clean, self.config.feeds[f].dlq)]
        consumer.subscribe(topics)
        try:
            while not self.stopped.is_set():
                for msg in consumer.consume(1000, 0.5):
                    topic = msg.topic()
                    if msg.error() is None and topic is not None:
                        self.counts[topic] += 1
        finally:
            consumer.close()


def input_consumed(consumer: Consumer, config: JobConfig, feed: str) -> int:
    """Records of the feed's input the job has committed (consumer group offsets)."""
    marks = watermarks(consumer, [config.feeds[feed].input], 10)
    parts = [TopicPartition(topic, p) for topic, p in marks]
    return sum(
        tp.offset - marks[(tp.topic, tp.partition)][0]
        for tp in consumer.committed(parts, timeout=10)
        if tp.offset >= 0
    )


def status_table(rows: list[tuple[str, int, int, int, float]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("feed", "in (checkpointed)", "clean", "DLQ", "records/s"):
        table.add_column(col, justify="right" if col != "feed" else "left")
    for feed, n_in, clean, dlq, rate in rows:
        table.add_row(feed, f"{n_in:,}", f"{clean:,}", f"{dlq:,}", f"{rate:,.0f}")
    return table


def set_paths(tree: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Sets ``{"a.b.c": value}`` entries in a nested config tree."""
    for path, value in values.items():
        node = tree
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value


def isolated_config(tmp: Path, bootstrap: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    """A copy of conf/job.yaml in ``tmp`` whose topics, consumer group and transactional ids
    are this run's own (a uuid prefix), so runs never see each other's records. ``overrides``
    are ``{"a.b": value}`` settings. Returns (path, tree)."""
    tree = yaml.safe_load((ROOT / "conf" / "job.yaml").read_text())
    run = uuid.uuid4().hex[:8]
    for feed in FEEDS:
        for role in ("input", "clean", "dlq"):
            tree["topics"][feed][role] = f"t{run}.{tree['topics'][feed][role]}"
    tree["topics"]["parking"] = f"t{run}.dlq.parking"
    tree["topics"]["replay_ledger"] = f"t{run}.dlq.replay.ledger"
    tree["kafka"]["bootstrap_servers"] = bootstrap
    tree["kafka"]["transactional_id_prefix"] = f"t{run}"
    tree["job"]["group_id"] = f"t{run}"
    tree["checkpoint"]["dir"] = str(tmp / "checkpoints")
    set_paths(tree, overrides)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path, tree


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a mini-cluster's REST API)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_job(
    config_path: Path, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Starts the job unbounded from the earliest offsets, in its own process group (stop it
    with :func:`stop_process_group`)."""
    cmd = [sys.executable, str(ROOT / "jobs" / "dlq_job.py"), "--config", str(config_path)]
    return subprocess.Popen(
        [*cmd, "--starting-offsets", "earliest", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_process_group(proc: subprocess.Popen[bytes], console: Console | None = None) -> None:
    """Stops a process started with ``start_new_session=True`` and everything it started
    (the job's Python client and its JVM): SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    if console is not None:
        console.print(f"stopping the job (process group {proc.pid}) ...")
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def run(
    config: JobConfig, config_path: Path, seed_count: int, bad_share: float, refresh_s: float
) -> int:
    console = Console()
    seeded = seed_once(config, seed_count, bad_share)
    for feed, n in seeded.items():
        console.print(f"seeded {n:,} sample records into {config.feeds[feed].input}")
    log = ROOT / "var" / "log" / "dlq_job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "dlq_job.py"),
        "--config",
        str(config_path),
        "--bootstrap-servers",
        config.kafka.bootstrap_servers,
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    console.print(f"job started (pid {proc.pid}), log: {log.relative_to(ROOT)}; Ctrl-C stops it")
    counter = CommittedCounter(config)
    counter.start()
    probe = Consumer(
        {**config.kafka.librdkafka(), "group.id": config.group_id, "enable.auto.commit": False}
    )
    last_total, last_t = 0, time.monotonic()
    try:
        with Live(console=console, refresh_per_second=1, transient=False) as live:
            while proc.poll() is None:
                time.sleep(refresh_s)
                now = time.monotonic()
                rows = []
                total = 0
                for feed in FEEDS:
                    t = config.feeds[feed]
                    clean, dlq = counter.counts[t.clean], counter.counts[t.dlq]
                    total += clean + dlq
                    rows.append((feed, input_consumed(probe, config, feed), clean, dlq, 0.0))
                rate = (total - last_total) / (now - last_t)
                rows = [
                    (f, i, c, d, rate * (c + d) / total if total else 0.0) for f, i, c, d, _ in rows
                ]
                last_total, last_t = total, now
                live.update(status_table(rows))
        console.print(f"[red]the job exited with code {proc.returncode}; see {log}[/red]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        counter.stopped.set()
        probe.close()
        stop_process_group(proc, console)


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=ROOT / "conf" / "job.yaml",
    show_default=True,
)
@click.option(
    "--seed-count",
    default=5000,
    show_default=True,
    help="Sample records per feed, produced once into empty input topics.",
)
@click.option("--bad-share", default=0.05, show_default=True, help="Share of bad records.")
@click.option("--refresh", default=3.0, show_default=True, help="Seconds between updates.")
def main(config_path: Path, seed_count: int, bad_share: float, refresh: float) -> None:
    """Run the DLQ job locally with a live status line (make run)."""
    from udfs.config import load_config

    sys.exit(run(load_config(config_path), config_path, seed_count, bad_share, refresh))


if __name__ == "__main__":
    main()
