"""Repair functions for `dlq replay --fix` in the integration tests."""

from __future__ import annotations

import json
from typing import Any


def fix_rss(value: bytes | None, envelope: dict[str, Any]) -> bytes | None:
    """Repairs a missing/empty source or a bad title; anything else is skipped (None)."""
    field = envelope["error"]["field"]
    if value is None or field not in ("source", "title"):
        return None
    obj = json.loads(value)
    if field == "source":
        obj["source"] = "repaired-feed"
    else:
        obj["title"] = "Repaired title"
    return json.dumps(obj).encode()


def unchanged(value: bytes | None, envelope: dict[str, Any]) -> bytes | None:
    """Writes the value back as it was (a replay after fixing the job, not the data)."""
    return value


def broken(value: bytes | None, envelope: dict[str, Any]) -> bytes | None:
    raise ValueError("this repair function is broken")
