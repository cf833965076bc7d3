"""Every corpus case gets exactly its expected outcome from the pure processing code."""

from __future__ import annotations

import base64

import orjson
import pytest

from tests.corpus import Case, build_corpus
from tests.integration.hooks import flaky
from udfs.envelope import MAX_STACKTRACE_BYTES, SCHEMA
from udfs.pipeline import Clean, Failed, FeedProcessor, RetryConfig
from udfs.record import SourceRecord

CASES = build_corpus()


def processor(feed: str, sleeps: list[float] | None = None) -> FeedProcessor:
    return FeedProcessor(
        feed,
        job_name="marketlag-dlq",
        operator=f"validate-{feed}",
        retry=RetryConfig(max_attempts=3, backoff_ms=100, max_backoff_ms=150, retryable=()),
        enrich=flaky if feed == "rss" else None,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_outcome(case: Case) -> None:
    record = SourceRecord(
        f"{case.feed}.in", 2, 41, 1796061900123, case.key, case.value, tuple(case.headers)
    )
    outcome = processor(case.feed).process(record)
    assert outcome.key == case.key
    if case.clean is not None:
        assert isinstance(outcome, Clean), orjson.loads(outcome.envelope)["error"]
        clean = orjson.loads(outcome.value)
        assert clean.pop("_source") == {"topic": f"{case.feed}.in", "partition": 2, "offset": 41}
        assert clean == case.clean
        return
    assert isinstance(outcome, Failed), f"{case.name} came out clean"
    env = orjson.loads(outcome.envelope)
    assert env["schema"] == SCHEMA
    assert (env["error"]["category"], env["error"]["field"], env["error"]["type"]) == (
        case.category,
        case.field,
        case.type,
    ), env["error"]["message"]
    assert env["attempts"] == case.attempts
    payload = env["payload_b64"]
    assert (None if payload is None else base64.b64decode(payload)) == case.value
    assert env["source"] == {
        "topic": f"{case.feed}.in",
        "partition": 2,
        "offset": 41,
        "timestamp": 1796061900123,
        "key_b64": None if case.key is None else base64.b64encode(case.key).decode(),
        "headers": [
            [k, None if v is None else base64.b64encode(v).decode()] for k, v in case.headers
        ],
    }
    assert len(env["error"]["stacktrace"].encode()) <= MAX_STACKTRACE_BYTES
    if case.field:
        assert case.field in env["error"]["message"]


def test_corpus_breaks_every_rule_and_category() -> None:
    fields = {(c.feed, c.field) for c in CASES if c.category == "validation"}
    for f in ("event_id", "source", "title", "link", "published_at", "summary", "keywords"):
        assert ("rss", f) in fields
    for f in ("market_id", "outcome", "hour", "price", "volume"):
        assert ("polymarket", f) in fields
    assert {c.category for c in CASES if c.category} == {
        "deserialization",
        "validation",
        "processing",
        "transient",
    }


def test_backoff_doubles_up_to_the_cap() -> None:
    sleeps: list[float] = []
    case = next(c for c in CASES if c.name == "rss-flaky-gives-up")
    processor("rss", sleeps).process(SourceRecord("t", 0, 0, None, case.key, case.value))
    assert sleeps == [0.1, 0.15]  # 100 ms, then 200 ms capped at 150 ms; no sleep after the last
