"""The ledger that makes replay and spool drain exactly once.

A compacted topic (``dlq.replay.ledger``): a replay or a drain writes each record it handles
together with a ledger entry in one Kafka transaction, and reads the ledger first to skip what
a committed run handled. An entry's key names the record for good:

- a DLQ record: ``<dlq topic>@<topic id>:<partition>:<offset>``. The topic id is the one Kafka
  gives a topic when it is created, so a DLQ topic deleted and created again (whose positions
  start again at 0) shares no key with its former self;
- a spooled record: ``spool:<record id>``, the id the producer gave it when it was spooled.

A tombstone (null value) un-does an entry: an operator's way to replay a record again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient

from kafkaio.scan import read_raw_to_end

SPOOL_PREFIX = b"spool:"


def transactional_producer(conf: Mapping[str, Any], timeout_s: float = 60) -> Producer:
    """A producer with ``conf`` (which names a ``transactional.id``), its transactions
    initialised: this fences an earlier producer of the id and aborts its open transaction.

    A metadata request first: librdkafka looks for a broker to get the producer id from as
    soon as ``init_transactions`` is called, and without a connection up yet it waits a 500 ms
    timer before looking again (a quarter of a 40,000-record replay).
    """
    producer = Producer(dict(conf))
    producer.list_topics(timeout=timeout_s)
    producer.init_transactions(timeout_s)
    return producer


def topic_id(conf: Mapping[str, str], topic: str, timeout_s: float = 30) -> str:
    """The id Kafka gave ``topic`` when it was created (changes when it is created again)."""
    client = AdminClient({**conf, "log_level": 3})
    future = client.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)[topic]
    return str(future.result(timeout=timeout_s).topic_id)


def dlq_prefix(dlq_topic: str, dlq_topic_id: str) -> bytes:
    return f"{dlq_topic}@{dlq_topic_id}:".encode()


def spool_key(record_id: str) -> bytes:
    return SPOOL_PREFIX + record_id.encode()


def load(conf: Mapping[str, str], ledger_topic: str, prefix: bytes) -> set[bytes]:
    """Keys starting with ``prefix`` that a committed replay or drain wrote (and no tombstone
    took back)."""
    done: set[bytes] = set()
    for msg in read_raw_to_end(conf, [ledger_topic]):
        key = msg.key()
        if key is None or not key.startswith(prefix):
            continue
        if msg.value() is None:
            done.discard(key)
        else:
            done.add(key)
    return done


@dataclass
class RunSummary:
    """What a ledgered run (a replay, a drain) did; ``records``: what a dry run would write."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, with_records: bool) -> dict[str, Any]:
        out = asdict(self)
        if not with_records:
            out.pop("records")
        return out


class Transactions:
    """A transactional producer's writes, cut into transactions of at most ``max_records``
    ledgered records or ``max_seconds``, each ledger entry in the transaction of the record it
    describes; paced to ``rate`` records per second when given. Use as a context manager: an
    exception aborts the open transaction, a normal exit commits it."""

    def __init__(
        self,
        producer: Producer,
        ledger_topic: str,
        *,
        max_records: int,
        max_seconds: float,
        rate: float | None = None,
    ) -> None:
        self.producer = producer
        self.ledger_topic = ledger_topic
        self.max_records = max_records
        self.max_seconds = max_seconds
        self.rate = rate
        self.open = False
        self.in_open = 0
        self.opened_at = 0.0
        self.written = 0
        self.started = time.monotonic()
        self._entries: dict[tuple[str, str], bytes] = {}

    def __enter__(self) -> Transactions:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if not self.open:
            return
        if kind is None:
            self.producer.commit_transaction(60)
        else:
            self.producer.abort_transaction(30)
        self.open = False

    def commit(self) -> None:
        """Commits the open transaction, if any (before a pause longer than a transaction
        should stay open)."""
        if self.open:
            self.producer.commit_transaction(60)
            self.open = False

    def begin(self) -> None:
        """Opens a transaction unless one is open (call before producing a record)."""
        if not self.open:
            self.producer.begin_transaction()
            self.open, self.in_open, self.opened_at = True, 0, time.monotonic()
            self._entries.clear()

    def ledger(self, key: bytes, outcome: str, to: str) -> None:
        """The ledger entry of the record just produced; commits when the transaction is full
        or old enough, then holds to the rate."""
        entry = self._entries.get((outcome, to))
        if entry is None:  # one value per outcome and target in a transaction
            at = datetime.now(UTC).isoformat()
            entry = self._entries[(outcome, to)] = orjson.dumps(
                {"outcome": outcome, "at": at, "to": to}
            )
        self.producer.produce(self.ledger_topic, value=entry, key=key)
        if not self.written % 256:  # serves the producer's events; a call per record costs
            self.producer.poll(0)
        self.in_open += 1
        self.written += 1
        if (
            self.in_open >= self.max_records
            or time.monotonic() - self.opened_at >= self.max_seconds
        ):
            self.producer.commit_transaction(60)
            self.open = False
        if self.rate:
            ahead = self.written / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)
