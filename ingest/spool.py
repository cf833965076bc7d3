"""The durable spool: records an ingest producer could get neither into their topic nor into
their DLQ, held outside Kafka until ``dlq spool drain`` sends them (SPEC section 9).

Where: a local directory (a server's disk, a Lambda's EFS mount) or an S3-compatible bucket
(``s3://bucket/prefix``, for functions whose local disk does not survive them).

Format: a spool is a set of segments; one ``append`` writes one new segment and nothing ever
changes a segment afterwards (drain deletes it whole once every record in it is committed).
A segment is a run of records, each framed as::

    magic "MLS1" | u32 body length | u32 CRC-32 of the body | body (JSON, below)

Big-endian. The checksum finds a torn record (a crash in the middle of a write: the record is
reported and skipped, every complete record before it survives) and a damaged one (reported
and skipped, the records after it are still read). The body is a JSON object, bytes in
base64: ``id`` (the drain ledger's key: unique for good), ``kind`` (``record`` for the input
topic, ``envelope`` for the DLQ), ``topic``, ``dlq_topic``, ``key_b64``, ``value_b64``,
``headers``, ``timestamp``, ``possibly_persisted``, ``spooled_at``, ``reason``.

A local segment is fsynced, and so is its directory entry, before ``append`` returns; an S3
segment is one PUT with its MD5 checked by the store. Claim checks (payloads too large for
any DLQ record, :mod:`kafkaio.claims`) are stored beside the segments under ``claims/``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from kafkaio.claims import (
    ClaimStore,
    LocalClaims,
    S3Claims,
    StorageError,
    fsync_dir,
    s3_call,
    s3_client,
    split_s3,
)
from udfs.envelope import b64, unb64
from udfs.record import Headers

MAGIC = b"MLS1"
_HEAD = struct.Struct(">4sII")
SEGMENT_SUFFIX = ".spool"
# A segment being written: NAME.spool.open, renamed to NAME.spool once it is on disk.
OPEN_SUFFIX = SEGMENT_SUFFIX + ".open"
# A segment still ``.open`` this long after its last write lost its writer (a crash).
ORPHAN_AGE_S = 30.0


class SpoolError(StorageError):
    """The spool cannot take or give records (unwritable, unreachable)."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One record held in the spool, with where it goes when drained."""

    kind: str  # "record": to ``topic`` (an input topic); "envelope": to ``topic`` (a DLQ)
    topic: str
    dlq_topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: int | None = None
    possibly_persisted: bool = False
    reason: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    spooled_at: str = ""

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "topic": self.topic,
                "dlq_topic": self.dlq_topic,
                "key_b64": b64(self.key),
                "value_b64": b64(self.value),
                "headers": [[name, b64(value)] for name, value in self.headers],
                "timestamp": self.timestamp,
                "possibly_persisted": self.possibly_persisted,
                "spooled_at": self.spooled_at or _now(),
                "reason": self.reason,
            }
        )

    @classmethod
    def from_body(cls, body: bytes) -> SpooledRecord:
        doc = orjson.loads(body)
        return cls(
            kind=doc["kind"],
            topic=doc["topic"],
            dlq_topic=doc["dlq_topic"],
            key=unb64(doc["key_b64"]),
            value=unb64(doc["value_b64"]),
            headers=tuple((str(n), unb64(v)) for n, v in doc["headers"]),
            timestamp=doc["timestamp"],
            possibly_persisted=bool(doc["possibly_persisted"]),
            reason=doc["reason"],
            id=doc["id"],
            spooled_at=doc["spooled_at"],
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_segment(records: Sequence[SpooledRecord]) -> bytes:
    parts = []
    for rec in records:
        body = rec.body()
        parts.append(_HEAD.pack(MAGIC, len(body), zlib.crc32(body)))
        parts.append(body)
    return b"".join(parts)


@dataclass(frozen=True)
class SegmentContents:
    records: list[SpooledRecord]
    problems: list[str]  # torn or damaged records, each said where


def decode_segment(data: bytes, name: str = "segment") -> SegmentContents:
    """Every complete, intact record of a segment; what is torn or damaged is reported."""
    records: list[SpooledRecord] = []
    problems: list[str] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEAD.size:
            problems.append(f"{name}: torn record at byte {pos} (crash while writing?)")
            break
        magic, length, crc = _HEAD.unpack_from(data, pos)
        if magic != MAGIC:
            problems.append(f"{name}: no record marker at byte {pos}; the rest is unreadable")
            break
        start, end = pos + _HEAD.size, pos + _HEAD.size + length
        if end > len(data):
            problems.append(f"{name}: torn record at byte {pos} (crash while writing?)")
            break
        body = data[start:end]
        pos = end
        if zlib.crc32(body) != crc:
            problems.append(f"{name}: damaged record at byte {start - _HEAD.size} (checksum)")
            continue
        try:
            records.append(SpooledRecord.from_body(body))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            problems.append(f"{name}: unreadable record at byte {start - _HEAD.size}: {e}")
    return SegmentContents(records, problems)


class Spool(Protocol):
    """Where records wait; a local directory or an S3-compatible bucket, with the claim store
    of payloads too large for a DLQ record beside it."""

    location: str

    @property
    def claims(self) -> ClaimStore: ...

    def append(self, records: Sequence[SpooledRecord]) -> str: ...

    def segments(self) -> list[str]: ...

    def claim_segment(self, name: str) -> contextlib.AbstractContextManager[bytes | None]: ...

    def remove(self, name: str) -> None: ...


def _segment_name() -> str:
    # Time first: segments sort in the order they were written, and drain keeps that order.
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}{SEGMENT_SUFFIX}"


class LocalSpool:
    """A spool directory on a local (or network) file system."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.location = str(self.path)
        self.claims = LocalClaims(self.path / "claims")

    def _dir(self) -> Path:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpoolError(f"spool {self.path} cannot be created: {e.strerror or e}") from e
        return self.path

    def append(self, records: Sequence[SpooledRecord]) -> str:
        """Writes ``records`` as one new segment; returns once it is on disk (fsync).

        The segment is written as ``NAME.spool.open`` under an exclusive lock, fsynced, then
        renamed to ``NAME.spool`` and the directory fsynced. A crash part-way leaves the
        ``.open`` file with a torn last record: drain takes it once no process holds its lock
        and it is older than :data:`ORPHAN_AGE_S` (so never one that is being written).
        """
        folder = self._dir()
        name = _segment_name()
        data = encode_segment(records)
        opened = folder / (name.removesuffix(SEGMENT_SUFFIX) + OPEN_SUFFIX)
        try:
            fd = os.open(opened, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                os.rename(opened, folder / name)
            finally:
                os.close(fd)
            fsync_dir(folder)
        except OSError as e:
            raise SpoolError(f"cannot write to spool {folder}: {e.strerror or e}") from e
        return name

    def segments(self) -> list[str]:
        """Complete segments, and segments left open by a writer that died (oldest first)."""
        if not self.path.is_dir():
            return []
        names = []
        cutoff = time.time() - ORPHAN_AGE_S
        for p in self.path.iterdir():
            if p.name.endswith(SEGMENT_SUFFIX):
                names.append(p.name)
            elif p.name.endswith(OPEN_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    if p.stat().st_mtime < cutoff:
                        names.append(p.name)
        return sorted(names)

    @contextlib.contextmanager
    def claim_segment(self, name: str) -> Iterator[bytes | None]:
        """The segment's bytes, held locked against a concurrent drain; None when another
        process holds it (a writer still writing, or another drain)."""
        try:
            fd = os.open(self.path / name, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            yield data
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / name).unlink()
        fsync_dir(self.path)


class S3Spool:
    """A spool in an S3-compatible bucket: one object per segment (a PUT is all or nothing).

    The client comes from boto3 with its usual configuration (``AWS_*`` environment,
    ``AWS_ENDPOINT_URL_S3`` for another S3-compatible store).
    """

    def __init__(self, location: str, client: Any = None) -> None:
        try:
            bucket, prefix = split_s3(location)
            self.client = client if client is not None else s3_client()
        except StorageError as e:
            raise SpoolError(str(e)) from e
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.location = f"s3://{bucket}/{self.prefix}"
        self.claims = S3Claims(bucket, f"{self.prefix}claims/", self.client)

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        return s3_call(SpoolError, f"S3 spool {self.location}: {what}", fn, **kwargs)

    def append(self, records: Sequence[SpooledRecord]) -> str:
        data = encode_segment(records)
        name = _segment_name()
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        self._call(
            "put",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.prefix + name,
            Body=data,
            ContentMD5=md5,
        )
        return name

    def segments(self) -> list[str]:
        names: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(
                "list",
                self.client.list_objects_v2,
                Bucket=self.bucket,
                Prefix=self.prefix,
                **token,
            )
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix) :]
                if "/" not in name and name.endswith(SEGMENT_SUFFIX):
                    names.append(name)
            if not page.get("IsTruncated"):
                return sorted(names)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    @contextlib.contextmanager
    def claim_segment(self, name: str) -> Iterator[bytes | None]:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                yield None
                return
            raise SpoolError(f"S3 spool {self.location}: get {name} failed: {e}") from e
        yield obj["Body"].read()

    def remove(self, name: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.prefix + name)


def open_spool(location: str | Path) -> Spool:
    """The spool at ``location``: ``s3://bucket/prefix`` or a directory."""
    text = str(location)
    if text.startswith("s3://"):
        return S3Spool(text)
    return LocalSpool(text)


@dataclass(frozen=True)
class SpoolSummary:
    """What a spool holds now (for ``dlq stats`` and ``dlq monitor``)."""

    location: str
    segments: int
    records: int
    possibly_persisted: int
    oldest: str | None
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "segments": self.segments,
            "records": self.records,
            "possibly_persisted": self.possibly_persisted,
            "oldest": self.oldest,
            "problems": self.problems,
        }


def summarise(spool: Spool) -> SpoolSummary:
    records = flagged = 0
    oldest: str | None = None
    problems: list[str] = []
    names = spool.segments()
    for name in names:
        with spool.claim_segment(name) as data:
            if data is None:
                continue
            contents = decode_segment(data, name)
        records += len(contents.records)
        flagged += sum(r.possibly_persisted for r in contents.records)
        problems += contents.problems
        for r in contents.records:
            if oldest is None or r.spooled_at < oldest:
                oldest = r.spooled_at
    return SpoolSummary(spool.location, len(names), records, flagged, oldest, problems)
