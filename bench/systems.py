"""The systems the benchmark compares, each run as its own process so that its peak memory
can be measured: ``python -m bench.systems NAME CONFIG [OPTIONS]``.

- ``plain_loop``: one process, confluent-kafka consume -> the job's own batch path in ``udfs``
  -> transactional produce of the same bytes to the same partitions, committing the consumer
  offsets in the transaction every checkpoint interval (:func:`loop`).
- ``plain_loop_part I N``: the I-th of N such processes, each with every N-th input partition
  (the benchmark's ``plain_loop_xN`` runs one per core, side by side).
- ``plain_loop_live``: the loop unbounded (every input partition, polled at most 100 ms like
  the job's batches, commits every checkpoint interval), until SIGTERM; for the latency
  figure.
- ``kafka_io``: the same loop without processing (the broker and client ceiling).
- ``udfs_only``: the same ``udfs`` over the records held in memory (the Python ceiling).

Each prints one JSON line: records and seconds from the first record to the last commit.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kafkaio.producers import transactional_producer
from kafkaio.scan import read_to_end, watermarks
from settings.config import FEEDS, JobConfig, load_config
from udfs.pipeline import Clean, FeedProcessor
from udfs.record import SourceRecord


def _consumer(
    config: JobConfig, part: int, parts: int, live: bool = False
) -> tuple[Consumer, dict[tuple[str, int], int]]:
    """A consumer of this process's share of the input partitions (every ``parts``-th one,
    from ``part``), read_committed from the beginning, in the run's consumer group. The
    partitions to read with their end offsets; ``live``: all of them, with no end."""
    c = Consumer(
        {
            **config.kafka.librdkafka(),
            "group.id": config.group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            "log_level": "3",
        }
    )
    inputs = [config.feeds[feed].input for feed in FEEDS]
    marks = sorted(watermarks(c, inputs).items())
    ends = {
        tp: high
        for i, (tp, (low, high)) in enumerate(marks)
        if i % parts == part and (high > low or live)
    }
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
    return c, ends


def loop(
    config: JobConfig, process: bool, part: int = 0, parts: int = 1, live: bool = False
) -> dict[str, Any]:
    """What a user would write instead of the job: consume, validate on the job's own batch
    path (``FeedProcessor.outcomes`` over each consumed batch, one clock read per batch), and
    produce the same bytes to the same partitions as the job's sinks (Java's murmur2
    partitioner for clean records, the input's partition for envelopes, the input's
    timestamps), in Kafka transactions that carry the consumer offsets, committed every
    checkpoint interval. ``part`` of ``parts``: one of several such processes. ``live``: no
    end, until SIGTERM, each poll waiting at most 100 ms (the job's batch delay)."""
    consumer, ends = _consumer(config, part, parts, live)
    stop = threading.Event()
    if live:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = transactional_producer(
        {
            **config.kafka.librdkafka(),
            "transactional.id": f"{config.kafka.transactional_id_prefix}-loop-{part}",
            "partitioner": "murmur2_random",
            **config.sink_properties,  # what the job's sinks use (linger, batch size)
            "log_level": "3",
        }
    )
    processors = {
        config.feeds[f].input: FeedProcessor(
            f, job_name="bench", operator=f"validate-{f}", retry=config.retry
        )
        for f in FEEDS
    }
    targets = {config.feeds[f].input: config.feeds[f] for f in FEEDS}
    interval = config.checkpoint_interval_ms / 1000
    pending = set(ends)
    wait = 0.1 if live else 1.0
    n, start, last_commit = 0, None, 0.0

    def send(topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
        while True:
            try:
                producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)

    producer.begin_transaction()
    while pending and not stop.is_set():
        batch: dict[str, list[tuple[SourceRecord, None]]] = {}
        for msg in consumer.consume(2000, wait):
            if msg.error():
                continue
            topic, part_, offset = msg.topic(), msg.partition(), msg.offset()
            if (topic, part_) not in pending:
                continue
            if start is None:
                start = last_commit = time.monotonic()
            n += 1
            ts_type, ts = msg.timestamp()
            rec = SourceRecord(
                topic,
                part_,
                offset,
                ts if ts_type else None,
                msg.key(),
                msg.value(),
                tuple(msg.headers() or ()),
            )
            batch.setdefault(topic, []).append((rec, None))
            if not live and offset + 1 >= ends[(topic, part_)]:
                pending.discard((topic, part_))
        for topic, records in batch.items():
            t = targets[topic]
            if not process:
                for rec, _ in records:
                    send(t.clean, rec.value, rec.key, headers=list(rec.headers))
                producer.poll(0)
                continue
            for rec, out in processors[topic].outcomes(records):
                if isinstance(out, Clean):
                    send(
                        t.clean,
                        out.value,
                        out.key,
                        headers=list(rec.headers),
                        timestamp=rec.timestamp or 0,
                    )
                else:
                    send(
                        t.dlq,
                        out.envelope,
                        out.key,
                        headers=list(rec.headers),
                        partition=rec.partition,
                    )
            producer.poll(0)
        done = not pending or stop.is_set()
        if start is not None and (time.monotonic() - last_commit >= interval or done):
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
            )
            producer.commit_transaction(60)
            last_commit = time.monotonic()
            if not done:
                producer.begin_transaction()
    consumer.close()
    return {"records": n, "seconds": time.monotonic() - (start or time.monotonic())}


def udfs_only(config: JobConfig) -> dict[str, Any]:
    """The same processing over the records held in memory (reading them is not timed), a batch
    of the job's size at a time through ``FeedProcessor.outcomes``, as the job and the loop."""
    batches = {
        f: list(read_to_end(config.kafka.librdkafka(), [config.feeds[f].input])) for f in FEEDS
    }
    processors = {
        f: FeedProcessor(f, job_name="bench", operator=f"validate-{f}", retry=config.retry)
        for f in FEEDS
    }
    n = 0
    start = time.monotonic()
    size = config.batch.max_records
    for f, msgs in batches.items():  # in the job's batches, through its batch path
        for i in range(0, len(msgs), size):
            records = (
                (
                    SourceRecord(
                        m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, m.headers
                    ),
                    None,
                )
                for m in msgs[i : i + size]
            )
            n += sum(1 for _ in processors[f].outcomes(records))
    return {"records": n, "seconds": time.monotonic() - start}


def main() -> None:
    name, config_path = sys.argv[1], sys.argv[2]
    config = load_config(config_path)
    if name == "plain_loop":
        result = loop(config, process=True)
    elif name == "plain_loop_part":  # plain_loop_part I N: the I-th of N loop processes
        result = loop(config, process=True, part=int(sys.argv[3]), parts=int(sys.argv[4]))
    elif name == "plain_loop_live":
        result = loop(config, process=True, live=True)
    elif name == "kafka_io":
        result = loop(config, process=False)
    elif name == "udfs_only":
        result = udfs_only(config)
    else:
        raise SystemExit(f"unknown system {name}")
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
