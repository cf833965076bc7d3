"""The mini-cluster's class-data archive (jobs/jvm.py): the first bounded run writes it
as its JVM exits, the next run's JVM maps Flink's classes from it, and both runs deliver every
record exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.corpus import RSS_OK
from tests.kafka_helpers import make_job_config, produce, read_all, run_job

pytestmark = pytest.mark.integration


def test_first_bounded_run_writes_the_archive_and_the_next_maps_flink_from_it(
    bootstrap: str, tmp_path: Path
) -> None:
    archives = tmp_path / "cds"
    path, _ = make_job_config(tmp_path, bootstrap, **{"flink.class_data_dir": str(archives)})
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    rss = config.feeds["rss"]

    def send(first: int) -> None:
        ids = [f"e-{i}" for i in range(first, first + 50)]
        produce(
            bootstrap,
            rss.input,
            [(i.encode(), orjson.dumps({**RSS_OK, "event_id": i}), []) for i in ids],
        )

    send(0)
    first = run_job(path)
    written = list(archives.iterdir())
    assert [p.suffix for p in written] == [".jsa"], written  # in place, no part left
    assert written[0].stat().st_size > 10_000_000
    assert "Traceback" not in first.stderr and "ERROR" not in first.stderr, first.stderr[-3000:]

    send(50)
    loads = tmp_path / "class-load.log"
    # JAVA_TOOL_OPTIONS, read by the JVM itself, is not one of the options the archive is for
    env = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={loads}"}
    run_job(path, "--starting-offsets", "committed", env=env)
    sources = [line for line in loads.read_text().splitlines() if "org.apache.flink." in line]
    mapped = [line for line in sources if "shared objects file (top)" in line]
    assert len(mapped) > 0.5 * len(sources), sources[:20]
    assert list(archives.iterdir()) == written

    clean = read_all(bootstrap, [rss.clean])
    ids = sorted(orjson.loads(m.value or b"")["event_id"] for m in clean)
    assert ids == sorted(f"e-{i}" for i in range(100)), "records lost or duplicated"
