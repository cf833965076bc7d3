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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from ingest.spool import LocalSpool, S3Spool, SpooledRecord, SpoolError, open_spool
from udfs.config import FeedTopics, JobConfig
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


@dataclass
class SendReport:
    """What became of a batch: every record is in exactly one of the first three counts."""

    acknowledged: int = 0
    dead_lettered: int = 0
    spooled: int = 0
    claim_checked: int = 0
    possibly_persisted: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.acknowledged + self.dead_lettered + self.spooled

    def as_dict(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "dead_lettered": self.dead_lettered,
            "spooled": self.spooled,
            "claim_checked": self.claim_checked,
            "possibly_persisted": self.possibly_persisted,
            "errors": dict(self.errors),
        }


@dataclass(frozen=True, slots=True)
class Failure:
    """A record its input topic did not acknowledge, and why."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int | None
    error: str
    message: str
    retriable: bool
    possibly_persisted: bool
    reached: bool  # False: never reached the input (timed out, broker down)


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


def _headers(raw: object) -> Headers:
    return tuple((str(k), v) for k, v in raw) if isinstance(raw, list) else ()


def _timestamp(msg: Any) -> int | None:
    kind, ts = msg.timestamp()
    return ts if kind and ts >= 0 else None


class IngestProducer:
    """One per process (a Lambda container keeps it between invocations)."""

    def __init__(
        self,
        config: JobConfig,
        spool: LocalSpool | S3Spool | None = None,
        *,
        name: str = "marketlag-ingest",
    ) -> None:
        self.config = config
        self.spool = spool if spool is not None else open_spool(config.ingest.spool)
        self.name = name
        self._producer: Producer | None = None
        self._fatal: KafkaError | None = None
        self._reports: list[tuple[KafkaError, Any]] = []

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
        if err is not None:
            self._reports.append((err, msg))

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err

    def _produce(self, producer: Producer, topic: str, **kwargs: Any) -> None:
        while True:
            try:
                producer.produce(topic, **kwargs)
                return
            except BufferError:  # the local queue is full: let it drain
                # Successes make no callback, so poll waits its whole timeout: keep it short.
                producer.poll(0.005)

    def _settle(self, producer: Producer, timeout_ms: int) -> list[tuple[KafkaError, Any]]:
        """Waits for every record produced so far; past the deadline, purges what is queued,
        then what is in flight. Returns the failures reported."""
        if producer.flush(timeout_ms / 1000) > 0:
            producer.purge(in_queue=True, in_flight=False)
            producer.poll(0)
            producer.purge(in_queue=False, in_flight=True)
            while producer.flush(1.0) > 0:
                pass
        reports, self._reports = self._reports, []
        return reports

    # send ----------------------------------------------------------------------------------

    def send(self, feed: str, records: Iterable[OutRecord]) -> SendReport:
        """Sends ``records`` to the feed's input topic; returns once each is acknowledged,
        in the feed's DLQ, or in the spool. Raises :class:`IngestError` otherwise."""
        topics = self.config.feeds[feed]
        report = SendReport()
        failures: list[Failure] = []
        producer = self._client()
        if not isinstance(records, list | tuple):
            records = list(records)
        # Every record of a send without a timestamp of its own gets the send's: librdkafka
        # gives none back with a record it purged, and drain and replay look for a possibly
        # persisted record in its topic by its timestamp (and it keeps its creation time).
        stamp = time.time_ns() // 1_000_000
        stamped: dict[tuple[bytes | None, bytes | None], int] = {}  # a record's own timestamp
        produce, topic = producer.produce, topics.input
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
                    failures.append(_refused(rec, value, e.args[0], stamp))
                    continue
            self._produce_one(producer, topic, rec, failures, stamp, stamped)
        produced = len(records) - len(failures)
        reports = self._settle(producer, self.config.ingest.delivery_timeout_ms)
        report.acknowledged = produced - len(reports)
        failures += [_failure(err, msg, stamp, stamped) for err, msg in reports]
        if failures:
            self._dead_letter(producer, topics, failures, report)
        return report

    def _produce_one(
        self,
        producer: Producer,
        topic: str,
        rec: OutRecord,
        failures: list[Failure],
        stamp: int,
        stamped: dict[tuple[bytes | None, bytes | None], int],
    ) -> None:
        """What the hot loop leaves aside: a value to serialise, headers, a timestamp, a full
        queue. A record refused before it was queued goes to ``failures``; one with its own
        timestamp is noted in ``stamped``."""
        value = rec.value
        if value is not None and not isinstance(value, bytes):
            try:
                value = serialise(value)
            except (TypeError, ValueError) as e:
                failures.append(_unserialisable(rec, e, stamp))
                return
        kwargs: dict[str, Any] = {"value": value, "key": rec.key}
        if rec.headers:
            kwargs["headers"] = list(rec.headers)
        kwargs["timestamp"] = rec.timestamp or stamp
        if rec.timestamp:
            stamped[(rec.key, value)] = rec.timestamp
        try:
            self._produce(producer, topic, **kwargs)
        except KafkaException as e:
            failures.append(_refused(rec, value, e.args[0], stamp))

    def _dead_letter(
        self, producer: Producer, topics: FeedTopics, failures: list[Failure], report: SendReport
    ) -> None:
        for f in failures:
            report.errors[f.error] += 1
            report.possibly_persisted += f.possibly_persisted
        envelopes = [encode(self._envelope(topics, f)) for f in failures]
        left = self._try_dlq(producer, topics, failures, envelopes)
        # Too large for the DLQ: the payload goes aside, the envelope carries a reference.
        large = [i for i, err in left.items() if err in TOO_LARGE]
        if large:
            try:
                claimed = {i: self._claim(topics, failures[i]) for i in large}
            except SpoolError as e:
                raise IngestError(f"{len(failures)} records not delivered: {e}") from e
            retry = self._try_dlq(
                producer,
                topics,
                [failures[i] for i in large],
                [claimed[i] for i in large],
            )
            report.claim_checked += len(large) - len(retry)
            for i in large:  # should the DLQ still refuse it, the spool holds it claim-checked
                envelopes[i] = claimed[i]
            for j, err in retry.items():
                left[large[j]] = err
            for i in set(large) - {large[j] for j in retry}:
                del left[i]
        if left:
            spooled = [self._spooled(topics, failures[i], envelopes[i]) for i in sorted(left)]
            try:
                self.spool.append(spooled)
            except SpoolError as e:
                raise IngestError(
                    f"{len(failures)} records reached neither {topics.input} nor "
                    f"{topics.dlq}, and the spool refused them: {e}"
                ) from e
        report.spooled = len(left)
        report.dead_lettered = len(failures) - len(left)

    def _try_dlq(
        self,
        producer: Producer,
        topics: FeedTopics,
        failures: list[Failure],
        envelopes: list[bytes],
    ) -> dict[int, int]:
        """Produces the envelopes to the DLQ; returns {index: error code} of those it refused."""
        refused: dict[int, int] = {}

        def on_delivery(i: int) -> Callable[[KafkaError | None, Any], None]:
            def done(err: KafkaError | None, _msg: Any) -> None:
                if err is not None:
                    refused[i] = err.code()

            return done

        for i, (f, env) in enumerate(zip(failures, envelopes, strict=True)):
            kwargs: dict[str, Any] = {"key": f.key, "value": env, "on_delivery": on_delivery(i)}
            if f.headers:
                kwargs["headers"] = list(f.headers)
            try:
                self._produce(producer, topics.dlq, **kwargs)
            except KafkaException as e:
                refused[i] = e.args[0].code()
        self._settle(producer, self.config.ingest.dlq_timeout_ms)
        return refused

    def _envelope(self, topics: FeedTopics, f: Failure) -> dict[str, Any]:
        return build_delivery_envelope(
            topic=topics.input,
            key=f.key,
            value=f.value,
            headers=f.headers,
            timestamp=f.timestamp,
            error_name=f.error,
            message=f.message,
            retriable=f.retriable,
            possibly_persisted=f.possibly_persisted,
            attempts=1,
            producer=self.name,
        )

    def _claim(self, topics: FeedTopics, f: Failure) -> bytes:
        uri, digest = self.spool.put_claim(f.value or b"")
        return encode(claim_checked(self._envelope(topics, f), uri, digest))

    def _spooled(self, topics: FeedTopics, f: Failure, envelope: bytes) -> SpooledRecord:
        """What the spool holds for a failure: the record itself when its input was not
        reached (drain sends it there), else its envelope (drain sends it to the DLQ)."""
        itself = not f.reached
        return SpooledRecord(
            kind="record" if itself else "envelope",
            topic=topics.input if itself else topics.dlq,
            dlq_topic=topics.dlq,
            key=f.key,
            value=f.value if itself else envelope,
            headers=f.headers,
            timestamp=f.timestamp if itself else None,
            possibly_persisted=f.possibly_persisted,
            reason=f"{f.error}: {f.message}",
        )

    def close(self, timeout_s: float = 10) -> None:
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None


def _failure(
    err: KafkaError,
    msg: Any,
    stamp: int,
    stamped: dict[tuple[bytes | None, bytes | None], int],
) -> Failure:
    """A failed delivery report's record. Its timestamp: the report's, else (a purged record
    has none) the one it was produced with."""
    code = err.code()
    key, value = msg.key(), msg.value()
    return Failure(
        key,
        value,
        _headers(msg.headers()),
        _timestamp(msg) or (stamped.get((key, value), stamp) if stamped else stamp),
        err.name(),
        err.str(),
        err.retriable(),
        code in POSSIBLY_PERSISTED,
        code not in UNREACHED,
    )


def _refused(rec: OutRecord, value: bytes | None, err: KafkaError, stamp: int) -> Failure:
    return Failure(
        rec.key,
        value,
        rec.headers,
        rec.timestamp or stamp,
        err.name(),
        err.str(),
        err.retriable(),
        False,
        True,
    )


def _unserialisable(rec: OutRecord, exc: Exception, stamp: int) -> Failure:
    return Failure(
        rec.key,
        _best_effort_bytes(rec.value),
        rec.headers,
        rec.timestamp or stamp,
        type(exc).__name__,
        f"the value cannot be serialised ({exc}); the payload holds what could be kept of it",
        False,
        False,
        True,
    )
