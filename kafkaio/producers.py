"""Producer helpers shared by every writer of the project: a transactional producer ready to
use, and a produce that waits for room in the local queue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Producer


def transactional_producer(conf: Mapping[str, Any], timeout_s: float = 60) -> Producer:
    """A producer with ``conf`` (which names a ``transactional.id``), its transactions
    initialised: this fences an earlier producer of the id and aborts its open transaction.

    A metadata request first: librdkafka looks for a broker to get the producer id from as
    soon as ``init_transactions`` is called, and without a connection up yet it waits a 500 ms
    timer before looking again (much of a short run).
    """
    producer = Producer(dict(conf))
    producer.list_topics(timeout=timeout_s)
    producer.init_transactions(timeout_s)
    return producer


def produce_waiting(producer: Producer, topic: str, wait_s: float, **kwargs: Any) -> None:
    """``producer.produce(topic, **kwargs)``, serving delivery reports for up to ``wait_s`` at
    a time while the local queue is full. A producer that reports only failures gets no call
    for a success, so a poll waits its whole timeout: keep ``wait_s`` short there."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(wait_s)
