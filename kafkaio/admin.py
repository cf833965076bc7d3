"""Broker administration: wait for a broker, create the project's topics.

The DLQ topics are sized from their input topics: an envelope carries the payload twice
(base64, and as JSON-escaped text when it is UTF-8), so it can be several times larger than
the record it wraps. :func:`envelope_bound` is that worst case.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from settings.config import JobConfig

# Kafka's default max.message.bytes (broker message.max.bytes) for a topic without override.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# Room for everything in an envelope that does not scale with the record: the stack trace
# (capped at 8 KiB), the error message (the offending value is cut to 200 characters), the
# source position, timestamps and the field names.
ENVELOPE_FIXED_OVERHEAD = 64 * 1024


def envelope_bound(max_record_bytes: int) -> int:
    """Largest envelope for a record of at most ``max_record_bytes`` (key+value+headers).

    base64 makes every byte 4/3 bytes; ``payload_text`` repeats the value as JSON text, where
    a control character becomes a six-byte ``\\u00XX`` escape (the worst case); all other
    characters take at most their UTF-8 length.
    """
    return math.ceil(max_record_bytes * 4 / 3) + 6 * max_record_bytes + ENVELOPE_FIXED_OVERHEAD


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: Mapping[str, str]


def admin_client(conf: Mapping[str, Any]) -> AdminClient:
    return AdminClient(dict(conf))


class BrokerRefused(ConnectionError):
    """The broker answered but refused us: wrong credentials or a certificate not trusted.

    Retrying cannot help, so callers stop at once and say why (the message is librdkafka's,
    which names the mechanism or the certificate problem and never the password).
    """


# librdkafka reports these through the error callback while it keeps reconnecting; for a
# command line tool each one is final.
REFUSED = {
    KafkaError._AUTHENTICATION: "authentication failed",
    KafkaError._SSL: "TLS handshake failed",
    KafkaError.SASL_AUTHENTICATION_FAILED: "authentication failed",
}


class HangUps(logging.Handler):
    """Counts librdkafka's log lines of a broker that closed the connection while it was
    being asked its API versions (the first request of every connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.logger = logging.getLogger(f"marketlag.kafka.probe.{id(self)}")
        self.logger.addHandler(self)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "closed by peer" in text and "APIVERSION_QUERY" in text:
            self.count += 1


def wait_for_broker(conf: Mapping[str, str], timeout_s: float, brokers: int = 1) -> None:
    """Returns once the cluster answers a metadata request; raises TimeoutError otherwise,
    and :class:`BrokerRefused` as soon as the broker rejects our credentials or we reject its
    certificate."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    refused: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in REFUSED:
            refused.append(f"{REFUSED[err.code()]}: {err.str()}")

    # A client of the wrong protocol (plaintext at a TLS listener) is accepted and then hung up
    # on at its first request, again and again: librdkafka logs that, it reports no error.
    hung_up = HangUps()
    client = admin_client(
        {
            **conf,
            "socket.connection.setup.timeout.ms": "2000",
            "logger": hung_up.logger,  # kept, not printed: "connection refused" is expected
            "log_level": "6",
            "error_cb": on_error,
        }
    )
    while time.monotonic() < deadline:
        try:
            md = client.list_topics(timeout=2)
            if len(md.brokers) >= brokers:
                return
        except KafkaException as e:
            last = e
        client.poll(0)  # serves the error callback and the log
        if hung_up.count >= 3:
            refused.append(
                "the broker hangs up on the first request: it speaks another protocol than "
                f"{conf.get('security.protocol', 'PLAINTEXT')} (KAFKA_SECURITY_PROTOCOL; "
                "TLS or SASL at this port?)"
            )
        if refused:
            raise BrokerRefused(f"Kafka at {conf.get('bootstrap.servers')}: {refused[0]}")
        time.sleep(0.5)
    raise TimeoutError(
        f"no Kafka broker answered at {conf.get('bootstrap.servers')} "
        f"within {timeout_s:.0f} s ({last})"
    )


class AccessDenied(PermissionError):
    """The principal lacks an ACL it needs, or a topic it needs does not exist."""


def check_topic_access(
    conf: Mapping[str, Any], wanted: Mapping[str, Iterable[AclOperation]], timeout_s: float = 30
) -> None:
    """Raises :class:`AccessDenied` naming every topic and operation the principal lacks.

    Asks the broker which operations this principal may perform on each topic (KIP-430), so
    a job without WRITE on its DLQ stops before it reads a record, not at its first failure.
    """
    client = admin_client({**conf, "log_level": 3})
    futures = client.describe_topics(
        TopicCollection(list(wanted)), include_authorized_operations=True, request_timeout=timeout_s
    )
    problems = []
    for topic, future in futures.items():
        try:
            allowed = set(future.result(timeout=timeout_s).authorized_operations or [])
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                problems.append(f"topic {topic!r} does not exist (make topics)")
            elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                problems.append(f"not authorised to describe topic {topic!r}")
            else:
                raise
            continue
        if not allowed or AclOperation.ALL in allowed:
            continue  # nothing reported (an old broker): the clients will find out
        missing = [op.name for op in wanted[topic] if op not in allowed]
        if missing:
            problems.append(f"not authorised to {'/'.join(missing)} topic {topic!r}")
    if problems:
        raise AccessDenied("; ".join(problems))


def topic_max_message_bytes(client: AdminClient, topic: str, timeout_s: float = 30) -> int:
    """The effective max.message.bytes of a topic (retried while a new topic propagates)."""
    value = topic_config(client, topic, "max.message.bytes", timeout_s)
    return int(value) if value else KAFKA_DEFAULT_MAX_MESSAGE_BYTES


def topic_config(client: AdminClient, topic: str, name: str, timeout_s: float = 30) -> str | None:
    """The effective value of one topic setting (retried while a new topic propagates)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            configs = client.describe_configs([resource])[resource].result(timeout=timeout_s)
            break
        except KafkaException as e:
            if e.args[0].name() != "UNKNOWN_TOPIC_OR_PART" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    entry = configs.get(name)
    return None if entry is None else entry.value


def retention_ms(client: AdminClient, topic: str) -> int | None:
    """How long ``topic`` keeps a record, in ms; None when it never deletes by time (or is
    compacted only)."""
    policy = topic_config(client, topic, "cleanup.policy") or "delete"
    value = int(topic_config(client, topic, "retention.ms") or -1)
    return value if "delete" in policy and value >= 0 else None


def create_topics(client: AdminClient, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Creates the topics that do not exist yet. Returns {topic: "created" | "exists"}."""
    existing = set(client.list_topics(timeout=30).topics)
    todo = [s for s in specs if s.name not in existing]
    result = {s.name: "exists" for s in specs if s.name in existing}
    if todo:
        futures = client.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=-1,
                    config=dict(s.config),
                )
                for s in todo
            ],
            operation_timeout=30,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                result[name] = "created"
            except KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
                result[name] = "exists"
    wait_for_topics(client, [s.name for s in specs])
    return result


def wait_for_topics(
    client: AdminClient, names: Iterable[str], timeout_s: float = 30
) -> dict[str, int]:
    """The partition count of every topic of ``names``, once the cluster metadata shows them
    all (creation completes on the controller before every broker's metadata shows the topic,
    and each metadata request may go to another broker: read counts from here, not from one
    more ``list_topics``)."""
    names = list(names)
    deadline = time.monotonic() + timeout_s
    while True:
        md = client.list_topics(timeout=timeout_s)
        missing = [
            n
            for n in names
            if n not in md.topics or md.topics[n].error is not None or not md.topics[n].partitions
        ]
        if not missing:
            return {n: len(md.topics[n].partitions) for n in names}
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s:.0f} s: {missing}")
        time.sleep(0.2)


def grow(client: AdminClient, topic: str, partitions: int, timeout_s: float = 30) -> None:
    """Adds partitions to ``topic`` up to ``partitions`` and waits until the metadata shows them."""
    future = client.create_partitions([NewPartitions(topic, partitions)])[topic]
    future.result(timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while wait_for_topics(client, [topic], timeout_s)[topic] < partitions:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: {partitions} partitions not visible in {timeout_s:.0f} s")
        time.sleep(0.2)


class TopicLayoutError(ValueError):
    """The topics do not fit together (a DLQ with fewer partitions than its input)."""


def check_partitions(client: AdminClient, config: JobConfig) -> None:
    """Raises :class:`TopicLayoutError` naming every DLQ that has fewer partitions than its
    input: a record of the input's last partitions could not be dead-lettered."""
    md = client.list_topics(timeout=30)
    problems = []
    for topics in config.feeds.values():
        if topics.input not in md.topics or topics.dlq not in md.topics:
            continue  # the access check names missing topics
        have = len(md.topics[topics.dlq].partitions)
        need = len(md.topics[topics.input].partitions)
        if have < need:
            problems.append(f"{topics.dlq} has {have} partitions, its input {topics.input} {need}")
    if problems:
        raise TopicLayoutError("; ".join(problems) + ": run `dlq topics` to grow them")


def clean_bound(max_record_bytes: int) -> int:
    """Largest clean record made from an input record of at most ``max_record_bytes``.

    A clean record is the validated object serialised again: JSON escapes collapse and never
    grow, except lowercased keywords (a few characters grow by half, e.g. "İ" to "i̇"), plus
    the lineage and normalised times, which are bounded. Without room for that, a valid
    record near the input's limit would fail the clean sink (and stall the job).
    """
    return 2 * max_record_bytes + ENVELOPE_FIXED_OVERHEAD


def ensure_project_topics(config: JobConfig, client: AdminClient) -> list[tuple[str, str, int]]:
    """Creates the seven topics of SPEC section 2 and the replay ledger (idempotent).

    Inputs get ``config.partitions``; each clean topic and DLQ its input's partition count,
    with a max.message.bytes of :func:`clean_bound` and :func:`envelope_bound` of the input's
    limit; the parking lot takes the largest DLQ limit (it holds envelopes). The DLQs and the
    parking lot keep their records for ever (``topics.dlq_retention_ms``: -1) and the ledger
    is compacted. Returns (topic, state, max bytes).
    """
    inputs = [TopicSpec(t.input, config.partitions, {}) for t in config.feeds.values()]
    states = create_topics(client, inputs)
    # What the DLQs and the parking lot hold stays until an operator decides otherwise.
    keep = {"retention.ms": str(config.dlq_retention_ms), "retention.bytes": "-1"}
    counts = wait_for_topics(client, [s.name for s in inputs])
    outputs: list[TopicSpec] = []
    for topics in config.feeds.values():
        partitions = counts[topics.input]
        input_limit = topic_max_message_bytes(client, topics.input)
        clean = str(clean_bound(input_limit))
        outputs.append(TopicSpec(topics.clean, partitions, {"max.message.bytes": clean}))
        dlq = str(envelope_bound(input_limit))
        outputs.append(TopicSpec(topics.dlq, partitions, {"max.message.bytes": dlq, **keep}))
    dlqs = [s for s in outputs if s.name in config.dlq_topics]
    parking_limit = max(int(s.config["max.message.bytes"]) for s in dlqs)
    outputs.append(
        TopicSpec(config.parking_topic, 1, {"max.message.bytes": str(parking_limit), **keep})
    )
    # One small entry per replayed record; compaction keeps the latest per DLQ position.
    outputs.append(TopicSpec(config.ledger_topic, 1, {"cleanup.policy": "compact"}))
    states.update(create_topics(client, outputs))
    # An input grown since (the way to scale out): its clean topic and DLQ grow with it, or
    # the DLQ could not take a record of the new partitions (it keeps its input's partition).
    counts = wait_for_topics(client, [s.name for s in outputs])
    for spec in outputs[: 2 * len(config.feeds)]:
        if states[spec.name] != "exists":
            continue  # created just now, with its input's count
        have = counts[spec.name]
        if have < spec.partitions:
            grow(client, spec.name, spec.partitions)
            states[spec.name] = f"grown {have}->{spec.partitions}"
    return [
        (name, states[name], topic_max_message_bytes(client, name))
        for name in [s.name for s in inputs] + [s.name for s in outputs]
    ]
