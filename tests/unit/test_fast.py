"""The fast path of the rules (udfs/fast.py) against the full rules (udfs/records.py), side by
side: whatever the fast path accepts, the full rules accept with the same clean bytes, and the
job's outcomes (clean bytes, envelopes, categories, fields, messages) are the same with the fast
path as without it. Over the corpus, the hostile corpus, generated feeds, and property-generated
input: any bytes, any JSON, and near misses of good records field by field."""

from __future__ import annotations

import json
import random
import string
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.sample import generate
from tests.corpus import PM_OK, RSS_OK, SHIPPED_RETRY, build_corpus
from tests.hostile import hostile_corpus
from udfs.fast import FAST, _published
from udfs.pipeline import FeedProcessor
from udfs.record import SourceRecord
from udfs.records import EPOCH, VALIDATORS, parse_object, parse_published_at, to_utc

NOW = datetime.now(UTC)  # the sample generator writes times around now
LINEAGE = {"topic": "in", "partition": 1, "offset": 7}


def _processor(feed: str, fast: bool) -> FeedProcessor:
    p = FeedProcessor(
        feed, job_name="j", operator=f"validate-{feed}", retry=SHIPPED_RETRY, clock=lambda: NOW
    )
    if not fast:
        p.fast = lambda value, lineage, now: None
    return p


WITH = {f: _processor(f, True) for f in FAST}
WITHOUT = {f: _processor(f, False) for f in FAST}


def agree(feed: str, value: bytes | None) -> bool:
    """Asserts that the fast path accepts only what the full rules accept, with the same clean
    record, and that the job's outcome is the same either way; whether it took the fast path."""
    fast = FAST[feed](value, LINEAGE, NOW) if value else None
    if fast is not None:
        full = VALIDATORS[feed](parse_object(value), LINEAGE, NOW)  # raises if it disagrees
        assert orjson.dumps(fast) == orjson.dumps(full), value
    record = SourceRecord("in", 1, 7, 1_796_000_000_000, b"k", value, (("h", b"\x00"),))
    assert WITH[feed].process(record) == WITHOUT[feed].process(record), value
    return fast is not None


def test_the_corpora_have_the_same_outcomes_and_every_good_record_takes_the_fast_path() -> None:
    rules = ("deserialization", "validation")  # what the rules refuse, not the enrichment
    corpus = [(c.feed, c.value, str(c.category) not in rules) for c in build_corpus(NOW)]
    hostile = [(h.feed, h.value, h.expect not in rules) for h in hostile_corpus()]
    fast = 0
    for feed, value, valid in corpus + hostile:
        took = agree(feed, value)
        fast += took
        assert valid or not took, value  # a record the rules refuse never takes the fast path
    assert fast > 10


@pytest.mark.parametrize("feed", sorted(FAST))
def test_generated_feeds_have_the_same_outcomes(feed: str) -> None:
    """The sample generator's records (5% bad, every kind): most good ones take the fast path."""
    took = [agree(feed, value) for _, value, _ in generate(feed, 3000, 0.05, seed=11)]
    assert sum(took) > 0.8 * len(took)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _times() -> st.SearchStrategy[str]:
    """ISO-8601 and RFC 2822 times, right and nearly right."""
    iso = st.builds(
        lambda dt, sep, spec, tz: dt.replace(tzinfo=tz).isoformat(sep=sep, timespec=spec),
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)),
        st.sampled_from(["T", " "]),
        st.sampled_from(["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]),
        st.none() | st.timezones() | st.just(UTC) | st.builds(_offset, st.integers(-1439, 1439)),
    ).map(lambda s: s.replace("+00:00", "Z") if s.endswith("+00:00") and len(s) % 2 else s)
    return iso | _rfc_2822() | st.sampled_from(["", " ", "now", "2026-11-30", "2026-11-30T18"])


def _offset(minutes: int) -> timezone:
    return timezone(timedelta(minutes=minutes))


def _rfc_2822() -> st.SearchStrategy[str]:
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Mon,", "mon", ""]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return st.builds(
        lambda d, day, mon, year, hh, mm, ss, zone: (
            f"{d}{', ' if d and not d.endswith(',') else ' ' if d else ''}{day} {mon} {year} "
            f"{hh}:{mm}:{ss} {zone}"
        ),
        st.sampled_from(days),
        st.sampled_from(["1", "01", "09", "28", "29", "30", "31", "32", "0", "00"]),
        st.sampled_from([*months, "jan", "Foo"]),
        st.sampled_from(["2026", "1999", "0099", "0050", "1000", "9999", "99", "10000"])
        | st.integers(0, 9999).map(str),
        st.sampled_from(["00", "23", "24", "9"]),
        st.sampled_from(["00", "59", "60"]),
        st.sampled_from(["00", "59", "60", "61"]),
        st.sampled_from(["GMT", "UTC", "UT", "Z", "EST", "-0000", "+0000", "+0530", "-0800"])
        | st.sampled_from(["+", "-"]).flatmap(
            lambda sign: st.integers(0, 9999).map(lambda n: f"{sign}{n:04d}")
        ),
    )


def _urls() -> st.SearchStrategy[str]:
    hosts = st.text(string.ascii_letters + string.digits + ".-_@:[]%", min_size=0, max_size=12)
    rest = st.text(min_size=0, max_size=12) | st.text(string.printable, max_size=12)
    return st.builds(
        lambda scheme, host, port, r: f"{scheme}{host}{port}{r}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:/", "", "http:"]),
        hosts,
        st.sampled_from(["", ":80", ":0", ":65536", ":x", ":"]),
        st.sampled_from(["", "/", "/a b", "?q=1", "#f", "/é"]) | rest,
    )


NEAR = {
    "event_id": st.text(max_size=3) | st.sampled_from(["e" * 128, "e" * 129, "é" * 128]),
    "source": st.text(max_size=3),
    "title": st.text(max_size=5) | st.sampled_from([" \u2003x\u3000 ", "t" * 1000, "t" * 1001]),
    "link": _urls(),
    "published_at": _times(),
    "summary": st.none() | st.text(max_size=3),
    "keywords": st.lists(st.text(max_size=3) | json_scalars, max_size=4),
    "market_id": st.text(max_size=3),
    "outcome": st.text(max_size=3),
    "hour": _times(),
    "price": st.floats() | st.integers() | st.sampled_from(["0.5", "1", "-0", ".5", "1e-1", "0x1"]),
    "volume": st.floats() | st.integers() | st.sampled_from(["0", "1e400", "-1", "12.5"]),
}


@st.composite
def near_misses(draw: st.DrawFn) -> tuple[str, bytes]:
    """A good record with some fields changed (a near miss, or still good), removed, added or
    given twice; written by stdlib json, which also writes lone surrogates and huge integers."""
    feed = draw(st.sampled_from(sorted(FAST)))
    obj: dict[str, Any] = dict(RSS_OK if feed == "rss" else PM_OK)
    for name in draw(st.lists(st.sampled_from(sorted(obj)), max_size=3, unique=True)):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            del obj[name]
        elif choice == 1:
            obj[name] = draw(json_values)
        else:
            obj[name] = draw(NEAR.get(name, json_values))
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.text(max_size=6))] = draw(json_values)
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0 and obj:  # a field twice: the last one counts
        name = draw(st.sampled_from(sorted(obj)))
        text = text[:-1] + f", {json.dumps(name)}: {json.dumps(draw(json_values))}}}"
    return feed, text.encode("utf-8", "surrogatepass")


@given(near_misses())
@settings(max_examples=1000)
def test_near_misses_have_the_same_outcomes(case: tuple[str, bytes]) -> None:
    agree(*case)


@given(st.sampled_from(sorted(FAST)), st.binary(max_size=300))
@settings(max_examples=500)
def test_any_bytes_have_the_same_outcomes(feed: str, value: bytes) -> None:
    agree(feed, value)


@given(st.sampled_from(sorted(FAST)), json_values)
@settings(max_examples=500)
def test_any_json_has_the_same_outcomes(feed: str, value: Any) -> None:
    agree(feed, json.dumps(value).encode("utf-8", "surrogatepass"))


@given(_times())
@settings(max_examples=1000)
def test_a_time_the_fast_path_reads_is_the_instant_the_full_rules_read(text: str) -> None:
    fast = _published(text)
    if fast is None:
        return
    full = parse_published_at("published_at", text)
    assert fast == full and fast.utcoffset() == full.utcoffset(), text


def test_the_usual_rfc_2822_forms_take_the_fast_path() -> None:
    for text in ("Thu, 03 Dec 2026 17:09:23 GMT", "Mon, 7 Dec 2026 05:36:23 +0530"):
        assert _published(text) == parsedate_to_datetime(text)


@given(st.datetimes(timezones=st.timezones() | st.just(UTC)))
def test_epoch_milliseconds_in_integers_equal_the_timedelta_arithmetic(dt: datetime) -> None:
    try:
        utc = dt.astimezone(UTC)
    except OverflowError:
        return
    if dt.utcoffset() is None:
        return
    assert to_utc(dt)[1] == (utc - EPOCH) // timedelta(milliseconds=1)


def test_records_of_many_random_sizes_agree() -> None:
    """Large and many-field records from a seeded generator (the seed is printed)."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    for _ in range(200):
        obj = dict(RSS_OK)
        obj["keywords"] = ["k" * rng.randrange(1, 50) for _ in range(rng.randrange(0, 300))]
        obj["summary"] = "s" * rng.randrange(0, 100_000)
        assert agree("rss", json.dumps(obj).encode())
