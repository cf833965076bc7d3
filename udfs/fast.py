"""The fast path of the rules: a well-formed record's clean form, at the cost of a typed decode.

Most records are good, and :mod:`udfs.records` spends most of its time proving it in Python,
field by field. Here msgspec decodes a value straight into a typed struct (types, required
fields, lengths checked in C while it parses), and the rest of each rule runs only on what is
left to check. A fast function answers with the clean record, exactly as the full rules would
return it, or with ``None`` when it cannot be sure: then the full rules decide, and say why.
So the fast path never rejects a record and never names an error; it only accepts what the full
rules accept, byte for byte (``tests/unit/test_fast.py`` runs both side by side over the
corpus and property-generated input).

What it leaves to the full rules: anything but an object with exactly the feed's fields (an
unknown field may hold what orjson refuses and msgspec skips, such as an integer of 5,000
digits), upper-case URL schemes, hosts with ports, users or
brackets, RFC 2822 times in any but the usual form, and every bad record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec

from udfs.records import (
    DECIMAL,
    MAX_EVENT_ID,
    MAX_FUTURE,
    MAX_TITLE,
    Lineage,
    Record,
    to_utc,
)

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _Rss(msgspec.Struct, forbid_unknown_fields=True):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]
    source: NonEmpty
    title: str
    link: NonEmpty
    published_at: NonEmpty
    summary: str | None = None
    keywords: list[str] = []


class _Polymarket(msgspec.Struct, forbid_unknown_fields=True):
    market_id: NonEmpty
    outcome: NonEmpty
    hour: NonEmpty
    price: float | str
    volume: float | str = 0.0


_RSS = msgspec.json.Decoder(_Rss)
_POLYMARKET = msgspec.json.Decoder(_Polymarket)

# An absolute http(s) URL whose host is plain letters, digits, dots and dashes (no user, port
# or brackets) and whose rest is printable ASCII: every such URL passes the full URL rule.
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9][A-Za-z0-9.-]*(?:[/?#][!-~]*)?")
# The usual RFC 2822 time, "Thu, 03 Dec 2026 17:09:23 GMT" or "... +0530"; a year of four
# digits from 1000 (email.utils reads years below 100 as 19xx or 20xx); "-0000" ("no zone")
# is left to the full rules, which refuse it.
_RFC_2822 = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{1,2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([1-9]\d{3}) "
    r"(\d{2}):(\d{2}):(\d{2}) (GMT|UTC|UT|Z|[+-]\d{4})"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


def _published(text: str) -> datetime | None:
    """The instant of an ISO-8601 time with an offset or of a usual RFC 2822 one, as
    :func:`udfs.records.parse_published_at` reads it; None for anything else."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        m = _RFC_2822.fullmatch(text)
        if m is None:
            return None
        day, month, year, hh, mm, ss, zone = m.groups()
        if zone[0] in "+-":
            if zone == "-0000":
                return None
            offset = int(zone[1:3]) * 3600 + int(zone[3:]) * 60  # as email.utils: "+0075" is 1h15
            offset = -offset if zone[0] == "-" else offset
        else:
            offset = 0
        try:
            return datetime(
                int(year),
                _MONTHS[month],
                int(day),
                int(hh),
                int(mm),
                int(ss),
                tzinfo=timezone(timedelta(seconds=offset)),
            )
        except ValueError:  # 31 April, 25 o'clock, an offset of a day or more
            return None
    return dt if dt.utcoffset() is not None else None


def _number(value: float | str) -> float:
    """A number, or a decimal string's value (NaN for any other string: no range holds it)."""
    if isinstance(value, float):
        return value
    return float(value) if DECIMAL.fullmatch(value) else math.nan


def rss(value: bytes, lineage: Lineage, now: datetime) -> Record | None:
    """The clean form of a good ``rss.events`` record (:func:`udfs.records.validate_rss`), or
    None: then the full rules decide."""
    try:
        r = _RSS.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return None
    title = r.title.strip()
    if not title or len(title) > MAX_TITLE or _PLAIN_URL.fullmatch(r.link) is None:
        return None
    published = _published(r.published_at)
    if published is None or published - now > MAX_FUTURE:
        return None
    published_at, published_at_ms = to_utc(published)
    keywords: list[str] = []
    seen: set[str] = set()
    for word in r.keywords:
        lowered = word.lower()
        if lowered not in seen:
            seen.add(lowered)
            keywords.append(lowered)
    return {
        "event_id": r.event_id,
        "source": r.source,
        "title": title,
        "link": r.link,
        "published_at": published_at,
        "published_at_ms": published_at_ms,
        "summary": r.summary,
        "keywords": keywords,
        "_source": lineage,
    }


def polymarket(value: bytes, lineage: Lineage, now: datetime) -> Record | None:
    """The clean form of a good ``polymarket.price_hourly`` record
    (:func:`udfs.records.validate_polymarket`), or None: then the full rules decide."""
    try:
        r = _POLYMARKET.decode(value)
        hour_dt = datetime.fromisoformat(r.hour)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None
    if hour_dt.utcoffset() is None or hour_dt.microsecond:
        return None
    hour, hour_ms = to_utc(hour_dt)
    price, volume = _number(r.price), _number(r.volume)
    if hour_ms % 3_600_000 or not 0.0 <= price <= 1.0 or not 0.0 <= volume < math.inf:
        return None
    return {
        "market_id": r.market_id,
        "outcome": r.outcome,
        "hour": hour,
        "hour_ms": hour_ms,
        "price": price,
        "volume": volume,
        "_source": lineage,
    }


FastRule = Callable[[bytes, Lineage, datetime], Record | None]
FAST: dict[str, FastRule] = {"rss": rss, "polymarket": polymarket}
