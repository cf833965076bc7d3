"""Runs of the job on topics of their own, for the benchmark and the tests (never shipped):
a copy of ``conf/job.yaml`` whose topics, consumer group and transactional ids carry a
run's own prefix, and the job started from the command line as a user starts it."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
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
    :func:`jobs.local.stop_process_group`)."""
    cmd = [sys.executable, str(ROOT / "jobs" / "dlq_job.py"), "--config", str(config_path)]
    return subprocess.Popen(
        [*cmd, "--starting-offsets", "earliest", *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
