"""Session fixtures: the project's own Kafka brokers, started once for all tests that need them.

With KAFKA_BOOTSTRAP_SERVERS set, that cluster is used and nothing is started. Otherwise a
broker already running from `make kafka-up` is reused (and left running); else the first test
that needs it starts it with scripts/kafka.sh, and the run stops it, by its pid, at its end.
The tests run on several workers side by side (pytest-xdist): a lock file lets exactly one of
them start a shared broker, and the run's controlling process stops it once every worker is
done. The secure broker (SASL_SSL with ACLs, `make kafka-up-secure`) is started the same way,
for the tests that ask.

A test that stops or kills a broker does it to one of its own (:func:`own_broker`: its own
data folder and ports), never to the shared one. The three-node cluster (`make kafka-up
BROKERS=3`) is started from empty nodes per test module that asks for it, and stopped by pid
after it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from bench.harness import FLINK_LOCK_ENV, SLOT_LOG, flink_lock, free_port, port_free, slot_holds
from tests.kafka_helpers import ROOT

# No test may depend on how fast this machine is at the moment: Hypothesis's default deadline
# (200 ms an example) failed a property test once on a loaded CI machine.
settings.register_profile("marketlag", deadline=None)
settings.load_profile("marketlag")

KAFKA = str(ROOT / "scripts" / "kafka.sh")
LOCAL = "127.0.0.1:9092"
# Names this run (the controlling process and its workers): a shared broker it started
# carries it, so that the run stops what it started and nothing else.
RUN = "MARKETLAG_TEST_RUN"


@dataclass(frozen=True)
class SharedBroker:
    """A broker of scripts/kafka.sh that every worker of a run shares."""

    suffix: str  # "" (PLAINTEXT, 9092) or "-secure" (SASL_SSL, 9094)
    var_dir: Path

    @property
    def marker(self) -> Path:
        return self.var_dir.parent / f".started-by-tests{self.suffix}"

    def ensure(self) -> None:
        """Starts the broker unless it runs; one worker at a time decides."""
        self.var_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.var_dir.parent / f".tests{self.suffix}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if subprocess.run([KAFKA, f"status{self.suffix}"], capture_output=True).returncode:
                subprocess.run([KAFKA, f"up{self.suffix}"], check=True)
                self.marker.write_text(os.environ[RUN])

    def stop_if_this_run_started_it(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.marker.read_text() == os.environ.get(RUN):
                subprocess.run([KAFKA, f"down{self.suffix}"], check=False)
                self.marker.unlink()


PLAIN_BROKER = SharedBroker("", ROOT / "var" / "kafka")
SECURE_BROKER = SharedBroker("-secure", ROOT / "var" / "kafka-secure")


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controlling process: workers inherit these
        os.environ.setdefault(RUN, uuid.uuid4().hex)
        # Workers run side by side, and two Flink jobs at once would fight over two cores:
        # every Flink job of the run holds the one slot (bench.harness.flink_lock).
        os.environ.setdefault(FLINK_LOCK_ENV, str(ROOT / "var" / "flink-slot"))
        (Path(os.environ[FLINK_LOCK_ENV]) / SLOT_LOG).unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Which tests held the Flink slot, and for how long: with the jobs one after another,
    their sum is the least wall time the run can take, and where to shorten it."""
    folder = os.environ.get(FLINK_LOCK_ENV)
    if hasattr(config, "workerinput") or not folder:
        return
    by_test: dict[str, list[float]] = {}
    for held, waited, who in slot_holds(Path(folder)):
        entry = by_test.setdefault(who.rsplit(" (", 1)[0], [0.0, 0.0, 0])
        entry[0] += held
        entry[1] += waited
        entry[2] += 1
    if not by_test:
        return
    total = sum(e[0] for e in by_test.values())
    terminalreporter.write_sep("=", f"Flink slot held {total:.0f} s in all")
    for who, (held, waited, times) in sorted(by_test.items(), key=lambda kv: -kv[1][0]):
        terminalreporter.write_line(f"{held:8.1f}s held {waited:8.1f}s waited {times:3d}x  {who}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test marked ``flink`` holds the one Flink slot (:func:`bench.harness.flink_lock`)
    while it runs (its job runs throughout), not while its fixtures start brokers and
    clusters. Other tests take it only while a job of theirs runs (``run_job``, the
    benchmark's runs), and do the rest side by side."""
    if item.get_closest_marker("flink") is None:
        return (yield)
    with flink_lock():
        return (yield)


# Modules whose fixtures take minutes before their first assertion (a Docker engine and image;
# package builds and a runtime venv): scheduled first, so that this runs beside the rest instead
# of after it.
SLOW_SETUP = ("test_compose.py", "test_packages.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in SLOW_SETUP)  # stable: the rest in order


@pytest.hookimpl(trylast=True)  # after xdist has read them
def pytest_collection_finish(session: pytest.Session) -> None:
    """A pytest or xdist that loses the groups fails the run, instead of scattering a
    module's shared fixture (a broker cluster, a job run) over workers without a word (it
    happened: pytest-xdist issue 1386)."""
    if getattr(session.config.option, "loadgroup", False):  # set on xdist's workers
        lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group")]
        lost = [n for n in lost if "@" not in n]
        if lost:
            raise pytest.UsageError(f"xdist dropped the group of {lost[:3]}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # every worker is done
        PLAIN_BROKER.stop_if_this_run_started_it()
        SECURE_BROKER.stop_if_this_run_started_it()


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """Bootstrap servers of a real, running Kafka cluster."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        return external
    PLAIN_BROKER.ensure()
    return LOCAL


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


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="session")
def secure_broker() -> SecureBroker:
    """A running SASL_SSL broker with ACLs; started (and stopped by pid) if not running."""
    SECURE_BROKER.ensure()
    var = SECURE_BROKER.var_dir
    return SecureBroker(env_file(var / "client.env"), env_file(var / "admin.env"), var)


class OwnBroker:
    """A single-node broker of a test's own (its own data folder and ports), to stop, kill and
    start again without disturbing any other test; ``secure``: SASL_SSL with ACLs, as
    `make kafka-up-secure` makes it."""

    def __init__(self, var_dir: Path, secure: bool = False) -> None:
        self.var_dir = var_dir
        self.suffix = "-secure" if secure else ""
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KAFKA_SECURE_VAR_DIR" if secure else "KAFKA_VAR_DIR": str(var_dir),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(free_port()),
        }

    def run(self, action: str) -> str:
        """``scripts/kafka.sh ACTION`` (``up``, ``down``, ``status``: for a secure broker their
        ``-secure`` forms) for this broker; its output. Fails the test if it fails."""
        done = subprocess.run(
            [KAFKA, action + self.suffix], env=self.env, capture_output=True, text=True
        )
        said = (done.stdout + done.stderr).strip()
        assert done.returncode == 0, f"kafka.sh {action}{self.suffix} failed: {said[-3000:]}"
        return said

    def running(self) -> bool:
        status = [KAFKA, "status" + self.suffix]
        return subprocess.run(status, env=self.env, capture_output=True).returncode == 0

    def stop(self) -> None:
        subprocess.run([KAFKA, "down" + self.suffix], env=self.env, check=False)


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnBroker]:
    """A running broker of this test's own, stopped by pid at its end."""
    broker = OwnBroker(tmp_path_factory.mktemp("kafka"))
    broker.run("up")
    try:
        yield broker
    finally:
        broker.stop()


KAFKA_CLUSTER = str(ROOT / "scripts" / "kafka-cluster.sh")


def cluster_port_base() -> int:
    """A base for the cluster's ports (BASE+1..3 for clients, BASE+101..103 for controllers)
    where all six are free."""
    while True:
        base = free_port()
        if base + 103 < 32_000 and all(port_free(base + n) for n in (1, 2, 3, 101, 102, 103)):
            return base


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The three-node cluster's bootstrap servers: empty nodes started here (their data in a
    temporary folder, their ports this module's own), stopped by pid at the end."""
    os.environ["KAFKA_CLUSTER_VAR_DIR"] = str(tmp_path_factory.mktemp("kafka-cluster"))
    os.environ["KAFKA_CLUSTER_PORT_BASE"] = str(cluster_port_base())
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
        down = subprocess.run([KAFKA_CLUSTER, "down"], capture_output=True, text=True)
        del os.environ["KAFKA_CLUSTER_VAR_DIR"], os.environ["KAFKA_CLUSTER_PORT_BASE"]
    assert down.returncode == 0, down.stderr
    print(down.stdout + down.stderr)  # a node killed for want of a quorum is said there
