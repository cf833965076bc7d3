"""Real-broker helpers for the integration tests: produce, read back, run the job."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def produce(bootstrap: str, topic: str, records: Iterable[tuple[Any, ...]]) -> list[Message]:
    """Produces (key, value, headers[, partition]) tuples; returns them with their offsets."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        delivered.append(
            Message(
                msg.topic(),
                msg.partition(),
                msg.offset(),
                msg.key(),
                msg.value(),
                list(msg.headers() or []),
            )
        )

    for rec in records:
        key, value, headers = rec[0], rec[1], rec[2]
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = headers
        if len(rec) > 3 and rec[3] is not None:
            kwargs["partition"] = rec[3]
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0
    return delivered


def read_all(
    bootstrap: str, topics: Sequence[str], isolation: str = "read_committed", timeout_s: float = 60
) -> list[Message]:
    """Every message visible under ``isolation`` in ``topics``, read to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        md = consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p, 0) for t in topics for p in md.topics[t].partitions]
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                    continue
                raise AssertionError(msg.error())
            out.append(
                Message(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    list(msg.headers() or []),
                )
            )
        assert not pending, f"partitions not read to the end within {timeout_s} s: {pending}"
        return out
    finally:
        consumer.close()


def make_job_config(
    tmp_path: Path, bootstrap: str, **overrides: Any
) -> tuple[Path, dict[str, Any]]:
    """A copy of conf/job.yaml with uuid topics and transactional ids; returns (path, tree)."""
    tree = yaml.safe_load((ROOT / "conf" / "job.yaml").read_text())
    run = uuid.uuid4().hex[:8]
    for feed in ("rss", "polymarket"):
        for role in ("input", "clean", "dlq"):
            tree["topics"][feed][role] = f"t{run}.{tree['topics'][feed][role]}"
    tree["topics"]["parking"] = f"t{run}.dlq.parking"
    tree["kafka"]["bootstrap_servers"] = bootstrap
    tree["kafka"]["transactional_id_prefix"] = f"t{run}"
    tree["job"]["group_id"] = f"t{run}"
    tree["checkpoint"]["interval_ms"] = 1000
    tree["checkpoint"]["dir"] = str(tmp_path / "checkpoints")
    for path, value in overrides.items():
        node = tree
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path, tree


def run_job(
    config_path: Path, *extra: str, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs the real job entry point as a user would, bounded, and returns the finished process."""
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "dlq_job.py"),
        "--config",
        str(config_path),
        "--bounded",
        "--starting-offsets",
        "earliest",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise AssertionError(
            f"job exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc
