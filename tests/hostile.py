"""Hostile input for both feeds: the bytes an attacker, a broken producer or bad luck sends.

Each kind says where its record must land: ``clean``, or the DLQ with a category (and the
field, for a validation error). ``tests/integration/test_hostile.py`` sends every kind through
the job; the unit tests run the same kinds through the pure functions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tests.corpus import PM_OK, RSS_OK

Headers = list[tuple[str, bytes | None]]

# Broker default max.message.bytes (the input topics keep it): the whole record batch.
BROKER_LIMIT = 1_048_588
# The largest value the input topics accept in a record with a one-byte key and no headers:
# 61 bytes of batch header and 12 of record framing (lengths, deltas, the key). Measured: one
# byte more is refused (tests/integration/test_hostile.py checks it on every run).
AT_LIMIT = BROKER_LIMIT - 73


@dataclass(frozen=True)
class Hostile:
    name: str
    feed: str
    value: bytes | None
    expect: str  # "clean" or a DLQ category
    field: str | None = None  # the field a validation error must name
    key: bytes | None = b"k"
    headers: Headers = dataclasses.field(default_factory=list)


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _rss(**changes: Any) -> dict[str, Any]:
    return {**RSS_OK, **changes}


def _pm(**changes: Any) -> dict[str, Any]:
    return {**PM_OK, **changes}


def _padded_to(size: int, obj: dict[str, Any], pad_field: str) -> bytes:
    """``obj`` as JSON with ``pad_field`` grown until the value is exactly ``size`` bytes."""
    base = len(_j({**obj, pad_field: ""}))
    raw = _j({**obj, pad_field: "a" * (size - base)})
    assert len(raw) == size, (len(raw), size)
    return raw


def _growing_keywords(size: int) -> bytes:
    """An RSS record of about ``size`` bytes whose clean form is half as big again."""
    base = len(json.dumps(_rss(keywords=[""]), ensure_ascii=False).encode())
    obj = _rss(keywords=["İ" * ((size - base) // 2)])
    return json.dumps(obj, ensure_ascii=False).encode()


def hostile_corpus() -> list[Hostile]:
    d, v = "deserialization", "validation"
    rss_ok, pm_ok = _j(RSS_OK), _j(PM_OK)
    cases = [
        # --- bytes that are not (strict) UTF-8 JSON ---
        Hostile("not-utf8", "rss", b'{"event_id": "\xff\xfe\xfd"}', d),
        Hostile("latin1", "polymarket", '{"market_id": "café"}'.encode("latin-1"), d),
        Hostile("cesu-surrogate-bytes", "rss", b'{"title": "\xed\xa0\x80"}', d),
        Hostile("overlong-utf8", "rss", b'{"title": "\xc0\xaf"}', d),
        Hostile("bom", "polymarket", b"\xef\xbb\xbf" + pm_ok, d),
        Hostile("utf16", "rss", json.dumps(RSS_OK).encode("utf-16"), d),
        Hostile("nul-bytes", "rss", b"\x00" * 64, d),
        Hostile("control-chars-raw", "rss", b'{"title": "a\x01\x02\x1f"}', d),
        Hostile("lone-surrogate-escape", "rss", _j(_rss()).replace(b'"Fed', b'"\\ud800Fed'), d),
        Hostile("lone-low-surrogate", "polymarket", b'{"market_id": "\\udc00"}', d),
        Hostile("nested-100000", "rss", b"[" * 100_000 + b"]" * 100_000, d),
        Hostile(
            "nested-objects-100000", "polymarket", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, d
        ),
        Hostile("unclosed-nesting", "rss", b"[" * 100_000, d),
        Hostile("nan-literal", "polymarket", pm_ok.replace(b"0.42", b"NaN"), d),
        Hostile("infinity-literal", "polymarket", pm_ok.replace(b"0.42", b"Infinity"), d),
        Hostile("minus-infinity-literal", "polymarket", pm_ok.replace(b"1234.5", b"-Infinity"), d),
        Hostile("trailing-garbage", "rss", rss_ok + b"}", d),
        Hostile("two-documents", "polymarket", pm_ok + b" " + pm_ok, d),
        Hostile("single-quotes", "rss", rss_ok.replace(b'"', b"'"), d),
        Hostile("comment", "polymarket", b"/* hi */" + pm_ok, d),
        Hostile("huge-integer", "polymarket", pm_ok.replace(b"1234.5", b"9" * 5000), v, "volume"),
        Hostile("empty", "rss", b"", d),
        Hostile("whitespace-only", "polymarket", b" \n\t ", d),
        Hostile("tombstone", "rss", None, d),
        Hostile("tombstone-no-key", "polymarket", None, d, key=None),
        Hostile("json-null", "rss", b"null", d),
        Hostile("json-array", "polymarket", b"[1, 2]", d),
        Hostile("json-string", "rss", b'"an object it is not"', d),
        Hostile("json-number", "polymarket", b"0.5", d),
        # --- valid JSON that is hostile or odd ---
        Hostile("number-1e999", "polymarket", pm_ok.replace(b"0.42", b"1e999"), v, "price"),
        Hostile(
            "number-minus-1e999", "polymarket", pm_ok.replace(b"1234.5", b"-1e999"), v, "volume"
        ),
        Hostile(
            "duplicate-keys-last-wins-bad", "polymarket", pm_ok[:-1] + b', "price": 7}', v, "price"
        ),
        Hostile("duplicate-keys-last-wins-ok", "polymarket", b'{"price": 7, ' + pm_ok[1:], "clean"),
        Hostile("escaped-control-chars", "rss", _j(_rss(summary="\x00\x01\x1b[31m\x7f")), "clean"),
        Hostile("control-char-in-link", "rss", _j(_rss(link="https://x.io/a\x00b")), v, "link"),
        Hostile("newline-in-link", "rss", _j(_rss(link="https://x.io/a\nb")), v, "link"),
        Hostile("javascript-link", "rss", _j(_rss(link="javascript:alert(1)")), v, "link"),
        Hostile("bad-port-link", "rss", _j(_rss(link="https://x.io:99999/")), v, "link"),
        Hostile("ipv6-garbage-link", "rss", _j(_rss(link="http://[::1/")), v, "link"),
        Hostile("rtl-override-title", "rss", _j(_rss(title="\u202eevil\u202c")), "clean"),
        Hostile("emoji-and-astral", "rss", _j(_rss(title="📈 \U0001f600 𝔽𝕖𝕕")), "clean"),
        Hostile("zero-width-only-title", "rss", _j(_rss(title="\u200b")), "clean"),
        Hostile("html-in-title", "rss", _j(_rss(title="<script>alert(1)</script>")), "clean"),
        Hostile(
            "thousand-keywords", "rss", _j(_rss(keywords=[f"k{i}" for i in range(1000)])), "clean"
        ),
        Hostile(
            "deep-but-legal",
            "polymarket",
            _j(_pm(extra=json.loads("[" * 500 + "]" * 500))),
            "clean",
        ),
        Hostile(
            "published-year-0",
            "rss",
            _j(_rss(published_at="0000-01-01T00:00:00Z")),
            v,
            "published_at",
        ),
        Hostile(
            "published-year-9999",
            "rss",
            _j(_rss(published_at="9999-12-31T23:59:59Z")),
            v,
            "published_at",
        ),
        Hostile("hour-leap-second", "polymarket", _j(_pm(hour="2026-12-31T23:59:60Z")), v, "hour"),
        Hostile(
            "hour-offset-24h", "polymarket", _j(_pm(hour="2026-11-30T18:00:00+24:00")), v, "hour"
        ),
        # --- boundary values ---
        Hostile("event-id-128", "rss", _j(_rss(event_id="e" * 128)), "clean"),
        Hostile("event-id-129", "rss", _j(_rss(event_id="e" * 129)), v, "event_id"),
        Hostile("title-1000", "rss", _j(_rss(title="t" * 1000)), "clean"),
        Hostile("title-1001", "rss", _j(_rss(title="t" * 1001)), v, "title"),
        Hostile("price-0", "polymarket", _j(_pm(price=0)), "clean"),
        Hostile("price-1", "polymarket", _j(_pm(price=1)), "clean"),
        Hostile("price-minus-zero", "polymarket", _j(_pm(price=-0.0)), "clean"),
        Hostile("price-above-1", "polymarket", _j(_pm(price=1.0000001)), v, "price"),
        Hostile("price-below-0", "polymarket", _j(_pm(price=-1e-300)), v, "price"),
        Hostile("price-denormal", "polymarket", _j(_pm(price=5e-324)), "clean"),
        Hostile("volume-0", "polymarket", _j(_pm(volume=0)), "clean"),
        Hostile("volume-max-double", "polymarket", _j(_pm(volume=1.7976931348623157e308)), "clean"),
        # --- size ---
        Hostile("value-900kb-bad", "rss", _j(_rss(title="x" * 900_000)), v, "title"),
        Hostile("value-900kb-clean", "rss", _j(_rss(summary="s" * 900_000)), "clean"),
        Hostile("value-900kb-garbage", "polymarket", bytes(range(256)) * 3600, d),
        Hostile("value-at-limit-clean", "rss", _padded_to(AT_LIMIT, _rss(), "summary"), "clean"),
        Hostile(
            "value-at-limit-bad", "polymarket", _padded_to(AT_LIMIT, _pm(price=2), "n"), v, "price"
        ),
        # A clean record's worst case: lowercasing makes "İ" (2 bytes) "i̇" (3 bytes).
        Hostile("value-at-limit-growing-keywords", "rss", _growing_keywords(AT_LIMIT), "clean"),
        # The envelope's worst case: payload_text escapes every byte to six (\u0001).
        Hostile("value-at-limit-control-bytes", "polymarket", b"\x01" * AT_LIMIT, d),
        Hostile("key-500kb", "rss", b"[", d, key=b"\xff" * 500_000),
        Hostile(
            "headers-1000",
            "polymarket",
            b"{",
            d,
            headers=[(f"h{i}", b"\x00" * 10 if i % 2 else None) for i in range(1000)],
        ),
        Hostile("header-not-utf8", "rss", b"{", d, headers=[("\u00e9", b"\xff\xfe")]),
    ]
    cases += _wrong_types()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "hostile kinds must have distinct names"
    return cases


# Per field, values of a JSON type that field does not accept.
WRONG = {"number": 123, "boolean": True, "null": None, "array": ["x"], "object": {"a": 1}}
RSS_TYPES = {
    "event_id": ("number", "boolean", "null", "array", "object"),
    "source": ("number", "boolean", "null", "array", "object"),
    "title": ("number", "boolean", "null", "array", "object"),
    "link": ("number", "boolean", "null", "array", "object"),
    "published_at": ("number", "boolean", "null", "array", "object"),
    "summary": ("number", "boolean", "array", "object"),  # null is allowed
    "keywords": ("number", "boolean", "null", "object"),
}
PM_TYPES = {
    "market_id": ("number", "boolean", "null", "array", "object"),
    "outcome": ("number", "boolean", "null", "array", "object"),
    "hour": ("number", "boolean", "null", "array", "object"),
    "price": ("boolean", "null", "array", "object"),  # numbers and decimal strings are allowed
    "volume": ("boolean", "null", "array", "object"),
}


def _wrong_types() -> list[Hostile]:
    out = []
    for feed, types, base in (("rss", RSS_TYPES, RSS_OK), ("polymarket", PM_TYPES, PM_OK)):
        for fld, kinds in types.items():
            for kind in kinds:
                value = _j({**base, fld: WRONG[kind]})
                out.append(Hostile(f"{feed}-{fld}-{kind}", feed, value, "validation", fld))
    return out
