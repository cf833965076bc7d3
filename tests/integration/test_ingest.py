"""The producers' side of the DLQ on the real broker: what Kafka refuses goes to the DLQ, what
cannot reach Kafka waits in the spool, and `dlq spool drain` sends it exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from bench.harness import free_port
from ingest import handlers
from ingest.producer import IngestError, IngestProducer, OutRecord
from ingest.spool import LocalSpool, S3Spool, SpooledRecord, decode_segment
from kafkaio import acl, ledger
from kafkaio.admin import ensure_project_topics, retention_ms, wait_for_broker
from kafkaio.claims import fetch_claim
from settings.config import JobConfig, load_config
from tests.conftest import OwnBroker, SecureBroker
from tests.integration.test_security import add_user, grant
from tests.kafka_helpers import (
    ROOT,
    dlq_cli,
    fill_dlq,
    make_job_config,
    produce,
    read_all,
    run_job,
    wait_for,
    with_settings,
)
from udfs.envelope import REPLAY_COUNT_HEADER, build_delivery_envelope, decode, encode, original

pytestmark = pytest.mark.integration
# Headers as a record may carry them: a name twice (Kafka keeps both, in order), binary, empty
# and null values, a name beyond ASCII.
HEADERS: tuple[tuple[str, bytes | None], ...] = (
    ("trace", b"t-1"),
    ("trace", b"\x00\xff\x80"),
    ("empty", b""),
    ("null", None),
    ("ünïcode", "é".encode()),
)
# A minute before the tests start: a record's own creation time, distinct from the send's.
SENT_AT = int(time.time() * 1000) - 60_000


def rss_item(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"e-{n}",
        "source": "ingest-test",
        "title": f"title {n}",
        "link": f"https://news.example/{n}",
        "published_at": "2026-11-30T18:05:00Z",
        **extra,
    }


def exact(n: int, **extra: Any) -> OutRecord:
    """An RSS record with the awkward headers and a timestamp of its own."""
    return OutRecord(f"e-{n}".encode(), orjson.dumps(rss_item(n, **extra)), HEADERS, SENT_AT + n)


def as_sent(rec: OutRecord) -> tuple[Any, ...]:
    return (rec.key, rec.value, rec.headers, rec.timestamp)


def unreachable(path: Path, tmp_path: Path) -> Path:
    """The config at ``path`` with a broker address where nothing listens and short timeouts:
    what a producer that cannot reach Kafka at all sees."""
    return with_settings(
        path,
        tmp_path / "down.yaml",
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        ingest__delivery_timeout_ms=300,
        ingest__dlq_timeout_ms=300,
    )


def setup(
    tmp_path: Path, bootstrap: str, monkeypatch: pytest.MonkeyPatch, **overrides: Any
) -> tuple[Path, JobConfig]:
    """A test's own topics and spool; the handlers' producer made from them."""
    path, _ = make_job_config(
        tmp_path,
        bootstrap,
        **{
            "ingest": {
                "spool": str(tmp_path / "spool"),
                "delivery_timeout_ms": 4000,
                "dlq_timeout_ms": 2000,
            },
            **overrides,
        },
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    monkeypatch.setenv("MARKETLAG_CONFIG", str(path))
    monkeypatch.setattr(handlers, "_PRODUCER", None)
    return path, config


def test_records_kafka_refuses_go_to_the_dlq_with_their_exact_bytes(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    big = rss_item(-1, summary="x" * 1_500_000)  # over the input topic's 1 MiB limit
    odd = rss_item(-2, keywords={"a set", "is not JSON"})  # cannot be serialised
    items = [rss_item(n) for n in range(300)] + [big, odd]

    report = handlers.rss_handler({"items": items}, None)

    assert (report["acknowledged"], report["dead_lettered"], report["spooled"]) == (300, 2, 0)
    assert report["errors"] == {"MSG_SIZE_TOO_LARGE": 1, "TypeError": 1}
    written = read_all(bootstrap, [rss.input])
    assert sorted(m.value or b"" for m in written) == sorted(orjson.dumps(i) for i in items[:300])
    assert {m.key for m in written} == {f"e-{n}".encode() for n in range(300)}
    dlq = {m.key: m for m in read_all(bootstrap, [rss.dlq])}
    assert set(dlq) == {b"e--1", b"e--2"}
    env = decode(dlq[b"e--1"].value or b"")
    assert env["error"]["category"] == "delivery"
    assert env["error"]["type"] == "MSG_SIZE_TOO_LARGE"
    assert env["error"]["retriable"] is False
    assert (env["source"]["topic"], env["source"]["partition"], env["source"]["offset"]) == (
        rss.input,
        None,
        None,
    )
    assert original(env).value == orjson.dumps(big), "the DLQ bytes are the bytes sent"
    assert original(env).key == b"e--1"
    odd_env = decode(dlq[b"e--2"].value or b"")
    assert odd_env["error"]["type"] == "TypeError"
    assert b"is not JSON" in (original(odd_env).value or b"")


def test_every_fate_keeps_the_record_key_value_headers_and_timestamp_as_sent(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acknowledged, dead-lettered after it was queued (the broker refuses it as too large),
    dead-lettered before it was queued (cannot be serialised), then replayed: each carries
    exactly the key, value, headers and timestamp it was sent with."""
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    target = f"{rss.input}.fixed"
    limit = {"max.message.bytes": "4000000"}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(target, 1, 1, config=limit)])[target].result(30)
    ok, big = exact(1), exact(2, summary="x" * 1_400_000)  # over the input's 1 MiB limit
    odd = OutRecord(b"e-3", {"keywords": {"a set"}}, HEADERS, SENT_AT + 3)

    report = IngestProducer(config).send("rss", [ok, big, odd]).as_dict()

    assert (report["acknowledged"], report["dead_lettered"], report["spooled"]) == (1, 2, 0)
    assert report["errors"] == {"MSG_SIZE_TOO_LARGE": 1, "TypeError": 1}
    [written] = read_all(bootstrap, [rss.input])
    assert (written.key, written.value, written.headers, written.timestamp) == as_sent(ok)
    dead = {m.key: m for m in read_all(bootstrap, [rss.dlq])}
    for rec in (big, odd):
        msg = dead[rec.key]
        orig = original(decode(msg.value or b""))
        assert (orig.key, orig.headers, orig.timestamp) == (rec.key, HEADERS, rec.timestamp)
        assert msg.headers == HEADERS, "the DLQ record carries the headers too"
    assert original(decode(dead[big.key].value or b"")).value == big.value

    replay = dlq_cli(
        path, "replay", "--topic", rss.dlq, "--error-type", "MSG_SIZE_TOO_LARGE", "--to", target
    )
    assert replay.returncode == 0, replay.stderr
    [back] = read_all(bootstrap, [target])
    assert (back.key, back.value, back.timestamp) == (big.key, big.value, big.timestamp)
    assert back.headers == (*HEADERS, ("dlq.replay.count", b"1"))


def test_a_spooled_record_keeps_its_headers_and_timestamp_into_its_topic(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka out of reach: the records wait in the spool as they were sent, and drain writes
    them to their topic as they were sent."""
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    down = unreachable(path, tmp_path)
    sent = [exact(i) for i in range(20)]

    report = IngestProducer(load_config(down)).send("rss", sent).as_dict()

    assert report["spooled"] == 20
    spool = LocalSpool(tmp_path / "spool")
    [name] = spool.segments()
    assert not name.endswith(".open")
    with spool.claim_segment(name) as data:
        held = decode_segment(data or b"", name).records
    assert sorted((r.key, r.value, r.headers, r.timestamp) for r in held) == sorted(
        as_sent(r) for r in sent
    )
    drain = dlq_cli(path, "spool", "drain", "--json")
    assert drain.returncode == 0, drain.stderr
    written = read_all(bootstrap, [config.feeds["rss"].input])
    assert sorted((m.key, m.value, m.headers, m.timestamp) for m in written) == sorted(
        as_sent(r) for r in sent
    )


def test_an_envelope_too_large_for_the_dlq_is_claim_checked_and_replay_resolves_it(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    small = ConfigEntry("max.message.bytes", "200000", incremental_operation=AlterConfigOpType.SET)
    dlq = ConfigResource(ConfigResource.Type.TOPIC, rss.dlq, incremental_configs=[small])
    admin.incremental_alter_configs([dlq])[dlq].result(30)
    target = f"{rss.input}.fixed"
    limit = {"max.message.bytes": "4000000"}
    admin.create_topics([NewTopic(target, 1, 1, config=limit)])[target].result(30)
    big = rss_item(-1, summary="é" * 700_000)

    report = handlers.rss_handler([big], None)

    assert (report["dead_lettered"], report["claim_checked"]) == (1, 1)
    [msg] = read_all(bootstrap, [rss.dlq])
    env = decode(msg.value or b"")
    assert env["payload_b64"] is None
    ref = env["payload_ref"]
    assert ref["uri"].startswith((tmp_path / "spool").as_uri())
    replay = dlq_cli(path, "replay", "--topic", rss.dlq, "--to", target, "--json")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["replayed"] == 1
    [back] = read_all(bootstrap, [target])
    assert back.value == orjson.dumps(big)


def test_an_unwritable_spool_makes_send_raise(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path, _ = make_job_config(
        tmp_path,
        f"127.0.0.1:{free_port()}",  # nothing listens: Kafka cannot be reached at all
        ingest={"spool": str(blocker / "spool"), "delivery_timeout_ms": 500, "dlq_timeout_ms": 500},
    )
    monkeypatch.setenv("MARKETLAG_CONFIG", str(path))
    monkeypatch.setattr(handlers, "_PRODUCER", None)
    with pytest.raises(IngestError, match="the spool refused them"):
        handlers.rss_handler([rss_item(1), rss_item(2)], None)


class Sender(threading.Thread):
    """Sends batches through the RSS handler's producer until stopped, keeping every report:
    records with the awkward headers and timestamps of their own."""

    def __init__(self, batch: int) -> None:
        super().__init__(daemon=True)
        self.batch = batch
        self.sent: list[bytes] = []
        self.reports: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def total(self, what: str) -> int:
        return sum(r[what] for r in list(self.reports))

    def run(self) -> None:
        n = 0
        try:
            while not self.stop.is_set():
                records = [exact(n + i) for i in range(self.batch)]
                n += self.batch
                self.reports.append(handlers.producer().send("rss", records).as_dict())
                self.sent += [r.value for r in records]
        except BaseException as e:
            self.error = e


def test_broker_down_mid_stream_spools_then_drain_and_the_job_take_every_record(
    own_broker: OwnBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap = own_broker.bootstrap
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    sender = Sender(batch=200)
    sender.start()
    try:
        wait_for("records acknowledged", lambda: sender.total("acknowledged") >= 1000, 60)
        own_broker.run("down")
        wait_for("records spooled", lambda: sender.total("spooled") >= 400, 120)
    finally:
        own_broker.run("up")
        wait_for_broker({"bootstrap.servers": bootstrap}, 60)
        sender.stop.set()
        sender.join(60)
    assert sender.error is None, sender.error
    assert all(
        r["acknowledged"] + r["dead_lettered"] + r["spooled"] == sender.batch
        for r in sender.reports
    ), "a record was neither acknowledged, dead-lettered nor spooled"
    spooled = sender.total("spooled")
    assert spooled >= 400, "the broker outage spooled nothing"

    spool = LocalSpool(tmp_path / "spool")
    held = []
    for name in spool.segments():
        with spool.claim_segment(name) as data:
            assert data is not None
            held += decode_segment(data, name).records
    assert len(held) == spooled
    assert all(r.timestamp for r in held), "a spooled record without its creation time"
    assert all(r.headers == HEADERS for r in held if r.kind == "record"), "headers lost"
    flagged = sum(r.possibly_persisted for r in held)

    # Drain looks for the possibly persisted ones in the input first: each spooled record
    # ends up there exactly once.
    drain = dlq_cli(path, "spool", "drain", "--json")
    assert drain.returncode == 0, drain.stderr
    doc = json.loads(drain.stdout)
    assert doc["drained"] + doc["already_in_topic"] == spooled
    assert doc["possibly_persisted"] + doc["already_in_topic"] == flagged
    assert spool.segments() == [], "drained segments are deleted"

    # What timed out at the input while the DLQ took it (the broker came back between the
    # two) is in the DLQ: an operator replays it, and replay too looks for the possibly
    # persisted ones in the input first. Then every record sent is in the input once.
    dead = read_all(bootstrap, [rss.dlq])
    assert all(decode(m.value or b"")["error"]["category"] == "delivery" for m in dead)
    assert all(original(decode(m.value or b"")).headers == HEADERS for m in dead)
    replay = dlq_cli(path, "replay", "--topic", rss.dlq, "--json")
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(replay.stdout)
    assert replayed["replayed"] + replayed["already_in_topic"] == len(dead)
    in_input = read_all(bootstrap, [rss.input])
    in_kafka = Counter(m.value for m in in_input)
    assert set(in_kafka) == set(sender.sent), "a record sent is missing"
    # (a replayed record carries the replay count on top of its own headers)
    own = [tuple(h for h in m.headers if h[0] != REPLAY_COUNT_HEADER) for m in in_input]
    assert all(h == HEADERS for h in own), "a record lost its headers on the way"
    twice = [v for v, count in in_kafka.items() if count > 1]
    if twice:  # where the first came from
        first = [m for m in in_input if m.value == twice[0]]
        copies = [(m.partition, m.offset, m.timestamp, m.headers) for m in first]
        spooled_as = [(r.possibly_persisted, r.reason) for r in held if r.value == twice[0]]
        envelopes = [decode(m.value or b"") for m in dead]
        dead_as = [e["error"] for e in envelopes if original(e).value == twice[0]]
        pytest.fail(
            f"{len(twice)} records in the input twice; the first: {copies}, spooled as "
            f"{spooled_as}, dead-lettered as {dead_as}"
        )
    print(
        f"sent {len(sender.sent)}, spooled {spooled} ({flagged} possibly persisted, "
        f"{doc['already_in_topic']} found in the input by drain), dead-lettered {len(dead)} "
        f"({replayed['already_in_topic']} found in the input by replay)"
    )

    run_job(path)
    clean = read_all(bootstrap, [rss.clean])
    ids = Counter(orjson.loads(m.value or b"")["event_id"] for m in clean)
    assert set(ids) == {orjson.loads(v)["event_id"] for v in sender.sent}


def test_drain_killed_mid_transaction_and_run_again_sends_each_record_once(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    n = 2500
    # Spool them as a producer that cannot reach Kafka would.
    down = unreachable(path, tmp_path)
    monkeypatch.setenv("MARKETLAG_CONFIG", str(down))
    report = handlers.rss_handler([rss_item(i) for i in range(n)], None)
    assert report["spooled"] == n

    cmd = [str(ROOT / ".venv" / "bin" / "dlq"), "--config", str(path), "spool", "drain"]
    first = subprocess.Popen(
        [*cmd, "--rate", "400", "--json"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    conf = {"bootstrap.servers": bootstrap}

    def mid_transaction() -> bool:
        committed = len(read_all(bootstrap, [rss.input], timeout_s=20))
        uncommitted = len(read_all(bootstrap, [rss.input], "read_uncommitted", timeout_s=20))
        return committed >= 1000 and uncommitted > committed + 100

    try:
        wait_for("a committed batch and an open transaction", mid_transaction, 60, first)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    before = len(ledger.load(conf, config.ledger_topic, ledger.SPOOL_PREFIX))
    assert 0 < before < n, "the kill did not land half-way"

    second = dlq_cli(path, "spool", "drain", "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert (doc["drained"], doc["already_drained"]) == (n - before, before)
    written = Counter(m.value for m in read_all(bootstrap, [rss.input]))
    assert len(written) == n and set(written.values()) == {1}, "lost or duplicated"
    uncommitted = read_all(bootstrap, [rss.input], "read_uncommitted")
    assert len(uncommitted) > n, "the killed drain had no records in an open transaction"


def test_drain_sends_a_possibly_persisted_record_only_if_its_topic_lacks_it(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    now = int(datetime.now(UTC).timestamp() * 1000)

    def spooled(n: int, ts: int) -> SpooledRecord:
        return SpooledRecord(
            kind="record",
            topic=rss.input,
            dlq_topic=rss.dlq,
            key=f"e-{n}".encode(),
            value=orjson.dumps(rss_item(n)),
            headers=(*HEADERS, ("n", str(n).encode())),
            timestamp=ts,
            possibly_persisted=True,
            reason="_PURGE_INFLIGHT: Purged in flight",
        )

    landed = spooled(1, now - 5_000)  # its send timed out, but the broker had written it
    lost = spooled(2, now - 4_000)  # its send timed out before the broker wrote it
    resent = spooled(3, now - 3_000)  # the same bytes written before, by an earlier send
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for rec, ts in [(landed, landed.timestamp), (resent, now - 90_000)]:
        producer.produce(rss.input, rec.value, rec.key, headers=list(rec.headers), timestamp=ts)
    assert producer.flush(30) == 0
    LocalSpool(tmp_path / "spool").append([landed, lost, resent])

    drain = dlq_cli(path, "spool", "drain", "--json")

    assert drain.returncode == 0, drain.stderr
    doc = json.loads(drain.stdout)
    assert (doc["drained"], doc["already_in_topic"], doc["possibly_persisted"]) == (2, 1, 2)
    written = Counter(
        (m.key, m.value, m.headers, m.timestamp) for m in read_all(bootstrap, [rss.input])
    )
    expected = [(r.key, r.value, r.headers, r.timestamp) for r in (landed, lost, resent)]
    expected.append((resent.key, resent.value, resent.headers, now - 90_000))
    assert written == Counter(expected), "a record lost, or sent twice"


def test_replay_writes_a_possibly_persisted_delivery_failure_only_if_its_topic_lacks_it(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config = setup(tmp_path, bootstrap, monkeypatch)
    rss = config.feeds["rss"]
    now = int(datetime.now(UTC).timestamp() * 1000)

    def envelope(n: int, ts: int, possibly_persisted: bool) -> tuple[bytes, bytes, list[Any]]:
        key, value = f"e-{n}".encode(), orjson.dumps(rss_item(n))
        env = build_delivery_envelope(
            topic=rss.input,
            key=key,
            value=value,
            headers=[("trace", b"t")],
            timestamp=ts,
            error_name="_PURGE_INFLIGHT",
            message="Purged in flight",
            retriable=True,
            possibly_persisted=possibly_persisted,
            attempts=1,
            producer="test",
        )
        return key, encode(env), []

    # 1: written by the broker though its producer gave up; 2: not written; 3: written,
    # but not flagged (an input that refused it for good): replayed all the same.
    produce(
        bootstrap,
        rss.input,
        [(f"e-{n}".encode(), orjson.dumps(rss_item(n)), [("trace", b"t")]) for n in (1, 3)],
    )
    timestamps = {m.key: m.timestamp for m in read_all(bootstrap, [rss.input])}
    produce(
        bootstrap,
        rss.dlq,
        [
            envelope(1, timestamps[b"e-1"] or 0, True),
            envelope(2, now - 2_000, True),
            envelope(3, timestamps[b"e-3"] or 0, False),
        ],
    )

    replay = dlq_cli(path, "replay", "--topic", rss.dlq, "--json")

    assert replay.returncode == 0, replay.stderr
    doc = json.loads(replay.stdout)
    assert (doc["replayed"], doc["already_in_topic"]) == (2, 1)
    written = Counter(m.key for m in read_all(bootstrap, [rss.input]))
    assert written == {b"e-1": 1, b"e-2": 1, b"e-3": 2}
    again = dlq_cli(path, "replay", "--topic", rss.dlq, "--json")
    assert json.loads(again.stdout)["already_replayed"] == 3, "the ledger holds all three"


@pytest.fixture
def s3_server(tmp_path: Path) -> Any:
    """An S3-compatible server on loopback (moto's standalone server), stopped by its pid."""
    port = free_port()
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "moto.log").open("w"),
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
    }
    try:
        import boto3

        for k, v in env.items():
            os.environ[k] = v

        def up() -> bool:
            try:
                boto3.client("s3").list_buckets()
                return True
            except Exception:
                return False

        wait_for("the S3 server", up, 30, proc)  # type: ignore[arg-type]
        boto3.client("s3").create_bucket(Bucket="spool")
        yield env
    finally:
        for k in env:
            os.environ.pop(k, None)
        proc.terminate()
        proc.wait(10)


def test_a_spool_in_s3_holds_what_kafka_cannot_take_and_drain_empties_it(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: dict[str, str]
) -> None:
    import boto3

    path, config = setup(tmp_path, bootstrap, monkeypatch, **{"ingest.spool": "s3://spool/fn"})
    down = unreachable(path, tmp_path)
    monkeypatch.setenv("MARKETLAG_CONFIG", str(down))
    items = [rss_item(i) for i in range(50)]
    report = handlers.rss_handler(items, None)
    assert report["spooled"] == 50
    objects = boto3.client("s3").list_objects_v2(Bucket="spool", Prefix="fn/")["Contents"]
    assert len(objects) == 1 and objects[0]["Key"].endswith(".spool")

    drain = dlq_cli(path, "spool", "drain", "--json", env={**os.environ, **s3_server})
    assert drain.returncode == 0, drain.stderr
    assert json.loads(drain.stdout)["drained"] == 50
    written = read_all(bootstrap, [config.feeds["rss"].input])
    assert sorted(m.value or b"" for m in written) == sorted(orjson.dumps(i) for i in items)
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="spool", Prefix="fn/")


def test_a_claim_in_s3_reads_back_under_any_prefix_a_user_may_choose(
    s3_server: dict[str, str],
) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    # What a user may put in a prefix: spaces, '%', '#', '?', '+', letters of any script.
    part = st.text(
        st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="/"),
        min_size=1,
        max_size=16,
    ).filter(lambda c: c not in (".", ".."))

    @settings(max_examples=40)
    @given(st.lists(part, min_size=1, max_size=3), st.binary(max_size=500))
    def reads_back(prefix: list[str], payload: bytes) -> None:
        spool = S3Spool("s3://spool/" + "/".join(prefix))
        uri, digest = spool.claims.put(payload)
        assert uri == f"s3://spool/{'/'.join(prefix)}/claims/{digest}"
        assert fetch_claim(uri, digest) == payload

    reads_back()


def test_replay_after_the_dlq_topic_is_created_again_replays_the_new_records(
    bootstrap: str, tmp_path: Path
) -> None:
    """Positions start again at 0 in a re-created topic: the ledger must not mistake them."""
    path, _ = make_job_config(tmp_path, bootstrap)
    config = load_config(path)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    ensure_project_topics(config, admin)
    dlq = config.feeds["rss"].dlq
    fill_dlq(bootstrap, config, 5)
    first = dlq_cli(path, "replay", "--topic", dlq, "--json")
    assert json.loads(first.stdout)["replayed"] == 5, first.stderr
    old_id = ledger.topic_id({"bootstrap.servers": bootstrap}, dlq)

    admin.delete_topics([dlq])[dlq].result(30)
    wait_for("the topic gone", lambda: dlq not in admin.list_topics(timeout=10).topics, 30)
    recreate = dlq_cli(path, "topics")
    assert recreate.returncode == 0, recreate.stderr
    assert ledger.topic_id({"bootstrap.servers": bootstrap}, dlq) != old_id
    fill_dlq(bootstrap, config, 5)

    second = dlq_cli(path, "replay", "--topic", dlq, "--json")
    doc = json.loads(second.stdout)
    assert (doc["replayed"], doc["already_replayed"]) == (5, 0), second.stderr
    assert len(read_all(bootstrap, [config.feeds["rss"].input])) == 10


def test_dlq_topics_keep_their_records_and_finite_retention_is_reported(
    bootstrap: str, tmp_path: Path
) -> None:
    path, _ = make_job_config(tmp_path, bootstrap)
    config = load_config(path)
    created = dlq_cli(path, "topics")
    assert created.returncode == 0, created.stderr
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for topic in [*config.dlq_topics, config.parking_topic]:
        assert retention_ms(admin, topic) is None, f"{topic} would delete records"
    assert "deletes records" not in created.stderr

    week = str(7 * 86_400_000)
    entry = ConfigEntry("retention.ms", week, incremental_operation=AlterConfigOpType.SET)
    rss_dlq = config.feeds["rss"].dlq
    res = ConfigResource(ConfigResource.Type.TOPIC, rss_dlq, incremental_configs=[entry])
    admin.incremental_alter_configs([res])[res].result(30)
    fill_dlq(bootstrap, config, 3)

    again = dlq_cli(path, "topics")
    assert again.returncode == 0
    assert f"{rss_dlq} deletes records after 7 days" in again.stderr
    stats = dlq_cli(path, "stats", "--json")
    row = json.loads(stats.stdout)["topics"][rss_dlq]
    assert row["retention_ms"] == int(week)
    expires = datetime.fromisoformat(row["oldest_expires_at"])
    assert timedelta(days=6.9) < expires - datetime.now(UTC) <= timedelta(days=7)


def test_a_producer_that_may_not_write_the_input_dead_letters_its_records(
    secure_broker: SecureBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_env = secure_broker.env()
    path, _ = make_job_config(
        tmp_path, secure_broker.bootstrap, ingest={"spool": str(tmp_path / "spool")}
    )
    app = load_config(path, app_env)
    created = dlq_cli(path, "topics", env=app_env)
    assert created.returncode == 0, created.stderr
    user = f"ingest-{tmp_path.name[-12:].replace('_', '-')}"
    password = add_user(secure_broker, user)
    grant(secure_broker, acl.ingest_acls(f"User:{user}", app, input_write=False))
    for name, value in secure_broker.env(
        KAFKA_SASL_USERNAME=user, KAFKA_SASL_PASSWORD=password, MARKETLAG_CONFIG=str(path)
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handlers, "_PRODUCER", None)
    items = [rss_item(i) for i in range(20)]

    report = handlers.rss_handler(items, None)

    assert (report["dead_lettered"], report["acknowledged"], report["spooled"]) == (20, 0, 0)
    assert report["errors"] == {"TOPIC_AUTHORIZATION_FAILED": 20}
    rss = app.feeds["rss"]
    assert read_all(app.kafka.librdkafka(), [rss.input]) == []
    dead = [decode(m.value or b"") for m in read_all(app.kafka.librdkafka(), [rss.dlq])]
    assert sorted(original(e).value or b"" for e in dead) == sorted(orjson.dumps(i) for i in items)
    assert all(e["error"]["type"] == "TOPIC_AUTHORIZATION_FAILED" for e in dead)
    assert not any(password in orjson.dumps(e).decode() for e in dead)

    # With headers and timestamps of their own, refused the same way: kept exactly.
    sent = [exact(i) for i in range(100, 110)]
    again = handlers.producer().send("rss", sent).as_dict()
    assert again["errors"] == {"TOPIC_AUTHORIZATION_FAILED": 10}
    dead = [decode(m.value or b"") for m in read_all(app.kafka.librdkafka(), [rss.dlq])]
    kept = [original(e) for e in dead if original(e).key in {r.key for r in sent}]
    assert sorted((o.key, o.value, o.headers, o.timestamp) for o in kept) == sorted(
        as_sent(r) for r in sent
    )
