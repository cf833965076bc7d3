"""The DLQ envelope v1 (SPEC section 5): build it, read it back.

Shared by the job (which writes envelopes) and the ``dlq`` tools (which read them).
"""

from __future__ import annotations

import binascii
import collections.abc
import functools
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple

import orjson

from udfs.errors import Category
from udfs.record import SourceRecord

SCHEMA = "marketlag.dlq/v1"
REPLAY_COUNT_HEADER = "dlq.replay.count"
MAX_STACKTRACE_BYTES = 8 * 1024
MAX_MESSAGE_BYTES = 2000
_TRUNCATED = "...[truncated]...\n"


def b64(data: bytes | None) -> str | None:
    return None if data is None else binascii.b2a_base64(data, newline=False).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    """The bytes of standard base64 text; anything else raises ``binascii.Error``."""
    return None if text is None else binascii.a2b_base64(text, strict_mode=True)


def as_text(data: bytes | None) -> str | None:
    """The bytes as text when they are valid UTF-8, else None."""
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def cap_utf8(text: str, limit: int, keep_tail: bool = True) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked where it was cut.

    A stack trace keeps its tail: the innermost frames and the exception are at the end.
    """
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    room = limit - len(_TRUNCATED)
    if keep_tail:
        return _TRUNCATED + data[-room:].decode("utf-8", "ignore")
    return data[:room].decode("utf-8", "ignore") + _TRUNCATED


# Formatted stack frames per failure site: (code, instruction) of every frame -> lines.
_SITES: dict[tuple[tuple[Any, int], ...], list[str]] = {}
_MAX_SITES = 4096


def _format_tb(tb: TracebackType) -> list[str]:
    """``traceback.format_tb(tb)``, formatted once per failure site.

    ``traceback`` checks every source file of the stack with ``os.stat`` on each call
    (``linecache.checkcache``). Each such call releases the GIL, and in the Python worker,
    where Beam's threads and the other operators share it, getting it back costs up to a
    switch interval, for every failed record (BENCH.md). A site's
    lines depend on nothing but its code and positions, so they are reused.
    """
    key = tuple((t.tb_frame.f_code, t.tb_lasti) for t in _walk(tb))
    lines = _SITES.get(key)
    if lines is None:
        lines = traceback.format_tb(tb)
        if len(_SITES) < _MAX_SITES:
            _SITES[key] = lines
    return lines


def _walk(tb: TracebackType | None) -> list[TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _safe(value: object, what: str, func: Any = str) -> str:
    try:
        return str(func(value))
    except Exception:
        return f"<{what} {func.__name__}() failed>"


def _format_exception_only(exc: BaseException) -> list[str]:
    """``traceback.format_exception_only(exc)`` without building a ``TracebackException``
    (which walks the cause chain again: a large share of a worker's time when many records fail).
    Syntax errors, which Python prints with their source line, take the library's path."""
    if isinstance(exc, SyntaxError):
        return traceback.format_exception_only(exc)
    cls = type(exc)
    name, module = cls.__qualname__, cls.__module__
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    text = _safe(exc, "exception")
    lines = [f"{name}: {text}\n" if text else f"{name}\n"]
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, collections.abc.Sequence):
        for note in notes:
            lines += [line + "\n" for line in _safe(note, "note").split("\n")]
    elif notes is not None:
        lines.append(_safe(notes, "__notes__", repr))
    return lines


def _format_chain(exc: BaseException, seen: set[int]) -> list[str]:
    """``traceback.format_exception(exc)`` for everything but exception groups."""
    seen.add(id(exc))
    lines: list[str] = []
    cause, context = exc.__cause__, exc.__context__
    if cause is not None and id(cause) not in seen:
        lines += _format_chain(cause, seen)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif context is not None and not exc.__suppress_context__ and id(context) not in seen:
        lines += _format_chain(context, seen)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.__traceback__ is not None:
        lines.append("Traceback (most recent call last):\n")
        lines += _format_tb(exc.__traceback__)
    lines += _format_exception_only(exc)
    return lines


def format_stacktrace(exc: BaseException) -> str:
    """The exception as Python prints it (chained causes, notes), capped at 8 KiB."""
    if isinstance(exc, BaseExceptionGroup):
        text = "".join(traceback.format_exception(exc))
    else:
        text = "".join(_format_chain(exc, set()))
    return cap_utf8(text, MAX_STACKTRACE_BYTES)


def replay_count(record: SourceRecord) -> int:
    """How often the record was replayed already (the ``dlq.replay.count`` header)."""
    raw = record.header(REPLAY_COUNT_HEADER)
    if raw is None:
        return 0
    try:
        return max(0, int(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        return 0


@functools.lru_cache(maxsize=16)  # the job stamps a whole batch's envelopes with one time
def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _source(
    topic: str,
    partition: int | None,
    offset: int | None,
    timestamp: int | None,
    key: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
) -> dict[str, Any]:
    return {
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp": timestamp,
        "key_b64": b64(key),
        "headers": [[name, b64(value)] for name, value in headers],
    }


def build_envelope(
    record: SourceRecord,
    exc: BaseException,
    category: Category,
    *,
    attempts: int,
    job_name: str,
    operator: str,
    failed_at: datetime | None = None,
) -> dict[str, Any]:
    """The envelope for ``record`` that failed with ``exc`` (a dict; see :func:`encode`)."""
    field = getattr(exc, "field", None)
    return {
        "schema": SCHEMA,
        "source": _source(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.headers,
        ),
        "payload_b64": b64(record.value),
        "payload_text": as_text(record.value),
        "error": {
            "category": str(category),
            "type": type(exc).__name__,
            "message": cap_utf8(str(exc) or type(exc).__name__, MAX_MESSAGE_BYTES, keep_tail=False),
            "field": field if isinstance(field, str) else None,
            "stacktrace": format_stacktrace(exc),
        },
        "attempts": attempts,
        "failed_at": iso_ms(failed_at or datetime.now(UTC)),
        "job": {"name": job_name, "operator": operator},
        "replay": {"count": replay_count(record)},
    }


def build_delivery_envelope(
    *,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]],
    timestamp: int | None,
    error_name: str,
    message: str,
    retriable: bool,
    possibly_persisted: bool,
    attempts: int,
    producer: str,
    failed_at: datetime | None = None,
) -> dict[str, Any]:
    """The envelope of a record an ingest producer could not deliver to ``topic``.

    Category ``delivery``: ``source.topic`` is the intended topic, its partition and offset are
    null (the record never got a position), ``error.type`` is the Kafka error name.
    ``possibly_persisted`` is librdkafka's word that the record may have been written all the
    same (it was sent and no answer came): replaying it may then make a duplicate.
    """
    return {
        "schema": SCHEMA,
        "source": _source(topic, None, None, timestamp, key, headers),
        "payload_b64": b64(value),
        "payload_text": as_text(value),
        "error": {
            "category": str(Category.DELIVERY),
            "type": error_name,
            "message": cap_utf8(message or error_name, MAX_MESSAGE_BYTES, keep_tail=False),
            "field": None,
            "stacktrace": None,
            "retriable": retriable,
            "possibly_persisted": possibly_persisted,
        },
        "attempts": attempts,
        "failed_at": iso_ms(failed_at or datetime.now(UTC)),
        "job": {"name": producer, "operator": "ingest-producer"},
        "replay": {"count": 0},
    }


def claim_checked(envelope: dict[str, Any], uri: str, sha256: str) -> dict[str, Any]:
    """The envelope with its payload stored aside: a reference instead of the bytes."""
    size = len(unb64(envelope.get("payload_b64")) or b"")
    return {
        **envelope,
        "payload_b64": None,
        "payload_text": None,
        "payload_ref": {"uri": uri, "sha256": sha256, "size": size},
    }


def encode(envelope: dict[str, Any]) -> bytes:
    return orjson.dumps(envelope)


class EnvelopeError(ValueError):
    """Bytes that are not a v1 DLQ envelope."""


def decode(data: bytes) -> dict[str, Any]:
    """Parses an envelope and checks its shape: the one decision on what is an envelope.

    Raises :class:`EnvelopeError` (saying what is wrong) for anything but a JSON object with
    the v1 schema marker, a ``source`` with a topic, an ``error`` with a category, type and
    message, and the payload either inline (``payload_b64``, null for a tombstone) or stored
    aside (``payload_ref`` with ``uri`` and ``sha256``). Readers then need no defaults.
    """
    try:
        env = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise EnvelopeError(f"not JSON: {e}") from e
    if not isinstance(env, dict) or env.get("schema") != SCHEMA:
        raise EnvelopeError(f"not a {SCHEMA} envelope")
    src, error = env.get("source"), env.get("error")
    if not isinstance(src, dict) or not isinstance(src.get("topic"), str):
        raise EnvelopeError("envelope without source.topic")
    # Written out rather than looped: replay and stats decode every record of a DLQ.
    # (``type(v) is int`` is an integer that is not a bool.)
    partition, offset, timestamp = src.get("partition"), src.get("offset"), src.get("timestamp")
    if not (
        (partition is None or type(partition) is int)
        and (offset is None or type(offset) is int)
        and (timestamp is None or type(timestamp) is int)
    ):
        bad = next(n for n in ("partition", "offset", "timestamp") if not _int_or_none(src.get(n)))
        raise EnvelopeError(f"envelope source.{bad} is not an integer or null")
    if not (
        isinstance(error, dict)
        and isinstance(error.get("category"), str)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    ):
        raise EnvelopeError("envelope without error.category, error.type and error.message")
    ref = env.get("payload_ref")
    if ref is not None and not (
        isinstance(ref, dict)
        and isinstance(ref.get("uri"), str)
        and isinstance(ref.get("sha256"), str)
    ):
        raise EnvelopeError("envelope payload_ref without uri and sha256")
    payload = env.get("payload_b64")
    if not (payload is None or isinstance(payload, str)):
        raise EnvelopeError("envelope payload_b64 is not text or null")
    return env


def _int_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


class EnvelopeView(NamedTuple):
    """A DLQ envelope as its readers see it: typed, read-only, checked once by :func:`decode`.

    ``raw`` is the decoded JSON object (what a ``--fix`` function receives, SPEC section 8).
    Every scan makes one per DLQ record, so a view is only the checked object; its fields are
    read from it when asked.
    """

    raw: Mapping[str, Any]

    @classmethod
    def read(cls, data: bytes) -> EnvelopeView:
        """The view of an envelope's bytes; :class:`EnvelopeError` if they are not one."""
        return cls(decode(data))

    @property
    def topic(self) -> str:
        return self.raw["source"]["topic"]  # type: ignore[no-any-return]

    @property
    def partition(self) -> int | None:
        return self.raw["source"].get("partition")  # type: ignore[no-any-return]

    @property
    def offset(self) -> int | None:
        return self.raw["source"].get("offset")  # type: ignore[no-any-return]

    @property
    def category(self) -> str:
        return self.raw["error"]["category"]  # type: ignore[no-any-return]

    @property
    def error_type(self) -> str:
        return self.raw["error"]["type"]  # type: ignore[no-any-return]

    @property
    def message(self) -> str:
        return self.raw["error"]["message"]  # type: ignore[no-any-return]

    @property
    def field(self) -> str | None:
        field = self.raw["error"].get("field")
        return field if isinstance(field, str) else None

    @property
    def attempts(self) -> int:
        attempts = self.raw.get("attempts")
        return attempts if isinstance(attempts, int) else 1

    @property
    def replay_count(self) -> int:
        replay = self.raw.get("replay")
        count = replay.get("count") if isinstance(replay, dict) else 0
        return count if isinstance(count, int) and count > 0 else 0

    @property
    def failed_at(self) -> datetime | None:
        """When the record failed (None when the envelope's time is missing or unreadable)."""
        return parse_iso(self.raw.get("failed_at"))

    @property
    def error(self) -> Mapping[str, Any]:
        """The ``error`` object as written (for fingerprints and reports)."""
        return self.raw["error"]  # type: ignore[no-any-return]

    def original(self, resolve: Callable[[str, str], bytes] | None = None) -> SourceRecord:
        return original(self.raw, resolve)


def parse_iso(text: object) -> datetime | None:
    """An ISO-8601 time, or None when it is missing or not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def original(
    envelope: Mapping[str, Any], resolve: Callable[[str, str], bytes] | None = None
) -> SourceRecord:
    """The exact original record of an envelope.

    A claim-checked envelope (``payload_ref``) carries no payload: ``resolve(uri, sha256)``
    fetches it from where it was stored aside.
    """
    src = envelope["source"]
    ref = envelope.get("payload_ref")
    if isinstance(ref, dict) and envelope.get("payload_b64") is None:
        if resolve is None:
            raise EnvelopeError("the payload is stored aside (payload_ref); nothing resolves it")
        value: bytes | None = resolve(str(ref["uri"]), str(ref["sha256"]))
    else:
        value = unb64(envelope.get("payload_b64"))
    headers = src.get("headers")
    return SourceRecord(  # positional: one per replayed record
        src["topic"],
        src["partition"],
        src["offset"],
        src.get("timestamp"),
        unb64(src.get("key_b64")),
        value,
        tuple((name, unb64(v)) for name, v in headers) if headers else (),
    )
