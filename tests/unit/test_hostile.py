"""Every hostile kind through the pure processing code: one outcome on the right side, the
exact original bytes in the envelope, an envelope that fits its DLQ topic."""

from __future__ import annotations

import orjson
import pytest

from kafkaio.admin import clean_bound, envelope_bound
from tests.corpus import shipped_processor
from tests.hostile import BROKER_LIMIT, Hostile, hostile_corpus
from udfs.envelope import MAX_STACKTRACE_BYTES, original
from udfs.pipeline import Clean
from udfs.record import SourceRecord

CASES = hostile_corpus()


def test_the_corpus_has_at_least_40_kinds_across_both_feeds() -> None:
    assert len(CASES) >= 40
    assert {c.feed for c in CASES} == {"rss", "polymarket"}
    assert {c.expect for c in CASES} >= {"clean", "deserialization", "validation"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_record_lands_on_its_side(case: Hostile) -> None:
    record = SourceRecord("in", 1, 7, 1_000, case.key, case.value, tuple(case.headers))
    out = shipped_processor(case.feed, "o").process(record)
    if case.expect == "clean":
        assert isinstance(out, Clean), getattr(out, "envelope", b"")[:300]
        assert len(out.value) <= clean_bound(BROKER_LIMIT)
        return
    assert not isinstance(out, Clean)
    envelope = orjson.loads(out.envelope)
    assert (envelope["error"]["category"], envelope["error"]["field"]) == (
        case.expect,
        case.field,
    ), envelope["error"]["message"]
    assert original(envelope) == record  # key, value, headers: the exact bytes
    assert len(envelope["error"]["stacktrace"].encode()) <= MAX_STACKTRACE_BYTES
    assert len(out.envelope) <= envelope_bound(BROKER_LIMIT)
