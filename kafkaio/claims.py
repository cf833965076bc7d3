"""Claim checks: payloads too large for a DLQ record, stored aside (SPEC section 5).

An envelope whose record is too large for its DLQ carries ``payload_ref: {"uri", "sha256",
"size"}`` instead of ``payload_b64``. The bytes live in a claim store beside the ingest
spool (``<spool>/claims/<sha256>``): a directory or an S3-compatible bucket. A claim is named
by its digest, so the same payload is stored once however often it fails.

References:

- a local claim is a ``file:`` URI as RFC 8089 writes it (``Path.as_uri``: spaces, ``%``,
  ``#`` and letters beyond ASCII percent-encoded), read back byte for byte whatever the path;
- an S3 claim is ``s3://BUCKET/KEY`` with the key as it is, as the AWS tools write it.

Both the ingest side (which stores claims) and the ``dlq`` command (which resolves them on
replay) use this module; :func:`fetch_claim` needs nothing but the reference.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urlsplit


class StorageError(OSError):
    """Storage outside Kafka (a spool, a claim store) cannot take or give bytes."""


class ClaimError(StorageError):
    """A claim cannot be stored or read, or its bytes do not match their digest."""


class ClaimStore(Protocol):
    """Where payloads too large for a DLQ record are kept."""

    def put(self, data: bytes) -> tuple[str, str]:
        """Stores ``data`` durably; returns its reference and its SHA-256 (hex)."""
        ...


def fsync_dir(folder: Path) -> None:
    """Makes a directory's entries (a new or renamed file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalClaims:
    """Claims as files in a directory (created when the first claim is stored)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, data: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        target = self.folder / digest
        try:
            if not target.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                # Written aside and renamed: a reader never sees half a claim.
                tmp = self.folder / f".{digest}.{uuid.uuid4().hex[:8]}"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                tmp.rename(target)
                fsync_dir(self.folder)
        except OSError as e:
            raise ClaimError(f"cannot store a claim in {self.folder}: {e.strerror or e}") from e
        return target.as_uri(), digest


def local_path(uri: str) -> Path:
    """The file a ``file:`` URI names (percent-decoded to the file system's own bytes)."""
    parts = urlsplit(uri)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        raise ClaimError(f"not a local file URI: {uri}")
    return Path(os.fsdecode(unquote_to_bytes(parts.path)))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as (bucket, key); the key is taken as it is."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ClaimError(f"an S3 location is s3://BUCKET[/KEY], got {uri!r}")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client with its usual configuration (``AWS_*`` environment,
    ``AWS_ENDPOINT_URL_S3`` for another S3-compatible store)."""
    try:
        import boto3
    except ImportError as e:
        raise StorageError("S3 storage needs boto3: pip install 'marketlag-dlq[s3]'") from e
    return boto3.client("s3")


def s3_call(error: type[StorageError], what: str, fn: Any, **kwargs: Any) -> Any:
    """``fn(**kwargs)`` (a boto3 client method) with its failures raised as ``error``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except (BotoCoreError, ClientError) as e:
        raise error(f"{what} failed: {e}") from e


class S3Claims:
    """Claims as objects under a prefix of an S3-compatible bucket."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client

    def put(self, data: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        key = f"{self.prefix}{digest}"
        s3_call(
            ClaimError,
            f"put claim s3://{self.bucket}/{key}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
        )
        return f"s3://{self.bucket}/{key}", digest


def fetch_claim(uri: str, sha256: str) -> bytes:
    """The payload a claim-checked envelope refers to, checked against its digest."""
    if uri.startswith("s3://"):
        bucket, key = split_s3(uri)
        client = s3_client()
        got = s3_call(ClaimError, f"get claim {uri}", client.get_object, Bucket=bucket, Key=key)
        data = bytes(got["Body"].read())
    else:
        path = local_path(uri)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ClaimError(f"claim {uri} cannot be read: {e.strerror or e}") from e
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ClaimError(f"claim {uri} does not match its sha256 {sha256}")
    return data
