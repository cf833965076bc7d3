"""Parse, validate and normalise the two feeds (SPEC sections 3 and 4).

Every function here is pure and raises only the errors of :mod:`udfs.errors` for bad data;
anything else it raises is a bug and is reported as category ``processing``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from udfs.errors import (
    EmptyValueError,
    NotAnObjectError,
    TombstoneError,
    ValidationError,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = EPOCH.toordinal()
MAX_FUTURE = timedelta(days=1)
MAX_EVENT_ID = 128
MAX_TITLE = 1000
_SHOWN = 60  # characters of an offending value quoted in an error message
DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f]")
_MAX_INT_DIGITS = 4000  # below sys.get_int_max_str_digits() (4300), which int() enforces

Record = dict[str, Any]
Lineage = dict[str, Any]


def shown(value: Any) -> str:
    """A short, safe rendering of an offending value for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"...({len(text)} chars)"


def parse_object(value: bytes | None) -> dict[str, Any]:
    """Bytes to a JSON object, or a DeserializationError / UnicodeDecodeError / JSONDecodeError.

    Strict JSON (RFC 8259): no NaN or Infinity literals, no lone surrogates; duplicate keys
    keep the last value; nesting deeper than orjson's limit (1024) is a JSONDecodeError.
    """
    if value is None:
        raise TombstoneError("value is null (a tombstone): nothing to validate")
    if not value:
        raise EmptyValueError("value is empty (0 bytes)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as bad_utf8:  # the real cause, reported as such
            raise bad_utf8 from None
        if "infinity" not in str(e):
            raise
        # Valid JSON whose number overflows a double (1e999): parse it so that the field
        # rule ("finite") rejects it and names the field.
        obj = _parse_overflowing_numbers(text)
    if not isinstance(obj, dict):
        raise NotAnObjectError(f"value is JSON {type(obj).__name__}, not a JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def _big_int(digits: str) -> int | float:
    """An integer literal; beyond Python's int conversion limit, a float (inf for the huge)."""
    return int(digits) if len(digits) <= _MAX_INT_DIGITS else float(digits)


def _parse_overflowing_numbers(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_big_int)
    except RecursionError:
        raise json.JSONDecodeError("JSON nested too deeply", text[:100], 0) from None


def _require(obj: dict[str, Any], field: str) -> Any:
    if field not in obj:
        raise ValidationError(field, f"field '{field}' is required but missing")
    return obj[field]


def _string(obj: dict[str, Any], field: str) -> str:
    value = _require(obj, field)
    if not isinstance(value, str):
        raise ValidationError(
            field, f"field '{field}' must be a string, got {_json_type(value)} {shown(value)}"
        )
    return value


def _non_empty(obj: dict[str, Any], field: str) -> str:
    value = _string(obj, field)
    if not value:
        raise ValidationError(field, f"field '{field}' must not be empty")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _iso_datetime(field: str, text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValidationError(
            field, f"field '{field}' is not an ISO-8601 time: {shown(text)}"
        ) from e
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValidationError(
            field, f"field '{field}' has no UTC offset (naive times are ambiguous): {shown(text)}"
        )
    return dt


def parse_published_at(field: str, text: str) -> datetime:
    """ISO-8601 with an offset, or RFC 2822; never naive."""
    if not text.strip():
        raise ValidationError(field, f"field '{field}' must not be empty")
    try:
        return _iso_datetime(field, text)
    except ValidationError as iso_error:
        if "no UTC offset" in str(iso_error):
            raise
    try:
        dt = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError) as e:
        raise ValidationError(
            field, f"field '{field}' is neither ISO-8601 with an offset nor RFC 2822: {shown(text)}"
        ) from e
    if dt is None or dt.tzinfo is None:
        raise ValidationError(
            field, f"field '{field}' has no usable UTC offset (-0000 or none): {shown(text)}"
        )
    return dt


def to_utc(dt: datetime) -> tuple[str, int]:
    """(``...Z`` text, epoch milliseconds, rounded down) of an aware datetime."""
    utc = dt.astimezone(UTC)
    # In integers, as (utc - EPOCH) // ONE_MS but without building two timedeltas.
    ms = (
        ((utc.toordinal() - _EPOCH_DAY) * 86_400 + utc.hour * 3600 + utc.minute * 60 + utc.second)
        * 1000
    ) + utc.microsecond // 1000
    text = utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z"), ms


def _check_url(field: str, link: str) -> None:
    bad = _BAD_URL_CHARS.search(link)
    if bad:
        raise ValidationError(
            field,
            f"field '{field}' contains whitespace or a control character at "
            f"position {bad.start()}: {shown(link)}",
        )
    try:
        parts = urlsplit(link)
        parts.port  # noqa: B018 - raises ValueError for an out-of-range or non-numeric port
    except ValueError as e:
        raise ValidationError(field, f"field '{field}' is not a valid URL: {e}") from e
    if parts.scheme.lower() not in ("http", "https"):
        raise ValidationError(
            field,
            f"field '{field}' must be an absolute http or https URL, got scheme "
            f"{shown(parts.scheme)} in {shown(link)}",
        )
    if not parts.hostname:
        raise ValidationError(field, f"field '{field}' has no host: {shown(link)}")


def validate_rss(obj: dict[str, Any], lineage: Lineage, now: datetime) -> Record:
    """Validates an ``rss.events`` object and returns its clean form (SPEC 3 and 4)."""
    event_id = _non_empty(obj, "event_id")
    if len(event_id) > MAX_EVENT_ID:
        raise ValidationError(
            "event_id",
            f"field 'event_id' is {len(event_id)} characters long; "
            f"at most {MAX_EVENT_ID} are allowed",
        )
    source = _non_empty(obj, "source")
    title = _string(obj, "title").strip()
    if not title:
        raise ValidationError("title", "field 'title' is empty after trimming whitespace")
    if len(title) > MAX_TITLE:
        raise ValidationError(
            "title",
            f"field 'title' is {len(title)} characters long after trimming; "
            f"at most {MAX_TITLE} are allowed",
        )
    link = _non_empty(obj, "link")
    _check_url("link", link)
    published = parse_published_at("published_at", _string(obj, "published_at"))
    if published - now > MAX_FUTURE:
        raise ValidationError(
            "published_at",
            f"field 'published_at' is more than 1 day in the future: {shown(obj['published_at'])}",
        )
    published_at, published_at_ms = to_utc(published)

    summary = obj.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise ValidationError(
            "summary",
            f"field 'summary' must be a string or null, got {_json_type(summary)} {shown(summary)}",
        )
    keywords: list[str] = []
    if "keywords" in obj:
        raw = obj["keywords"]
        if not isinstance(raw, list):
            raise ValidationError(
                "keywords",
                f"field 'keywords' must be a list of strings, got {_json_type(raw)} {shown(raw)}",
            )
        seen: set[str] = set()
        for i, word in enumerate(raw):
            if not isinstance(word, str):
                raise ValidationError(
                    "keywords",
                    f"field 'keywords' item {i} must be a string, got "
                    f"{_json_type(word)} {shown(word)}",
                )
            lowered = word.lower()
            if lowered not in seen:
                seen.add(lowered)
                keywords.append(lowered)
    return {
        "event_id": event_id,
        "source": source,
        "title": title,
        "link": link,
        "published_at": published_at,
        "published_at_ms": published_at_ms,
        "summary": summary,
        "keywords": keywords,
        "_source": lineage,
    }


def _number(obj: dict[str, Any], field: str, default: float | None = None) -> float:
    if field not in obj and default is not None:
        return default
    value = _require(obj, field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(
            field,
            f"field '{field}' must be a number or a decimal string, got "
            f"{_json_type(value)} {shown(value)}",
        )
    if isinstance(value, str) and not DECIMAL.fullmatch(value):
        raise ValidationError(
            field, f"field '{field}' is a string that is not a decimal number: {shown(value)}"
        )
    try:
        number = float(value)
    except OverflowError as e:  # an integer too large for a double
        raise ValidationError(field, f"field '{field}' is out of range: {shown(value)}") from e
    if not math.isfinite(number):
        raise ValidationError(field, f"field '{field}' is not finite: {shown(value)}")
    return number


def validate_polymarket(obj: dict[str, Any], lineage: Lineage, now: datetime) -> Record:
    """Validates a ``polymarket.price_hourly`` object and returns its clean form."""
    market_id = _non_empty(obj, "market_id")
    outcome = _non_empty(obj, "outcome")
    hour_dt = _iso_datetime("hour", _non_empty(obj, "hour"))
    hour, hour_ms = to_utc(hour_dt)
    if hour_ms % 3_600_000 or hour_dt.microsecond:
        raise ValidationError(
            "hour", f"field 'hour' is not on an hour boundary: {shown(obj['hour'])}"
        )
    price = _number(obj, "price")
    if not 0.0 <= price <= 1.0:
        raise ValidationError(
            "price", f"field 'price' must be between 0 and 1, got {shown(obj['price'])}"
        )
    volume = _number(obj, "volume", default=0.0)
    if volume < 0:
        raise ValidationError(
            "volume", f"field 'volume' must not be negative, got {shown(obj['volume'])}"
        )
    return {
        "market_id": market_id,
        "outcome": outcome,
        "hour": hour,
        "hour_ms": hour_ms,
        "price": price,
        "volume": volume,
        "_source": lineage,
    }


Validator = Callable[[dict[str, Any], Lineage, datetime], Record]
VALIDATORS: dict[str, Validator] = {"rss": validate_rss, "polymarket": validate_polymarket}
# The feeds, by the names the configuration and the job use.
FEEDS = tuple(VALIDATORS)
