"""``dlq monitor``: the figures of ``dlq stats`` as Prometheus metrics, kept current.

A follower thread keeps one read_committed consumer on the DLQ topics and adds every new
record to running :class:`~dlq.stats.TopicStats` (no rescans); each refresh also reads the
replay ledger, the job's consumer lag on the input topics and the ingest producers' spool. A
scrape returns the latest figures without touching Kafka.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dlq.replay import load_ledger
from dlq.stats import TopicStats
from ingest.spool import SpoolError, SpoolSummary, open_spool, summarise
from kafkaio.scan import dlq_record, message_of, watermarks
from settings.config import JobConfig


class DlqFollower(threading.Thread):
    """Reads the DLQ topics continuously and keeps their figures up to date."""

    def __init__(self, config: JobConfig, window_s: float, refresh_s: float) -> None:
        super().__init__(daemon=True, name="dlq-follower")
        self.config = config
        self.conf = config.kafka.librdkafka()
        self.refresh_s = refresh_s
        self.lock = threading.Lock()
        self.stats = {t: TopicStats(t, window_s=window_s) for t in config.dlq_topics}
        self.replayed: dict[str, int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.spool: SpoolSummary | None = None
        self.healthy = False
        self.stopped = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            {
                **self.conf,
                "group.id": "marketlag-dlq-monitor",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": "3",
            }
        )
        assigned = False
        next_refresh = 0.0
        try:
            while not self.stopped.is_set():
                try:
                    if not assigned:
                        consumer.assign(self._partitions(consumer))
                        assigned = True
                    for msg in consumer.consume(1000, 0.5):
                        if msg.error() is not None:
                            continue
                        self._add(msg)
                    if time.monotonic() >= next_refresh:
                        self._refresh(consumer)
                        next_refresh = time.monotonic() + self.refresh_s
                        self.healthy = True
                except KafkaException:
                    self.healthy = False
                    time.sleep(1)
        finally:
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[TopicPartition]:
        md = consumer.list_topics(timeout=15)
        return [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in self.config.dlq_topics
            if t in md.topics
            for p in md.topics[t].partitions
        ]

    def _add(self, msg: Any) -> None:
        rec = dlq_record(message_of(msg))
        with self.lock:
            self.stats[rec.message.topic].add(rec)

    def _refresh(self, consumer: Consumer) -> None:
        replayed = {
            t: len(load_ledger(self.conf, self.config.ledger_topic, t))
            for t in self.config.dlq_topics
        }
        lag = {}
        lag_probe = Consumer(
            {
                **self.conf,
                "group.id": self.config.group_id,
                "enable.auto.commit": False,
                "log_level": "3",
            }
        )
        try:
            present = lag_probe.list_topics(timeout=15).topics
            inputs = [t.input for t in self.config.feeds.values() if t.input in present]
            marks = watermarks(lag_probe, inputs)
            parts = [TopicPartition(topic, p) for topic, p in marks]
            for tp in lag_probe.committed(parts, timeout=15):
                low, high = marks[(tp.topic, tp.partition)]
                position = tp.offset if tp.offset >= 0 else low
                lag[(tp.topic, tp.partition)] = max(0, high - position)
        finally:
            lag_probe.close()
        try:
            spool: SpoolSummary | None = summarise(open_spool(self.config.ingest.spool))
        except SpoolError:
            spool = None
        with self.lock:
            self.replayed, self.lag, self.spool = replayed, lag, spool


class DlqCollector(Collector):
    """Turns the follower's figures into Prometheus metric families at scrape time."""

    def __init__(self, follower: DlqFollower) -> None:
        self.follower = follower

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self.follower
        now_ms = int(time.time() * 1000)
        records = GaugeMetricFamily(
            "marketlag_dlq_records", "Records in the DLQ topic (read_committed)", labels=["topic"]
        )
        by_cat = GaugeMetricFamily(
            "marketlag_dlq_records_by_category",
            "DLQ records per error category",
            labels=["topic", "category"],
        )
        by_type = GaugeMetricFamily(
            "marketlag_dlq_records_by_type", "DLQ records per error type", labels=["topic", "type"]
        )
        growth = GaugeMetricFamily(
            "marketlag_dlq_growth_per_minute",
            "Records written to the DLQ per minute over the window",
            labels=["topic"],
        )
        oldest = GaugeMetricFamily(
            "marketlag_dlq_oldest_failure_timestamp_seconds",
            "failed_at of the oldest DLQ record",
            labels=["topic"],
        )
        newest = GaugeMetricFamily(
            "marketlag_dlq_newest_failure_timestamp_seconds",
            "failed_at of the newest DLQ record",
            labels=["topic"],
        )
        replayed = GaugeMetricFamily(
            "marketlag_dlq_replayed_records",
            "DLQ records handled by dlq replay (ledger)",
            labels=["topic"],
        )
        lag = GaugeMetricFamily(
            "marketlag_input_consumer_lag",
            "Records of the input not yet committed by the job's group",
            labels=["topic", "partition"],
        )
        spooled = GaugeMetricFamily(
            "marketlag_spool_records",
            "Records the ingest producers spooled (reached neither Kafka topic nor DLQ)",
            labels=["location"],
        )
        spooled_twice = GaugeMetricFamily(
            "marketlag_spool_possibly_persisted_records",
            "Spooled records that may be in their topic already (a drain may duplicate them)",
            labels=["location"],
        )
        spool_oldest = GaugeMetricFamily(
            "marketlag_spool_oldest_record_timestamp_seconds",
            "When the oldest spooled record was spooled",
            labels=["location"],
        )
        up = GaugeMetricFamily(
            "marketlag_dlq_monitor_kafka_up", "1 when the monitor's last refresh reached Kafka"
        )
        with f.lock:
            for topic, s in f.stats.items():
                records.add_metric([topic], s.count)
                for cat, n in sorted(s.by_category.items()):
                    by_cat.add_metric([topic, cat], n)
                for typ, n in sorted(s.by_type.items()):
                    by_type.add_metric([topic, typ], n)
                growth.add_metric([topic], s.growth_per_min(now_ms))
                if s.oldest is not None and s.newest is not None:
                    oldest.add_metric([topic], s.oldest.timestamp())
                    newest.add_metric([topic], s.newest.timestamp())
                replayed.add_metric([topic], f.replayed.get(topic, 0))
            for (topic, partition), n in sorted(f.lag.items()):
                lag.add_metric([topic, str(partition)], n)
            if f.spool is not None:
                spooled.add_metric([f.spool.location], f.spool.records)
                spooled_twice.add_metric([f.spool.location], f.spool.possibly_persisted)
                if f.spool.oldest is not None:
                    oldest_at = datetime.fromisoformat(f.spool.oldest).timestamp()
                    spool_oldest.add_metric([f.spool.location], oldest_at)
        up.add_metric([], 1 if f.healthy else 0)
        yield from (records, by_cat, by_type, growth, oldest, newest, replayed, lag)
        yield from (spooled, spooled_twice, spool_oldest, up)


def serve(
    config: JobConfig, port: int, window_s: float, refresh_s: float, address: str = "0.0.0.0"
) -> None:
    """Serves /metrics on ``port`` until interrupted."""
    from prometheus_client import REGISTRY, start_http_server

    # A process started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: Ctrl-C (or `kill -INT`) would
    # not stop the monitor. It is a long-running service: restore it.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    follower = DlqFollower(config, window_s, refresh_s)
    follower.start()
    REGISTRY.register(DlqCollector(follower))
    server, thread = start_http_server(port, addr=address)
    try:
        while follower.is_alive():
            follower.join(1.0)
    finally:
        follower.stopped.set()
        server.shutdown()
        thread.join(5)
