"""Failure classes and their DLQ categories (SPEC section 5)."""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    DESERIALIZATION = "deserialization"
    VALIDATION = "validation"
    PROCESSING = "processing"
    TRANSIENT = "transient"
    # An ingest producer could not deliver the record to its input topic (SPEC section 5).
    DELIVERY = "delivery"


class DeserializationError(ValueError):
    """The value is not a UTF-8 JSON object (tombstones and empty values included)."""


class TombstoneError(DeserializationError):
    """The record has a null value (a Kafka tombstone): there is nothing to validate."""


class EmptyValueError(DeserializationError):
    """The record value is zero bytes long."""


class NotAnObjectError(DeserializationError):
    """The value is valid JSON, but not a JSON object."""


class ValidationError(ValueError):
    """A field rule of SPEC section 3 failed; ``field`` names the field at fault."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class TransientError(Exception):
    """Raise (or subclass) in an enrichment hook for failures worth retrying."""
