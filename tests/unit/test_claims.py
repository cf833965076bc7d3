"""Claim checks in a local directory: stored once, read back byte for byte through their
reference whatever path the spool lives under (no broker; the S3 half is in
tests/integration/test_ingest.py, against an S3 server)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.spool import LocalSpool
from kafkaio.claims import ClaimError, fetch_claim, local_path

# A path component a user may choose: spaces, percent signs, '#', '?', letters of any script,
# everything but '/' and NUL.
components = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=24,
).filter(lambda c: c not in (".", ".."))


@given(st.lists(components, min_size=1, max_size=3), st.binary(max_size=2000))
def test_a_claim_reads_back_under_any_spool_path(parts: list[str], payload: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = LocalSpool(Path(tmp, *parts))
        uri, digest = spool.claims.put(payload)
        assert uri.startswith("file:///") and " " not in uri, "a reference is a proper URI"
        assert local_path(uri) == spool.path / "claims" / digest
        assert fetch_claim(uri, digest) == payload


def test_a_claim_is_stored_once_and_checked(tmp_path: Path) -> None:
    spool = LocalSpool(tmp_path / "a b" / "é")
    uri, digest = spool.claims.put(b"x" * 1000)
    assert spool.claims.put(b"x" * 1000) == (uri, digest)
    assert [p.name for p in (spool.path / "claims").iterdir()] == [digest]
    assert fetch_claim(uri, digest) == b"x" * 1000
    with pytest.raises(ClaimError, match="does not match"):
        fetch_claim(uri, "0" * 64)


@pytest.mark.parametrize("uri", ["http://host/claims/x", "file://other-host/claims/x"])
def test_a_reference_that_is_no_local_file_is_refused(uri: str) -> None:
    with pytest.raises(ClaimError, match="not a local file URI"):
        fetch_claim(uri, "0" * 64)
