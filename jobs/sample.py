"""Realistic sample data for both feeds, with a share of bad records of every kind.

Deterministic for a given seed, so demos, tests and benchmarks can regenerate the same set.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]

NEWS_SOURCES = ["reuters-business", "bloomberg-markets", "ft-world", "ap-politics", "coindesk"]
TOPICS = ["Fed", "ECB", "election", "inflation", "bitcoin", "oil", "tariffs", "rates", "AI"]
VERBS = ["holds", "cuts", "surges", "slides", "weighs", "signals", "delays", "beats"]
MARKETS = [f"0x{n:040x}" for n in range(1, 41)]


def _rss_good(rng: random.Random, i: int, now: datetime) -> dict[str, object]:
    topic, verb = rng.choice(TOPICS), rng.choice(VERBS)
    published = now - timedelta(minutes=rng.randint(1, 60 * 24 * 7))
    when = (
        published.isoformat(timespec="seconds")
        if rng.random() < 0.7
        else published.strftime("%a, %d %b %Y %H:%M:%S GMT")
    )
    return {
        "event_id": f"evt-{i:08d}",
        "source": rng.choice(NEWS_SOURCES),
        "title": f" {topic} {verb} as markets react ",
        "link": f"https://news.example.com/{i}",
        "published_at": when,
        "summary": None if rng.random() < 0.3 else f"{topic} story {i}",
        "keywords": [topic, topic.lower(), rng.choice(TOPICS)],
    }


def _pm_good(rng: random.Random, i: int, now: datetime) -> dict[str, object]:
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=rng.randint(0, 500))
    price = round(rng.random(), 4)
    return {
        "market_id": rng.choice(MARKETS),
        "outcome": rng.choice(["YES", "NO"]),
        "hour": hour.isoformat().replace("+00:00", "Z"),
        "price": str(price) if rng.random() < 0.2 else price,
        "volume": round(rng.uniform(0, 50_000), 2),
    }


# One function per kind of bad record; each returns the value bytes (None: a tombstone).
def _bad_rss(rng: random.Random, good: dict[str, object]) -> bytes | None:
    kind = rng.randrange(12)
    obj = dict(good)
    if kind == 0:
        return b'{"event_id": "\xff\xfe broken"}'  # not UTF-8
    if kind == 1:
        return json.dumps(obj).encode()[: rng.randint(5, 40)]  # truncated JSON
    if kind == 2:
        return None  # tombstone
    if kind == 3:
        return b""
    if kind == 4:
        del obj["event_id"]
    elif kind == 5:
        obj["title"] = "   "
    elif kind == 6:
        obj["link"] = "not a url"
    elif kind == 7:
        obj["published_at"] = "2026-11-30T18:05:00"  # naive
    elif kind == 8:
        obj["published_at"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    elif kind == 9:
        obj["keywords"] = "single-string"
    elif kind == 10:
        obj["source"] = ""
    else:
        obj["event_id"] = "x" * 200
    return json.dumps(obj).encode()


def _bad_pm(rng: random.Random, good: dict[str, object]) -> bytes | None:
    kind = rng.randrange(9)
    obj = dict(good)
    if kind == 0:
        return b"price=0.5;market=abc"
    if kind == 1:
        return b"[0.5]"
    if kind == 2:
        obj["price"] = 1.7
    elif kind == 3:
        obj["price"] = True
    elif kind == 4:
        obj["hour"] = str(obj["hour"]).replace(":00:00", ":30:00")
    elif kind == 5:
        obj["volume"] = -3
    elif kind == 6:
        del obj["market_id"]
    elif kind == 7:
        obj["price"] = "cheap"
    else:
        return b'{"market_id": "m", "outcome": "YES", "price": NaN}'
    return json.dumps(obj).encode()


def generate(
    feed: str, count: int, bad_share: float, seed: int = 42, now: datetime | None = None
) -> Iterator[Record]:
    """``count`` records of ``feed`` ("rss" or "polymarket"), about ``bad_share`` of them bad."""
    rng = random.Random(f"{seed}-{feed}")
    now = now or datetime.now(UTC)
    for i in range(count):
        headers: list[tuple[str, bytes | None]] = [
            ("source-system", b"marketlag-sample"),
            ("seq", str(i).encode()),
        ]
        if feed == "rss":
            good = _rss_good(rng, i, now)
            key = str(good["event_id"]).encode()
            value = _bad_rss(rng, good) if rng.random() < bad_share else json.dumps(good).encode()
        else:
            good = _pm_good(rng, i, now)
            key = f"{good['market_id']}:{good['outcome']}".encode()
            value = _bad_pm(rng, good) if rng.random() < bad_share else json.dumps(good).encode()
        yield key, value, headers
