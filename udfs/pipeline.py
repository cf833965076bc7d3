"""One record in, exactly one outcome out: a clean record or a DLQ envelope.

:class:`FeedProcessor` is what the job's validate function calls for every record, a batch of
records at a time (:meth:`FeedProcessor.outcomes`, through ``bridge.frames.process_batch``).
It never raises: every exception becomes an envelope with its category (SPEC section 5),
after bounded retries with backoff when an enrichment hook fails transiently.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from udfs.envelope import build_envelope, encode
from udfs.errors import Category, DeserializationError, TransientError, ValidationError
from udfs.fast import FAST
from udfs.record import Headers, SourceRecord
from udfs.records import VALIDATORS, Record, parse_object

EnrichHook = Callable[[Record], Record]
Block = TypeVar("Block")  # a record's headers, still encoded


@dataclass(frozen=True)
class RetryConfig:
    """Bounded retries with exponential backoff for transient failures (``retry`` in
    conf/job.yaml): ``retryable`` names exception classes worth retrying besides
    :class:`udfs.errors.TransientError`, ``TimeoutError`` and ``ConnectionError``."""

    max_attempts: int
    backoff_ms: int
    max_backoff_ms: int
    retryable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Clean:
    """An ok record: the input key and the clean JSON value."""

    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Failed:
    """An error record: the input key and the encoded envelope."""

    key: bytes | None
    envelope: bytes
    category: Category


Outcome = Clean | Failed


@dataclass(frozen=True, slots=True)
class _Attempted:
    """What made a record fail, and after how many attempts (before its envelope is built)."""

    exc: Exception
    attempts: int


def load_callable(spec: str) -> Callable[..., Any]:
    """Imports ``module:function``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:function', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target  # type: ignore[no-any-return]


def load_class(spec: str) -> type[BaseException]:
    """Imports a dotted exception class name such as ``requests.exceptions.Timeout``."""
    module_name, _, name = spec.rpartition(".")
    cls = getattr(importlib.import_module(module_name or "builtins"), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"{spec} is not an exception class")
    return cls


def classify(exc: BaseException, retryable: tuple[type[BaseException], ...]) -> Category:
    """The DLQ category of an exception raised while handling one record."""
    if isinstance(exc, DeserializationError | UnicodeDecodeError | json.JSONDecodeError):
        return Category.DESERIALIZATION
    if isinstance(exc, ValidationError):
        return Category.VALIDATION
    if isinstance(exc, retryable):
        return Category.TRANSIENT
    return Category.PROCESSING


class FeedProcessor:
    """Validates, normalises and enriches the records of one feed."""

    def __init__(
        self,
        feed: str,
        *,
        job_name: str,
        operator: str,
        retry: RetryConfig,
        enrich: EnrichHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.feed = feed
        self.validate = VALIDATORS[feed]
        self.fast = FAST[feed]
        self.job_name = job_name
        self.operator = operator
        self.retry = retry
        self.retryable: tuple[type[BaseException], ...] = (
            TransientError,
            TimeoutError,
            ConnectionError,
            *(load_class(name) for name in self.retry.retryable),
        )
        self.enrich = enrich
        self.sleep = sleep
        self.clock = clock

    def outcomes(
        self,
        records: Iterable[tuple[SourceRecord, Block | None]],
        decode: Callable[[Block], Headers] | None = None,
    ) -> Iterator[tuple[SourceRecord, Outcome]]:
        """The one processing path: exactly one outcome per record, in order; never raises
        (bar KeyboardInterrupt). A record may come with its headers still encoded (the job's
        frames: ``decode(block)`` gives them): they are decoded only for an envelope."""
        now = self.clock()  # one reading per call: a batch is processed in milliseconds
        for record, block in records:
            attempt = self._attempt(record, now)
            if isinstance(attempt, Clean):
                yield record, attempt
                continue
            if block is not None and decode is not None:
                record = record._replace(headers=decode(block))
            yield record, self.fail(record, attempt.exc, attempt.attempts, now)

    def process(self, record: SourceRecord) -> Outcome:
        """The outcome of one record (headers decoded): :meth:`outcomes` for a batch of one."""
        for _, outcome in self.outcomes(((record, None),)):
            return outcome
        raise AssertionError("unreachable: one record in, one outcome out")

    def _attempt(self, record: SourceRecord, now: datetime) -> Clean | _Attempted:
        """The clean record, or the exception that stopped it (its envelope is built by the
        caller, which may first have to decode the record's headers). ``now`` is the time
        the rules compare timestamps with."""
        attempts = 1
        lineage = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        try:
            clean = self.fast(record.value, lineage, now) if record.value else None
        except Exception:  # not sure after all: the full rules decide
            clean = None
        try:
            if clean is None:
                clean = self.validate(parse_object(record.value), lineage, now)
            while self.enrich is not None:
                try:
                    clean = self.enrich(clean)
                    break
                except self.retryable as exc:
                    if attempts >= self.retry.max_attempts:
                        exc.add_note(f"gave up after {attempts} attempts")
                        raise
                    self.sleep(
                        min(self.retry.backoff_ms * 2 ** (attempts - 1), self.retry.max_backoff_ms)
                        / 1000
                    )
                    attempts += 1
            return Clean(record.key, orjson.dumps(clean))
        except Exception as exc:  # every failure becomes an envelope, none escapes
            return _Attempted(exc, attempts)

    def fail(
        self,
        record: SourceRecord,
        exc: BaseException,
        attempts: int = 1,
        failed_at: datetime | None = None,
    ) -> Failed:
        """The envelope for a failed record (``failed_at``: when it was processed, default
        now). Falls back to a minimal one if building fails."""
        category = classify(exc, self.retryable)
        try:
            return self._envelope(record, exc, category, attempts, failed_at)
        except Exception as inner:  # pragma: no cover - defence in depth
            inner.__context__ = exc
            return self._envelope(record, inner, Category.PROCESSING, attempts, failed_at)

    def _envelope(
        self,
        record: SourceRecord,
        exc: BaseException,
        category: Category,
        attempts: int,
        failed_at: datetime | None,
    ) -> Failed:
        env = build_envelope(
            record,
            exc,
            category,
            attempts=attempts,
            job_name=self.job_name,
            operator=self.operator,
            failed_at=failed_at,
        )
        return Failed(record.key, encode(env), category)
