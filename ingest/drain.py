"""``dlq spool drain``: what the spool holds, into Kafka, exactly once.

Each spooled record is produced together with its ledger entry (``spool:<record id>``,
``kafkaio.ledger``) in one Kafka transaction, and a drain reads the ledger first and skips
what a committed drain wrote. A segment is deleted only after every record in it is
committed. So a drain killed at any point (mid-transaction, after a commit, before a delete)
and run again sends every record exactly once. The transactional id is fixed per spool: a
second drain of the same spool fences the first.

A record the input topic refuses now for good (too large, not authorised) goes to its DLQ in
a ``delivery`` envelope instead, in the same transaction as its ledger entry.

A record spooled as possibly persisted (sent without an answer, or put back in the queue
after a failed request) may be in its topic already. Before sending, a drain looks for each
one there (``kafkaio.scan.find_written``: the same key, value, headers and timestamp, from
the record's timestamp to a few minutes after it was spooled). One found is not sent again
(counted in ``already_in_topic``); one not found is sent. A record appended later than that
window (a request a broker held for minutes) or on a topic that stamps its own timestamps
(``LogAppendTime``) is not found, and may then be in its topic twice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from ingest.producer import TOO_LARGE, UNREACHED
from ingest.spool import LocalSpool, S3Spool, SpooledRecord, decode_segment
from kafkaio import ledger, scan
from udfs.envelope import build_delivery_envelope, claim_checked, encode, parse_iso

# Records per transaction: a commit costs a round trip to the coordinator and the partitions.
TRANSACTION_RECORDS = 10_000
TRANSACTION_SECONDS = 2.0
FLAGGED = b'"possibly_persisted":true'


class DrainError(RuntimeError):
    """A transaction could not be committed; what is not committed stays in the spool."""


@dataclass
class DrainSummary(ledger.RunSummary):
    selected: int = 0
    drained: int = 0
    dead_lettered: int = 0
    already_drained: int = 0
    already_in_topic: int = 0
    possibly_persisted: int = 0
    segments_removed: int = 0
    segments_busy: int = 0
    problems: list[str] = field(default_factory=list)


class Drainer:
    """One drain of one spool."""

    def __init__(
        self,
        conf: dict[str, str],
        spool: LocalSpool | S3Spool,
        *,
        ledger_topic: str,
        dry_run: bool = False,
        rate: float | None = None,
        max_request_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.conf = conf
        self.spool = spool
        self.ledger_topic = ledger_topic
        self.dry_run = dry_run
        self.rate = rate
        self.max_request_size = max_request_size
        self.summary = DrainSummary()
        self._errors: dict[int, KafkaError] = {}
        self._started, self._sent = time.monotonic(), 0

    def total(self) -> int:
        """Records in the spool now (for a progress bar)."""
        n = 0
        for name in self.spool.segments():
            with self.spool.claim_segment(name) as data:
                if data is not None:
                    n += len(decode_segment(data, name).records)
        return n

    def run(self, progress: Callable[[int], None] = lambda n: None) -> DrainSummary:
        producer = None
        if not self.dry_run:
            spool_id = hashlib.sha1(self.spool.location.encode()).hexdigest()[:12]
            # Fences a drain of this spool still running elsewhere and aborts the open
            # transaction of one that was killed, before the ledger is read.
            producer = ledger.transactional_producer(
                {
                    **self.conf,
                    "transactional.id": f"dlq-spool-drain.{spool_id}",
                    "enable.idempotence": True,
                    "partitioner": "murmur2_random",
                    "linger.ms": 20,
                    "batch.size": 1024 * 1024,
                    "message.max.bytes": str(self.max_request_size),
                    "log_level": 3,
                    # Delivery reports (a Python call each) only for the records that fail.
                    "delivery.report.only.error": True,
                }
            )
        done = ledger.load(self.conf, self.ledger_topic, ledger.SPOOL_PREFIX)
        written = self._written_already(done) if producer is not None else set()
        self._started, self._sent = time.monotonic(), 0
        for name in self.spool.segments():
            with self.spool.claim_segment(name) as data:
                if data is None:
                    self.summary.segments_busy += 1
                    continue
                contents = self._read(name, data)
                todo = []
                for rec in contents:
                    if ledger.spool_key(rec.id) in done:
                        self.summary.already_drained += 1
                        progress(1)
                    elif rec.id in written:
                        self.summary.already_in_topic += 1
                        progress(1)
                    else:
                        todo.append(rec)
                self.summary.selected += len(todo)
                if producer is None:
                    self.summary.records += [_describe(r) for r in todo]
                    progress(len(todo))
                    continue
                size = TRANSACTION_RECORDS
                if self.rate:  # a paced drain still commits every TRANSACTION_SECONDS
                    size = max(1, min(size, int(self.rate * TRANSACTION_SECONDS)))
                for i in range(0, len(todo), size):
                    chunk = todo[i : i + size]
                    self._commit(producer, chunk)
                    progress(len(chunk))
                self.spool.remove(name)
                self.summary.segments_removed += 1
        return self.summary

    def _written_already(self, done: set[bytes]) -> set[str]:
        """The ids of the possibly persisted records still to drain that are in their topic
        already (see the module's docstring)."""
        sought: list[scan.Sought] = []
        for name in self.spool.segments():
            with self.spool.claim_segment(name) as data:
                # A segment without a flagged record is not decoded twice (the flag as
                # SpooledRecord.body writes it; the payloads in a body are base64).
                if data is None or FLAGGED not in data:
                    continue
                for rec in decode_segment(data, name).records:
                    spooled = parse_iso(rec.spooled_at)
                    if (
                        rec.kind == "record"
                        and rec.possibly_persisted
                        and rec.timestamp is not None
                        and spooled is not None
                        and ledger.spool_key(rec.id) not in done
                    ):
                        sought.append(
                            scan.Sought(
                                rec.id,
                                rec.topic,
                                rec.key,
                                rec.value,
                                rec.headers,
                                rec.timestamp,
                                spooled,
                            )
                        )
        return scan.find_written(self.conf, sought)

    def _read(self, name: str, data: bytes) -> list[SpooledRecord]:
        contents = decode_segment(data, name)
        self.summary.problems += contents.problems
        return contents.records

    def _commit(self, producer: Producer, chunk: list[SpooledRecord]) -> None:
        """Sends ``chunk`` with its ledger entries in one transaction. Records the input
        refuses for good are sent again as envelopes to their DLQ, in a new transaction."""
        for attempt in range(2):
            self._errors = {}
            producer.begin_transaction()
            at = datetime.now(UTC).isoformat()
            entries: dict[tuple[str, str], bytes] = {}  # one ledger value per outcome and topic
            try:
                for i, rec in enumerate(chunk):
                    self._produce(producer, i, rec)
                    outcome = "drained" if rec.kind == "record" else "dead-lettered"
                    entry = entries.get((outcome, rec.topic))
                    if entry is None:
                        entry = entries[(outcome, rec.topic)] = orjson.dumps(
                            {"outcome": outcome, "at": at, "to": rec.topic}
                        )
                    producer.produce(self.ledger_topic, key=ledger.spool_key(rec.id), value=entry)
                    if not i % 256:
                        producer.poll(0)
                    self._pace()
                producer.commit_transaction(60)
            except KafkaException as e:
                producer.abort_transaction(60)
                refused = {i: err for i, err in self._errors.items() if err.code() not in UNREACHED}
                if attempt or not refused:
                    raise DrainError(f"drain stopped, nothing of this batch committed: {e}") from e
                chunk = [
                    self._as_envelope(rec, refused[i]) if i in refused else rec
                    for i, rec in enumerate(chunk)
                ]
                continue
            for rec in chunk:
                if rec.kind == "record":
                    self.summary.drained += 1
                else:
                    self.summary.dead_lettered += 1
                self.summary.possibly_persisted += rec.possibly_persisted
            return

    def _pace(self) -> None:
        """Holds the drain to ``rate`` records per second (inside the open transaction)."""
        self._sent += 1
        if self.rate:
            ahead = self._sent / self.rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)

    def _produce(self, producer: Producer, i: int, rec: SpooledRecord) -> None:
        def done(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self._errors[i] = err

        kwargs: dict[str, Any] = {"key": rec.key, "value": rec.value, "on_delivery": done}
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        if rec.timestamp is not None and rec.kind == "record":
            kwargs["timestamp"] = rec.timestamp
        while True:
            try:
                producer.produce(rec.topic, **kwargs)
                return
            except BufferError:
                producer.poll(0.05)
            except KafkaException as e:  # refused before it was queued: too large
                self._errors[i] = e.args[0]
                raise

    def _as_envelope(self, rec: SpooledRecord, err: KafkaError) -> SpooledRecord:
        """The record in a ``delivery`` envelope for its DLQ (its payload aside if large)."""
        if rec.kind != "record":
            raise DrainError(f"the DLQ {rec.topic} refused spooled envelope {rec.id}: {err}")
        env = build_delivery_envelope(
            topic=rec.topic,
            key=rec.key,
            value=rec.value,
            headers=rec.headers,
            timestamp=rec.timestamp,
            error_name=err.name(),
            message=err.str(),
            retriable=err.retriable(),
            possibly_persisted=rec.possibly_persisted,
            attempts=2,
            producer="dlq-spool-drain",
        )
        if err.code() in TOO_LARGE:
            uri, digest = self.spool.put_claim(rec.value or b"")
            env = claim_checked(env, uri, digest)
        return SpooledRecord(
            kind="envelope",
            topic=rec.dlq_topic,
            dlq_topic=rec.dlq_topic,
            key=rec.key,
            value=encode(env),
            headers=rec.headers,
            possibly_persisted=rec.possibly_persisted,
            reason=rec.reason,
            id=rec.id,
            spooled_at=rec.spooled_at,
        )


def _describe(rec: SpooledRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "kind": rec.kind,
        "topic": rec.topic,
        "bytes": len(rec.value or b""),
        "possibly_persisted": rec.possibly_persisted,
        "spooled_at": rec.spooled_at,
        "reason": rec.reason,
    }
