"""Replay DLQ records to their original topic, exactly once.

A replayed record is the original one: its key, value, headers (plus ``dlq.replay.count``)
and timestamp, to its original partition. Each is written together with an entry in the
replay ledger (a compacted topic keyed by the DLQ topic's id and the record's position:
``kafkaio.ledger``) in one Kafka transaction. A replay reads the ledger first and skips what
it lists, so a replay killed at any point and run again writes every selected record exactly
once, and a later replay with another selection never repeats one either. The transactional
id is fixed per DLQ topic: a second replay of the same topic fences the first. Records
already replayed ``max_replays`` times go to the parking lot instead.

A ``delivery`` envelope flagged ``possibly_persisted`` (an ingest producer gave up on a record
that the input topic may have written all the same) is replayed to its topic only if the
topic does not hold the record already (``kafkaio.scan.find_written``); one found gets a
ledger entry and is counted in ``already_in_topic``. These are replayed after the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dlq.stats import fingerprint
from kafkaio import ledger
from kafkaio.claims import ClaimError, fetch_claim
from kafkaio.ledger import LedgeredWrites, Write, topic_id
from kafkaio.scan import (
    DlqRecord,
    Sought,
    Unreadable,
    consumer,
    find_written,
    read_dlq,
    topic_size,
)
from udfs.envelope import REPLAY_COUNT_HEADER, EnvelopeError
from udfs.errors import Category

FixFunction = Callable[[bytes | None, dict[str, Any]], bytes | None]


@dataclass(frozen=True)
class Selection:
    """Which DLQ records a replay takes; every criterion given must match."""

    category: str | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # partition -> inclusive (first, last) DLQ offsets
    offsets: Mapping[int, tuple[int, int]] | None = None

    def matches(self, rec: DlqRecord) -> bool:
        env = rec.envelope
        if self.category and env.category != self.category:
            return False
        if self.error_type and env.error_type != self.error_type:
            return False
        if self.fingerprint and fingerprint(env.error) != self.fingerprint:
            return False
        if self.since or self.until:
            failed = env.failed_at
            if failed is None:
                return False
            if self.since and failed < self.since:
                return False
            if self.until and failed >= self.until:
                return False
        if self.offsets is not None:
            span = self.offsets.get(rec.message.partition)
            if span is None or not span[0] <= rec.message.offset <= span[1]:
                return False
        return True


@dataclass
class Summary(ledger.RunSummary):
    selected: int = 0
    replayed: int = 0
    parked: int = 0
    skipped: int = 0
    failed: int = 0
    already_replayed: int = 0
    already_in_topic: int = 0
    not_envelopes: int = 0
    errors: list[str] = field(default_factory=list)


def load_ledger(conf: Mapping[str, str], ledger_topic: str, dlq_topic: str) -> set[bytes]:
    """Ledger keys of the records of ``dlq_topic`` (as it exists now) a committed replay
    handled."""
    return ledger.load(conf, ledger_topic, ledger.dlq_prefix(dlq_topic, topic_id(conf, dlq_topic)))


def replay_headers(
    headers: tuple[tuple[str, bytes | None], ...], count: int
) -> list[tuple[str, bytes | None]]:
    kept = [(k, v) for k, v in headers if k != REPLAY_COUNT_HEADER]
    return [*kept, (REPLAY_COUNT_HEADER, str(count).encode())]


class Replayer:
    """One replay run over one DLQ topic."""

    def __init__(
        self,
        conf: Mapping[str, str],
        *,
        dlq_topic: str,
        ledger_topic: str,
        parking_topic: str,
        selection: Selection,
        fix: FixFunction | None = None,
        to: str | None = None,
        max_replays: int = 3,
        rate: float | None = None,
        dry_run: bool = False,
        max_request_size: int = 16 * 1024 * 1024,
    ) -> None:
        self.conf = dict(conf)
        self.dlq_topic = dlq_topic
        self.ledger_topic = ledger_topic
        self.parking_topic = parking_topic
        self.selection = selection
        self.fix = fix
        self.to = to
        self.max_replays = max_replays
        self.rate = rate
        self.dry_run = dry_run
        self.max_request_size = max_request_size
        self.summary = Summary()

    def total(self) -> int:
        """Upper bound of the records to scan (for a progress bar)."""
        c = consumer(self.conf)
        try:
            return topic_size(c, self.dlq_topic)
        finally:
            c.close()

    def run(self, progress: Callable[[int], None] = lambda n: None) -> Summary:
        # The DLQ is fetched while the producer starts and the ledger is read.
        scan = read_dlq(self.conf, [self.dlq_topic])
        prefix = ledger.dlq_prefix(self.dlq_topic, topic_id(self.conf, self.dlq_topic))
        if self.dry_run:
            done = ledger.load(self.conf, self.ledger_topic, prefix)
            for rec, _ in self._selected(scan, done, prefix, progress):
                self.summary.records.append(self._describe(rec))
            return self.summary
        # Fences a replay of this topic still running elsewhere and aborts the open
        # transaction of one that was killed, before the ledger is read.
        with LedgeredWrites(
            self.conf,
            transactional_id=f"dlq-replay.{self.dlq_topic}",
            ledger_topic=self.ledger_topic,
            max_request_size=self.max_request_size,
            rate=self.rate,
        ) as txns:
            done = txns.done(prefix)
            sought: list[Sought] = []
            later: list[tuple[DlqRecord, bytes]] = []
            for rec, key in self._selected(scan, done, prefix, progress):
                maybe = self._sought(rec, key)
                if maybe is None:
                    self._replay(txns, rec, key)
                    continue
                sought.append(maybe)
                later.append((rec, key))
            if later:
                txns.commit()  # the look-up reads the input topic: no transaction waits on it
                found = find_written(self.conf, sought)
                for rec, key in later:
                    if key.decode() in found:
                        txns.write(Write(key, "already-in-topic", rec.envelope.topic))
                        self.summary.already_in_topic += 1
                    else:
                        self._replay(txns, rec, key)
        return self.summary

    def _replay(self, txns: LedgeredWrites, rec: DlqRecord, key: bytes) -> None:
        write = self._write(rec, key)
        if write is not None:  # the entry commits or aborts with its record
            txns.write(write)

    def _sought(self, rec: DlqRecord, key: bytes) -> Sought | None:
        """The record to look for in its topic before replaying it: a delivery envelope
        flagged possibly persisted, replayed to its own topic and not --fix'ed."""
        env = rec.envelope
        if (
            self.to is not None
            or self.fix is not None
            or env.category != Category.DELIVERY
            or env.error.get("possibly_persisted") is not True
            or env.failed_at is None
        ):
            return None
        try:
            orig = env.original(fetch_claim)
        except (ClaimError, EnvelopeError):
            return None  # replaying it reports why
        if orig.timestamp is None:
            return None
        return Sought(
            key.decode(),
            env.topic,
            orig.key,
            orig.value,
            orig.headers,
            orig.timestamp,
            env.failed_at,
        )

    def _selected(
        self,
        scan: Iterator[DlqRecord | Unreadable],
        done: set[bytes],
        prefix: bytes,
        progress: Callable[[int], None],
    ) -> Iterator[tuple[DlqRecord, bytes]]:
        """The DLQ records this replay takes (envelopes, selected, not in the ledger), each
        with its ledger key."""
        for rec in scan:
            progress(1)
            if isinstance(rec, Unreadable):
                self.summary.not_envelopes += 1
                continue
            if not self.selection.matches(rec):
                continue
            key = b"%s%d:%d" % (prefix, rec.message.partition, rec.message.offset)
            if key in done:
                self.summary.already_replayed += 1
            else:
                self.summary.selected += 1
                yield rec, key

    def _describe(self, rec: DlqRecord) -> dict[str, Any]:
        env = rec.envelope
        return {
            "dlq": list(rec.message.position),
            "source": [env.topic, env.partition, env.offset],
            "type": env.error_type,
            "field": env.field,
            "replay_count": env.replay_count,
        }

    def _failed(self, rec: DlqRecord, why: str) -> None:
        self.summary.failed += 1
        msg = rec.message
        self.summary.errors.append(f"{msg.topic}:{msg.partition}:{msg.offset}: {why}")

    def _write(self, rec: DlqRecord, key: bytes) -> Write | None:
        """What replaying one selected record writes, with its ledger entry; None if it
        failed (no entry: a later replay tries it again)."""
        env = rec.envelope
        count = env.replay_count
        if count >= self.max_replays:
            self.summary.parked += 1
            msg = rec.message
            return Write(
                key,
                "parked",
                self.parking_topic,
                self.parking_topic,
                msg.key,
                msg.value,
                msg.headers,
            )
        try:
            orig = env.original(fetch_claim)
        except (ClaimError, EnvelopeError) as e:
            self._failed(rec, str(e))
            return None
        value = orig.value
        target = self.to or orig.topic
        if self.fix is not None:
            try:
                value = self.fix(value, dict(env.raw))
            except Exception as e:  # the user's repair failed: report, keep the record
                self._failed(rec, f"--fix raised {type(e).__name__}: {e}")
                return None
            if value is None:
                self.summary.skipped += 1
                return Write(key, "skipped", target)
            if not isinstance(value, bytes):
                self._failed(rec, f"--fix returned {type(value).__name__}, not bytes or None")
                return None
        self.summary.replayed += 1
        return Write(
            key,
            "replayed",
            target,
            target,
            orig.key,
            value,
            tuple(replay_headers(orig.headers, count + 1)),
            orig.partition if self.to is None else None,
            orig.timestamp,  # the record's own time, as it was first written
        )
