"""The byte frames that carry a Kafka record between the JVM and the Python functions.

Mirror of ``java/src/main/java/io/marketlag/dlq/RecordFrames.java``; shared test vectors
(tests/vectors/frames.json) hold both codecs to one format. The record logic (udfs) knows
nothing of these bytes: :func:`process_batch` turns a batch of source frames into records,
asks a ``FeedProcessor`` for their outcomes and packs them into a result batch.

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
from collections import Counter
from collections.abc import Iterator

from udfs.pipeline import Clean, FeedProcessor
from udfs.record import Headers, SourceRecord

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


def _n(b: bytes | None) -> int:
    return -1 if b is None else len(b)


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


def join_results(results: list[tuple[int, bytes]]) -> bytes:
    """The result batch for ``BatchSplitter``: (side, sink frame) pairs, in input order."""
    parts = [_I32.pack(len(results))]
    for side, frame in results:
        parts.append(_RESULT_HEAD.pack(side, len(frame)))
        parts.append(frame)
    return b"".join(parts)


def process_batch(processor: FeedProcessor, batch: bytes) -> tuple[bytes, Counter[str]]:
    """The result batch for a batch of source frames, and its outcomes counted by kind
    ("clean" or a DLQ category): what the job's validate function runs.

    Clean records keep their key, headers and timestamp and go where the clean topic's
    partitioner puts them; an envelope goes to its input's partition of the DLQ (a DLQ has
    its input's partition count), which keeps the input's per-partition order. A record's
    headers block is passed through undecoded; it is decoded only for an envelope.
    """
    results = []
    counts: Counter[str] = Counter()
    clean = 0
    pairs = list(batch_records(batch))
    decoded = processor.outcomes(pairs, decode_headers)
    for (record, outcome), (_, headers) in zip(decoded, pairs, strict=True):
        if isinstance(outcome, Clean):
            clean += 1
            frame = sink_frame(outcome.key, outcome.value, headers, -1, record.timestamp)
            results.append((CLEAN_SIDE, frame))
        else:
            counts[str(outcome.category)] += 1
            frame = sink_frame(outcome.key, outcome.envelope, headers, record.partition)
            results.append((DLQ_SIDE, frame))
    if clean:
        counts["clean"] = clean
    return join_results(results), counts
