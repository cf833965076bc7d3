"""The ingest producer: a record passed to ``send`` is acknowledged, dead-lettered or spooled.

It wraps confluent-kafka's producer (idempotent, ``acks=all``, Java's murmur2 partitioner so
keys land where the JVM clients put them) and follows librdkafka's message reliability rules
(INTRODUCTION.md, "Message reliability"): every error a delivery report carries is final,
because librdkafka has already retried what can be retried within the timeout. So:

- a record the input topic refused (too large, not authorised, unknown topic, invalid) or
  could not take in ``delivery_timeout_ms`` goes to its feed's DLQ in a ``delivery`` envelope
  (SPEC section 5) with its exact key, value and headers;
- an envelope larger than the DLQ accepts goes with its payload stored aside (claim check);
- what the DLQ cannot take in ``dlq_timeout_ms`` goes to the durable spool (fsynced);
- if the spool cannot take it either, ``send`` raises :class:`IngestError` and reports
  nothing as sent, so the caller (a Lambda) fails and retries the batch.

A send that reaches its deadline purges what is still queued, then what is in flight. Both
count as possibly persisted: a record in flight was sent without an answer, and a queued one
may have been sent too, in a request that failed (a broker going away), after which librdkafka
puts it back in the queue to retry it. librdkafka knows each record's status
(``rd_kafka_message_status``), but confluent-kafka does not expose it, and the error a purge
reports (``_PURGE_QUEUE``) does not tell. Possibly persisted records are flagged in their
envelope and in the spool; ``dlq spool drain`` and ``dlq replay`` look for each in its topic
before they send it again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from ingest.spool import Spool, SpooledRecord, SpoolError, open_spool
from kafkaio.claims import ClaimError
from kafkaio.producers import produce_waiting
from settings.config import FeedTopics, JobConfig
from udfs.envelope import build_delivery_envelope, claim_checked, encode
from udfs.record import Headers

LOG = logging.getLogger("marketlag.ingest.kafka")

# Delivery errors after which the record may be in the topic all the same. A queued record
# (purged, or timed out in the queue) may be one put back after a failed request.
POSSIBLY_PERSISTED = {
    KafkaError._PURGE_INFLIGHT,
    KafkaError._PURGE_QUEUE,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
}
# The input did not take the record because it could not be reached in time: hold the record
# itself (drain sends it to its topic), not an envelope.
UNREACHED = POSSIBLY_PERSISTED | {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}
TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}


class IngestError(RuntimeError):
    """``send`` could not account for every record (the spool refused them): nothing of the
    batch counts as sent; retry it."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record for an input topic. A value that is not bytes is serialised as JSON."""

    key: bytes | None
    value: Any
    headers: Headers = ()
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class Undelivered:
    """A record its input topic did not acknowledge, exactly as it was given (key, value,
    headers and timestamp), and why: a Kafka error, or ``code`` None when the value could not
    even be serialised."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int | None
    error: str  # the Kafka error's name, or the serialisation error's type
    message: str
    retriable: bool = False
    code: int | None = None
    # librdkafka's word: it was sent, or may have been, and no answer came
    possibly_persisted: bool = False

    @classmethod
    def of(
        cls,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp: int | None,
        err: KafkaError,
    ) -> Undelivered:
        """A record and the error Kafka gave for it."""
        code = err.code()
        return cls(
            key,
            value,
            headers,
            timestamp,
            err.name(),
            err.str(),
            err.retriable(),
            code,
            code in POSSIBLY_PERSISTED,
        )

    @property
    def reached(self) -> bool:
        """False when the input could not be reached in time (timed out, broker down)."""
        return self.code not in UNREACHED

    def envelope(self, topic: str, *, attempts: int, producer: str) -> dict[str, Any]:
        """Its ``delivery`` envelope (SPEC section 5) for the DLQ of ``topic``."""
        return build_delivery_envelope(
            topic=topic,
            key=self.key,
            value=self.value,
            headers=self.headers,
            timestamp=self.timestamp,
            error_name=self.error,
            message=self.message,
            retriable=self.retriable,
            possibly_persisted=self.possibly_persisted,
            attempts=attempts,
            producer=producer,
        )


class Place(StrEnum):
    DLQ = "dead_lettered"
    SPOOL = "spooled"


@dataclass(frozen=True, slots=True)
class Fate:
    """Where a record its input did not acknowledge ended up: its feed's DLQ (the envelope
    carrying its payload, or a claim check of it) or the spool."""

    record: Undelivered
    place: Place
    claim_checked: bool = False


@dataclass
class SendReport:
    """What became of a batch: every record is acknowledged or has its :class:`Fate`."""

    sent: int = 0
    fates: list[Fate] = field(default_factory=list)

    @property
    def acknowledged(self) -> int:
        return self.sent - len(self.fates)

    def as_dict(self) -> dict[str, Any]:
        """Counts by fate (each record in exactly one of the first three), and the errors."""
        places = Counter(f.place for f in self.fates)
        return {
            "acknowledged": self.acknowledged,
            "dead_lettered": places[Place.DLQ],
            "spooled": places[Place.SPOOL],
            "claim_checked": sum(f.claim_checked for f in self.fates if f.place is Place.DLQ),
            "possibly_persisted": sum(f.record.possibly_persisted for f in self.fates),
            "errors": dict(Counter(f.record.error for f in self.fates)),
        }


def serialise(value: Any) -> bytes | None:
    """A record value as bytes: bytes as they are, text as UTF-8, anything else as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


def _best_effort_bytes(value: Any) -> bytes:
    """What is kept of a value that cannot be serialised: JSON with the odd parts as repr."""
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value).encode("utf-8", "backslashreplace")


def unserialisable(rec: OutRecord, exc: Exception, stamp: int) -> Undelivered:
    return Undelivered(
        rec.key,
        _best_effort_bytes(rec.value),
        rec.headers,
        rec.timestamp or stamp,
        type(exc).__name__,
        f"the value cannot be serialised ({exc}); the payload holds what could be kept of it",
    )


def spooled(rec: Undelivered, topics: FeedTopics, envelope: bytes) -> SpooledRecord:
    """What the spool holds for an undelivered record: the record itself when its input was
    not reached (drain sends it there), else its envelope (drain sends it to the DLQ)."""
    itself = not rec.reached
    return SpooledRecord(
        kind="record" if itself else "envelope",
        topic=topics.input if itself else topics.dlq,
        dlq_topic=topics.dlq,
        key=rec.key,
        value=rec.value if itself else envelope,
        headers=rec.headers,
        timestamp=rec.timestamp if itself else None,
        possibly_persisted=rec.possibly_persisted,
        reason=f"{rec.error}: {rec.message}",
    )


@dataclass(slots=True)
class _Letter:
    """An undelivered record on its way to the DLQ, with the envelope that carries it, and
    where it ends up."""

    record: Undelivered
    envelope: dict[str, Any]
    claim_checked: bool = False
    place: Place = Place.DLQ

    def body(self) -> bytes:
        return encode(self.envelope)


class IngestProducer:
    """One per process (a Lambda container keeps it between invocations)."""

    def __init__(
        self, config: JobConfig, spool: Spool | None = None, *, name: str = "marketlag-ingest"
    ) -> None:
        self.config = config
        self.spool = spool if spool is not None else open_spool(config.ingest.spool)
        self.name = name
        self._producer: Producer | None = None
        self._fatal: KafkaError | None = None
        self._undelivered: list[Undelivered] = []
        self._stamp = 0

    # librdkafka ----------------------------------------------------------------------------

    def _client(self) -> Producer:
        if self._producer is None or self._fatal is not None:
            ingest = self.config.ingest
            self._fatal = None
            self._producer = Producer(
                {
                    **self.config.kafka.librdkafka(),
                    "enable.idempotence": True,
                    "acks": "all",
                    # Keys go to the partitions the Java clients (and the job's sinks) choose.
                    "partitioner": "murmur2_random",
                    "linger.ms": 5,
                    "message.max.bytes": str(self.config.kafka.max_request_size),
                    # send() ends a batch itself at its deadline (purge): librdkafka's own
                    # timeout must not come first, or queued and in-flight records would
                    # look alike.
                    "message.timeout.ms": str(
                        ingest.delivery_timeout_ms + ingest.dlq_timeout_ms + 60_000
                    ),
                    # Only failures are reported: a success costs no Python call.
                    "delivery.report.only.error": True,
                    "on_delivery": self._on_delivery,
                    "error_cb": self._on_error,
                    # librdkafka's log lines go to Python logging, where the function's
                    # runtime collects them.
                    "logger": LOG,
                    **ingest.producer,
                }
            )
        return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        """A record of the hot path failed: bytes, no headers, the send's timestamp (a
        delivery report carries no headers, and a purged record no timestamp)."""
        if err is not None:
            self._undelivered.append(Undelivered.of(msg.key(), msg.value(), (), self._stamp, err))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err

    def _settle(self, producer: Producer, timeout_ms: int) -> None:
        """Waits for every record produced so far; past the deadline, purges what is queued,
        then what is in flight (each then reports its failure)."""
        if producer.flush(timeout_ms / 1000) > 0:
            producer.purge(in_queue=True, in_flight=False)
            producer.poll(0)
            producer.purge(in_queue=False, in_flight=True)
            while producer.flush(1.0) > 0:
                pass

    # send ----------------------------------------------------------------------------------

    def send(self, feed: str, records: Iterable[OutRecord]) -> SendReport:
        """Sends ``records`` to the feed's input topic; returns once each is acknowledged,
        in the feed's DLQ, or in the spool. Raises :class:`IngestError` otherwise."""
        topics = self.config.feeds[feed]
        if not isinstance(records, list | tuple):
            records = list(records)
        undelivered = self._to_input(topics.input, records)
        return SendReport(len(records), self._dead_letter(topics, undelivered))

    def _to_input(
        self, topic: str, records: list[OutRecord] | tuple[OutRecord, ...]
    ) -> list[Undelivered]:
        """Produces ``records`` to ``topic`` and waits for them; returns those it did not
        acknowledge, each exactly as it was given."""
        producer = self._client()
        # Every record of a send without a timestamp of its own gets the send's: librdkafka
        # gives none back with a record it purged, and drain and replay look for a possibly
        # persisted record in its topic by its timestamp (and it keeps its creation time).
        stamp = self._stamp = time.time_ns() // 1_000_000
        self._undelivered = refused = []
        produce = producer.produce
        for rec in records:  # the hot loop: a bare producer's Python and one check
            value = rec.value
            if value.__class__ is bytes and not rec.headers and not rec.timestamp:
                try:
                    # positional (a keyword costs the call a dict): partition -1 (the
                    # partitioner's choice), callback and on_delivery None (the producer's)
                    produce(topic, value, rec.key, -1, None, None, stamp)
                    continue
                except BufferError:
                    pass  # the queue is full: the slow path waits for room
                except KafkaException as e:  # refused before it was queued (e.g. too large)
                    refused.append(Undelivered.of(rec.key, value, (), stamp, e.args[0]))
                    continue
            self._produce_one(producer, topic, rec, stamp)
        self._settle(producer, self.config.ingest.delivery_timeout_ms)
        return self._undelivered

    def _produce_one(self, producer: Producer, topic: str, rec: OutRecord, stamp: int) -> None:
        """What the hot loop leaves aside: a value to serialise, headers, a timestamp of its
        own, a full queue. Its delivery report is its own, so that a failure keeps the record
        exactly as given (a report carries no headers)."""
        value = rec.value
        if value is not None and not isinstance(value, bytes):
            try:
                value = serialise(value)
            except (TypeError, ValueError) as e:
                self._undelivered.append(unserialisable(rec, e, stamp))
                return
        undelivered, timestamp = self._undelivered, rec.timestamp or stamp

        def reported(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                undelivered.append(Undelivered.of(rec.key, value, rec.headers, timestamp, err))

        kwargs: dict[str, Any] = {
            "value": value,
            "key": rec.key,
            "timestamp": timestamp,
            "on_delivery": reported,
        }
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        try:
            produce_waiting(producer, topic, 0.005, **kwargs)
        except KafkaException as e:  # refused before it was queued (e.g. too large)
            undelivered.append(Undelivered.of(rec.key, value, rec.headers, timestamp, e.args[0]))

    def _dead_letter(self, topics: FeedTopics, undelivered: list[Undelivered]) -> list[Fate]:
        """The fate of each record its input did not acknowledge: its envelope in the DLQ;
        if too large for the DLQ, an envelope with its payload stored aside; what the DLQ does
        not take either, in the spool (which raises :class:`IngestError` if it cannot)."""
        if not undelivered:
            return []
        letters = [
            _Letter(r, r.envelope(topics.input, attempts=1, producer=self.name))
            for r in undelivered
        ]
        refused = self._to_dlq(topics.dlq, letters)
        large = [letter for letter, code in refused if code in TOO_LARGE]
        left = [letter for letter, code in refused if code not in TOO_LARGE]
        if large:
            try:
                for letter in large:
                    uri, digest = self.spool.claims.put(letter.record.value or b"")
                    letter.envelope = claim_checked(letter.envelope, uri, digest)
                    letter.claim_checked = True
            except ClaimError as e:
                raise IngestError(f"{len(undelivered)} records not delivered: {e}") from e
            left += [letter for letter, _ in self._to_dlq(topics.dlq, large)]
        if left:
            try:
                self.spool.append([spooled(lt.record, topics, lt.body()) for lt in left])
            except SpoolError as e:
                raise IngestError(
                    f"{len(undelivered)} records reached neither {topics.input} nor "
                    f"{topics.dlq}, and the spool refused them: {e}"
                ) from e
            for letter in left:
                letter.place = Place.SPOOL
        return [Fate(lt.record, lt.place, lt.claim_checked) for lt in letters]

    def _to_dlq(self, topic: str, letters: list[_Letter]) -> list[tuple[_Letter, int]]:
        """Produces the letters' envelopes to the DLQ; returns those it refused, each with
        the error's code."""
        producer = self._client()
        refused: list[tuple[_Letter, int]] = []
        for letter in letters:

            def reported(err: KafkaError | None, _msg: Any, letter: _Letter = letter) -> None:
                if err is not None:
                    refused.append((letter, err.code()))

            kwargs: dict[str, Any] = {
                "key": letter.record.key,
                "value": letter.body(),
                "on_delivery": reported,
            }
            if letter.record.headers:
                kwargs["headers"] = list(letter.record.headers)
            try:
                produce_waiting(producer, topic, 0.005, **kwargs)
            except KafkaException as e:
                refused.append((letter, e.args[0].code()))
        self._settle(producer, self.config.ingest.dlq_timeout_ms)
        return refused

    def close(self, timeout_s: float = 10) -> None:
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None
