"""`make run`: the streaming job in the embedded mini-cluster with a live status line.

Seeds sample data once (only into empty input topics), starts ``jobs/dlq_job.py`` in a session
of its own, and shows per feed what this run has done: records read (checkpointed), clean,
DLQ and records/s, until Ctrl-C. Then it stops the job (and its JVM and Python workers) and
leaves only the broker running.

The job never outlives its launcher: the launcher signals it first thing on the way out,
before it writes anything (a write to a closed terminal or pipe can fail), and should the
launcher die without a word (SIGKILL), the kernel signals the job for it
(``MARKETLAG_LAUNCHER_PID``: the job asks for its parent's death signal).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import click
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from jobs.dlq_job import LAUNCHER_PID_ENV, STOP_GRACE_S
from jobs.sample import generate
from kafkaio.scan import topic_size, watermarks
from settings.config import FEEDS, ROOT, JobConfig


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
    """Counts the records committed (visible under read_committed) in the clean and DLQ
    topics from the offsets they had when it was made: what this run writes."""

    def __init__(self, config: JobConfig, consumer: Consumer) -> None:
        super().__init__(daemon=True)
        self.consumer = consumer
        self.topics = [t for f in FEEDS for t in (config.feeds[f].clean, config.feeds[f].dlq)]
        self.start_at = {tp: high for tp, (_, high) in watermarks(consumer, self.topics).items()}
        self.counts: Counter[str] = Counter()
        self.stopped = threading.Event()

    def run(self) -> None:
        self.consumer.assign([TopicPartition(t, p, o) for (t, p), o in self.start_at.items()])
        try:
            while not self.stopped.is_set():
                for msg in self.consumer.consume(1000, 0.5):
                    topic = msg.topic()
                    if msg.error() is None and topic is not None:
                        self.counts[topic] += 1
        finally:
            self.consumer.close()


def input_consumed(consumer: Consumer, config: JobConfig, feed: str) -> int:
    """Records of the feed's input the job's consumer group has committed (checkpointed)."""
    marks = watermarks(consumer, [config.feeds[feed].input], 10)
    parts = [TopicPartition(topic, p) for topic, p in marks]
    return sum(
        tp.offset - marks[(tp.topic, tp.partition)][0]
        for tp in consumer.committed(parts, timeout=10)
        if tp.offset >= 0
    )


def status_table(rows: list[tuple[str, int, int, int, float]]) -> Table:
    table = Table(box=None, pad_edge=False, caption="since this run started")
    for col in ("feed", "read (checkpointed)", "clean", "DLQ", "records/s"):
        table.add_column(col, justify="right" if col != "feed" else "left")
    for feed, n_in, clean, dlq, rate in rows:
        table.add_row(feed, f"{n_in:,}", f"{clean:,}", f"{dlq:,}", f"{rate:,.0f}")
    return table


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """Stops a process started with ``start_new_session=True`` and everything it started
    (the job's Python client, its JVM, the Python workers): SIGTERM, which the job turns into
    SIGKILL for what is left after STOP_GRACE_S; this SIGKILLs the group itself 5 s later."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S + 5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def start(config: JobConfig, config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """The streaming job, in a session of its own (Ctrl-C reaches the launcher, which stops
    it), told to stop when this process dies."""
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "dlq_job.py"),
        "--config",
        str(config_path),
        "--bootstrap-servers",
        config.kafka.bootstrap_servers,
    ]
    env = {**os.environ, LAUNCHER_PID_ENV: str(os.getpid())}
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def say(console: Console, text: str) -> None:
    """Prints, unless the terminal or pipe is gone (``| tee`` ended by Ctrl-C)."""
    with contextlib.suppress(BrokenPipeError, OSError):
        console.print(text)


def run(
    config: JobConfig, config_path: Path, seed_count: int, bad_share: float, refresh_s: float
) -> int:
    console = Console()
    seeded = seed_once(config, seed_count, bad_share)
    for feed, n in seeded.items():
        say(console, f"seeded {n:,} sample records into {config.feeds[feed].input}")
    log = ROOT / "var" / "log" / "dlq_job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    conf = config.kafka.librdkafka()
    probe = Consumer({**conf, "group.id": config.group_id, "enable.auto.commit": False})
    counter = CommittedCounter(
        config,
        Consumer(
            {
                **conf,
                "group.id": f"marketlag-status-{os.getpid()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        ),
    )
    read_before = {feed: input_consumed(probe, config, feed) for feed in FEEDS}
    proc = start(config, config_path, log)
    try:
        say(console, f"job started (pid {proc.pid}), log: {log.relative_to(ROOT)}; Ctrl-C stops it")
        counter.start()
        last_total, last_t = 0, time.monotonic()
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
                    read = input_consumed(probe, config, feed) - read_before[feed]
                    rows.append((feed, read, clean, dlq, 0.0))
                rate = (total - last_total) / (now - last_t)
                rows = [
                    (f, i, c, d, rate * (c + d) / total if total else 0.0) for f, i, c, d, _ in rows
                ]
                last_total, last_t = total, now
                live.update(status_table(rows))
        say(console, f"[red]the job exited with code {proc.returncode}; see {log}[/red]")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # The job first: nothing before this may write (or fail to) on the way out.
        stop_process_group(proc)
        counter.stopped.set()
        probe.close()
        say(console, f"job stopped (process group {proc.pid})")


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
    from settings.config import load_config

    try:
        code = run(load_config(config_path), config_path, seed_count, bad_share, refresh)
    except BrokenPipeError:  # the output went away (| tee ended): the job is stopped
        code = 0
    if code == 0:
        # Whatever still waits in the buffer must not fail the exit on a closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    main()
