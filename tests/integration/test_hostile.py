"""The hostile corpus (tests/hostile.py) through the real job: it never fails because of data
(restarts are switched off, so one would end the run), every record lands exactly once on its
side, and every envelope carries the exact bytes and fits in its DLQ topic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from kafkaio.admin import ensure_project_topics, topic_max_message_bytes
from settings.config import load_config
from tests.hostile import AT_LIMIT, hostile_corpus
from tests.kafka_helpers import make_job_config, read_all, run_job
from udfs.envelope import unb64

pytestmark = pytest.mark.integration


def test_hostile_corpus_through_the_job(bootstrap: str, tmp_path: Path) -> None:
    path, _ = make_job_config(
        tmp_path,
        bootstrap,
        **{"flink.conf": {"rest.bind-port": "8081-8099", "restart-strategy.type": "none"}},
    )
    config = load_config(path)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_project_topics(config, admin)
    cases = hostile_corpus()
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "message.max.bytes": 4_000_000}
    )
    sent: dict[tuple[str, int, int], tuple[str, bytes | None]] = {}
    refused: list[str] = []

    def delivered(err: KafkaError | None, msg: object, name: str) -> None:
        if err is not None:
            refused.append(f"{name}: {err.name()}")
        else:
            sent[(msg.topic(), msg.partition(), msg.offset())] = (name, msg.value())  # type: ignore[attr-defined]

    for case in cases:
        producer.produce(
            config.feeds[case.feed].input,
            key=case.key,
            value=case.value,
            headers=case.headers or None,
            on_delivery=lambda err, msg, name=case.name: delivered(err, msg, name),
        )
        producer.poll(0)
    # One byte more than the largest value the input topic takes: the broker refuses it, so
    # the "at the limit" kinds are really at the limit.
    producer.produce(
        config.feeds["rss"].input,
        key=b"k",
        value=b"a" * (AT_LIMIT + 1),
        on_delivery=lambda err, msg: delivered(err, msg, "over-the-limit"),
    )
    assert producer.flush(60) == 0
    assert refused == ["over-the-limit: MSG_SIZE_TOO_LARGE"]
    assert len(sent) == len(cases)

    run_job(path, "--parallelism", "2")  # fails the test on a non-zero exit

    by_name = {c.name: c for c in cases}
    seen: Counter[tuple[str, int, int]] = Counter()
    wrong: list[str] = []
    for feed in config.feeds.values():
        limit = topic_max_message_bytes(admin, feed.dlq)
        for side, topic in (("clean", feed.clean), ("dlq", feed.dlq)):
            for msg in read_all(bootstrap, [topic], timeout_s=120):
                body = orjson.loads(msg.value or b"")
                src = body["_source"] if side == "clean" else body["source"]
                pos = (src["topic"], src["partition"], src["offset"])
                seen[pos] += 1
                name, value = sent[pos]
                case = by_name[name]
                if side == "clean":
                    if case.expect != "clean":
                        wrong.append(f"{name}: clean, expected {case.expect}")
                    continue
                error = body["error"]
                if (error["category"], error["field"]) != (case.expect, case.field):
                    wrong.append(f"{name}: {error['category']}/{error['field']}")
                assert unb64(body["payload_b64"]) == value, f"{name}: envelope bytes differ"
                assert len(msg.value or b"") <= limit, f"{name}: envelope over {limit} bytes"
    assert not wrong, wrong
    assert set(seen) == set(sent), f"lost: {[sent[p][0] for p in set(sent) - set(seen)]}"
    assert all(n == 1 for n in seen.values()), "duplicated"
