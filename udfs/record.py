"""The record as read from Kafka: the one record type of the project."""

from __future__ import annotations

from typing import NamedTuple

Headers = tuple[tuple[str, bytes | None], ...]


class SourceRecord(NamedTuple):
    """One record exactly as consumed from Kafka (a named tuple: the job builds one per
    record, and a tuple is built several times faster than a frozen dataclass)."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @property
    def position(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (Kafka semantics), or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None
