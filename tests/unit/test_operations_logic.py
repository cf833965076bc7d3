"""The pure parts of the dlq tools: fingerprints, selections, replay headers, figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from dlq.plot import bucket, step_label
from dlq.replay import Selection, replay_headers
from dlq.stats import TopicStats, analyze, fingerprint, normalise_message
from kafkaio.scan import DlqRecord, Message, Unreadable
from kafkaio.scan import dlq_record as dlq_record_of
from udfs.envelope import build_envelope
from udfs.errors import Category, ValidationError
from udfs.record import SourceRecord


def dlq_record(
    message: str, field: str | None, offset: int, failed: str, ts: int = 0, partition: int = 0
) -> DlqRecord:
    env = build_envelope(
        SourceRecord("rss.events", partition, offset, None, b"k", b"{}"),
        ValidationError(field, message),
        Category.VALIDATION,
        attempts=1,
        job_name="j",
        operator="o",
        failed_at=datetime.fromisoformat(failed),
    )
    msg = Message("dlq.rss.events", partition, offset, ts, b"k", orjson.dumps(env), ())
    rec = dlq_record_of(msg)
    assert isinstance(rec, DlqRecord)
    return rec


def test_fingerprint_ignores_values_but_not_the_kind_of_failure() -> None:
    a = "field 'price' must be between 0 and 1, got 1.5"
    b = "field 'price' must be between 0 and 1, got -0.1"
    assert normalise_message(a) == normalise_message(b)
    err = {"type": "ValidationError", "field": "price"}
    assert fingerprint({**err, "message": a}) == fingerprint({**err, "message": b})
    assert fingerprint({**err, "message": a}) != fingerprint(
        {**err, "message": a, "field": "volume"}
    )
    assert normalise_message("market 0xabc12 id 'x' is \"y\"") == "market <id> id <v> is <v>"
    assert fingerprint({"type": "KeyError", "message": a, "field": "price"}) != fingerprint(
        {**err, "message": a}
    )


def test_analyze_groups_and_orders_by_count() -> None:
    recs = [
        dlq_record("field 'price' is not finite: inf", "price", i, f"2026-11-30T1{i}:00:00+00:00")
        for i in range(3)
    ]
    recs.append(
        dlq_record(
            "field 'hour' is not on an hour boundary", "hour", 9, "2026-11-30T09:30:00+00:00"
        )
    )
    groups = analyze(recs)
    assert [(g.field_name, g.count) for g in groups] == [("price", 3), ("hour", 1)]
    assert groups[0].first_seen == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert groups[0].last_seen == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert groups[0].samples == [("dlq.rss.events", 0, i) for i in range(3)]


def test_selection_combines_criteria() -> None:
    rec = dlq_record("m", "title", 5, "2026-11-30T10:00:00+00:00", partition=1)
    assert Selection().matches(rec)
    assert Selection(category="validation", error_type="ValidationError").matches(rec)
    assert not Selection(category="transient").matches(rec)
    assert Selection(since=datetime(2026, 11, 30, 10, tzinfo=UTC)).matches(rec)
    assert not Selection(until=datetime(2026, 11, 30, 10, tzinfo=UTC)).matches(rec)
    assert Selection(offsets={1: (5, 5)}).matches(rec)
    assert not Selection(offsets={0: (0, 99)}).matches(rec)
    assert Selection(fingerprint=fingerprint(rec.envelope.error)).matches(rec)


def test_replay_headers_replace_the_count_and_keep_the_rest() -> None:
    headers = (("a", b"1"), ("dlq.replay.count", b"1"), ("a", None))
    assert replay_headers(headers, 2) == [("a", b"1"), ("a", None), ("dlq.replay.count", b"2")]


def test_growth_counts_only_the_window() -> None:
    stats = TopicStats("t", window_s=60)
    now = 1_000_000_000
    for ts in (now - 120_000, now - 30_000, now - 1_000):
        stats.add(dlq_record("m", None, 0, "2026-11-30T10:00:00+00:00", ts=ts))
    assert stats.count == 3
    assert stats.growth_per_min(now) == 2.0


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"schema": "other/v9"}, "not a marketlag.dlq/v1 envelope"),
        ({"source": None}, "source.topic"),
        ({"source": {"topic": "t", "partition": "0"}}, "source.partition"),
        ({"error": {"category": "validation", "type": "X"}}, "error.message"),
        ({"payload_b64": 42}, "payload_b64"),
        ({"payload_ref": {"uri": "file:///x"}}, "payload_ref"),
    ],
)
def test_one_decision_on_what_is_not_an_envelope(change: dict[str, object], why: str) -> None:
    """Every reader gets the same verdict, an :class:`Unreadable` (which replay's selection
    cannot take: its type says so): stats counts it, analyze leaves it out."""
    good = orjson.loads(dlq_record("m", None, 0, "2026-11-30T18:00:00+00:00").message.value or b"")
    msg = Message("dlq.rss.events", 0, 1, 0, b"k", orjson.dumps({**good, **change}), ())
    rec = dlq_record_of(msg)
    assert isinstance(rec, Unreadable) and why in rec.problem
    stats = TopicStats("dlq.rss.events")
    stats.add(rec)
    assert (stats.count, stats.not_envelopes, dict(stats.by_category)) == (1, 1, {})
    assert analyze([rec]) == []


@pytest.mark.parametrize(
    ("span", "bins_at_most", "label"),
    [
        (timedelta(milliseconds=400), 60, "10 ms"),
        (timedelta(0), 1, "1 ms"),
        (timedelta(hours=1), 60, "1 min"),
        (timedelta(days=20), 60, "1 day"),
    ],
)
def test_plot_bins_follow_the_span(span: timedelta, bins_at_most: int, label: str) -> None:
    step = bucket(span)
    assert span / step <= bins_at_most and step_label(step) == label
