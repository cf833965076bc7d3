"""Flink 2.2, the Kafka connector and the local broker agree on exactly-once delivery."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.kafka_helpers import ROOT, produce, read_all

pytestmark = [pytest.mark.integration, pytest.mark.flink]

# A minimal PyFlink job: the project's raw-record source, a Python map that copies key, value
# and headers, and an EXACTLY_ONCE KafkaSink; run in the embedded mini-cluster.
PASSTHROUGH = """
import sys
from pyflink.common import WatermarkStrategy
from jobs.dlq_job import FRAME, create_env, end_offsets, kafka_sink, kafka_source
from settings.config import load_config
from tests.frames_codec import decode_source, encode_sink

config = load_config().with_bootstrap_servers(sys.argv[1]).with_overrides(
    checkpoint_interval_ms=1000, parallelism=2)
env, _ = create_env(config)
stop_at = end_offsets(config, [sys.argv[2]])
src = env.from_source(kafka_source(config, sys.argv[2], "earliest", stop_at),
                      WatermarkStrategy.no_watermarks(), "source", type_info=FRAME)

def copy(frame):
    r = decode_source(frame)
    return encode_sink(r.key, r.value, r.headers)

src.map(copy, output_type=FRAME).sink_to(kafka_sink(config, sys.argv[3], sys.argv[4]))
env.execute("stack-check")
"""


def test_bounded_job_writes_each_record_exactly_once(bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    source, target = f"stack-{run}-in", f"stack-{run}-out"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.create_topics([NewTopic(source, 3, 1), NewTopic(target, 3, 1)]).values():
        fut.result()
    records = [
        (f"k{i}".encode(), f"value-{i}".encode(), [("n", str(i).encode())]) for i in range(3000)
    ]
    produce(bootstrap, source, records)

    script = tmp_path / "passthrough.py"
    script.write_text(PASSTHROUGH)
    proc = subprocess.run(
        [sys.executable, str(script), bootstrap, source, target, f"t{run}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-6000:]

    out = read_all(bootstrap, [target])
    got = sorted((m.key, m.value, tuple(m.headers)) for m in out)
    want = sorted((k, v, tuple(h)) for k, v, h in records)
    assert len(out) == len(records), "records lost or duplicated"
    assert got == want
