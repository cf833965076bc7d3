"""What the fault suites share: the input corpus and its steady producer, the standalone
Flink cluster's REST API, waits for conditions, open-transaction probes and the final count.

A suite writes ``RECORDS`` records (5% bad, every category) at ``RATE`` records/s, keeps the
last ``RESERVE`` back and sends them at a trickle until every fault is done, so that records
flow, and transactions hold some, whenever a fault hits, however long the faults take.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

from jobs.sample import generate
from kafkaio.scan import Message, consumer
from tests.kafka_helpers import make_job_config, read_all, source_position
from udfs.envelope import unb64

RECORDS = 100_000
RATE = 1_500  # records/s: about 70 s of steady input
# At 20/s the reserve lasts 500 s: far longer than the faults take after the bulk is sent.
RESERVE, TRICKLE = 10_000, 20


def rest(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as r:
        return json.loads(r.read())


def with_event_id(value: bytes | None, event_id: str) -> bytes | None:
    """The record with another event_id, when it is a JSON object with one."""
    try:
        obj = json.loads(value or b"")
    except ValueError:
        return value
    if not isinstance(obj, dict) or "event_id" not in obj:
        return value
    return json.dumps({**obj, "event_id": event_id}).encode()


def corpus() -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
    """Both feeds, 5% bad; some RSS records fail in enrichment (transient and processing)."""
    out = []
    for feed in ("rss", "polymarket"):
        for i, (key, value, headers) in enumerate(generate(feed, RECORDS // 2, 0.05, seed=7)):
            if feed == "rss" and i % 400 == 7:  # a transient failure that never heals
                value = with_event_id(value, f"flaky-9-{i}")
            elif feed == "rss" and i % 400 == 9:  # a bug in the enrichment hook
                value = with_event_id(value, f"bug-{i}")
            out.append((feed, key, value, headers))
    random.Random(3).shuffle(out)
    return out


class SteadyProducer(threading.Thread):
    def __init__(self, bootstrap: str, topics: dict[str, str], records: list[Any]) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 10,
                "message.timeout.ms": 600_000,
                "log_level": 0,  # "connection refused" during the broker restart is expected
            }
        )
        self.topics, self.records = topics, records
        self.sent: dict[tuple[str, int, int], bytes | None] = {}
        self.errors: list[str] = []
        self.faults_done = threading.Event()
        self.stopped = threading.Event()

    def stop(self) -> None:
        """Ends the thread early (a failed test must not leave it producing into the next)."""
        self.stopped.set()
        self.join(60)

    def run(self) -> None:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.sent[(msg.topic(), msg.partition(), msg.offset())] = msg.value()

        due = time.monotonic()
        for n, (feed, key, value, headers) in enumerate(self.records):
            if self.stopped.is_set():
                return
            left = len(self.records) - n
            due += 1 / (RATE if left > RESERVE or self.faults_done.is_set() else TRICKLE)
            ahead = due - time.monotonic()
            if ahead > 0 and self.stopped.wait(ahead):
                return
            while True:
                try:
                    self.producer.produce(
                        self.topics[feed],
                        key=key,
                        value=value,
                        headers=headers,
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    self.producer.poll(0.5)
            self.producer.poll(0)
        self.producer.flush(600)


class CommandFailed(OSError):
    """A project script exited non-zero (an OSError, so a ``wait_until`` check retries it)."""


def sh(*cmd: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc.stdout


def wait_running(
    base: str, job: str, checkpoints_after: int | None = None, timeout_s: float = 180
) -> int:
    """Waits until every task of the job runs (and a checkpoint newer than given completed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            info = rest(base, f"/jobs/{job}")
            running = info["state"] == "RUNNING" and all(
                v["status"] == "RUNNING" for v in info["vertices"]
            )
            done = rest(base, f"/jobs/{job}/checkpoints")["counts"]["completed"]
            if running and (checkpoints_after is None or done > checkpoints_after):
                return int(done)
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"job {job} not running (with a new checkpoint) in {timeout_s} s")


def failover_count(base: str, job: str) -> int:
    """How often the job has restarted: its ``numRestarts`` metric, which only grows (the
    exception history the REST API keeps stops at ``web.exception-history-size`` entries)."""
    metric = rest(base, f"/jobs/{job}/metrics?get=numRestarts")
    if metric:
        return int(float(metric[0]["value"]))
    return len(rest(base, f"/jobs/{job}/exceptions")["exceptionHistory"]["entries"])


def wait_until(what: str, check: Any, timeout_s: float = 180) -> Any:
    """Polls ``check`` until it returns something true, and returns that; a check that cannot
    ask yet (a REST call or a broker that does not answer while a fault lasts) counts as not
    yet, its last error reported."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            if found := check():
                return found
        except (OSError, KafkaException) as e:
            last = f" (last error: {e})"
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{last}")


def open_transaction_records(bootstrap: str, topics: list[str]) -> int:
    """Records written to ``topics`` in transactions not yet committed or aborted.

    Per partition, the high watermark minus the last stable offset (what a read_committed
    consumer is told the end is): both are equal when no transaction with data is open.
    """
    conf = {"bootstrap.servers": bootstrap}
    committed, uncommitted = consumer(conf), consumer(conf, "read_uncommitted")
    try:
        total = 0
        for topic in topics:
            for p in committed.list_topics(topic, timeout=15).topics[topic].partitions:
                tp = TopicPartition(topic, p)
                _, stable = committed.get_watermark_offsets(tp, timeout=15, cached=False)
                _, high = uncommitted.get_watermark_offsets(tp, timeout=15, cached=False)
                total += high - stable
        return total
    finally:
        committed.close()
        uncommitted.close()


def wait_open_transaction(bootstrap: str, topics: list[str], timeout_s: float = 60) -> int:
    """Waits until the sinks have records in an open transaction, so a kill hits them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (n := open_transaction_records(bootstrap, topics)) > 0:
                return n
        except Exception:  # the broker may still be electing leaders
            pass
        time.sleep(0.1)
    raise AssertionError(f"no open transaction with records in {topics} within {timeout_s} s")


def fault_job_config(tmp_path: Path, bootstrap: str) -> Path:
    """The job's config for a fault suite: a flaky enrichment hook (transient failures that
    heal and one that does not), checkpoints every 3 s, restarts without end."""
    path, _ = make_job_config(
        tmp_path,
        bootstrap,
        **{
            "enrich.rss": "tests.integration.hooks:flaky",
            "retry.backoff_ms": 5,
            "checkpoint.interval_ms": 3000,
            "flink.conf": {
                "restart-strategy.type": "fixed-delay",
                "restart-strategy.fixed-delay.attempts": "1000",
                "restart-strategy.fixed-delay.delay": "2 s",
            },
        },
    )
    return path


def reporter(capsys: pytest.CaptureFixture[str], label: str) -> Callable[[str], None]:
    """Prints a suite's progress as it happens, past pytest's capture."""

    def report(line: str) -> None:
        with capsys.disabled():
            print(f"[{label} {time.strftime('%H:%M:%S')}] {line}", flush=True)

    return report


def outputs_after_faults(
    producer: SteadyProducer, cluster: str, job: str, bootstrap: str, outputs: list[str]
) -> tuple[list[Message], list[Message]]:
    """Once the faults are done: the rest of the input sent, the job caught up and two more
    checkpoints completed (anything duplicated would be committed by then); the outputs
    read_committed and read_uncommitted."""
    producer.faults_done.set()
    producer.join(900)
    assert not producer.is_alive() and not producer.errors, producer.errors[:3]
    assert len(producer.sent) == RECORDS
    wait_until(
        "every input in the outputs",
        lambda: len(read_all(bootstrap, outputs, timeout_s=120)) >= RECORDS,
        600,
    )
    done = rest(cluster, f"/jobs/{job}/checkpoints")["counts"]["completed"]
    wait_running(cluster, job, checkpoints_after=done + 1)
    return (
        read_all(bootstrap, outputs, timeout_s=120),
        read_all(bootstrap, outputs, "read_uncommitted", timeout_s=120),
    )


@dataclass
class Count:
    """Every input against the four sinks, read_committed and read_uncommitted."""

    inputs: int
    committed: int
    lost: set[tuple[str, int, int]]
    duplicated: int
    categories: Counter[str]
    raw_duplicated: int
    out_of_order: list[str]

    def assert_exactly_once(self, rewritten: bool = True) -> None:
        """Nothing lost, nothing duplicated, every failure category present; and duplicates
        read_uncommitted: the faults hit open transactions, whose records were written again
        after recovery (without them the run would prove nothing)."""
        assert not self.lost, f"{len(self.lost)} records lost, e.g. {sorted(self.lost)[:3]}"
        assert self.duplicated == 0
        assert not self.out_of_order, f"order per key broken: {self.out_of_order[:3]}"
        assert self.committed == RECORDS
        assert set(self.categories) == {"deserialization", "validation", "processing", "transient"}
        assert not rewritten or self.raw_duplicated > 0

    def __str__(self) -> str:
        return (
            f"inputs {self.inputs:,}; read_committed outputs {self.committed:,} (lost "
            f"{len(self.lost)}, duplicated {self.duplicated}); DLQ categories "
            f"{dict(self.categories)}; read_uncommitted duplicates {self.raw_duplicated}; "
            f"clean records out of their key's input order {len(self.out_of_order)}"
        )


def count(
    sent: dict[tuple[str, int, int], bytes | None],
    committed: list[Message],
    uncommitted: list[Message],
) -> Count:
    """Counts each input's outputs; every envelope's payload must equal its input's bytes."""
    seen: Counter[tuple[str, int, int]] = Counter()
    categories: Counter[str] = Counter()
    clean: list[tuple[Message, dict[str, Any]]] = []
    for m in committed:
        body = orjson.loads(m.value or b"")
        src = body.get("_source") or body["source"]
        pos = (src["topic"], src["partition"], src["offset"])
        seen[pos] += 1
        if "_source" in body:
            clean.append((m, src))
        else:
            categories[body["error"]["category"]] += 1
            assert unb64(body["payload_b64"]) == sent[pos], f"envelope bytes differ at {pos}"
    raw_seen = Counter(source_position(m.value) for m in uncommitted)
    return Count(
        inputs=len(sent),
        committed=len(committed),
        lost=set(sent) - set(seen),
        duplicated=sum(n - 1 for n in seen.values() if n > 1),
        categories=categories,
        raw_duplicated=sum(n - 1 for n in raw_seen.values() if n > 1),
        out_of_order=out_of_order(clean),
    )


def out_of_order(clean: Iterable[tuple[Message, dict[str, Any]]]) -> list[str]:
    """The clean records that break order per key: in its clean topic, each key's records
    from one input partition must follow one another in input-offset order (the job keeps one
    input partition in one subtask, retries in place and writes a key to one partition).
    ``clean``: each clean record with its ``_source``. Each break as a line; none when the
    order holds. Records without a key are not checked."""
    last: dict[tuple[str, str, int, bytes], int] = {}
    breaks = []
    for m, src in sorted(clean, key=lambda c: (c[0].topic, c[0].partition, c[0].offset)):
        if m.key is None:
            continue
        group = (m.topic, src["topic"], src["partition"], m.key)
        before = last.get(group, -1)
        if src["offset"] <= before:
            breaks.append(
                f"{m.topic}[{m.partition}]@{m.offset}: key {m.key!r} from "
                f"{src['topic']}[{src['partition']}] offset {src['offset']} after {before}"
            )
        last[group] = max(before, src["offset"])
    return breaks
