"""The SQL DDL of sql/ works with the Kafka SQL connector, and the DLQ analysis query counts
real envelopes right."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from dlq.sqlfiles import SQL_DIR, render
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.corpus import build_corpus
from tests.kafka_helpers import make_job_config, produce
from udfs.pipeline import Failed, FeedProcessor
from udfs.record import SourceRecord

pytestmark = [pytest.mark.integration, pytest.mark.flink]


def statements(sql: str) -> list[str]:
    """Splits a script into statements (a ';' ending a line ends a statement), as the SQL
    client does with a file."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def test_failures_per_hour_query_counts_the_dlq(bootstrap: str, tmp_path: Path) -> None:
    from tests.integration.hooks import flaky

    path, _ = make_job_config(tmp_path, bootstrap)
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    want: Counter[tuple[str, str, str]] = Counter()
    for feed in ("rss", "polymarket"):
        proc = FeedProcessor(
            feed,
            job_name="j",
            operator=f"validate-{feed}",
            retry=replace(load_config(None, {}).retry, backoff_ms=0),
            enrich=flaky if feed == "rss" else None,
        )
        batch = []
        for n, case in enumerate(c for c in build_corpus() if c.feed == feed):
            out = proc.process(
                SourceRecord(
                    config.feeds[feed].input, 0, n, None, case.key, case.value, tuple(case.headers)
                )
            )
            if isinstance(out, Failed):
                batch.append((out.key, out.envelope, []))
                want[(feed, str(out.category), str(case.type))] += 1
        produce(bootstrap, config.feeds[feed].dlq, batch)

    from pyflink.table import EnvironmentSettings, StreamTableEnvironment

    from jobs.dlq_job import create_env

    env, _ = create_env(config.with_overrides(parallelism=1))
    tenv = StreamTableEnvironment.create(env, EnvironmentSettings.in_batch_mode())
    tenv.get_config().set("table.local-time-zone", "UTC")
    for stmt in statements(render(SQL_DIR / "topics.sql", config)):
        tenv.execute_sql(stmt)
    query = statements(render(SQL_DIR / "dlq_failures_per_hour.sql", config))[0]
    got: Counter[tuple[str, str, str]] = Counter()
    with tenv.execute_sql(query).collect() as rows:
        for feed, hour, category, error_type, failures in rows:
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00", hour)
            got[(feed, category, error_type)] += failures
    assert got == want
    assert {c for _, c, _ in got} == {"deserialization", "validation", "processing", "transient"}
