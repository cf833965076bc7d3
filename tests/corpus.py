"""A mixed corpus for both feeds: every rule of SPEC section 3 broken at least once, every
DLQ category present, with the outcome each record must have.

Used by the unit tests (through FeedProcessor) and the integration tests (through the job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from settings.config import load_config
from udfs.pipeline import FeedProcessor

Headers = list[tuple[str, bytes | None]]
# The retry settings the job ships with (conf/job.yaml), read once for the tests.
SHIPPED_RETRY = load_config(None, {}).retry


def shipped_processor(feed: str, operator: str | None = None) -> FeedProcessor:
    """The record processing the job runs for ``feed``, with the shipped retry settings."""
    return FeedProcessor(
        feed, job_name="j", operator=operator or f"validate-{feed}", retry=SHIPPED_RETRY
    )


@dataclass(frozen=True)
class Case:
    name: str
    feed: str
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)
    # "clean" with the expected clean record (without _source), or a DLQ expectation
    clean: dict[str, Any] | None = None
    category: str | None = None
    field: str | None = None
    type: str | None = None
    attempts: int = 1


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode("utf-8")


RSS_OK = {
    "event_id": "evt-1",
    "source": "reuters-business",
    "title": "  Fed holds rates  ",
    "link": "https://www.reuters.com/markets/fed",
    "published_at": "2026-11-30T18:05:00+01:00",
    "summary": "The Fed kept rates unchanged.",
    "keywords": ["Fed", "rates", "FED"],
}
RSS_OK_CLEAN = {
    "event_id": "evt-1",
    "source": "reuters-business",
    "title": "Fed holds rates",
    "link": "https://www.reuters.com/markets/fed",
    "published_at": "2026-11-30T17:05:00Z",
    "published_at_ms": 1796058300000,
    "summary": "The Fed kept rates unchanged.",
    "keywords": ["fed", "rates"],
}
PM_OK = {
    "market_id": "0xabc",
    "outcome": "YES",
    "hour": "2026-11-30T18:00:00Z",
    "price": 0.42,
    "volume": 1234.5,
}
PM_OK_CLEAN = {
    "market_id": "0xabc",
    "outcome": "YES",
    "hour": "2026-11-30T18:00:00Z",
    "hour_ms": 1796061600000,
    "price": 0.42,
    "volume": 1234.5,
}


def _rss(name: str, *, drop: str | None = None, **changes: Any) -> dict[str, Any]:
    obj = {**RSS_OK, "event_id": f"evt-{name}", **changes}
    if drop:
        del obj[drop]
    return obj


def _pm(*, drop: str | None = None, **changes: Any) -> dict[str, Any]:
    obj = {**PM_OK, **changes}
    if drop:
        del obj[drop]
    return obj


def build_corpus(now: datetime | None = None) -> list[Case]:
    now = now or datetime.now(UTC)
    future = (now + timedelta(days=2)).isoformat()
    soon = (now + timedelta(hours=20)).replace(microsecond=0)
    soon_ms = int(soon.timestamp() * 1000)
    hdrs: Headers = [("trace-id", b"abc"), ("trace-id", b"def"), ("empty", None)]
    cases: list[Case] = []

    def ok_rss(name: str, obj: dict[str, Any], clean: dict[str, Any], **kw: Any) -> None:
        cases.append(
            Case(
                name,
                "rss",
                obj["event_id"].encode(),
                _j(obj),
                clean={**clean, "event_id": obj["event_id"]},
                **kw,
            )
        )

    def bad_rss(name: str, value: Any, category: str, fld: str | None, typ: str, **kw: Any) -> None:
        raw = value if value is None or isinstance(value, bytes) else _j(value)
        cases.append(
            Case(
                name,
                "rss",
                f"key-{name}".encode(),
                raw,
                category=category,
                field=fld,
                type=typ,
                **kw,
            )
        )

    # --- RSS accepted ---
    ok_rss("rss-iso", _rss("iso"), RSS_OK_CLEAN, headers=hdrs)
    ok_rss(
        "rss-rfc2822",
        _rss("rfc", published_at="Mon, 30 Nov 2026 18:05:00 GMT", summary=None, keywords=[]),
        {
            **RSS_OK_CLEAN,
            "published_at": "2026-11-30T18:05:00Z",
            "published_at_ms": 1796061900000,
            "summary": None,
            "keywords": [],
        },
    )
    ok_rss(
        "rss-minimal",
        {k: v for k, v in _rss("min").items() if k not in ("summary", "keywords")},
        {**RSS_OK_CLEAN, "summary": None, "keywords": []},
    )
    ok_rss("rss-extra-fields", _rss("extra", unknown={"x": [1, 2]}, lang="en"), RSS_OK_CLEAN)
    ok_rss(
        "rss-soon",
        _rss("soon", published_at=soon.isoformat()),
        {
            **RSS_OK_CLEAN,
            "published_at": soon.isoformat().replace("+00:00", "Z"),
            "published_at_ms": soon_ms,
        },
    )
    ok_rss(
        "rss-unicode",
        _rss("uni", title="Zinsentscheid: EZB hält still ✓", link="http://ex.de/ä"),
        {**RSS_OK_CLEAN, "title": "Zinsentscheid: EZB hält still ✓", "link": "http://ex.de/ä"},
    )
    ok_rss("rss-id-128", _rss("x", event_id="e" * 128), RSS_OK_CLEAN)
    ok_rss("rss-flaky-recovers", _rss("x", event_id="flaky-2-a"), RSS_OK_CLEAN)

    # --- RSS rejected by a field rule ---
    v = "validation"
    bad_rss("rss-no-event-id", _rss("x", drop="event_id"), v, "event_id", "ValidationError")
    bad_rss("rss-empty-event-id", _rss("x", event_id=""), v, "event_id", "ValidationError")
    bad_rss("rss-long-event-id", _rss("x", event_id="e" * 129), v, "event_id", "ValidationError")
    bad_rss("rss-number-event-id", _rss("x", event_id=7), v, "event_id", "ValidationError")
    bad_rss("rss-no-source", _rss("nosrc", drop="source"), v, "source", "ValidationError")
    bad_rss("rss-empty-source", _rss("esrc", source=""), v, "source", "ValidationError")
    bad_rss("rss-no-title", _rss("notitle", drop="title"), v, "title", "ValidationError")
    bad_rss("rss-blank-title", _rss("blank", title="   \t"), v, "title", "ValidationError")
    bad_rss("rss-long-title", _rss("long", title="t" * 1001), v, "title", "ValidationError")
    bad_rss("rss-title-list", _rss("tl", title=["a"]), v, "title", "ValidationError")
    bad_rss("rss-no-link", _rss("nolink", drop="link"), v, "link", "ValidationError")
    bad_rss(
        "rss-ftp-link", _rss("ftp", link="ftp://files.example.com/a"), v, "link", "ValidationError"
    )
    bad_rss("rss-relative-link", _rss("rel", link="/markets/fed"), v, "link", "ValidationError")
    bad_rss("rss-hostless-link", _rss("nohost", link="https://"), v, "link", "ValidationError")
    bad_rss(
        "rss-no-published", _rss("nopub", drop="published_at"), v, "published_at", "ValidationError"
    )
    bad_rss(
        "rss-naive-published",
        _rss("naive", published_at="2026-11-30T18:05:00"),
        v,
        "published_at",
        "ValidationError",
    )
    bad_rss(
        "rss-garbage-published",
        _rss("garb", published_at="yesterday"),
        v,
        "published_at",
        "ValidationError",
    )
    bad_rss(
        "rss-future-published",
        _rss("fut", published_at=future),
        v,
        "published_at",
        "ValidationError",
    )
    bad_rss(
        "rss-number-published",
        _rss("numpub", published_at=1796061900),
        v,
        "published_at",
        "ValidationError",
    )
    bad_rss("rss-summary-number", _rss("sum", summary=5), v, "summary", "ValidationError")
    bad_rss("rss-keywords-string", _rss("kws", keywords="fed"), v, "keywords", "ValidationError")
    bad_rss(
        "rss-keywords-number-item",
        _rss("kwn", keywords=["fed", 1]),
        v,
        "keywords",
        "ValidationError",
    )

    # --- RSS that is not a JSON object at all ---
    d = "deserialization"
    bad_rss(
        "rss-not-utf8", b'{"event_id": "\xff\xfe"}', d, None, "UnicodeDecodeError", headers=hdrs
    )
    bad_rss("rss-empty", b"", d, None, "EmptyValueError")
    bad_rss("rss-tombstone", None, d, None, "TombstoneError")
    bad_rss("rss-array", b"[1, 2]", d, None, "NotAnObjectError")
    bad_rss("rss-truncated-json", b'{"event_id": "evt-', d, None, "JSONDecodeError")
    bad_rss("rss-bom", b"\xef\xbb\xbf" + _j(RSS_OK), d, None, "JSONDecodeError")
    bad_rss("rss-deep", b"[" * 5000 + b"]" * 5000, d, None, "JSONDecodeError")
    cases.append(
        Case(
            "rss-null-key", "rss", None, b"{}", category=v, field="event_id", type="ValidationError"
        )
    )

    # --- RSS failing in enrichment (tests.integration.hooks:flaky) ---
    bad_rss(
        "rss-flaky-gives-up",
        _rss("x", event_id="flaky-9-a"),
        "transient",
        None,
        "TransientError",
        attempts=3,
    )
    bad_rss("rss-enrichment-bug", _rss("x", event_id="bug-1"), "processing", None, "KeyError")

    # --- Polymarket ---
    def ok_pm(name: str, obj: dict[str, Any], clean: dict[str, Any]) -> None:
        cases.append(
            Case(
                name,
                "polymarket",
                f"{obj['market_id']}:{obj['outcome']}".encode(),
                _j(obj),
                clean=clean,
            )
        )

    def bad_pm(name: str, value: Any, category: str, fld: str | None, typ: str) -> None:
        raw = value if isinstance(value, bytes) else _j(value)
        cases.append(
            Case(
                name,
                "polymarket",
                f"pm-{name}".encode(),
                raw,
                category=category,
                field=fld,
                type=typ,
            )
        )

    ok_pm("pm-ok", _pm(), PM_OK_CLEAN)
    ok_pm(
        "pm-strings",
        _pm(price="0.25", volume="100.5"),
        {**PM_OK_CLEAN, "price": 0.25, "volume": 100.5},
    )
    ok_pm("pm-offset-hour", _pm(hour="2026-11-30T19:00:00+01:00"), PM_OK_CLEAN)
    ok_pm("pm-no-volume", _pm(drop="volume"), {**PM_OK_CLEAN, "volume": 0.0})
    ok_pm("pm-bounds", _pm(price=1, volume=0), {**PM_OK_CLEAN, "price": 1.0, "volume": 0.0})
    ok_pm("pm-zero", _pm(price=0, outcome="NO"), {**PM_OK_CLEAN, "price": 0.0, "outcome": "NO"})
    bad_pm("pm-no-market", _pm(drop="market_id"), v, "market_id", "ValidationError")
    bad_pm("pm-empty-market", _pm(market_id=""), v, "market_id", "ValidationError")
    bad_pm("pm-no-outcome", _pm(drop="outcome"), v, "outcome", "ValidationError")
    bad_pm("pm-empty-outcome", _pm(outcome=""), v, "outcome", "ValidationError")
    bad_pm("pm-no-hour", _pm(drop="hour"), v, "hour", "ValidationError")
    bad_pm("pm-half-hour", _pm(hour="2026-11-30T18:30:00Z"), v, "hour", "ValidationError")
    bad_pm("pm-naive-hour", _pm(hour="2026-11-30T18:00:00"), v, "hour", "ValidationError")
    bad_pm("pm-rfc-hour", _pm(hour="Mon, 30 Nov 2026 18:00:00 GMT"), v, "hour", "ValidationError")
    bad_pm("pm-no-price", _pm(drop="price"), v, "price", "ValidationError")
    bad_pm("pm-high-price", _pm(price=1.5), v, "price", "ValidationError")
    bad_pm("pm-negative-price", _pm(price=-0.1), v, "price", "ValidationError")
    bad_pm("pm-bool-price", _pm(price=True), v, "price", "ValidationError")
    bad_pm("pm-text-price", _pm(price="abc"), v, "price", "ValidationError")
    bad_pm("pm-nan-string-price", _pm(price="NaN"), v, "price", "ValidationError")
    bad_pm("pm-null-price", _pm(price=None), v, "price", "ValidationError")
    bad_pm(
        "pm-overflow-price",
        b'{"market_id": "m", "outcome": "YES", "hour": "2026-11-30T18:00:00Z", "price": 1e999}',
        v,
        "price",
        "ValidationError",
    )
    bad_pm("pm-negative-volume", _pm(volume=-1), v, "volume", "ValidationError")
    bad_pm("pm-text-volume", _pm(volume="lots"), v, "volume", "ValidationError")
    bad_pm("pm-bool-volume", _pm(volume=False), v, "volume", "ValidationError")
    bad_pm("pm-not-json", b"price=0.4", d, None, "JSONDecodeError")
    bad_pm("pm-string-json", b'"0xabc"', d, None, "NotAnObjectError")
    bad_pm(
        "pm-nan-literal",
        b'{"market_id": "m", "outcome": "YES", "hour": "2026-11-30T18:00:00Z", "price": NaN}',
        d,
        None,
        "JSONDecodeError",
    )
    return cases
