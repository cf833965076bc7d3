"""The byte frames that carry a Kafka record between the JVM and the Python functions.

Mirror of ``java/src/main/java/io/marketlag/dlq/RecordFrames.java``; keep them in step.
Big-endian integers; a length of -1 is null.

source frame: i32 partition, i64 offset, i64 timestamp, str topic, bytes key, bytes value, headers
sink frame:   i32 partition, i64 timestamp, bytes key, bytes value, headers
batch:        i32 count, count * (i32 length, source frame)            (FrameBatcher.java)
results:      i32 count, count * (i8 side, i32 length, sink frame)     (BatchSplitter.java)
              side 0: clean topic, 1: DLQ topic
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

Headers = tuple[tuple[str, bytes | None], ...]

_SOURCE_HEAD = struct.Struct(">iqq")
_SINK_HEAD = struct.Struct(">iq")
_I32 = struct.Struct(">i")
_RESULT_HEAD = struct.Struct(">bi")

CLEAN_SIDE = 0
DLQ_SIDE = 1


class FrameError(ValueError):
    """A frame is truncated or malformed: a bug in the Java/Python pairing, never bad data."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record exactly as consumed from Kafka."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (Kafka semantics), or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


def _read(frame: bytes, pos: int) -> tuple[bytes | None, int]:
    (n,) = _I32.unpack_from(frame, pos)
    pos += 4
    if n < 0:
        return None, pos
    end = pos + n
    if end > len(frame):
        raise FrameError(f"frame truncated: need {end} bytes, have {len(frame)}")
    return frame[pos:end], end


def _read_headers(frame: bytes, pos: int) -> tuple[Headers, int]:
    (count,) = _I32.unpack_from(frame, pos)
    pos += 4
    headers = []
    for _ in range(count):
        name, pos = _read(frame, pos)
        value, pos = _read(frame, pos)
        headers.append(((name or b"").decode("utf-8"), value))
    return tuple(headers), pos


def decode_source(frame: bytes) -> SourceRecord:
    """Decodes a source frame built by ``RawRecordDeserializationSchema``."""
    try:
        partition, offset, timestamp = _SOURCE_HEAD.unpack_from(frame, 0)
        topic, pos = _read(frame, _SOURCE_HEAD.size)
        key, pos = _read(frame, pos)
        value, pos = _read(frame, pos)
        headers, pos = _read_headers(frame, pos)
    except struct.error as e:
        raise FrameError(f"frame truncated: {e}") from e
    return SourceRecord(
        (topic or b"").decode("utf-8"),
        partition,
        offset,
        None if timestamp < 0 else timestamp,
        key,
        value,
        headers,
    )


def _bytes(b: bytes | None) -> bytes:
    return _I32.pack(-1) if b is None else _I32.pack(len(b)) + b


def _headers(headers: Headers) -> bytes:
    parts = [_I32.pack(len(headers))]
    for name, value in headers:
        parts.append(_bytes(name.encode("utf-8")))
        parts.append(_bytes(value))
    return b"".join(parts)


def encode_source(record: SourceRecord) -> bytes:
    """The source frame of ``record`` (tests and tools; the job gets it from Java)."""
    return b"".join(
        (
            _SOURCE_HEAD.pack(
                record.partition,
                record.offset,
                -1 if record.timestamp is None else record.timestamp,
            ),
            _bytes(record.topic.encode("utf-8")),
            _bytes(record.key),
            _bytes(record.value),
            _headers(record.headers),
        )
    )


def encode_sink(
    key: bytes | None,
    value: bytes | None,
    headers: Headers = (),
    partition: int = -1,
    timestamp: int | None = None,
) -> bytes:
    """A sink frame for ``FramedRecordSerializationSchema``; partition -1: by key."""
    return b"".join(
        (
            _SINK_HEAD.pack(partition, -1 if timestamp is None else timestamp),
            _bytes(key),
            _bytes(value),
            _headers(headers),
        )
    )


def decode_sink(frame: bytes) -> tuple[int, int | None, bytes | None, bytes | None, Headers]:
    """(partition, timestamp, key, value, headers) of a sink frame (tests)."""
    partition, timestamp = _SINK_HEAD.unpack_from(frame, 0)
    key, pos = _read(frame, _SINK_HEAD.size)
    value, pos = _read(frame, pos)
    headers, _ = _read_headers(frame, pos)
    return partition, None if timestamp < 0 else timestamp, key, value, headers


def split_batch(batch: bytes) -> list[bytes]:
    """The source frames of a batch built by ``FrameBatcher``."""
    try:
        (count,) = _I32.unpack_from(batch, 0)
        pos = 4
        frames = []
        for _ in range(count):
            frame, pos = _read(batch, pos)
            if frame is None:
                raise FrameError("batch holds a null frame")
            frames.append(frame)
    except struct.error as e:
        raise FrameError(f"batch truncated: {e}") from e
    if pos != len(batch):
        raise FrameError(f"batch has {len(batch) - pos} trailing bytes")
    return frames


def join_batch(frames: list[bytes]) -> bytes:
    """A batch of source frames, as ``FrameBatcher`` builds it (tests and tools)."""
    return b"".join([_I32.pack(len(frames)), *(_bytes(f) for f in frames)])


def join_results(results: list[tuple[int, bytes]]) -> bytes:
    """The result batch for ``BatchSplitter``: (side, sink frame) pairs, in input order."""
    parts = [_I32.pack(len(results))]
    for side, frame in results:
        parts.append(_RESULT_HEAD.pack(side, len(frame)))
        parts.append(frame)
    return b"".join(parts)


def split_results(batch: bytes) -> list[tuple[int, bytes]]:
    """(side, sink frame) pairs of a result batch (tests)."""
    (count,) = _I32.unpack_from(batch, 0)
    pos = 4
    results = []
    for _ in range(count):
        side, n = _RESULT_HEAD.unpack_from(batch, pos)
        pos += _RESULT_HEAD.size
        results.append((side, batch[pos : pos + n]))
        pos += n
    if pos != len(batch):
        raise FrameError(f"result batch has {len(batch) - pos} trailing bytes")
    return results
