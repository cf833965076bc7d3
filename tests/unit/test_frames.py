"""The Python half of the frame format against the shared test vectors (tests/vectors/
frames.json); java/src/test/.../RecordFramesTest.java holds the Java half to the same bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.floor import pass_through
from bridge.frames import CLEAN_SIDE, batch_records, decode_headers, join_results, sink_frame
from tests.frames_codec import encode_headers, encode_source
from udfs.record import SourceRecord

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "frames.json").read_text())


def _b(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


def _headers(pairs: list[list[Any]]) -> tuple[tuple[str, bytes | None], ...]:
    return tuple((name, _b(value)) for name, value in pairs)


@pytest.mark.parametrize("v", VECTORS["source_frames"], ids=lambda v: v["topic"])
def test_python_reads_the_source_frames_java_writes(v: dict[str, Any]) -> None:
    frame = bytes.fromhex(v["frame"])
    batch = len([frame]).to_bytes(4, "big") + len(frame).to_bytes(4, "big") + frame
    [(record, block)] = batch_records(batch)
    assert record._replace(headers=decode_headers(block)) == SourceRecord(
        v["topic"],
        v["partition"],
        v["offset"],
        v["timestamp"],
        _b(v["key"]),
        _b(v["value"]),
        _headers(v["headers"]),
    )
    assert encode_source(record._replace(headers=decode_headers(block))) == frame


def test_python_reads_a_batch_as_the_batcher_builds_it() -> None:
    records = list(batch_records(bytes.fromhex(VECTORS["batch"]["batch"])))
    assert [r.offset for r, _ in records] == [v["offset"] for v in VECTORS["source_frames"]]


@pytest.mark.parametrize("v", VECTORS["sink_frames"], ids=lambda v: str(v["partition"]))
def test_python_writes_the_sink_frames_java_reads(v: dict[str, Any]) -> None:
    block = encode_headers(_headers(v["headers"]))
    frame = sink_frame(_b(v["key"]), _b(v["value"]), block, v["partition"], v["timestamp"])
    assert frame.hex() == v["frame"]


def test_python_writes_the_result_batch_java_splits() -> None:
    r = VECTORS["results"]
    pairs = [(side, bytes.fromhex(f)) for side, f in zip(r["sides"], r["frames"], strict=True)]
    assert join_results(pairs).hex() == r["batch"]


def test_the_floor_pass_through_keeps_every_record_as_java_does() -> None:
    """bench.floor's Python pass-through writes the bytes PassThroughBatches.java writes, and
    every record keeps its key, value, headers and timestamp on the clean side."""
    batch = bytes.fromhex(VECTORS["batch"]["batch"])
    assert pass_through(batch).hex() == VECTORS["pass_through"]["results"]
    assert pass_through(batch) == join_results(
        [
            (CLEAN_SIDE, sink_frame(r.key, r.value, block, -1, r.timestamp))
            for r, block in batch_records(batch)
        ]
    )
