"""Real-broker helpers for the integration tests: produce, read back, run the job."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import KafkaError, Producer

from bench.harness import flink_lock, isolated_config, job_log, set_paths
from kafkaio.scan import Message, read_to_end
from settings.config import load_config
from tests.corpus import shipped_processor
from udfs.pipeline import Failed
from udfs.record import SourceRecord

ROOT = Path(__file__).resolve().parent.parent
Headers = list[tuple[str, bytes | None]]


def client_conf(bootstrap: str | Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings: bootstrap servers alone, or a full client configuration."""
    return {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)


def produce(
    bootstrap: str | Mapping[str, str], topic: str, records: Iterable[tuple[Any, ...]]
) -> list[Message]:
    """Produces (key, value, headers[, partition]) tuples; returns them with their offsets."""
    producer = Producer({**client_conf(bootstrap), "enable.idempotence": True, "linger.ms": 5})
    delivered: list[Message] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        delivered.append(
            Message(
                msg.topic(),
                msg.partition(),
                msg.offset(),
                None,
                msg.key(),
                msg.value(),
                tuple(msg.headers() or []),
            )
        )

    for rec in records:
        key, value, headers = rec[0], rec[1], rec[2]
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if headers:
            kwargs["headers"] = headers
        if len(rec) > 3 and rec[3] is not None:
            kwargs["partition"] = rec[3]
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0
    return delivered


def read_all(
    bootstrap: str | Mapping[str, str],
    topics: Sequence[str],
    isolation: str = "read_committed",
    timeout_s: float = 60,
) -> list[Message]:
    """Every message visible under ``isolation`` in ``topics``, read to the current end."""
    return list(read_to_end(client_conf(bootstrap), topics, isolation, timeout_s))


def with_settings(path: Path, target: Path, **values: Any) -> Path:
    """A copy of the job config at ``path`` with ``{"a.b": value}`` settings changed."""
    tree = yaml.safe_load(path.read_text())
    set_paths(tree, {k.replace("__", "."): v for k, v in values.items()})
    target.write_text(yaml.safe_dump(tree))
    return target


def make_job_config(
    tmp_path: Path, bootstrap: str, **overrides: Any
) -> tuple[Path, dict[str, Any]]:
    """:func:`bench.harness.isolated_config` with checkpoints every second (tests wait for
    commits); returns (path, tree)."""
    return isolated_config(tmp_path, bootstrap, **{"checkpoint.interval_ms": 1000, **overrides})


def run_job(
    config_path: Path,
    *extra: str,
    timeout_s: float = 600,
    offsets: str = "earliest",
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Runs the real job entry point as a user would, bounded, and returns the finished process."""
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "dlq_job.py"),
        "--config",
        str(config_path),
        "--bounded",
        "--starting-offsets",
        offsets,
        *extra,
    ]
    with flink_lock():
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env
        )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"job exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def dlq_cli(
    config_path: Path, *args: str, timeout_s: float = 300, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the installed `dlq` command with this configuration, as an operator would."""
    cmd = [str(Path(sys.executable).parent / "dlq"), "--config", str(config_path), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env)


def fill_dlq(
    bootstrap: str | Mapping[str, str], config: Any, n: int, replay_count: int = 0
) -> list[Any]:
    """n distinct bad RSS records, dead-lettered by the real processing code."""
    proc = shipped_processor("rss")
    batch = []
    for i in range(n):
        value = json.dumps({"event_id": f"e-{i}", "title": "t"}).encode()
        headers = [("seq", str(i).encode())]
        if replay_count:
            headers.append(("dlq.replay.count", str(replay_count).encode()))
        out = proc.process(
            SourceRecord(
                config.feeds["rss"].input, i % 3, i, None, f"e-{i}".encode(), value, tuple(headers)
            )
        )
        assert isinstance(out, Failed)
        batch.append((out.key, out.envelope, headers, i % 3))
    return produce(bootstrap, config.feeds["rss"].dlq, batch)


def rest(port: int, path: str) -> Any:
    """GET from the Flink REST API of a job running on this machine."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def wait_for(
    what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    """Polls ``check`` until it returns something true; fails if ``proc`` exits first (with
    the end of its log, when it is a job of :func:`bench.harness.start_job`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"{proc.args} exited ({proc.returncode}) waiting for {what}{log_tail(proc)}"
            )
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def log_tail(proc: subprocess.Popen[bytes], lines: int = 60) -> str:
    """The last lines of a started job's log (its errors), if it has one."""
    args = [str(a) for a in proc.args] if isinstance(proc.args, list) else []
    if "--config" not in args:
        return ""
    log = job_log(Path(args[args.index("--config") + 1]))
    if not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()
    return "\n" + "\n".join(text[-lines:])


def source_position(value: bytes | None) -> tuple[str, int, int]:
    """The input position a clean record (``_source``) or an envelope (``source``) came from."""
    body = orjson.loads(value or b"")
    src = body.get("_source") or body["source"]
    return src["topic"], src["partition"], src["offset"]


def running_job_conf(rest_port: int) -> dict[str, Any]:
    """``flink.conf`` for a test's running job: the shipped restart strategy (what users run),
    and the REST API on ``rest_port``."""
    shipped = load_config(None, {}).flink_conf
    return {
        **{k: v for k, v in shipped.items() if k.startswith("restart-")},
        "rest.bind-port": str(rest_port),
    }
