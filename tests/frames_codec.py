"""The other half of each frame codec, for tests: what the JVM side does in production
(encode source frames, read sink frames and result batches) and helpers to build batches."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from bridge.frames import (
    _HEADER_HEAD,
    _I32,
    _RESULT_HEAD,
    _SINK_HEAD,
    _SOURCE_HEAD,
    FrameError,
    _n,
    batch_records,
    decode_headers,
    sink_frame,
)
from udfs.record import Headers, SourceRecord


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
