"""DLQ figures: counts, growth, age, categories and types; failure fingerprints.

:class:`TopicStats` accumulates records one at a time, so ``dlq stats`` (one scan) and
``dlq monitor`` (a consumer that keeps reading) compute the same figures the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafkaio.scan import DlqRecord, Unreadable
from udfs.envelope import iso_ms

DEFAULT_WINDOW_S = 300.0

# What varies between failures of one kind: quoted values, ids, numbers.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_HEXID = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}\b")
_NUMBER = re.compile(r"[-+]?\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_TRUNCATED = re.compile(r"\.\.\.\(\d+ chars\)")


def normalise_message(message: str) -> str:
    """The message with quoted values, ids and numbers replaced by placeholders."""
    text = _TRUNCATED.sub("", message)
    text = _QUOTED.sub("<v>", text)
    text = _HEXID.sub("<id>", text)
    return _NUMBER.sub("<n>", text)


def fingerprint(error: Mapping[str, Any]) -> str:
    """Stable id of a failure kind: type + normalised message + field."""
    basis = "|".join(
        (
            str(error.get("type")),
            normalise_message(str(error.get("message", ""))),
            str(error.get("field")),
        )
    )
    return hashlib.sha1(basis.encode("utf-8")).hexdigest()[:12]


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_ms(moment)


@dataclass
class TopicStats:
    """Running figures of one DLQ topic."""

    topic: str
    window_s: float = DEFAULT_WINDOW_S
    count: int = 0
    not_envelopes: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    oldest: datetime | None = None
    newest: datetime | None = None
    first_written_ms: int | None = None  # the oldest record's Kafka timestamp
    recent: deque[int] = field(default_factory=deque)  # DLQ write times (ms) in the window

    def add(self, rec: DlqRecord | Unreadable) -> None:
        self.count += 1
        ts = rec.message.timestamp
        if ts is not None:
            self.recent.append(ts)
            if self.first_written_ms is None or ts < self.first_written_ms:
                self.first_written_ms = ts
        if isinstance(rec, Unreadable):
            self.not_envelopes += 1
            return
        env = rec.envelope
        self.by_category[env.category] += 1
        self.by_type[env.error_type] += 1
        failed = env.failed_at
        if failed is not None:
            self.oldest = failed if self.oldest is None else min(self.oldest, failed)
            self.newest = failed if self.newest is None else max(self.newest, failed)

    def growth_per_min(self, now_ms: int) -> float:
        """Records written to the DLQ per minute over the last ``window_s`` seconds."""
        cutoff = now_ms - self.window_s * 1000
        while self.recent and self.recent[0] < cutoff:
            self.recent.popleft()
        return sum(1 for t in self.recent if t >= cutoff) / (self.window_s / 60)

    def expires_at(self, retention_ms: int | None) -> datetime | None:
        """When Kafka may delete the oldest record under ``retention_ms`` (None: never)."""
        if retention_ms is None or self.first_written_ms is None:
            return None
        return datetime.fromtimestamp((self.first_written_ms + retention_ms) / 1000, UTC)

    def as_dict(self, now_ms: int, retention_ms: int | None = None) -> dict[str, Any]:
        return {
            "retention_ms": retention_ms,
            "oldest_expires_at": iso(self.expires_at(retention_ms)),
            "count": self.count,
            "by_category": dict(self.by_category),
            "by_type": dict(self.by_type),
            "oldest": iso(self.oldest),
            "newest": iso(self.newest),
            "growth_per_min": round(self.growth_per_min(now_ms), 3),
            "window_s": self.window_s,
            "not_envelopes": self.not_envelopes,
        }


@dataclass
class Group:
    """One failure fingerprint in ``dlq analyze``."""

    fingerprint: str
    type: str
    category: str
    field_name: str | None
    pattern: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    feeds: set[str] = field(default_factory=set)
    samples: list[tuple[str, int, int]] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)


def analyze(records: Iterable[DlqRecord | Unreadable], max_samples: int = 5) -> list[Group]:
    """Failures grouped by fingerprint, the largest group first (what is not an envelope is
    no failure of a record: left out)."""
    groups: dict[str, Group] = {}
    for rec in records:
        if isinstance(rec, Unreadable):
            continue
        env = rec.envelope
        fp = fingerprint(env.error)
        g = groups.get(fp)
        if g is None:
            g = groups[fp] = Group(
                fp, env.error_type, env.category, env.field, normalise_message(env.message)
            )
        g.count += 1
        when = env.failed_at
        if when is not None:
            g.times.append(when)
            g.first_seen = when if g.first_seen is None else min(g.first_seen, when)
            g.last_seen = when if g.last_seen is None else max(g.last_seen, when)
        g.feeds.add(env.topic)
        if len(g.samples) < max_samples:
            g.samples.append(rec.message.position)
    return sorted(groups.values(), key=lambda g: (-g.count, g.fingerprint))


def analysis_doc(groups: list[Group]) -> dict[str, Any]:
    """``dlq analyze --json`` (SPEC section 8) for groups from :func:`analyze`."""
    total = sum(g.count for g in groups)
    return {
        "total": total,
        "groups": [
            {
                "fingerprint": g.fingerprint,
                "type": g.type,
                "category": g.category,
                "field": g.field_name,
                "pattern": g.pattern,
                "count": g.count,
                "share": round(g.count / total, 4) if total else 0.0,
                "first_seen": iso(g.first_seen),
                "last_seen": iso(g.last_seen),
                "feeds": sorted(g.feeds),
                "samples": [list(s) for s in g.samples],
            }
            for g in groups
        ],
    }
