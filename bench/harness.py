"""Runs of the job on topics of their own, for the benchmark and the tests (never shipped):
a copy of ``conf/job.yaml`` whose topics, consumer group and transactional ids carry a
run's own prefix, the job started from the command line as a user starts it, and the one
Flink slot that runs side by side share."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from settings.config import FEEDS, ROOT


def set_paths(tree: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Sets ``{"a.b.c": value}`` entries in a nested config tree."""
    for path, value in values.items():
        node = tree
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value


def isolated_config(tmp: Path, bootstrap: str, **overrides: Any) -> tuple[Path, dict[str, Any]]:
    """A copy of conf/job.yaml in ``tmp`` whose topics, consumer group and transactional ids
    are this run's own (a uuid prefix), so runs never see each other's records. ``overrides``
    are ``{"a.b": value}`` settings. Returns (path, tree)."""
    tree = yaml.safe_load((ROOT / "conf" / "job.yaml").read_text())
    run = uuid.uuid4().hex[:8]
    for feed in FEEDS:
        for role in ("input", "clean", "dlq"):
            tree["topics"][feed][role] = f"t{run}.{tree['topics'][feed][role]}"
    tree["topics"]["parking"] = f"t{run}.dlq.parking"
    tree["topics"]["replay_ledger"] = f"t{run}.dlq.replay.ledger"
    tree["kafka"]["bootstrap_servers"] = bootstrap
    tree["kafka"]["transactional_id_prefix"] = f"t{run}"
    tree["job"]["group_id"] = f"t{run}"
    tree["checkpoint"]["dir"] = str(tmp / "checkpoints")
    set_paths(tree, overrides)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path, tree


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server to listen on (a broker, a mini-cluster's REST
    API): below Linux's ephemeral range (32768-60999), so that no outgoing connection of some
    other process takes it before the server binds it, and drawn at random, so that runs side
    by side do not draw the same one."""
    while True:
        port = random.randrange(20_000, 32_000)
        if port_free(port):
            return port


def port_free(port: int) -> bool:
    """Whether nothing listens on ``port`` of 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_job(
    config_path: Path, *extra: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Starts the job unbounded from the earliest offsets, in its own session (stop it with
    :func:`jobs.local.stop_process_group`); the caller holds :func:`flink_lock`."""
    if os.environ.get(FLINK_LOCK_ENV) and not _held:
        raise RuntimeError("start_job outside flink_lock(): two Flink jobs could run at once")
    cmd = [sys.executable, str(ROOT / "jobs" / "dlq_job.py"), "--config", str(config_path)]
    # Its output beside its configuration, for whoever has to find out why it stopped.
    with open(job_log(config_path), "ab") as log:
        return subprocess.Popen(
            [*cmd, "--starting-offsets", "earliest", *extra],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def job_log(config_path: Path) -> Path:
    """Where :func:`start_job` writes the output of a job run with ``config_path``."""
    return config_path.with_suffix(".log")


# A folder of tickets: while it names one, every Flink job of the tests and the benchmark runs
# holding the slot (the tests set it, as their workers run side by side and two Flink jobs at
# once would fight over two cores). Unset, as for `make bench`: no slot to wait for.
FLINK_LOCK_ENV = "MARKETLAG_FLINK_LOCK"
_held = 0  # depth of flink_lock() in this process: holding it, a nested one waits for nothing


@contextlib.contextmanager
def flink_lock() -> Iterator[None]:
    """The machine's one Flink slot, held while the body runs a Flink job, first come first
    served (a no-op unless ``MARKETLAG_FLINK_LOCK`` names a folder).

    Each waiter puts a numbered ticket in the folder, which it holds locked (flock) for as
    long as it waits and runs; its turn is when no lower number is left. A ticket whose owner
    died is unlocked, and is cleared by the next waiter that finds it. Fair, unlike one flock
    that every waiter races for: a test that takes the slot again and again cannot starve
    another one.
    """
    global _held
    folder = os.environ.get(FLINK_LOCK_ENV)
    if not folder or _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    tickets = Path(folder)
    tickets.mkdir(parents=True, exist_ok=True)
    ticket = _take_ticket(tickets)
    name = Path(ticket.name).name
    asked = got = time.monotonic()
    try:
        while earlier := [t for t in os.listdir(tickets) if t[0] != "." and t < name]:
            for other in earlier:  # an owner that died leaves its ticket unlocked
                with contextlib.suppress(FileNotFoundError), open(tickets / other) as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    (tickets / other).unlink(missing_ok=True)
            time.sleep(0.2)
        _held = 1
        got = time.monotonic()
        yield
    finally:
        _held = 0
        _log_hold(tickets, waited=got - asked, held=time.monotonic() - got)
        (tickets / name).unlink(missing_ok=True)
        ticket.close()


SLOT_LOG = ".held"  # in the tickets folder: one line per hold, "held waited who"


def _log_hold(tickets: Path, waited: float, held: float) -> None:
    """Notes who held the slot and for how long (appended whole in one write), so that a
    run can say which jobs its wall time went to (:func:`slot_holds`)."""
    who = os.environ.get("PYTEST_CURRENT_TEST", " ".join(sys.argv[:2])).replace("\n", " ")
    with open(tickets / SLOT_LOG, "a") as log:
        log.write(f"{held:.1f} {waited:.1f} {who}\n")


def slot_holds(folder: Path) -> list[tuple[float, float, str]]:
    """(held, waited, who) of each hold of the slot in ``folder`` so far."""
    try:
        lines = (folder / SLOT_LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(float(h), float(w), who) for h, w, who in (line.split(" ", 2) for line in lines)]


def _take_ticket(tickets: Path) -> Any:
    """The next ticket, already locked by this process: numbered under a mutex, so that a
    ticket is in the folder before any later number is given out."""
    with open(tickets / ".mutex", "a+") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        mutex.seek(0)
        number = int(mutex.read() or 0) + 1
        mutex.seek(0)
        mutex.truncate()
        mutex.write(str(number))
        mutex.flush()
        ticket = open(tickets / f"{number:012d}-{os.getpid()}", "w")  # noqa: SIM115 - held
        fcntl.flock(ticket, fcntl.LOCK_EX)  # before the mutex goes: never seen unlocked
    return ticket
