"""Session fixtures: the project's own Kafka brokers, started once for all tests that need them.

With KAFKA_BOOTSTRAP_SERVERS set, that cluster is used and nothing is started. Otherwise a
broker already running from `make kafka-up` is reused (and left running); else this session
starts one with scripts/kafka.sh and stops it, by its pid, at the end. The secure broker
(SASL_SSL with ACLs, `make kafka-up-secure`) is started the same way, for the tests that ask.
The three-node cluster (`make kafka-up BROKERS=3`) is started from empty nodes per test module
that asks for it, and stopped by pid after it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kafka_helpers import ROOT

LOCAL = "127.0.0.1:9092"


def _broker_running() -> bool:
    return (
        subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), "status"], capture_output=True
        ).returncode
        == 0
    )


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real, running Kafka cluster."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    started = not _broker_running()
    if started:
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "up"], check=True)
    try:
        yield LOCAL
    finally:
        if started:
            subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "down"], check=False)


@dataclass(frozen=True)
class SecureBroker:
    """The SASL_SSL broker of `make kafka-up-secure` and the settings of its two users."""

    app_env: dict[str, str]  # KAFKA_* of the application user "marketlag" (client.env)
    admin_env: dict[str, str]  # KAFKA_* of the super user "admin"
    var_dir: Path

    @property
    def bootstrap(self) -> str:
        return self.app_env["KAFKA_BOOTSTRAP_SERVERS"]

    def env(self, **changes: str) -> dict[str, str]:
        """This process's environment with the application user's KAFKA_* settings."""
        return {**os.environ, **self.app_env, **changes}


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def secure_broker() -> Iterator[SecureBroker]:
    """A running SASL_SSL broker with ACLs; started (and stopped by pid) if not running."""
    script = str(ROOT / "scripts" / "kafka.sh")
    started = subprocess.run([script, "status-secure"], capture_output=True).returncode != 0
    if started:
        subprocess.run([script, "up-secure"], check=True)
    var = ROOT / "var" / "kafka-secure"
    try:
        yield SecureBroker(_env_file(var / "client.env"), _env_file(var / "admin.env"), var)
    finally:
        if started:
            subprocess.run([script, "down-secure"], check=False)


KAFKA_CLUSTER = str(ROOT / "scripts" / "kafka-cluster.sh")


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The three-node cluster's bootstrap servers: empty nodes started here (their data in a
    temporary folder), stopped by pid at the end."""
    os.environ["KAFKA_CLUSTER_VAR_DIR"] = str(tmp_path_factory.mktemp("kafka-cluster"))
    try:
        up = subprocess.run([KAFKA_CLUSTER, "up"], capture_output=True, text=True)
        # The script's own account (a taken port, a node's last log lines) on one line, so
        # that the short test summary carries it.
        said = " | ".join((up.stdout + up.stderr).strip().splitlines()[-12:])
        assert up.returncode == 0, f"kafka-cluster.sh up failed: {said}"
        yield subprocess.run(
            [KAFKA_CLUSTER, "bootstrap"], capture_output=True, text=True
        ).stdout.strip()
    finally:
        subprocess.run([KAFKA_CLUSTER, "down"], check=False)
        del os.environ["KAFKA_CLUSTER_VAR_DIR"]
