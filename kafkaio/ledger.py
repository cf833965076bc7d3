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

from collections.abc import Mapping

from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient

from kafkaio.scan import read_to_end

SPOOL_PREFIX = b"spool:"


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
    for msg in read_to_end(conf, [ledger_topic]):
        if msg.key is None or not msg.key.startswith(prefix):
            continue
        if msg.value is None:
            done.discard(msg.key)
        else:
            done.add(msg.key)
    return done
