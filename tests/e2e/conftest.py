"""A local standalone Flink cluster for the end-to-end tests (scripts/flink-cluster.sh)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.kafka_helpers import ROOT

CLUSTER = str(ROOT / "scripts" / "flink-cluster.sh")


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """The REST address of a running cluster; started (and stopped) here unless already up."""
    running = subprocess.run([CLUSTER, "status"], capture_output=True).returncode == 0
    if not running:
        subprocess.run([CLUSTER, "up"], check=True)
    try:
        yield "http://localhost:8081"
    finally:
        if not running:
            subprocess.run([CLUSTER, "down"], check=False)
