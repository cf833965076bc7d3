"""Envelope sizing, configuration, secrets, frames and pinned versions."""

from __future__ import annotations

import os
import re
import tomllib
import traceback
import zipfile
from pathlib import Path
from typing import Any

import pytest

from jobs.dlq_job import java_client_properties
from kafkaio.admin import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, envelope_bound
from settings.config import ConfigError, load_config
from tests.frames_codec import decode_sink, encode_sink
from udfs.envelope import (
    MAX_STACKTRACE_BYTES,
    build_envelope,
    cap_utf8,
    decode,
    encode,
    format_stacktrace,
    original,
)
from udfs.errors import Category, ValidationError
from udfs.record import SourceRecord

ROOT = Path(__file__).resolve().parents[2]


def _envelope_size(key: bytes, value: bytes, headers: tuple[tuple[str, bytes | None], ...]) -> int:
    record = SourceRecord("rss.events", 2, 10**12, 1796061900000, key, value, headers)
    try:
        raise ValidationError("title", "field 'title' " + repr(value[:60]))
    except ValidationError as e:
        env = build_envelope(
            record, e, Category.VALIDATION, attempts=1, job_name="j" * 50, operator="validate-rss"
        )
    return len(encode(env))


@pytest.mark.parametrize("byte", [b"\x01", b'"', b"a", "é".encode(), b"\xff"])
def test_dlq_limit_holds_the_worst_envelope_of_a_maximal_record(byte: bytes) -> None:
    limit = KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    value = byte * (limit // len(byte) - 200)
    size = _envelope_size(b"k" * 100, value, (("h", b"\x01" * 50),))
    assert size <= envelope_bound(limit)


def test_envelope_round_trips_the_original_record() -> None:
    record = SourceRecord("t", 1, 5, None, None, b"\xff\x00", (("a", None), ("a", b"x")))
    env = build_envelope(
        record, KeyError("boom"), Category.PROCESSING, attempts=2, job_name="j", operator="o"
    )
    back = original(decode(encode(env)))
    assert (back.topic, back.partition, back.offset, back.key, back.value, back.headers) == (
        "t",
        1,
        5,
        None,
        b"\xff\x00",
        (("a", None), ("a", b"x")),
    )
    assert env["payload_text"] is None


def test_stacktrace_is_capped_and_keeps_the_exception_line() -> None:
    def recurse(n: int) -> None:
        if n == 0:
            raise RuntimeError("at the bottom")
        recurse(n - 1)

    try:
        recurse(300)
    except RuntimeError as e:
        env = build_envelope(
            SourceRecord("t", 0, 0, None, None, b""),
            e,
            Category.PROCESSING,
            attempts=1,
            job_name="j",
            operator="o",
        )
    trace = env["error"]["stacktrace"]
    assert len(trace.encode()) <= MAX_STACKTRACE_BYTES
    assert trace.rstrip().endswith("RuntimeError: at the bottom")
    assert len(cap_utf8("é" * 10_000, 101).encode()) <= 101


def test_sink_frames_round_trip() -> None:
    frame = encode_sink(b"k", None, (("h", b"v"), ("h", None)), partition=2, timestamp=7)
    assert decode_sink(frame) == (2, 7, b"k", None, (("h", b"v"), ("h", None)))
    assert decode_sink(encode_sink(None, b"")) == (-1, None, None, b"", ())


def test_password_comes_from_the_environment_and_is_never_printed() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": 's3cr"et',
        "KAFKA_SSL_CA_LOCATION": "/ca.pem",
    }
    config = load_config(None, env)
    assert config.kafka.bootstrap_servers == "b:9093"
    assert "s3cr" not in repr(config) and "s3cr" not in str(config)
    assert config.kafka.librdkafka()["sasl.password"] == 's3cr"et'
    jaas = java_client_properties(config.kafka)["sasl.jaas.config"]
    module = jaas.split(" ", 1)[0]
    assert module.endswith("org.apache.kafka.common.security.scram.ScramLoginModule")
    # The login module must be the one inside the (relocating) connector jar the job runs.
    with zipfile.ZipFile(ROOT / "build" / "lib" / "flink" / "flink-sql-connector-kafka.jar") as jar:
        assert module.replace(".", "/") + ".class" in jar.namelist()
    assert 'password="s3cr\\"et"' in jaas
    assert java_client_properties(config.kafka)["ssl.truststore.location"] == "/ca.pem"


@pytest.mark.parametrize(
    ("shipped", "broken", "setting"),
    [
        ("max_attempts: 3", "max_attempts: zero", r"retry\.max_attempts"),
        ("max_records: 1000", "max_records: 0", r"batch\.max_records"),
        ("max_delay_ms: 100", "max_delay_ms: -5", r"batch\.max_delay_ms"),
    ],
)
def test_bad_config_names_the_setting(
    tmp_path: Path, shipped: str, broken: str, setting: str
) -> None:
    path = tmp_path / "job.yaml"
    text = (ROOT / "conf" / "job.yaml").read_text()
    assert shipped in text
    path.write_text(text.replace(shipped, broken))
    with pytest.raises(ConfigError, match=setting):
        load_config(path, {})
    with pytest.raises(ConfigError, match="KAFKA_SECURITY_PROTOCOL"):
        load_config(None, {"KAFKA_SECURITY_PROTOCOL": "carrier-pigeon"})


def test_default_config_matches_the_spec_topics() -> None:
    config = load_config(None, {})
    assert {f: (t.input, t.clean, t.dlq) for f, t in config.feeds.items()} == {
        "rss": ("rss.events", "clean.rss.events", "dlq.rss.events"),
        "polymarket": (
            "polymarket.price_hourly",
            "clean.polymarket.price_hourly",
            "dlq.polymarket.price_hourly",
        ),
    }
    assert config.parking_topic == "dlq.parking"
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.kafka.transaction_timeout_ms <= 900_000  # the broker's transaction.max


def test_versions_are_pinned_in_one_place() -> None:
    pins = dict(
        line.split("=", 1)
        for line in (ROOT / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"apache-flink=={pins['FLINK_VERSION']}" in deps
    pom = (ROOT / "java" / "pom.xml").read_text()
    pinned = re.findall(
        r"<artifactId>((?:flink|kafka)[^<]*)</artifactId>\s*<version>([^<]+)</version>", pom
    )
    assert pinned and all(v.startswith("${") for _, v in pinned), (
        f"Flink/Kafka versions must come from versions.env, found {pinned}"
    )
    broker = (ROOT / "conf" / "kafka" / "server.properties").read_text()
    assert "transaction.max.timeout.ms=900000" in broker


def _raise_chain(kind: str) -> BaseException:
    def inner(n: int) -> None:
        if n == 0:
            raise ValueError("inner failure")
        inner(n - 1)

    try:
        try:
            inner(3)
        except ValueError as e:
            if kind == "cause":
                raise KeyError("outer") from e
            if kind == "context":
                raise KeyError("outer")  # noqa: B904 - the implicit context is what is tested
            if kind == "suppressed":
                raise KeyError("outer") from None
            e.add_note("gave up after 3 attempts")
            raise
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("kind", ["cause", "context", "suppressed", "note"])
def test_stacktrace_is_what_python_prints_also_when_reused(kind: str) -> None:
    """The per-site reuse of formatted frames changes nothing in what operators read."""
    for _ in range(3):
        exc = _raise_chain(kind)
        assert format_stacktrace(exc) == "".join(traceback.format_exception(exc))


def test_client_properties_are_read_and_credentials_refused(tmp_path: Path) -> None:
    config = load_config(None, {})
    assert config.source_properties["fetch.min.bytes"] == "65536"
    assert config.sink_properties["linger.ms"] == "100"
    path = tmp_path / "job.yaml"
    path.write_text(
        (ROOT / "conf" / "job.yaml")
        .read_text()
        .replace("    linger.ms: 100\n", "    linger.ms: 100\n    sasl.jaas.config: secret\n")
    )
    with pytest.raises(ConfigError, match=r"kafka\.sink.*sasl\.jaas\.config") as e:
        load_config(path, {})
    assert "secret" not in str(e.value).replace("sasl.jaas", "")


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _noted(exc: BaseException, *notes: object) -> BaseException:
    exc.__notes__ = list(notes)  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("plain"),
        RuntimeError(),
        KeyError("quoted"),
        ValidationError("title", "too long"),
        _BadStr(),
        _noted(ValueError("x"), "two\nlines", 42),
        SyntaxError("bad", ("f.py", 3, 5, "x = = 1\n")),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_exception_line_is_what_python_prints(exc: BaseException) -> None:
    assert format_stacktrace(exc) == "".join(traceback.format_exception(exc))


SHIPPED_JVM = "-XX:TieredStopAtLevel=1"
SHIPPED_SIZES = "-Xmx768m -Xmn192m -XX:MetaspaceSize=256m"


@pytest.mark.parametrize(
    ("theirs", "expected"),
    [
        (None, f"{SHIPPED_JVM} -XX:+UseSerialGC {SHIPPED_SIZES}"),
        ("-Xmx1g", f"{SHIPPED_JVM} -XX:+UseSerialGC {SHIPPED_SIZES} -Xmx1g"),
        # the JVM refuses two collectors: the user's choice replaces ours
        ("-XX:+UseG1GC -Xmx2g", f"{SHIPPED_JVM} {SHIPPED_SIZES} -XX:+UseG1GC -Xmx2g"),
    ],
)
def test_mini_cluster_jvm_options_reach_jvm_args(
    monkeypatch: pytest.MonkeyPatch, theirs: str | None, expected: str
) -> None:
    from jobs.dlq_job import mini_cluster_jvm_options

    config = load_config(None, {}).with_overrides(class_data_dir=None)
    assert " ".join(config.local_jvm_options) == (f"{SHIPPED_JVM} -XX:+UseSerialGC {SHIPPED_SIZES}")
    monkeypatch.delenv("PYFLINK_GATEWAY_PORT", raising=False)
    if theirs is None:
        monkeypatch.delenv("JVM_ARGS", raising=False)
    else:
        monkeypatch.setenv("JVM_ARGS", theirs)
    mini_cluster_jvm_options(config)
    assert os.environ["JVM_ARGS"] == expected
    # under `flink run` the cluster's configuration decides
    monkeypatch.setenv("JVM_ARGS", "-Xmx1g")
    monkeypatch.setenv("PYFLINK_GATEWAY_PORT", "1")
    mini_cluster_jvm_options(config)
    assert os.environ["JVM_ARGS"] == "-Xmx1g"


def test_local_jvm_options_must_be_options(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    text = (ROOT / "conf" / "job.yaml").read_text()
    shipped = (
        "local_jvm_options:\n    [-XX:TieredStopAtLevel=1, -XX:+UseSerialGC, -Xmx768m, "
        "-Xmn192m, -XX:MetaspaceSize=256m]"
    )
    assert shipped in text
    path.write_text(text.replace(shipped, "local_jvm_options: -Xmx1g -Xss2m"))
    assert load_config(path, {}).local_jvm_options == ("-Xmx1g", "-Xss2m")
    path.write_text(text.replace(shipped, "local_jvm_options: [Xmx1g]"))
    with pytest.raises(ConfigError, match=r"flink\.local_jvm_options"):
        load_config(path, {})


def test_a_config_file_need_only_hold_what_it_changes(tmp_path: Path) -> None:
    """conf/job.yaml is the one source of defaults; a user's file is laid over it."""
    path = tmp_path / "mine.yaml"
    path.write_text("retry: {max_attempts: 7}\nkafka: {sink: {acks: all}}\n")
    mine, shipped = load_config(path, {}), load_config(None, {})
    assert mine.retry.max_attempts == 7
    assert mine.retry.backoff_ms == shipped.retry.backoff_ms
    assert mine.sink_properties == {**shipped.sink_properties, "acks": "all"}
    assert mine.feeds == shipped.feeds and mine.ingest == shipped.ingest


def test_the_order_checker_finds_a_key_out_of_its_input_order() -> None:
    from tests.e2e.faults import out_of_order

    def clean(partition: int, offset: int, key: bytes | None, src_offset: int) -> Any:
        src = {"topic": "in", "partition": 0, "offset": src_offset}
        return SourceRecord("clean", partition, offset, None, key, b"", ()), src

    in_order = [clean(0, 0, b"a", 1), clean(0, 1, b"b", 0), clean(0, 2, b"a", 5)]
    assert out_of_order(in_order) == []
    assert out_of_order([clean(1, 0, None, 5), clean(1, 1, None, 1)]) == []  # no key: no order
    swapped = [clean(0, 0, b"a", 5), clean(0, 1, b"b", 0), clean(0, 2, b"a", 1)]
    assert out_of_order(list(reversed(swapped))) == [
        "clean[0]@2: key b'a' from in[0] offset 1 after 5"
    ]
    assert len(out_of_order([clean(0, 0, b"a", 1), clean(0, 1, b"a", 1)])) == 1  # twice


def test_class_data_archive_is_written_once_then_used_and_left_to_the_users_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.jvm import archive_for

    options = ["-XX:+UseSerialGC", "-Xmx768m"]
    assert archive_for(tmp_path, options, writes=False) is None  # none yet, and not writing
    first = archive_for(tmp_path, options, writes=True)
    assert first is not None and first.part is not None
    assert first.options[0] == f"-XX:ArchiveClassesAtExit={first.part}"
    first.part.write_bytes(b"archive")
    first.part.replace(first.path)
    then = archive_for(tmp_path, options, writes=True)
    assert then is not None and then.options == [f"-XX:SharedArchiveFile={first.path}"]
    # another JVM option, another JVM binary: another archive (the JVM refuses a foreign one)
    assert archive_for(tmp_path, [*options, "-Xmx1g"], writes=False) is None
    java = tmp_path / "java"
    java.write_bytes(b"")
    monkeypatch.setattr("jobs.jvm.java_executable", lambda: java)
    assert archive_for(tmp_path, options, writes=False) is None
    # the user's own class-data choice in JVM_ARGS wins
    assert archive_for(tmp_path, [*options, "-Xshare:off"], writes=True) is None


def test_class_data_folder_keeps_the_newest_archives_and_the_parts_being_written(
    tmp_path: Path,
) -> None:
    from jobs.jvm import KEEP, tidy

    archives = [tmp_path / f"flink-{i:016x}.jsa" for i in range(KEEP + 2)]
    for age, path in enumerate(reversed(archives)):
        path.write_bytes(b"a")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    writing = tmp_path / f"flink-0.jsa.part-{os.getpid()}"
    dead = tmp_path / "flink-1.jsa.part-999999999"
    writing.write_bytes(b"p")
    dead.write_bytes(b"p")
    tidy(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([*archives[:KEEP], writing])


def test_runtime_import_on_the_side_keeps_the_garbage_collector_off_until_it_is_done() -> None:
    import gc
    import sys

    from jobs.dlq_job import runtime_imported_meanwhile

    assert gc.isenabled()
    with runtime_imported_meanwhile():
        assert not gc.isenabled()  # no py4j finalizer may run on the importing thread
    assert gc.isenabled() and "pyflink.fn_execution" in sys.modules
    with pytest.raises(SystemExit), runtime_imported_meanwhile():
        sys.exit(2)  # a configuration error: collection comes back on
    assert gc.isenabled()


def test_ending_the_jvm_without_procfs_leaves_it_to_end_by_itself(tmp_path: Path) -> None:
    from jobs.jvm import _gateway_pid, end

    assert _gateway_pid(tmp_path / "no-proc") is None  # not Linux: nothing to find, no error
    assert _gateway_pid() is None  # this test process has no gateway JVM child
    assert end(None) is False
