"""`make run` never leaves its job behind: the launcher SIGKILLed, Ctrl-C after the launcher's
output was closed (as Ctrl-C ends `make run | tee` too), Ctrl-C while the job starts. Each
time every process of the job (its Python client, the JVM, the Python workers) is gone
within seconds."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka.admin import AdminClient

from bench.harness import free_port
from jobs.dlq_job import STOP_GRACE_S
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.kafka_helpers import (
    ROOT,
    make_job_config,
    read_all,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.flink]
GONE_WITHIN_S = 30
LAUNCH = [sys.executable, "-m", "jobs.local"]  # what `make run` runs


def session(sid: int) -> list[psutil.Process]:
    """The live processes of session ``sid`` (the job leads one of its own); a zombie, dead
    and waiting for its parent to read its exit status, is not one."""
    out = []
    for p in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(p.pid) == sid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, PermissionError):
            pass
    return out


class Launcher:
    """`python -m jobs.local` (what `make run` runs) on a test's own topics, its output a
    pipe as `make run | tee` makes it."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.proc = subprocess.Popen(
            [*LAUNCH, "--config", str(config_path), "--seed-count", "300", "--refresh", "0.5"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Ctrl-C's SIGINT acts as in a terminal, whatever this process inherited: a run
            # started in the background (nohup, `&` in a script) ignores SIGINT, and Python
            # then leaves it ignored in the launcher too (a clean-clone run failed so).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.job = self._job_pid()

    def _job_pid(self) -> int:
        assert self.proc.stdout is not None
        seen = []
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            seen.append(line)
            found = re.search(r"job started \(pid (\d+)\)", line)
            if found:
                return int(found.group(1))
        raise AssertionError(f"the launcher never started the job: {''.join(seen)[-2000:]}")

    def stop_everything(self) -> None:
        for p in [*session(self.job), *session(self.proc.pid)]:
            p.kill()
        self.proc.wait(10)


@pytest.fixture
def launch(bootstrap: str, tmp_path: Path) -> Iterator[Callable[[], Launcher]]:
    """Starts launchers on this test's own topics; whatever is left of them is killed at the
    end."""
    path, _ = make_job_config(
        tmp_path, bootstrap, **{"flink.conf": {"rest.bind-port": str(free_port())}}
    )
    ensure_project_topics(load_config(path), AdminClient({"bootstrap.servers": bootstrap}))
    started: list[Launcher] = []

    def start() -> Launcher:
        started.append(Launcher(path))
        return started[-1]

    try:
        yield start
    finally:
        for launcher in started:
            launcher.stop_everything()


def running(launcher: Launcher, bootstrap: str) -> None:
    """Waits until the job commits clean records: its JVM and workers all up."""
    clean = load_config(launcher.config_path).feeds["rss"].clean
    wait_for("clean records committed", lambda: read_all(bootstrap, [clean]), 120, launcher.proc)
    kinds = {p.info["name"] for p in session(launcher.job)}
    assert "java" in kinds, f"no JVM in the job's session: {kinds}"


def described(processes: list[psutil.Process]) -> str:
    out = []
    for p in processes:
        with contextlib.suppress(psutil.Error):
            out.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:200]}")
    return "; ".join(out)


def gone(launcher: Launcher) -> float:
    """Waits until no process of the job is left; returns how long that took. If some stay,
    says which."""
    start = time.monotonic()
    try:
        wait_for(
            f"every process of job {launcher.job} gone",
            lambda: not session(launcher.job),
            GONE_WITHIN_S,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}; left: {described(session(launcher.job))}") from None
    return time.monotonic() - start


def test_the_job_stops_when_its_launcher_is_killed(
    bootstrap: str, launch: Callable[[], Launcher]
) -> None:
    launcher = launch()
    running(launcher, bootstrap)

    launcher.proc.send_signal(signal.SIGKILL)

    took = gone(launcher)
    assert launcher.proc.wait(10) == -signal.SIGKILL
    print(f"launcher SIGKILLed: every process of the job gone after {took:.1f} s")


def test_ctrl_c_with_the_output_closed_stops_the_job(
    bootstrap: str, launch: Callable[[], Launcher]
) -> None:
    launcher = launch()
    running(launcher, bootstrap)
    assert launcher.proc.stdout is not None

    launcher.proc.stdout.close()  # `tee` gone: the next write gets EPIPE
    launcher.proc.send_signal(signal.SIGINT)

    took = gone(launcher)
    launcher.proc.wait(30)
    print(f"Ctrl-C after the output closed: job gone after {took:.1f} s")


def test_ctrl_c_while_the_job_starts_stops_it(launch: Callable[[], Launcher]) -> None:
    launcher = launch()

    launcher.proc.send_signal(signal.SIGINT)  # the job has only just been started

    took = gone(launcher)
    assert launcher.proc.wait(30) == 0
    print(f"Ctrl-C during start-up: job gone after {took:.1f} s")


def test_a_job_whose_jvm_does_not_stop_is_killed(
    bootstrap: str, launch: Callable[[], Launcher]
) -> None:
    """A JVM that does not act on SIGTERM (here: stopped with SIGSTOP, as a shutdown that
    hangs would leave it) is SIGKILLed by the job STOP_GRACE_S later: nothing outlives it."""
    launcher = launch()
    running(launcher, bootstrap)
    [jvm] = [p for p in session(launcher.job) if p.info["name"] == "java"]
    jvm.suspend()
    wait_for("the JVM stopped", lambda: jvm.status() == psutil.STATUS_STOPPED, 10)

    launcher.proc.send_signal(signal.SIGINT)

    took = gone(launcher)
    assert took >= STOP_GRACE_S - 1, f"gone after {took:.1f} s: the JVM was not the one left"
    print(f"Ctrl-C with the JVM stopped: job gone after {took:.1f} s")
