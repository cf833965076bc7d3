"""The spool's format and its durability on a local file system (no broker)."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.spool import (
    ORPHAN_AGE_S,
    LocalSpool,
    SpooledRecord,
    SpoolError,
    decode_segment,
    encode_segment,
    summarise,
)
from kafkaio.scan import Sought, windows

maybe_bytes = st.one_of(st.none(), st.binary(max_size=300))
records = st.builds(
    SpooledRecord,
    kind=st.sampled_from(["record", "envelope"]),
    topic=st.text(min_size=1, max_size=20),
    dlq_topic=st.text(min_size=1, max_size=20),
    key=maybe_bytes,
    value=maybe_bytes,
    headers=st.lists(st.tuples(st.text(max_size=10), maybe_bytes), max_size=4).map(tuple),
    timestamp=st.one_of(st.none(), st.integers(0, 2**62)),
    possibly_persisted=st.booleans(),
    reason=st.text(max_size=50),
)


def _same(a: SpooledRecord, b: SpooledRecord) -> bool:
    return (a.id, a.kind, a.topic, a.key, a.value, a.headers, a.timestamp) == (
        b.id,
        b.kind,
        b.topic,
        b.key,
        b.value,
        b.headers,
        b.timestamp,
    ) and a.possibly_persisted == b.possibly_persisted


@given(st.lists(records, max_size=8))
def test_a_segment_gives_back_every_record_exactly(recs: list[SpooledRecord]) -> None:
    out = decode_segment(encode_segment(recs))
    assert out.problems == []
    assert len(out.records) == len(recs)
    assert all(_same(a, b) for a, b in zip(recs, out.records, strict=True))


@given(st.lists(records, min_size=1, max_size=5), st.data())
def test_a_torn_last_record_is_reported_and_every_complete_one_survives(
    recs: list[SpooledRecord], data: st.DataObject
) -> None:
    whole = encode_segment(recs)
    last = len(encode_segment(recs[-1:]))
    cut = data.draw(st.integers(len(whole) - last + 1, len(whole) - 1), label="cut at")
    out = decode_segment(whole[:cut], "seg")
    assert [r.id for r in out.records] == [r.id for r in recs[:-1]]
    assert len(out.problems) == 1 and "torn record" in out.problems[0]


def test_a_damaged_record_is_skipped_and_the_ones_after_it_are_read() -> None:
    recs = [SpooledRecord("record", "t", "d", b"k", bytes([i]) * 20) for i in range(3)]
    data = bytearray(encode_segment(recs))
    first = len(encode_segment(recs[:1]))
    data[first + 20] ^= 0xFF  # inside the second record's body
    out = decode_segment(bytes(data), "seg")
    assert [r.value for r in out.records] == [recs[0].value, recs[2].value]
    assert len(out.problems) == 1 and "checksum" in out.problems[0]


def test_append_is_on_disk_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment and its directory entry are fsynced before append returns."""
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    spool = LocalSpool(tmp_path / "spool")
    rec = SpooledRecord("record", "rss.events", "dlq.rss.events", b"k", b"v")
    name = spool.append([rec])
    opened = str(tmp_path / "spool" / name.removesuffix(".spool")) + ".spool.open"
    assert opened in synced, f"the segment's data was not fsynced as {opened}: {synced}"
    assert synced[-1] == str(tmp_path / "spool"), "the directory entry was not fsynced last"
    assert spool.segments() == [name]
    with spool.claim_segment(name) as data:
        assert data is not None
        assert [r.id for r in decode_segment(data).records] == [rec.id]


def test_an_unwritable_spool_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot be created"):
        LocalSpool(blocker / "spool").append([SpooledRecord("record", "t", "d", None, b"v")])


def test_a_segment_left_open_by_a_dead_writer_is_drained_once_it_is_old(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path)
    rec = SpooledRecord("record", "t", "d", b"k", b"v")
    data = encode_segment([rec, rec])
    orphan = tmp_path / "00000000000000000001-dead.spool.open"
    orphan.write_bytes(data[:-3])  # the writer died in the middle of its second record
    assert spool.segments() == [], "a fresh .open segment may still be being written"
    old = orphan.stat().st_mtime - ORPHAN_AGE_S - 1
    os.utime(orphan, (old, old))
    assert spool.segments() == [orphan.name]
    summary = summarise(spool)
    assert (summary.records, len(summary.problems)) == (1, 1)


@given(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)), min_size=1, max_size=30))
def test_lookup_windows_cover_each_record_once_and_do_not_overlap(
    spans: list[tuple[int, int]],
) -> None:
    """A possibly persisted record is looked for between its timestamp and ``late_ms`` after
    its producer gave up: each record in exactly one window that covers that span, the
    windows apart and in time order."""
    late = 1000
    sought = [
        Sought(str(i), "t", None, b"v", (), ts, datetime.fromtimestamp((ts + wait) / 1000, UTC))
        for i, (ts, wait) in enumerate(spans)
    ]
    latest = {r.id: ts + wait for r, (ts, wait) in zip(sought, spans, strict=True)}
    found = list(windows(sought, late))
    assert sorted(r.id for _, _, group in found for r in group) == sorted(r.id for r in sought)
    for since, until, group in found:
        for r in group:
            assert since <= r.timestamp and latest[r.id] + late <= until
    for (_, until, _), (since, _, _) in itertools.pairwise(found):
        assert until < since
