"""Reading topics: every committed record of DLQ topics, from the beginning to the current
end; the records of a topic between two times; records that may be in a topic already.

"The end" is fixed when the scan starts (the partitions' end offsets), so a scan finishes
even while the job keeps writing. Records are read ``read_committed``, as any consumer of the
DLQ sees them: aborted writes and transaction markers are not counted.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from udfs.envelope import EnvelopeError, EnvelopeView
from udfs.record import Headers, SourceRecord

# One Kafka record as read: the record type of the whole project (udfs.record.SourceRecord).
Message = SourceRecord

# How long after a producer gave up on a record the record may still be appended: a request
# the broker had taken but not answered when the producer purged it.
LATE_APPEND_MS = 5 * 60_000


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """A DLQ record and its envelope."""

    message: Message
    envelope: EnvelopeView


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A record of a DLQ topic that is not an envelope, and why (written there by hand, or
    by another tool): counted and reported, never replayed."""

    message: Message
    problem: str


def dlq_record(msg: Message) -> DlqRecord | Unreadable:
    """A DLQ record with its envelope read, or what makes it none."""
    try:
        return DlqRecord(msg, EnvelopeView.read(msg.value or b""))
    except EnvelopeError as e:
        return Unreadable(msg, str(e))


def message_of(raw: Any) -> Message:
    """A consumed confluent-kafka message as a :class:`Message`."""
    ts_type, ts = raw.timestamp()
    return Message(
        raw.topic(),
        raw.partition(),
        raw.offset(),
        ts if ts_type else None,
        raw.key(),
        raw.value(),
        headers_of(raw.headers()),
    )


def consumer(conf: Mapping[str, str], isolation: str = "read_committed") -> Consumer:
    """A consumer for scans: its own throwaway group, no commits, partition EOF events."""
    return Consumer(
        {
            **conf,
            "group.id": f"dlq-scan-{uuid.uuid4()}",
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # A scan stops at the end: a fetch there must not wait the default 500 ms for data
            # that will not come (the partition's end is only known from such a fetch).
            "fetch.wait.max.ms": 20,
            "log_level": "3",
        }
    )


def watermarks(
    c: Consumer, topics: Sequence[str], timeout_s: float = 15
) -> dict[tuple[str, int], tuple[int, int]]:
    """The (low, high) watermark of every partition of ``topics``, asked of the brokers now.

    Raises KafkaException (UNKNOWN_TOPIC_OR_PART) naming a topic that does not exist or that
    this principal may not describe.
    """
    md = c.list_topics(timeout=timeout_s)
    marks = {}
    for topic in topics:
        if topic not in md.topics or md.topics[topic].error is not None:
            raise KafkaException(
                KafkaError(
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    f"topic {topic!r} does not exist or this principal may not describe it",
                )
            )
        for p in md.topics[topic].partitions:
            tp = TopicPartition(topic, p)
            marks[(topic, p)] = c.get_watermark_offsets(tp, timeout=timeout_s)
    return marks


def topic_size(c: Consumer, topic: str) -> int:
    """Records between the low and high watermark of all partitions of ``topic``."""
    return sum(high - low for low, high in watermarks(c, [topic]).values())


def read_to_end(
    conf: Mapping[str, str],
    topics: Sequence[str],
    isolation: str = "read_committed",
    timeout_s: float = 120,
) -> Iterator[Message]:
    """Every message of ``topics`` up to the end offsets present now, in partition order.

    The end offsets are asked for and fetching starts when this is called; the messages come
    as they are iterated (so a caller can fetch while it prepares something else).
    """
    return map(message_of, read_raw_to_end(conf, topics, isolation, timeout_s))


def read_raw_to_end(
    conf: Mapping[str, str],
    topics: Sequence[str],
    isolation: str = "read_committed",
    timeout_s: float = 120,
) -> Iterator[Any]:
    """:func:`read_to_end` as confluent-kafka's own messages (for readers of millions of small
    records that need a field or two, such as the replay ledger)."""
    c = consumer(conf, isolation)
    try:
        ends = {tp: high for tp, (low, high) in watermarks(c, topics).items() if high > low}
        c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
    except BaseException:
        c.close()
        raise
    return _to_end(c, ends, timeout_s)


def read_between_times(
    conf: Mapping[str, str],
    topic: str,
    since_ms: int,
    until_ms: int,
    timeout_s: float = 120,
) -> Iterator[Message]:
    """The committed messages of ``topic`` from the first whose timestamp is ``since_ms`` or
    later to the first whose timestamp is ``until_ms`` or later (or to the end offsets present
    now, if none is), in each partition: Kafka's time index (``offsets_for_times``) gives both.
    A message appended after one stamped ``until_ms`` or later is not read, whatever its own
    timestamp."""
    c = consumer(conf)
    try:
        marks = watermarks(c, [topic])
        parts = sorted(p for _, p in marks)
        starts = c.offsets_for_times([TopicPartition(topic, p, since_ms) for p in parts], 15)
        stops = c.offsets_for_times([TopicPartition(topic, p, until_ms) for p in parts], 15)
        ends, assignment = {}, []
        for start, stop in zip(starts, stops, strict=True):
            end = stop.offset if stop.offset >= 0 else marks[(topic, start.partition)][1]
            if 0 <= start.offset < end:  # -1: no message that late
                ends[(topic, start.partition)] = end
                assignment.append(TopicPartition(topic, start.partition, start.offset))
        c.assign(assignment)
    except BaseException:
        c.close()
        raise
    return map(message_of, _to_end(c, ends, timeout_s))


def _to_end(c: Consumer, ends: dict[tuple[str, int], int], timeout_s: float) -> Iterator[Any]:
    try:
        pending = set(ends)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not read {sorted(pending)} to the end in "
                    f"{timeout_s:.0f} s (an open transaction?)"
                )
            # A batch returns when it is full or at the timeout: a short one, or the last
            # records of a scan (fewer than a batch) would wait it out.
            for msg in c.consume(1000, 0.05):
                key = (msg.topic() or "", msg.partition() or 0)
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(key)
                        continue
                    raise KafkaException(err)
                if key not in pending:
                    continue
                offset = msg.offset() or 0
                if offset >= ends[key]:
                    pending.discard(key)
                    continue
                yield msg
                if offset + 1 >= ends[key]:
                    pending.discard(key)
    finally:
        c.close()


def headers_of(raw: object) -> Headers:
    """confluent-kafka gives a list of (str, bytes | None) pairs, or None."""
    return tuple((str(k), v) for k, v in raw) if isinstance(raw, list) else ()


def read_dlq(conf: Mapping[str, str], topics: Sequence[str]) -> Iterator[DlqRecord | Unreadable]:
    """The committed records of DLQ topics with their envelopes parsed (fetching starts now,
    as for :func:`read_to_end`)."""
    return map(dlq_record, read_to_end(conf, topics))


@dataclass(frozen=True, slots=True)
class Sought:
    """A record a producer gave up on that may be in its topic all the same (librdkafka's
    "possibly persisted"): where it was going, what identifies it, and when it may have been
    appended, from its own timestamp to ``gave_up`` plus :data:`LATE_APPEND_MS`."""

    id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int
    gave_up: datetime

    @property
    def latest_ms(self) -> int:
        """When it may have been appended at the latest, without the late allowance."""
        return round(self.gave_up.timestamp() * 1000)


def windows(
    sought: Iterable[Sought], late_ms: int = LATE_APPEND_MS
) -> Iterator[tuple[int, int, list[Sought]]]:
    """Where in time each record may have landed, overlapping spans merged: ``(since_ms,
    until_ms, records)``, in time order."""
    group: list[Sought] = []
    since = until = 0
    for rec in sorted(sought, key=lambda r: (r.timestamp, r.gave_up)):
        if group and rec.timestamp > until:
            yield since, until, group
            group = []
        if not group:
            since, until = rec.timestamp, rec.latest_ms + late_ms
        group.append(rec)
        until = max(until, rec.latest_ms + late_ms)
    if group:
        yield since, until, group


def find_written(conf: Mapping[str, str], sought: Iterable[Sought]) -> set[str]:
    """The ids of the ``sought`` records that their topics hold: a committed record with the
    same key, value, headers and timestamp where each may have landed. One found record
    accounts for one sought record. Not found: a record appended later than the window, or
    one a topic with ``LogAppendTime`` stamped anew."""
    by_topic: dict[str, list[Sought]] = defaultdict(list)
    for rec in sought:
        by_topic[rec.topic].append(rec)
    found: set[str] = set()
    for topic, records in by_topic.items():
        for since, until, group in windows(records):
            left: dict[tuple[Any, ...], list[str]] = defaultdict(list)
            for rec in group:
                left[(rec.key, rec.value, rec.headers, rec.timestamp)].append(rec.id)
            for msg in read_between_times(conf, topic, since, until):
                ids = left.get((msg.key, msg.value, msg.headers, msg.timestamp))
                if ids:
                    found.add(ids.pop())
    return found
