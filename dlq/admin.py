"""Broker administration: wait for a broker, create the project's topics.

The DLQ topics are sized from their input topics: an envelope carries the payload twice
(base64, and as JSON-escaped text when it is UTF-8), so it can be several times larger than
the record it wraps. :func:`envelope_bound` is that worst case.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from udfs.config import JobConfig

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


def admin_client(conf: Mapping[str, str]) -> AdminClient:
    return AdminClient(dict(conf))


def wait_for_broker(conf: Mapping[str, str], timeout_s: float) -> None:
    """Returns once the cluster answers a metadata request; raises TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    # Quiet: "connection refused" is the expected answer until the broker is up.
    client = admin_client({**conf, "socket.connection.setup.timeout.ms": "2000", "log_level": "0"})
    while time.monotonic() < deadline:
        try:
            md = client.list_topics(timeout=2)
            if md.brokers:
                return
        except KafkaException as e:
            last = e
        time.sleep(0.5)
    raise TimeoutError(
        f"no Kafka broker answered at {conf.get('bootstrap.servers')} "
        f"within {timeout_s:.0f} s ({last})"
    )


def topic_max_message_bytes(client: AdminClient, topic: str, timeout_s: float = 30) -> int:
    """The effective max.message.bytes of a topic (retried while a new topic propagates)."""
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
    entry = configs.get("max.message.bytes")
    return (
        int(entry.value) if entry is not None and entry.value else (KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    )


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


def wait_for_topics(client: AdminClient, names: list[str], timeout_s: float = 30) -> None:
    """Returns once every topic is in the cluster metadata with its partitions (creation
    completes on the controller before every broker's metadata shows the topic)."""
    deadline = time.monotonic() + timeout_s
    while True:
        md = client.list_topics(timeout=timeout_s)
        missing = [
            n
            for n in names
            if n not in md.topics or md.topics[n].error is not None or not md.topics[n].partitions
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout_s:.0f} s: {missing}")
        time.sleep(0.2)


def ensure_project_topics(config: JobConfig, client: AdminClient) -> list[tuple[str, str, int]]:
    """Creates the seven topics of SPEC section 2 and the replay ledger (idempotent).

    Inputs and clean topics get ``config.partitions``; each DLQ gets its input's partition
    count and a max.message.bytes of :func:`envelope_bound` of the input's limit; the parking
    lot takes the largest DLQ limit (it holds envelopes). Returns (topic, state, max bytes).
    """
    inputs = [TopicSpec(t.input, config.partitions, {}) for t in config.feeds.values()]
    inputs += [TopicSpec(t.clean, config.partitions, {}) for t in config.feeds.values()]
    states = create_topics(client, inputs)
    md = client.list_topics(timeout=30)
    dlqs: list[TopicSpec] = []
    for topics in config.feeds.values():
        partitions = len(md.topics[topics.input].partitions)
        limit = envelope_bound(topic_max_message_bytes(client, topics.input))
        dlqs.append(TopicSpec(topics.dlq, partitions, {"max.message.bytes": str(limit)}))
    parking_limit = max(int(s.config["max.message.bytes"]) for s in dlqs)
    dlqs.append(TopicSpec(config.parking_topic, 1, {"max.message.bytes": str(parking_limit)}))
    # One small entry per replayed record; compaction keeps the latest per DLQ position.
    dlqs.append(TopicSpec(config.ledger_topic, 1, {"cleanup.policy": "compact"}))
    states.update(create_topics(client, dlqs))
    return [
        (name, states[name], topic_max_message_bytes(client, name))
        for name in [s.name for s in inputs] + [s.name for s in dlqs]
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m dlq.admin wait`` for scripts that run before the CLI is on PATH."""
    from dlq.cli import main as cli_main

    return cli_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
