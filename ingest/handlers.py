"""Lambda-style handlers for the two feeds: ``handler(event, context)``.

The event carries the items a function fetched (fetching the feeds is not this project's):
``{"items": [{...}, ...]}`` or a bare list. Each item is sent as one JSON record keyed as SPEC
section 3 says (RSS: ``event_id``; Polymarket: ``market_id:outcome``). Items are not validated
here: the Flink job does that, and dead-letters what fails with the reason. The handler
returns what became of the batch; it raises (so the platform retries the batch) only when a
record could be neither delivered, dead-lettered nor spooled.

Configuration: ``conf/job.yaml`` (or ``MARKETLAG_CONFIG``), the ``KAFKA_*`` environment of
SPEC section 6 (credentials only from there) and ``MARKETLAG_SPOOL``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from ingest.producer import IngestProducer, OutRecord
from settings.config import load_config

_PRODUCER: IngestProducer | None = None


def producer() -> IngestProducer:
    """The process's producer, made at the first call and kept (warm Lambda invocations reuse
    its connections)."""
    global _PRODUCER
    if _PRODUCER is None:
        _PRODUCER = IngestProducer(load_config(os.environ.get("MARKETLAG_CONFIG")))
    return _PRODUCER


def rss_key(item: Mapping[str, Any]) -> bytes | None:
    event_id = item.get("event_id")
    return event_id.encode("utf-8", "surrogatepass") if isinstance(event_id, str) else None


def polymarket_key(item: Mapping[str, Any]) -> bytes | None:
    market, outcome = item.get("market_id"), item.get("outcome")
    if not isinstance(market, str) or not isinstance(outcome, str):
        return None
    return f"{market}:{outcome}".encode("utf-8", "surrogatepass")


def _items(event: Any) -> list[Any]:
    items = event.get("items") if isinstance(event, Mapping) else event
    if not isinstance(items, list):
        raise ValueError('the event must be {"items": [...]} or a list of items')
    return items


def handle(
    feed: str, key_of: Callable[[Mapping[str, Any]], bytes | None], event: Any
) -> dict[str, Any]:
    now = int(time.time() * 1000)
    records = [
        OutRecord(key_of(item) if isinstance(item, Mapping) else None, item, (), now)
        for item in _items(event)
    ]
    return producer().send(feed, records).as_dict()


def rss_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Sends a batch of RSS items to ``rss.events``."""
    return handle("rss", rss_key, event)


def polymarket_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Sends a batch of hourly Polymarket prices to ``polymarket.price_hourly``."""
    return handle("polymarket", polymarket_key, event)
