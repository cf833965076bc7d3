"""The systems the benchmark compares, each run as its own process so that its peak memory
can be measured: ``python -m bench.systems NAME CONFIG [OPTIONS]``.

- ``plain_loop``: one process, confluent-kafka consume -> the same ``udfs`` -> transactional
  produce, committing the consumer offsets in the transaction every checkpoint interval.
- ``kafka_io``: the same loop without processing (the broker and client ceiling).
- ``udfs_only``: the same ``udfs`` over the records held in memory (the Python ceiling).

Each prints one JSON line: records and seconds from the first record to the last commit.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from kafkaio.scan import read_to_end, watermarks
from udfs.config import FEEDS, JobConfig, load_config
from udfs.pipeline import Clean, FeedProcessor
from udfs.record import SourceRecord


def _consumer(config: JobConfig) -> tuple[Consumer, dict[tuple[str, int], int]]:
    c = Consumer(
        {
            **config.kafka.librdkafka(),
            "group.id": f"bench-{uuid.uuid4()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "log_level": "3",
        }
    )
    inputs = [config.feeds[feed].input for feed in FEEDS]
    ends = {tp: high for tp, (low, high) in watermarks(c, inputs).items() if high > low}
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
    return c, ends


def loop(config: JobConfig, process: bool) -> dict[str, Any]:
    """Consume-(validate)-produce with Kafka transactions, committing every interval."""
    consumer, ends = _consumer(config)
    producer = Producer(
        {
            **config.kafka.librdkafka(),
            "transactional.id": f"bench-{uuid.uuid4()}",
            "linger.ms": 100,  # what the job's sinks use (conf/job.yaml kafka.sink)
            "batch.size": 1_000_000,
            "log_level": "3",
        }
    )
    producer.init_transactions(30)
    processors = {
        config.feeds[f].input: FeedProcessor(f, job_name="bench", operator=f"validate-{f}")
        for f in FEEDS
    }
    targets = {config.feeds[f].input: config.feeds[f] for f in FEEDS}
    interval = config.checkpoint_interval_ms / 1000
    pending = set(ends)
    n, start, last_commit = 0, None, 0.0
    producer.begin_transaction()
    while pending:
        for msg in consumer.consume(2000, 1.0):
            if msg.error():
                continue
            topic, part, offset = msg.topic(), msg.partition(), msg.offset()
            if (topic, part) not in pending:
                continue
            if start is None:
                start = last_commit = time.monotonic()
            n += 1
            headers = msg.headers() or []
            t = targets[topic]
            if process:
                rec = SourceRecord(
                    topic, part, offset, msg.timestamp()[1], msg.key(), msg.value(), tuple(headers)
                )
                out = processors[topic].process(rec)
                if isinstance(out, Clean):
                    producer.produce(t.clean, key=out.key, value=out.value, headers=headers)
                else:
                    producer.produce(
                        t.dlq, key=out.key, value=out.envelope, headers=headers, partition=part
                    )
            else:
                producer.produce(t.clean, key=msg.key(), value=msg.value(), headers=headers)
            producer.poll(0)
            if offset + 1 >= ends[(topic, part)]:
                pending.discard((topic, part))
        if start is not None and (time.monotonic() - last_commit >= interval or not pending):
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(60)
            last_commit = time.monotonic()
            if pending:
                producer.begin_transaction()
    consumer.close()
    return {"records": n, "seconds": time.monotonic() - (start or time.monotonic())}


def udfs_only(config: JobConfig) -> dict[str, Any]:
    """The same processing over the records held in memory (reading them is not timed)."""
    batches = {
        f: list(read_to_end(config.kafka.librdkafka(), [config.feeds[f].input])) for f in FEEDS
    }
    processors = {f: FeedProcessor(f, job_name="bench", operator=f"validate-{f}") for f in FEEDS}
    n = 0
    start = time.monotonic()
    for f, msgs in batches.items():
        proc = processors[f]
        for m in msgs:
            proc.process(
                SourceRecord(
                    m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, tuple(m.headers)
                )
            )
            n += 1
    return {"records": n, "seconds": time.monotonic() - start}


def main() -> None:
    name, config_path = sys.argv[1], sys.argv[2]
    config = load_config(config_path)
    if name == "plain_loop":
        result = loop(config, process=True)
    elif name == "kafka_io":
        result = loop(config, process=False)
    elif name == "udfs_only":
        result = udfs_only(config)
    else:
        raise SystemExit(f"unknown system {name}")
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
