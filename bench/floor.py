"""The shipped job with its validate step swapped, to measure what the rest of it costs.

    .venv/bin/python -m bench.floor java|python [dlq_job.py options]

``java``: the batches pass through a Java map that puts every record on the clean side
unchanged (``PassThroughBatches``, in the benchmark's own jar): the job's graph with no Python
in it (Kafka source, batcher, splitter, transactional sinks, Flink's runtime). ``python``: the
batches cross into the Python workers and back as they do in the job, and the workers only
turn source frames into sink frames (:func:`pass_through`, the job's own frame code) without
validating: what the crossing costs on top. The rest is the shipped ``jobs/dlq_job.py``'s own
pieces: its configuration, checks, ``--bounded`` and final commit (``launched``, ``run``),
its source and batcher (``read_batches``), its splitter and sinks (``write_results``).
`python -m bench.levers floor_java floor_python shipped` runs them side by side; neither
validates anything, so neither is a job to run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from pyflink.datastream import DataStream, MapFunction
from pyflink.java_gateway import get_gateway

from bridge.frames import CLEAN_SIDE, batch_records, join_results, sink_frame
from jobs.dlq_job import FRAME, JAVA_PACKAGE, launched, read_batches, run, write_results
from settings.config import FEEDS, ROOT

# Built by `make setup` (java/src/bench): the floors' Java pieces, never in the job's jar.
BENCH_JAR = ROOT / "build" / "lib" / "bench" / "marketlag-dlq-connector-bench.jar"


def pass_through(batch: bytes) -> bytes:
    """A result batch with every record of ``batch`` on the clean side, unchanged."""
    return join_results(
        [
            (CLEAN_SIDE, sink_frame(record.key, record.value, headers, -1, record.timestamp))
            for record, headers in batch_records(batch)
        ]
    )


class PassThrough(MapFunction):
    def map(self, value: bytes) -> bytes:
        return pass_through(value)


def in_java(batches: DataStream) -> DataStream:
    java = getattr(get_gateway().jvm, JAVA_PACKAGE)
    return DataStream(
        batches._j_data_stream.map(java.PassThroughBatches(), FRAME.get_java_type_info())
    )


def in_python(batches: DataStream) -> DataStream:
    return batches.map(PassThrough(), output_type=FRAME)


STEPS: dict[str, Callable[[DataStream], DataStream]] = {"java": in_java, "python": in_python}


def main(step: str, argv: list[str]) -> int:
    launch = launched(argv)
    launch.env.add_jars(BENCH_JAR.as_uri())
    for feed in FEEDS:
        batches = read_batches(launch.env, launch.config, feed, launch.offsets, launch.stop_at)
        results = STEPS[step](batches).name(f"validate-{feed}").uid(f"validate-{feed}")
        write_results(launch.config, feed, results)
    run(launch)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: python -m bench.floor {{{','.join(STEPS)}}} [dlq_job.py options]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
