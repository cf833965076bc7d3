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
    return subprocess.Popen(
        [*cmd, "--starting-offsets", "earliest", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


# A lock file: while it names one, every Flink job of the tests and the benchmark runs holding
# it (the tests set it, as their workers run side by side and two Flink jobs at once would
# fight over two cores). Unset, as for `make bench`: no lock.
FLINK_LOCK_ENV = "MARKETLAG_FLINK_LOCK"
_held = 0  # depth of flink_lock() in this process: holding it, a nested one waits for nothing


@contextlib.contextmanager
def flink_lock() -> Iterator[None]:
    """The machine's one Flink slot, held while the body runs a Flink job (a no-op unless
    ``MARKETLAG_FLINK_LOCK`` names a lock file)."""
    global _held
    path = os.environ.get(FLINK_LOCK_ENV)
    if not path or _held:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _held = 1
        try:
            yield
        finally:
            _held = 0
