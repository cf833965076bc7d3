"""The shipped job with its validate step swapped, to measure what the rest of it costs.

    .venv/bin/python -m bench.floor java|python [dlq_job.py options]

``java``: the batches pass through a Java map that puts every record on the clean side
unchanged (``PassThroughBatches``): the job's graph with no Python in it (Kafka source,
batcher, splitter, transactional sinks, Flink's runtime). ``python``: the batches cross into
the Python workers and back as they do in the job, and the workers only turn source frames
into sink frames (:func:`pass_through`, the job's own frame code) without validating: what
the crossing costs on top. The rest (configuration, checks, ``--bounded``, the final commit)
is the shipped ``jobs/dlq_job.py``. `python -m bench.levers floor_java floor_python shipped`
runs them side by side; neither validates anything, so neither is a job to run.
"""

from __future__ import annotations

import sys

from pyflink.datastream import DataStream, MapFunction
from pyflink.java_gateway import get_gateway

from bridge.frames import CLEAN_SIDE, batch_records, join_results, sink_frame
from jobs.dlq_job import FRAME, JAVA_PACKAGE, ValidateStep, main
from udfs.config import JobConfig


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


def in_java(feed: str, batches: DataStream, config: JobConfig) -> DataStream:
    java = getattr(get_gateway().jvm, JAVA_PACKAGE)
    return DataStream(
        batches._j_data_stream.map(java.PassThroughBatches(), FRAME.get_java_type_info())
    )


def in_python(feed: str, batches: DataStream, config: JobConfig) -> DataStream:
    return batches.map(PassThrough(), output_type=FRAME)


STEPS: dict[str, ValidateStep] = {"java": in_java, "python": in_python}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STEPS:
        sys.exit(f"usage: python -m bench.floor {{{','.join(STEPS)}}} [dlq_job.py options]")
    sys.exit(main(sys.argv[2:], validate=STEPS[sys.argv[1]]))
