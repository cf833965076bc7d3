"""Delivery envelopes, claim checks, handler keys and the ingest settings (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ingest.handlers import polymarket_key, rss_key
from ingest.producer import serialise
from settings.config import ConfigError, load_config
from udfs.envelope import (
    SCHEMA,
    EnvelopeError,
    build_delivery_envelope,
    claim_checked,
    decode,
    encode,
    original,
)

ROOT = Path(__file__).resolve().parents[2]


def delivery(value: bytes | None = b'{"event_id": "e-1"}') -> dict[str, object]:
    return build_delivery_envelope(
        topic="rss.events",
        key=b"e-1",
        value=value,
        headers=(("trace", b"\x00\xff"), ("empty", None)),
        timestamp=1796061900000,
        error_name="MSG_SIZE_TOO_LARGE",
        message="Broker: Message size too large",
        retriable=False,
        possibly_persisted=False,
        attempts=1,
        producer="marketlag-ingest",
    )


def test_a_delivery_envelope_is_a_v1_envelope_of_category_delivery() -> None:
    env = decode(encode(delivery()))
    assert env["schema"] == SCHEMA
    assert env["error"]["category"] == "delivery"
    assert env["error"]["type"] == "MSG_SIZE_TOO_LARGE"
    assert (env["error"]["retriable"], env["error"]["possibly_persisted"]) == (False, False)
    src = env["source"]
    assert (src["topic"], src["partition"], src["offset"]) == ("rss.events", None, None)
    rec = original(env)
    assert (rec.key, rec.value, rec.timestamp) == (b"e-1", b'{"event_id": "e-1"}', 1796061900000)
    assert rec.headers == (("trace", b"\x00\xff"), ("empty", None))


def test_a_claim_checked_envelope_carries_a_reference_and_resolves_through_it() -> None:
    payload = b"\x00" * 5000
    env = claim_checked(delivery(payload), "file:///spool/claims/abc", "abc")
    assert env["payload_b64"] is None and env["payload_text"] is None
    assert env["payload_ref"] == {"uri": "file:///spool/claims/abc", "sha256": "abc", "size": 5000}
    asked: list[tuple[str, str]] = []

    def resolve(uri: str, sha256: str) -> bytes:
        asked.append((uri, sha256))
        return payload

    assert original(env, resolve).value == payload
    assert asked == [("file:///spool/claims/abc", "abc")]
    with pytest.raises(EnvelopeError, match="stored aside"):
        original(env)


def test_a_tombstone_that_failed_delivery_stays_a_tombstone() -> None:
    env = decode(encode(delivery(None)))
    assert env["payload_b64"] is None and "payload_ref" not in env
    assert original(env).value is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (b"\xff raw", b"\xff raw"),
        ("text é", "text é".encode()),
        ({"a": [1, 2.5, None]}, b'{"a":[1,2.5,null]}'),
    ],
)
def test_values_are_serialised_as_given_bytes_text_or_json(value: object, expected: object) -> None:
    assert serialise(value) == expected


def test_a_value_that_is_not_json_raises() -> None:
    with pytest.raises(TypeError):
        serialise({"keywords": {"a set"}})


def test_handler_keys_follow_the_input_formats() -> None:
    assert rss_key({"event_id": "evt-1"}) == b"evt-1"
    assert rss_key({"event_id": 7}) is None
    assert polymarket_key({"market_id": "m-9", "outcome": "YES"}) == b"m-9:YES"
    assert polymarket_key({"market_id": "m-9"}) is None


def _config_with(tmp_path: Path, **ingest: object) -> Path:
    tree = yaml.safe_load((ROOT / "conf" / "job.yaml").read_text())
    tree["ingest"].update(ingest)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_ingest_settings_and_the_spool_override(tmp_path: Path) -> None:
    path = _config_with(tmp_path, spool="/var/spool/x", delivery_timeout_ms=1234)
    config = load_config(path, {})
    assert (config.ingest.spool, config.ingest.delivery_timeout_ms) == ("/var/spool/x", 1234)
    assert load_config(path, {"MARKETLAG_SPOOL": "s3://b/p"}).ingest.spool == "s3://b/p"
    assert load_config(None, {}).dlq_retention_ms == -1


def test_ingest_producer_settings_refuse_credentials(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment"):
        load_config(_config_with(tmp_path, producer={"sasl.password": "x"}), {})
