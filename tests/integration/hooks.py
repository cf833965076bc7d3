"""Enrichment hooks used by the integration tests (loaded by the job as module:function)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from udfs.errors import TransientError

_calls: Counter[str] = Counter()
_lock = threading.Lock()


def flaky(record: dict[str, Any]) -> dict[str, Any]:
    """``flaky-<n>-...`` fails transiently n times, then succeeds (n >= 9: never); ``bug-...``
    always breaks with a KeyError (a bug: category processing)."""
    event_id = record["event_id"]
    if event_id.startswith("flaky-"):
        failures = int(event_id.split("-")[1])
        with _lock:
            _calls[event_id] += 1
            call = _calls[event_id]
        if failures >= 9 or call <= failures:  # 9 or more: a lasting outage
            raise TransientError(f"enrichment service unavailable (call {call})")
    if event_id.startswith("bug-"):
        return {**record, "broken": record["no such field"]}
    return record
