"""``dlq spool drain``: what the spool holds, into Kafka, exactly once.

Each spooled record is produced together with its ledger entry (``spool:<record id>``) in one
Kafka transaction, through the same exactly-once loop as replay
(:class:`kafkaio.ledger.LedgeredWrites`), and a drain reads the ledger first and skips what a
committed drain wrote. A segment is deleted only after every record in it is committed. So a
drain killed at any point (mid-transaction, after a commit, before a delete) and run again
sends every record exactly once. The transactional id is fixed per spool: a second drain of
the same spool fences the first.

A drain reads each segment once, at its start, and holds the records to send in memory
until they are committed: the spool holds what an outage left, and the look-up below needs
all of them at once.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaError

from ingest.producer import TOO_LARGE, UNREACHED, Undelivered
from ingest.spool import Spool, SpooledRecord, decode_segment
from kafkaio import ledger, scan
from kafkaio.ledger import LedgeredWrites, Refused, Write
from udfs.envelope import claim_checked, encode, parse_iso

DRAINED, DEAD_LETTERED = "drained", "dead-lettered"


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


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment of the spool as read: its name and its intact records."""

    name: str
    records: list[SpooledRecord]


def as_write(rec: SpooledRecord) -> Write:
    """A spooled record as the loop writes it: a record to its input (with its own
    timestamp), or an envelope to its DLQ."""
    itself = rec.kind == "record"
    return Write(
        ledger.spool_key(rec.id),
        DRAINED if itself else DEAD_LETTERED,
        rec.topic,
        rec.topic,
        rec.key,
        rec.value,
        rec.headers,
        timestamp=rec.timestamp if itself else None,
    )


class Drainer:
    """One drain of one spool."""

    def __init__(
        self,
        conf: Mapping[str, str],
        spool: Spool,
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
        self._segments: list[Segment] | None = None
        self._by_key: dict[bytes, SpooledRecord] = {}  # what this drain sends
        self._finished: list[str] = []  # segments whose every record is written

    def segments(self) -> list[Segment]:
        """Every segment of the spool, read and decoded once (the first call reads them);
        a segment another process holds (a writer still writing, another drain) is left."""
        if self._segments is None:
            self._segments = []
            for name in self.spool.segments():
                with self.spool.claim_segment(name) as data:
                    if data is None:
                        self.summary.segments_busy += 1
                        continue
                    contents = decode_segment(data, name)
                self.summary.problems += contents.problems
                self._segments.append(Segment(name, contents.records))
        return self._segments

    def total(self) -> int:
        """Records in the spool (for a progress bar)."""
        return sum(len(s.records) for s in self.segments())

    def run(self, progress: Callable[[int], None] = lambda n: None) -> DrainSummary:
        segments = self.segments()
        if self.dry_run:
            done = ledger.load(self.conf, self.ledger_topic, ledger.SPOOL_PREFIX)
            for rec in self._todo(segments, done, set(), progress):
                self.summary.records.append(_describe(rec))
            return self.summary
        spool_id = hashlib.sha1(self.spool.location.encode()).hexdigest()[:12]
        # Fences a drain of this spool still running elsewhere and aborts the open
        # transaction of one that was killed, before the ledger is read.
        with LedgeredWrites(
            self.conf,
            transactional_id=f"dlq-spool-drain.{spool_id}",
            ledger_topic=self.ledger_topic,
            max_request_size=self.max_request_size,
            rate=self.rate,
            on_commit=self._committed,
        ) as txns:
            done = txns.done(ledger.SPOOL_PREFIX)
            written = self._written_already(segments, done)
            for segment in segments:
                for rec in self._todo([segment], done, written, progress):
                    self._send(txns, as_write(rec))
                self._finished.append(segment.name)
            self._send(txns, None)
        self._remove_finished()  # those with nothing left to commit
        return self.summary

    def _todo(
        self,
        segments: list[Segment],
        done: set[bytes],
        written: set[str],
        progress: Callable[[int], None],
    ) -> list[SpooledRecord]:
        """The records of ``segments`` still to send: not in the ledger (``done``) and not
        found in their topic (``written``)."""
        todo = []
        for segment in segments:
            for rec in segment.records:
                progress(1)
                key = ledger.spool_key(rec.id)
                if key in done:
                    self.summary.already_drained += 1
                elif rec.id in written:
                    self.summary.already_in_topic += 1
                else:
                    self.summary.selected += 1
                    self._by_key[key] = rec
                    todo.append(rec)
        return todo

    def _written_already(self, segments: list[Segment], done: set[bytes]) -> set[str]:
        """The ids of the possibly persisted records still to drain that are in their topic
        already (see the module's docstring)."""
        sought = []
        for segment in segments:
            for rec in segment.records:
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

    def _send(self, txns: LedgeredWrites, write: Write | None) -> None:
        """Writes ``write`` (None: commits the open transaction). When the brokers refuse
        records of the transaction, the loop aborts it; the records the input refused for
        good are then sent as envelopes to their DLQ, with the rest of that transaction."""
        try:
            if write is None:
                txns.commit()
            else:
                txns.write(write)
        except Refused as refused:
            redo = self._redo(refused)
            try:
                for w in redo:
                    txns.write(w)
                txns.commit()
            except Refused as again:
                raise DrainError(
                    f"drain stopped, nothing of this batch committed: {again}"
                ) from again

    def _redo(self, refused: Refused) -> list[Write]:
        """The writes of an aborted transaction again, those its input refused for good
        (too large, not authorised: not merely unreachable) as envelopes to their DLQ."""
        for_good = {i: err for i, err in refused.errors.items() if err.code() not in UNREACHED}
        if not for_good:
            raise DrainError(f"drain stopped, nothing of this batch committed: {refused}")
        return [
            as_write(self._as_envelope(self._by_key[w.ledger_key], for_good[i]))
            if i in for_good
            else w
            for i, w in enumerate(refused.writes)
        ]

    def _committed(self, writes: list[Write]) -> None:
        """A transaction committed: count what it wrote, and delete the segments whose every
        record is now committed."""
        for w in writes:
            if w.outcome == DRAINED:
                self.summary.drained += 1
            else:
                self.summary.dead_lettered += 1
            self.summary.possibly_persisted += self._by_key[w.ledger_key].possibly_persisted
        self._remove_finished()

    def _remove_finished(self) -> None:
        for name in self._finished:
            self.spool.remove(name)
            self.summary.segments_removed += 1
        self._finished.clear()

    def _as_envelope(self, rec: SpooledRecord, err: KafkaError) -> SpooledRecord:
        """The record in a ``delivery`` envelope for its DLQ (its payload aside if large)."""
        if rec.kind != "record":
            raise DrainError(f"the DLQ {rec.topic} refused spooled envelope {rec.id}: {err}")
        undelivered = Undelivered.of(rec.key, rec.value, rec.headers, rec.timestamp, err)
        # possibly persisted as it was spooled: an earlier send may have written it
        undelivered = replace(undelivered, possibly_persisted=rec.possibly_persisted)
        env = undelivered.envelope(rec.topic, attempts=2, producer="dlq-spool-drain")
        if err.code() in TOO_LARGE:
            uri, digest = self.spool.claims.put(rec.value or b"")
            env = claim_checked(env, uri, digest)
        envelope = SpooledRecord(
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
        self._by_key[ledger.spool_key(rec.id)] = envelope
        return envelope


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
