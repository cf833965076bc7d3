"""Session fixtures: the project's own Kafka broker, started once for all tests that need it.

With KAFKA_BOOTSTRAP_SERVERS set, that cluster is used and nothing is started. Otherwise a
broker already running from `make kafka-up` is reused (and left running); else this session
starts one with scripts/kafka.sh and stops it, by its pid, at the end.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

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
