"""SASL over TLS end to end, against the secure broker of `make kafka-up-secure` (ACLs on).

- The bounded job, the topic tool and the `dlq` commands work with SCRAM-SHA-512 and with
  PLAIN, configured only through the KAFKA_* environment variables; a replay too.
- A wrong password or an untrusted certificate ends the job and every command within 60 s,
  exit code 2, with a message that names the cause.
- The password appears in no output, log, --help text or envelope.
- A job principal that may not write the DLQ is stopped before it reads a record, with the
  topic and operation named; once the ACL is granted the job runs, every input exactly once.
- A principal that may not read the DLQ topics cannot analyse or replay them.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from bench.harness import free_port, start_job
from jobs.local import stop_process_group
from jobs.sample import generate
from kafkaio import acl
from kafkaio.admin import admin_client
from settings.config import JobConfig, load_config
from tests.conftest import SecureBroker
from tests.kafka_helpers import (
    ROOT,
    dlq_cli,
    fill_dlq,
    make_job_config,
    produce,
    read_all,
    rest,
    run_job,
    running_job_conf,
    source_position,
    wait_for,
)

pytestmark = pytest.mark.integration
PER_FEED = 150
PYFLINK_LOG_DIR = Path(sys.executable).parent.parent.joinpath(
    "lib",
    f"python{sys.version_info.major}.{sys.version_info.minor}",
    "site-packages",
    "pyflink",
    "log",
)


def job_config(tmp: Path, broker: SecureBroker, env: dict[str, str], **overrides: Any) -> JobConfig:
    path, _ = make_job_config(tmp, broker.bootstrap, **overrides)
    return load_config(path, env)


def config_path(tmp: Path) -> Path:
    return tmp / "job.yaml"


def seed(config: JobConfig, broker: SecureBroker, path: Path) -> dict[tuple[str, int, int], bytes]:
    """Creates the topics with `dlq topics` as the application user, produces both feeds."""
    topics = dlq_cli(path, "topics", env=broker.env())
    assert topics.returncode == 0, topics.stderr
    sent = {}
    for feed in ("rss", "polymarket"):
        for m in produce(
            config.kafka.librdkafka(), config.feeds[feed].input, generate(feed, PER_FEED, 0.1)
        ):
            sent[(m.topic, m.partition, m.offset)] = m.value
    return sent


def outputs_exactly_once(config: JobConfig, sent: dict[tuple[str, int, int], bytes]) -> int:
    """Asserts every input is in clean ∪ DLQ exactly once; returns the DLQ count."""
    seen: Counter[tuple[str, int, int]] = Counter()
    dlq = 0
    for feed in config.feeds.values():
        for msg in read_all(config.kafka.librdkafka(), [feed.clean, feed.dlq], timeout_s=60):
            seen[source_position(msg.value)] += 1
            dlq += "_source" not in orjson.loads(msg.value or b"")
    assert set(seen) == set(sent), f"lost {len(set(sent) - set(seen))}"
    assert max(seen.values()) == 1, "duplicated"
    return dlq


def dlq_write_acls(principal: str, config: JobConfig) -> list[Any]:
    """WRITE on the DLQ topics: what a job without it lacks."""
    return [
        b
        for b in acl.job_acls(principal, config)
        if b.name in config.dlq_topics and b.operation == acl.Op.WRITE
    ]


def job_acls_without_dlq_write(principal: str, config: JobConfig) -> list[Any]:
    missing = dlq_write_acls(principal, config)
    return [b for b in acl.job_acls(principal, config) if b not in missing]


def add_user(broker: SecureBroker, name: str) -> str:
    """A new SCRAM-SHA-512 user (created by the admin); returns its password."""
    password = secrets.token_hex(12)
    admin = admin_client(load_config(None, broker.admin_env).kafka.librdkafka())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(name, info, password.encode())]
    ).values():
        f.result(30)
    # The credential reaches the broker's cache through the metadata log: wait until the user
    # gets in (a metadata request answered) before a test relies on it.
    user = load_config(
        None, {**broker.app_env, "KAFKA_SASL_USERNAME": name, "KAFKA_SASL_PASSWORD": password}
    )
    client = admin_client({**user.kafka.librdkafka(), "log_level": 0})
    wait_for(f"user {name} to authenticate", lambda: signs_in(client), 30)
    return password


def signs_in(client: Any) -> bool:
    try:
        client.list_topics(timeout=2)
    except KafkaException:
        return False
    return True


def grant(broker: SecureBroker, bindings: list[Any]) -> None:
    acl.create(load_config(None, broker.admin_env), bindings)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_job_and_dlq_commands_over_sasl_ssl_leak_no_secret(
    secure_broker: SecureBroker, tmp_path: Path, mechanism: str
) -> None:
    env = secure_broker.env(KAFKA_SASL_MECHANISM=mechanism)
    password = env["KAFKA_SASL_PASSWORD"]
    config = job_config(tmp_path, secure_broker, env)
    path = config_path(tmp_path)
    sent = seed(config, secure_broker, path)
    started = time.time()
    outputs: list[str] = []

    job = run_job(path, env=env)
    outputs += [job.stdout, job.stderr]
    dlq = outputs_exactly_once(config, sent)
    assert dlq > 0

    stats = dlq_cli(path, "stats", "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    counts = orjson.loads(stats.stdout)["topics"]
    assert sum(t["count"] for t in counts.values()) == dlq
    analyze = dlq_cli(path, "analyze", "--json", env=env)
    assert analyze.returncode == 0, analyze.stderr
    replay = dlq_cli(path, "replay", "--topic", config.feeds["rss"].dlq, env=env)
    assert replay.returncode == 0, replay.stderr
    replayed = [
        m
        for m in read_all(config.kafka.librdkafka(), [config.feeds["rss"].input])
        if ("dlq.replay.count", b"1") in m.headers
    ]
    assert len(replayed) == counts[config.feeds["rss"].dlq]["count"] > 0
    outputs += [r.stdout + r.stderr for r in (stats, analyze, replay)]

    # --help of every command, and everything the job's Flink runtime logged during the run
    for args in ([], ["stats"], ["analyze"], ["replay"], ["monitor"], ["topics"]):
        outputs.append(dlq_cli(path, *args, "--help", env=env).stdout)
    job_help = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "dlq_job.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    outputs.append(job_help.stdout)
    logs = [p for p in PYFLINK_LOG_DIR.glob("*") if p.stat().st_mtime >= started]
    assert logs, f"no Flink log written in {PYFLINK_LOG_DIR}"
    outputs += [p.read_text(errors="replace") for p in logs]
    envelopes = [
        m.value or b""
        for f in config.feeds.values()
        for m in read_all(config.kafka.librdkafka(), [f.dlq])
    ]

    leaks = [i for i, text in enumerate(outputs) if password in text]
    assert not leaks, f"the password is in outputs {leaks}"
    assert not [e for e in envelopes if password.encode() in e]
    # ... and the check could see it: the password is in the environment those runs had.
    assert any(password in v for v in env.values())


def other_ca(tmp: Path) -> Path:
    """A CA the broker's certificate was not signed by."""
    ca = tmp / "other-ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not the broker's CA",
            "-keyout",
            str(tmp / "k.pem"),
            "-out",
            str(ca),
        ],
        check=True,
        capture_output=True,
    )
    return ca


COMMANDS = [
    ["topics"],
    ["stats"],
    ["analyze"],
    ["replay", "--topic", "dlq.rss.events", "--dry-run"],
    ["monitor", "--port", "19999"],  # never listens: the broker check comes first
]


@pytest.mark.parametrize(
    "case",
    ["wrong-password", "unknown-user", "untrusted-certificate", "plaintext-client"],
)
def test_wrong_credentials_fail_fast_and_clearly(
    secure_broker: SecureBroker, tmp_path: Path, case: str
) -> None:
    if case == "wrong-password":
        env = secure_broker.env(
            KAFKA_SASL_PASSWORD="not-" + secure_broker.app_env["KAFKA_SASL_PASSWORD"]
        )
        cause = "authentication failed"
    elif case == "unknown-user":
        env = secure_broker.env(KAFKA_SASL_USERNAME="nobody")
        cause = "authentication failed"
    elif case == "untrusted-certificate":
        env = secure_broker.env(KAFKA_SSL_CA_LOCATION=str(other_ca(tmp_path)))
        cause = "TLS handshake failed"
    else:  # pointed at the TLS port without TLS: said at once, not after a minute of waiting
        env = secure_broker.env(KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
        cause = "it speaks another protocol than PLAINTEXT"
    job_config(tmp_path, secure_broker, env)
    path = config_path(tmp_path)
    for args in COMMANDS:
        proc = dlq_cli(path, *args, env=env, timeout_s=60)  # TimeoutExpired fails the test
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert cause in proc.stderr, (args, proc.stderr)
        assert env["KAFKA_SASL_PASSWORD"] not in proc.stdout + proc.stderr
    job = run_job(path, env=env, check=False, timeout_s=60)
    assert job.returncode == 2, job.stderr[-3000:]
    assert cause in job.stderr
    assert env["KAFKA_SASL_PASSWORD"] not in job.stdout + job.stderr


def test_job_without_dlq_write_acl_stops_loudly_then_runs_exactly_once(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    app = job_config(tmp_path, secure_broker, secure_broker.env())
    sent = seed(app, secure_broker, config_path(tmp_path))
    user = f"job-{tmp_path.name[-12:].replace('_', '-')}"
    env = secure_broker.env(
        KAFKA_SASL_USERNAME=user, KAFKA_SASL_PASSWORD=add_user(secure_broker, user)
    )
    grant(secure_broker, job_acls_without_dlq_write(f"User:{user}", app))

    denied = run_job(config_path(tmp_path), env=env, check=False, timeout_s=60)
    assert denied.returncode == 2, denied.stderr[-3000:]
    for feed in app.feeds.values():
        assert f"not authorised to WRITE topic {feed.dlq!r}" in denied.stderr
    outputs = [t for f in app.feeds.values() for t in (f.clean, f.dlq)]
    assert read_all(app.kafka.librdkafka(), outputs) == []  # it wrote nothing, half or whole

    grant(secure_broker, dlq_write_acls(f"User:{user}", app))  # the fix
    run_job(config_path(tmp_path), env=env)
    assert outputs_exactly_once(app, sent) > 0


@pytest.mark.flink
def test_dlq_write_acl_revoked_mid_run_restarts_and_loses_nothing(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """The ACL goes away under a running job: the DLQ sink fails, the job restarts from its
    checkpoint (visible in the REST API), and once the ACL is back every input is in clean ∪
    DLQ exactly once."""
    port = free_port()
    app = job_config(
        tmp_path,
        secure_broker,
        secure_broker.env(),
        **{"flink.conf": running_job_conf(port)},
    )
    sent = seed(app, secure_broker, config_path(tmp_path))
    user = f"job-{tmp_path.name[-12:].replace('_', '-')}"
    env = secure_broker.env(
        KAFKA_SASL_USERNAME=user, KAFKA_SASL_PASSWORD=add_user(secure_broker, user)
    )
    principal = f"User:{user}"
    grant(secure_broker, acl.job_acls(principal, app))
    outputs = [t for f in app.feeds.values() for t in (f.clean, f.dlq)]
    admin = load_config(None, secure_broker.admin_env)

    def all_out() -> bool:
        return len(read_all(app.kafka.librdkafka(), outputs, timeout_s=30)) >= len(sent)

    proc = start_job(config_path(tmp_path), env=env)
    try:
        job_id = wait_for(
            "the job", lambda: [j["jid"] for j in rest(port, "/jobs/overview")["jobs"]], 120, proc
        )[0]
        wait_for("the first inputs committed", all_out, 120, proc)
        acl.revoke(admin, dlq_write_acls(principal, app))
        for feed in ("rss", "polymarket"):
            for m in produce(
                app.kafka.librdkafka(), app.feeds[feed].input, generate(feed, 100, 0.5, seed=9)
            ):
                sent[(m.topic, m.partition, m.offset)] = m.value

        def denied() -> bool:
            history = orjson.dumps(rest(port, f"/jobs/{job_id}/exceptions")).decode()
            return "TopicAuthorizationException" in history

        wait_for("the DLQ sink to fail", denied, 120, proc)
        acl.create(admin, dlq_write_acls(principal, app))
        wait_for("every input in the outputs", all_out, 240, proc)

        def completed() -> int:
            return int(rest(port, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])

        # Two more checkpoints committed after that: a duplicate would be visible by then.
        after = completed()
        wait_for("two more checkpoints", lambda: completed() >= after + 2, 120, proc)
        assert rest(port, f"/jobs/{job_id}")["state"] == "RUNNING"
        assert outputs_exactly_once(app, sent) > 0
    finally:
        stop_process_group(proc)


def test_principal_without_dlq_read_cannot_analyze_or_replay(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    app = job_config(tmp_path, secure_broker, secure_broker.env())
    seed(app, secure_broker, config_path(tmp_path))
    fill_dlq(app.kafka.librdkafka(), app, 5)  # something to read, were it allowed
    user = f"reader-{tmp_path.name[-12:].replace('_', '-')}"
    env = secure_broker.env(
        KAFKA_SASL_USERNAME=user, KAFKA_SASL_PASSWORD=add_user(secure_broker, user)
    )
    # It may see that the DLQ topics exist, not read them.
    grant(
        secure_broker,
        [
            b
            for f in app.feeds.values()
            for b in acl.allow(f"User:{user}", acl.ResourceType.TOPIC, f.dlq, [acl.Op.DESCRIBE])
        ],
    )
    dlq = app.feeds["rss"].dlq
    for args in (["analyze"], ["replay", "--topic", dlq, "--dry-run"], ["replay", "--topic", dlq]):
        proc = dlq_cli(config_path(tmp_path), *args, env=env, timeout_s=60)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert f"not authorised to READ topic {dlq!r}" in proc.stderr, (args, proc.stderr)
