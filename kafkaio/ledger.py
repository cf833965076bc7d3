"""The ledger that makes replay and spool drain exactly once, and the loop that writes it.

A compacted topic (``dlq.replay.ledger``): a replay or a drain writes each record it handles
together with a ledger entry in one Kafka transaction (:class:`LedgeredWrites`), and reads
the ledger first to skip what a committed run handled. An entry's key names the record for
good:

- a DLQ record: ``<dlq topic>@<topic id>:<partition>:<offset>``. The topic id is the one Kafka
  gives a topic when it is created, so a DLQ topic deleted and created again (whose positions
  start again at 0) shares no key with its former self;
- a spooled record: ``spool:<record id>``, the id the producer gave it when it was spooled.

A tombstone (null value) un-does an entry: an operator's way to replay a record again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from kafkaio.producers import produce_waiting, transactional_producer
from kafkaio.scan import read_raw_to_end
from udfs.record import Headers

SPOOL_PREFIX = b"spool:"
# Records per transaction: a commit costs a round trip to the coordinator and every partition
# written, so fewer commits are faster; a transaction holds this many records or is this old
# at the most, so that a run killed half-way has little to redo.
TRANSACTION_RECORDS = 10_000
TRANSACTION_SECONDS = 2.0


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


@dataclass(frozen=True, slots=True)
class Write:
    """One record a ledgered run writes, and the ledger entry that says it was handled.

    Both go into the same transaction: the entry is committed exactly when the record is.
    ``topic`` None is an entry alone (a record the run handled without writing it).
    """

    ledger_key: bytes
    outcome: str  # the entry's word for what happened: "replayed", "drained", "parked", ...
    to: str  # the topic the entry names
    topic: str | None = None
    key: bytes | None = None
    value: bytes | None = None
    headers: Headers = ()
    partition: int | None = None
    timestamp: int | None = None


class Refused(KafkaException):
    """The brokers refused records of a transaction (too large, not authorised), which was
    therefore aborted: nothing of ``writes`` is written. ``errors``: the refused ones, by
    their index in ``writes``."""

    def __init__(self, writes: list[Write], errors: dict[int, KafkaError]) -> None:
        first = errors[min(errors)]
        super().__init__(first)
        self.writes = writes
        self.errors = errors


class LedgeredWrites:
    """The exactly-once loop of replay and spool drain, as one transactional producer.

    Each :meth:`write` produces a record and its ledger entry in the open transaction
    (opening one when none is), waiting for room when the local queue is full; a transaction
    is committed once it holds :data:`TRANSACTION_RECORDS` records or is
    :data:`TRANSACTION_SECONDS` old, and the loop holds to ``rate`` records per second. A run
    reads :meth:`done` first and skips what a committed run wrote: killed at any point and
    run again, it writes each record exactly once. Making it fences an earlier producer of
    ``transactional_id`` and aborts its open transaction, so the ledger it then reads is
    final.

    ``on_commit`` is called with the writes of each transaction once it is committed.
    A context manager: a normal exit commits the open transaction, an exception aborts it.
    """

    def __init__(
        self,
        conf: Mapping[str, str],
        *,
        transactional_id: str,
        ledger_topic: str,
        max_request_size: int,
        rate: float | None = None,
        on_commit: Callable[[list[Write]], None] | None = None,
    ) -> None:
        self.conf = conf
        self.ledger_topic = ledger_topic
        self.rate = rate
        self.on_commit = on_commit
        self.producer = transactional_producer(
            {
                **conf,
                "transactional.id": transactional_id,
                # Records without a partition go where the Java clients would put their key.
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                "batch.size": 1024 * 1024,
                "message.max.bytes": str(max_request_size),
                # Delivery reports (a Python call each) only for the records that fail.
                "delivery.report.only.error": True,
                "log_level": 3,
            }
        )
        self._writes: list[Write] = []  # those of the open transaction, in order
        self._errors: dict[int, KafkaError] = {}
        self._entries: dict[tuple[str, str], bytes] = {}
        self._open = False
        self._opened_at = 0.0
        self._started = time.monotonic()
        self._written = 0

    def done(self, prefix: bytes) -> set[bytes]:
        """The ledger keys starting with ``prefix`` that committed runs wrote."""
        return load(self.conf, self.ledger_topic, prefix)

    def __enter__(self) -> LedgeredWrites:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None:
            self.commit()
        elif self._open:
            self._abort()

    def write(self, w: Write) -> bool:
        """Writes ``w`` in the open transaction; True when this committed the transaction
        (everything written before is then durable). Raises :class:`Refused` when a record
        of the transaction was refused (the transaction is aborted)."""
        if not self._open:
            self.producer.begin_transaction()
            self._open, self._opened_at = True, time.monotonic()
            self._writes, self._errors = [], {}
            self._entries.clear()
        index = len(self._writes)
        self._writes.append(w)
        if w.topic is not None:
            try:
                self._produce(w.topic, w, self._errors, index)
            except KafkaException as e:  # refused before it was queued (too large)
                self._errors[index] = e.args[0]
                writes, errors = self._writes, self._errors
                self._abort()
                raise Refused(writes, errors) from e
        entry = self._entries.get((w.outcome, w.to))
        if entry is None:  # one value per outcome and target in a transaction
            at = datetime.now(UTC).isoformat()
            entry = self._entries[(w.outcome, w.to)] = orjson.dumps(
                {"outcome": w.outcome, "at": at, "to": w.to}
            )
        self.producer.produce(self.ledger_topic, value=entry, key=w.ledger_key)
        self._written += 1
        if not self._written % 256:  # serves the producer's events; a call per record costs
            self.producer.poll(0)
        committed = False
        if (
            len(self._writes) >= TRANSACTION_RECORDS
            or time.monotonic() - self._opened_at >= TRANSACTION_SECONDS
        ):
            self.commit()
            committed = True
        if self.rate:
            ahead = self._written / self.rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)
        return committed

    def commit(self) -> None:
        """Commits the open transaction, if any. Raises :class:`Refused` (after aborting it)
        when the brokers refused a record of it."""
        if not self._open:
            return
        try:
            self.producer.commit_transaction(60)
        except KafkaException:
            writes, errors = self._writes, self._errors
            self._abort()
            if errors:
                raise Refused(writes, errors) from None
            raise
        self._open = False
        if self.on_commit is not None:
            self.on_commit(self._writes)

    def _abort(self) -> None:
        self._open = False
        self.producer.abort_transaction(60)

    def _produce(self, topic: str, w: Write, errors: dict[int, KafkaError], index: int) -> None:
        # ``errors`` is the transaction's own: a late report of an aborted one lands there.
        def failed(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors[index] = err

        kwargs: dict[str, Any] = {"key": w.key, "value": w.value, "on_delivery": failed}
        if w.headers:
            kwargs["headers"] = list(w.headers)
        if w.partition is not None:
            kwargs["partition"] = w.partition
        if w.timestamp is not None:
            kwargs["timestamp"] = w.timestamp
        produce_waiting(self.producer, topic, 0.05, **kwargs)
