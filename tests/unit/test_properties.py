"""Property tests: whatever arrives, exactly one outcome comes out, and nothing raises."""

from __future__ import annotations

import base64
import json
import string

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.frames import CLEAN_SIDE, DLQ_SIDE, FrameError, batch_records, process_batch
from tests.corpus import shipped_processor
from tests.frames_codec import (
    decode_sink,
    decode_source,
    encode_source,
    join_batch,
    split_batch,
    split_results,
)
from udfs.envelope import MAX_STACKTRACE_BYTES
from udfs.pipeline import Clean, Failed
from udfs.record import SourceRecord

PROCESSORS = {feed: shipped_processor(feed) for feed in ("rss", "polymarket")}
FEEDS = st.sampled_from(sorted(PROCESSORS))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)
FIELDS = [
    "event_id",
    "source",
    "title",
    "link",
    "published_at",
    "summary",
    "keywords",
    "market_id",
    "outcome",
    "hour",
    "price",
    "volume",
]
field_values = json_values | st.sampled_from(
    [
        "2026-11-30T18:00:00Z",
        "2026-11-30T18:05:00+01:00",
        "Mon, 30 Nov 2026 18:05:00 GMT",
        "https://example.com/a",
        "0.5",
        "1e3",
        "-0",
        "",
        " ",
        "e" * 129,
    ]
)
objects = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), field_values, max_size=10)


def check_one_outcome(feed: str, value: bytes | None) -> None:
    record = SourceRecord("in", 0, 7, None, b"k", value, (("h", b"\x00\xff"),))
    outcome = PROCESSORS[feed].process(record)
    assert isinstance(outcome, Clean | Failed)
    assert outcome.key == b"k"
    if isinstance(outcome, Failed):
        env = orjson.loads(outcome.envelope)
        payload = env["payload_b64"]
        assert (None if payload is None else base64.b64decode(payload)) == value
        assert len(env["error"]["stacktrace"].encode()) <= MAX_STACKTRACE_BYTES
        assert env["error"]["category"] in ("deserialization", "validation")
    else:
        assert orjson.loads(outcome.value)["_source"] == {
            "topic": "in",
            "partition": 0,
            "offset": 7,
        }


@given(FEEDS, st.none() | st.binary(max_size=2000))
@settings(max_examples=300)
def test_any_bytes_give_exactly_one_outcome(feed: str, value: bytes | None) -> None:
    check_one_outcome(feed, value)


@given(FEEDS, objects)
@settings(max_examples=400)
def test_any_json_object_gives_exactly_one_outcome(feed: str, obj: dict[str, object]) -> None:
    # stdlib json: it also writes integers beyond 64 bits and lone surrogates (as escapes)
    check_one_outcome(feed, json.dumps(obj).encode())


@given(FEEDS, st.integers(1, 200_000), st.sampled_from(["[", '{"a":', '[{"b":']))
@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_deep_nesting_is_a_deserialization_error(feed: str, depth: int, opener: str) -> None:
    closer = {"[": "]", '{"a":': "}", '[{"b":': "}]"}[opener]
    check_one_outcome(feed, (opener * depth + "1" + closer * depth).encode())


@given(FEEDS, st.sampled_from(string.printable), st.integers(500_000, 2_000_000))
@settings(max_examples=3, deadline=None)
def test_huge_values_give_one_bounded_outcome(feed: str, char: str, size: int) -> None:
    check_one_outcome(feed, ('{"title": "' + char * size + '"}').encode())


@given(
    st.text(max_size=30),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.none() | st.integers(0, 2**62),
    st.none() | st.binary(max_size=50),
    st.none() | st.binary(max_size=200),
    st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=10)), max_size=5),
)
def test_source_frames_round_trip(
    topic: str,
    partition: int,
    offset: int,
    timestamp: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]],
) -> None:
    record = SourceRecord(topic, partition, offset, timestamp, key, value, tuple(headers))
    assert decode_source(encode_source(record)) == record


@given(
    FEEDS,
    st.lists(
        st.tuples(
            st.none() | st.binary(max_size=20),
            st.none() | st.binary(max_size=100) | objects.map(lambda o: json.dumps(o).encode()),
            st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3),
        ),
        max_size=40,
    ),
)
def test_a_batch_gives_each_record_its_own_outcome_in_order(
    feed: str, items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]
) -> None:
    """What the job does per batch equals what it does per record: same outcomes, same order,
    DLQ frames pinned to the input's partition, clean frames keeping the input's timestamp."""
    processor = PROCESSORS[feed]
    records = [
        SourceRecord(
            "t", i % 3, 1000 + i, None if i % 4 == 0 else 1_700_000_000_000 + i, k, v, tuple(h)
        )
        for i, (k, v, h) in enumerate(items)
    ]
    batch = join_batch([encode_source(r) for r in records])
    assert [decode_source(f) for f in split_batch(batch)] == records
    results, counts = process_batch(processor, batch)
    results_list = split_results(results)
    assert len(results_list) == len(records) == counts.total()
    for record, (side, frame) in zip(records, results_list, strict=True):
        partition, timestamp, key, value, headers = decode_sink(frame)
        assert key == record.key and headers == record.headers
        outcome = processor.process(record)
        if isinstance(outcome, Clean):
            assert (side, partition, timestamp, value) == (
                CLEAN_SIDE,
                -1,
                record.timestamp,
                outcome.value,
            )
        else:
            assert (side, partition, timestamp) == (DLQ_SIDE, record.partition, None)
            got, want = orjson.loads(value or b""), orjson.loads(outcome.envelope)
            assert got.pop("failed_at") and want.pop("failed_at")
            assert got == want
    assert counts["clean"] == sum(side == CLEAN_SIDE for side, _ in results_list)


@pytest.mark.parametrize("cut", ["short", "long", "head"])
def test_a_malformed_batch_is_a_frame_error_not_a_lost_record(cut: str) -> None:
    batch = join_batch([b"abc", b"defg"])
    broken = {"short": batch[:-1], "long": batch + b"x", "head": batch[:2]}[cut]
    with pytest.raises(FrameError):
        split_batch(broken)


@pytest.mark.parametrize("cut", ["value", "trailing", "head"])
def test_a_source_frame_that_does_not_match_its_lengths_is_a_frame_error(cut: str) -> None:
    frame = encode_source(SourceRecord("t", 0, 1, 2, b"k", b"value", (("h", b"v"),)))
    broken = {"value": frame[:-12] + frame[-11:], "trailing": frame + b"\0", "head": frame[:20]}
    with pytest.raises(FrameError):
        decode_source(broken[cut])
    with pytest.raises(FrameError):
        list(batch_records(join_batch([frame, broken[cut]])))
