"""What the docker-compose stack costs a user: the image's size, its build, and the time from
`make compose-up` (scripts/docker.sh up) on a built image to the first committed clean record.

    python -m bench.compose [--from-nothing]   # writes bench/results/compose.json

``--from-nothing`` removes the project's image and its base image first, so the build is a
user's first one (the base made by debootstrap where no registry answers); without it the
build is a rebuild (Docker's layer cache). Needs a Docker engine (scripts/docker.sh engine-up).
The stack runs on ports of its own and is taken down at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bench.harness import free_port
from bench.run import RESULTS, git_commit
from jobs.sample import generate
from kafkaio.scan import read_to_end
from settings.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DOCKER_SH = str(ROOT / "scripts" / "docker.sh")
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
IMAGE = "marketlag-dlq:0.1.0"


def run(*cmd: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def timed_build(from_nothing: bool) -> float:
    if from_nothing:
        for image in (IMAGE, os.environ.get("BASE_IMAGE", "debian:bookworm-slim")):
            subprocess.run([DOCKER, "rmi", "-f", image], capture_output=True)
        subprocess.run([DOCKER, "image", "prune", "-f"], capture_output=True)
    start = time.monotonic()
    print(run(DOCKER_SH, "build").strip())
    return time.monotonic() - start


def first_clean_record(env: dict[str, str]) -> dict[str, float]:
    """Seconds from `scripts/docker.sh up` to: the input topic there (then 100 records of each
    feed produced), the first clean record committed, and `up` returning."""
    from confluent_kafka import Producer

    bootstrap = f"127.0.0.1:{env['COMPOSE_KAFKA_PORT']}"
    config = load_config()
    rss = config.feeds["rss"]
    start = time.monotonic()
    up = subprocess.Popen([DOCKER_SH, "up"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    moments: dict[str, float] = {}

    def returned() -> None:  # `up` itself returns once the one-shot submission is done
        up.wait()
        moments["up_returned"] = time.monotonic() - start

    watcher = threading.Thread(target=returned, daemon=True)
    watcher.start()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        while "topics" not in moments:
            try:
                if rss.input in admin.list_topics(timeout=1).topics:
                    moments["topics"] = time.monotonic() - start
                    break
            except Exception:  # the broker not up yet
                pass
            time.sleep(0.2)
        producer = Producer({"bootstrap.servers": bootstrap})
        for feed in ("rss", "polymarket"):
            for key, value, headers in generate(feed, 100, 0.0, seed=5):
                producer.produce(config.feeds[feed].input, value, key, headers=headers)
        producer.flush(30)
        conf = {"bootstrap.servers": bootstrap}
        while "first_clean_record" not in moments:
            try:
                if any(True for _ in read_to_end(conf, [rss.clean], "read_committed", 10)):
                    moments["first_clean_record"] = time.monotonic() - start
                    break
            except KafkaException:  # leaders still being elected
                pass
            time.sleep(0.2)
    finally:
        watcher.join(600)
        run(DOCKER_SH, "down", env=env)
    return {k: round(v, 1) for k, v in moments.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-nothing", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "compose.json")
    args = ap.parse_args()
    build_s = timed_build(args.from_nothing)
    size = int(run(DOCKER, "image", "inspect", IMAGE, "--format", "{{.Size}}").strip())
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": f"mlbench{uuid.uuid4().hex[:6]}",
        "COMPOSE_KAFKA_PORT": str(free_port()),
        "COMPOSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "COMPOSE_FLINK_REST_PORT": str(free_port()),
        "COMPOSE_FLINK_RPC_PORT": str(free_port()),
    }
    result: dict[str, Any] = {
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "image_size_mb": round(size / 1e6),
        "build_s": round(build_s, 1),
        "build": "from nothing (no image, no base image)" if args.from_nothing else "rebuild",
        "from_up": first_clean_record(env),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
