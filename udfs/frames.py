"""The byte frames that carry a Kafka record between the JVM and the Python functions.

Mirror of ``java/src/main/java/io/marketlag/dlq/RecordFrames.java``; keep them in step.
Big-endian integers; a length of -1 is null. A fixed head holds every length, so a frame is
sliced with one unpack; the headers stay an opaque block that a clean record passes from its
source frame to its sink frame unchanged (they are decoded only for a DLQ envelope).

source frame: i32 partition, i64 offset, i64 timestamp (-1: none), i32 topic length,
              i32 key length, i32 value length, i32 headers length, topic, key, value, headers
sink frame:   i32 partition (-1: by key), i64 timestamp (-1: producer time), i32 key length,
              i32 value length, i32 headers length, key, value, headers
headers:      i32 count, count * (i32 name length, i32 value length, name (UTF-8), value)
batch:        i32 count, count * (i32 length, source frame)            (FrameBatcher.java)
results:      i32 count, count * (i8 side, i32 length, sink frame)     (BatchSplitter.java)
              side 0: clean topic, 1: DLQ topic
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

Headers = tuple[tuple[str, bytes | None], ...]

_SOURCE_HEAD = struct.Struct(">iqqiiii")
_SINK_HEAD = struct.Struct(">iqiii")
_HEADER_HEAD = struct.Struct(">ii")
_I32 = struct.Struct(">i")
_RESULT_HEAD = struct.Struct(">bi")
_BATCH_ENTRY = struct.Struct(">i" + _SOURCE_HEAD.format[1:])  # frame length, then its head
_new_tuple = tuple.__new__
_NO_HEADERS = _I32.pack(0)

CLEAN_SIDE = 0
DLQ_SIDE = 1


class FrameError(ValueError):
    """A frame is truncated or malformed: a bug in the Java/Python pairing, never bad data."""


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


def _n(b: bytes | None) -> int:
    return -1 if b is None else len(b)


def encode_headers(headers: Headers) -> bytes:
    """The headers block of ``headers``."""
    parts = [_I32.pack(len(headers))]
    for name, value in headers:
        raw = name.encode("utf-8")
        parts.append(_HEADER_HEAD.pack(len(raw), _n(value)))
        parts.append(raw)
        if value is not None:
            parts.append(value)
    return b"".join(parts)


def decode_headers(block: bytes) -> Headers:
    """The headers of a headers block."""
    try:
        (count,) = _I32.unpack_from(block, 0)
        pos = 4
        headers = []
        for _ in range(count):
            name_len, value_len = _HEADER_HEAD.unpack_from(block, pos)
            pos += 8
            name = block[pos : pos + name_len].decode("utf-8")
            pos += name_len
            value = None
            if value_len >= 0:
                value = block[pos : pos + value_len]
                pos += value_len
            headers.append((name, value))
    except (struct.error, UnicodeDecodeError) as e:
        raise FrameError(f"headers block malformed: {e}") from e
    if pos != len(block):
        raise FrameError(f"headers block is {len(block)} bytes, its headers {pos}")
    return tuple(headers)


def batch_records(batch: bytes) -> Iterator[tuple[SourceRecord, bytes]]:
    """The records of a batch built by ``FrameBatcher``, in order, each with its headers block
    still encoded (``record.headers`` is empty: ``decode_headers(block)`` when needed).

    The job's hottest Python path besides the validation itself: one ``unpack`` per record
    reads its frame length and every length of its head, and the records are built as plain
    tuples (``SourceRecord.__new__`` is a Python-level function).
    """
    unpack = _BATCH_ENTRY.unpack_from
    head = _SOURCE_HEAD.size
    size = len(batch)
    topics: dict[bytes, str] = {}
    try:
        (count,) = _I32.unpack_from(batch, 0)
    except struct.error as e:
        raise FrameError(f"batch truncated: {e}") from e
    pos = 4
    for _ in range(count):
        try:
            n, partition, offset, timestamp, t_len, k_len, v_len, h_len = unpack(batch, pos)
        except struct.error as e:
            raise FrameError(f"batch truncated: {e}") from e
        if n < 0:
            raise FrameError("batch holds a null frame")
        start = pos + 4
        end = start + n
        if end > size:
            raise FrameError(f"batch truncated: need {end} bytes, have {size}")
        pos = start + head
        key_end = pos + t_len + (k_len if k_len > 0 else 0)
        value_end = key_end + (v_len if v_len > 0 else 0)
        if value_end + h_len != end or t_len < 0 or h_len < 0:
            raise FrameError(f"frame of {n} bytes does not match its lengths")
        raw_topic = batch[pos : pos + t_len]
        topic = topics.get(raw_topic)
        if topic is None:
            topic = topics[raw_topic] = raw_topic.decode("utf-8")
        yield (
            _new_tuple(
                SourceRecord,
                (
                    topic,
                    partition,
                    offset,
                    None if timestamp < 0 else timestamp,
                    None if k_len < 0 else batch[pos + t_len : key_end],
                    None if v_len < 0 else batch[key_end:value_end],
                    (),
                ),
            ),
            batch[value_end:end],
        )
        pos = end
    if pos != size:
        raise FrameError(f"batch has {size - pos} trailing bytes")


def decode_source(frame: bytes) -> SourceRecord:
    """Decodes a source frame built by ``RecordFrames.encodeSource``, headers included."""
    ((record, block),) = batch_records(join_batch([frame]))
    return record._replace(headers=decode_headers(block))


def encode_source(record: SourceRecord) -> bytes:
    """The source frame of ``record`` (tests and tools; the job gets it from Java)."""
    topic = record.topic.encode("utf-8")
    block = encode_headers(record.headers)
    return b"".join(
        (
            _SOURCE_HEAD.pack(
                record.partition,
                record.offset,
                -1 if record.timestamp is None else record.timestamp,
                len(topic),
                _n(record.key),
                _n(record.value),
                len(block),
            ),
            topic,
            record.key or b"",
            record.value or b"",
            block,
        )
    )


def sink_frame(
    key: bytes | None,
    value: bytes | None,
    headers_block: bytes = _NO_HEADERS,
    partition: int = -1,
    timestamp: int | None = None,
) -> bytes:
    """A sink frame for ``FramedRecordSerializationSchema``, with an encoded headers block;
    partition -1: by key."""
    return b"".join(
        (
            _SINK_HEAD.pack(
                partition,
                -1 if timestamp is None else timestamp,
                _n(key),
                _n(value),
                len(headers_block),
            ),
            key or b"",
            value or b"",
            headers_block,
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
    return sink_frame(key, value, encode_headers(headers), partition, timestamp)


def decode_sink(frame: bytes) -> tuple[int, int | None, bytes | None, bytes | None, Headers]:
    """(partition, timestamp, key, value, headers) of a sink frame (tests)."""
    partition, timestamp, k_len, v_len, h_len = _SINK_HEAD.unpack_from(frame, 0)
    pos = _SINK_HEAD.size
    if pos + max(k_len, 0) + max(v_len, 0) + h_len != len(frame):
        raise FrameError(f"sink frame of {len(frame)} bytes does not match its lengths")
    key = None if k_len < 0 else frame[pos : pos + k_len]
    pos += max(k_len, 0)
    value = None if v_len < 0 else frame[pos : pos + v_len]
    pos += max(v_len, 0)
    return partition, None if timestamp < 0 else timestamp, key, value, decode_headers(frame[pos:])


def _spans(batch: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each frame of a batch."""
    try:
        (count,) = _I32.unpack_from(batch, 0)
        pos = 4
        for _ in range(count):
            (n,) = _I32.unpack_from(batch, pos)
            pos += 4
            if n < 0:
                raise FrameError("batch holds a null frame")
            if pos + n > len(batch):
                raise FrameError(f"batch truncated: need {pos + n} bytes, have {len(batch)}")
            yield pos, pos + n
            pos += n
    except struct.error as e:
        raise FrameError(f"batch truncated: {e}") from e
    if pos != len(batch):
        raise FrameError(f"batch has {len(batch) - pos} trailing bytes")


def split_batch(batch: bytes) -> list[bytes]:
    """The source frames of a batch built by ``FrameBatcher``."""
    return [batch[start:end] for start, end in _spans(batch)]


def join_batch(frames: list[bytes]) -> bytes:
    """A batch of source frames, as ``FrameBatcher`` builds it (tests and tools)."""
    parts = [_I32.pack(len(frames))]
    for frame in frames:
        parts.append(_I32.pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


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
