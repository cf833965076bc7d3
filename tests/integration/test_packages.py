"""The deployment packages run as their platforms run them, from nothing but their own contents.

- The Lambda zip (`make lambda-package`), unpacked into an empty folder and its handlers
  invoked by a fresh interpreter that sees only that folder (`-I -S`: no site-packages, no
  PYTHONPATH, no repository), as Lambda's runtime imports a handler from its task root:
  records acknowledged, dead-lettered (too large for the topic) and spooled (Kafka out of
  reach), each exactly as sent; the spool then drained by the `dlq` command.
- The managed Flink zip (`make flink-app-package`), unpacked and submitted with `flink run`
  exactly as Amazon Managed Service for Apache Flink runs it (the run options of
  deploy/flink-app/template.yaml: the zip's python entry, jar and pyFiles) to a standalone
  cluster of the test's own whose classpath holds only Flink (no connector, no project jar),
  its Python a venv with PyFlink alone (no confluent-kafka, nothing of the project), its
  settings from an application-properties file: every input exactly once in clean ∪ DLQ, the
  DLQ bytes equal to the input's, and the service's checkpoint interval and parallelism in
  force, not the job's.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyflink
import pytest
import yaml
from confluent_kafka.admin import AdminClient

from bench.harness import free_port
from jobs.sample import generate
from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.e2e.faults import count, rest, wait_until
from tests.integration.test_ingest import rss_item
from tests.kafka_helpers import (
    ROOT,
    dlq_cli,
    make_job_config,
    produce,
    read_all,
    with_settings,
)
from udfs.envelope import decode, original

pytestmark = pytest.mark.integration
PACKAGE = [sys.executable, str(ROOT / "deploy" / "package.py")]
FLINK_CLUSTER = str(ROOT / "scripts" / "flink-cluster.sh")
FLINK_BIN = str(Path(pyflink.__file__).parent / "bin" / "flink")
# The interpreter the venv was made from: a Python without the venv's packages.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def versions() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / "versions.env").read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


def build(what: str, out: Path) -> Path:
    done = subprocess.run([*PACKAGE, what, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [zip_path] = out.glob("*.zip")
    return zip_path


def unpacked(zip_path: Path, folder: Path) -> Path:
    folder.mkdir()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(folder)
        for info in zf.infolist():  # extractall drops the modes
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                (folder / info.filename).chmod(mode)
    return folder


# --- AWS Lambda -------------------------------------------------------------------------------

# What Lambda's Python runtime does with a handler name: import the module from the task root,
# call the function with the event; here also where each module came from.
INVOKE = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
module, _, name = sys.argv[2].rpartition(".")
result = getattr(importlib.import_module(module), name)(json.load(sys.stdin), None)
import confluent_kafka, orjson, yaml, ingest, settings
files = [m.__file__ for m in (confluent_kafka, orjson, yaml, ingest, settings)]
print(json.dumps({"result": result, "files": files, "path": sys.path}))
"""


@pytest.fixture(scope="module")
def task_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("lambda")
    return unpacked(build("lambda", tmp / "dist"), tmp / "task")


def invoke(task: Path, handler: str, event: Any, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [BASE_PYTHON, "-I", "-S", "-c", INVOKE, str(task), handler],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        cwd=task,
        env={"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": str(task), **env},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    for file in out["files"]:
        assert Path(file).is_relative_to(task), f"{file} is not from the package"
    assert not any("site-packages" in p for p in out["path"]), out["path"]
    return out["result"]  # type: ignore[no-any-return]


def pm_item(n: int) -> dict[str, Any]:
    return {"market_id": f"m-{n}", "outcome": "YES", "price": 0.5, "ts": "2026-12-07T18:00:00Z"}


def test_the_lambda_package_acknowledges_dead_letters_and_spools_from_its_own_contents(
    task_root: Path, bootstrap: str, tmp_path: Path
) -> None:
    path, _ = make_job_config(
        tmp_path,
        bootstrap,
        **{"ingest.delivery_timeout_ms": 4000, "ingest.dlq_timeout_ms": 2000},
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    rss, pm = config.feeds["rss"], config.feeds["polymarket"]
    spool = tmp_path / "spool"
    env = {"MARKETLAG_CONFIG": str(path), "MARKETLAG_SPOOL": str(spool)}
    big = rss_item(-1, summary="x" * 1_500_000)  # over the input topic's 1 MiB limit
    items = [rss_item(n) for n in range(200)]

    acked = invoke(task_root, "ingest.handlers.rss_handler", {"items": [*items, big]}, env)
    prices = invoke(task_root, "ingest.handlers.polymarket_handler", [pm_item(1), pm_item(2)], env)

    assert (acked["acknowledged"], acked["dead_lettered"], acked["spooled"]) == (200, 1, 0)
    assert acked["errors"] == {"MSG_SIZE_TOO_LARGE": 1}
    assert (prices["acknowledged"], prices["dead_lettered"], prices["spooled"]) == (2, 0, 0)
    written = read_all(bootstrap, [rss.input])
    assert sorted((m.key, m.value) for m in written) == sorted(
        (f"e-{n}".encode(), orjson.dumps(i)) for n, i in enumerate(items)
    )
    assert sorted((m.key, m.value) for m in read_all(bootstrap, [pm.input])) == [
        (b"m-1:YES", orjson.dumps(pm_item(1))),
        (b"m-2:YES", orjson.dumps(pm_item(2))),
    ]
    [dead] = read_all(bootstrap, [rss.dlq])
    envelope = decode(dead.value or b"")
    assert envelope["error"]["type"] == "MSG_SIZE_TOO_LARGE"
    assert original(envelope).value == orjson.dumps(big), "the DLQ bytes are the bytes sent"

    # Kafka out of reach: the records wait in the spool, then drain writes them as they were.
    down = with_settings(
        path,
        tmp_path / "down.yaml",
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        ingest__delivery_timeout_ms=300,
        ingest__dlq_timeout_ms=300,
    )
    later = [rss_item(n) for n in range(1000, 1020)]
    spooled = invoke(
        task_root, "ingest.handlers.rss_handler", later, {**env, "MARKETLAG_CONFIG": str(down)}
    )
    assert (spooled["acknowledged"], spooled["dead_lettered"], spooled["spooled"]) == (0, 0, 20)
    drain = dlq_cli(path, "spool", "drain", "--spool", str(spool), "--json")
    assert drain.returncode == 0, drain.stderr
    assert json.loads(drain.stdout)["drained"] == 20
    assert sorted((m.key, m.value) for m in read_all(bootstrap, [rss.input])) == sorted(
        (str(i["event_id"]).encode(), orjson.dumps(i)) for i in [*items, *later]
    ), "each record once, as sent"


# --- Amazon Managed Service for Apache Flink -------------------------------------------------

RECORDS = 2_000  # per feed, 5% bad


def run_options() -> dict[str, str]:
    """kinesis.analytics.flink.run.options of the CloudFormation template."""

    class Loader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
        return None  # !Ref, !Sub, !GetAtt: values of a deployment, not of the package

    Loader.add_multi_constructor("!", tag)
    template = yaml.load((ROOT / "deploy/flink-app/template.yaml").read_text(), Loader=Loader)
    app = template["Resources"]["Application"]["Properties"]["ApplicationConfiguration"]
    groups = app["EnvironmentProperties"]["PropertyGroups"]
    [options] = [g for g in groups if g["PropertyGroupId"] == "kinesis.analytics.flink.run.options"]
    return dict(options["PropertyMap"])


def flink_runtime() -> Path:
    """A Python with PyFlink and its own dependencies only: what the service's runtime has.
    Made once (build/flink-runtime), under a lock for the workers side by side."""
    version = versions()["FLINK_VERSION"]
    venv = ROOT / "build" / "flink-runtime"
    python = venv / "bin" / "python"
    marker = venv / f".apache-flink-{version}"
    venv.parent.mkdir(exist_ok=True)
    with (venv.parent / ".flink-runtime.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [python, "-m", "pip", "install", "-q", f"apache-flink=={version}"], check=True
            )
            marker.touch()
    return python


@pytest.fixture(scope="module")
def managed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A standalone cluster of the test's own with Flink's jars alone on its classpath."""
    var = tmp_path_factory.mktemp("managed-flink")
    python = flink_runtime()
    env = {
        **os.environ,
        "FLINK_VAR_DIR": str(var),
        "FLINK_REST_PORT": str(free_port()),
        "FLINK_RPC_PORT": str(free_port()),
        "FLINK_PYTHON": str(python),
        "FLINK_PROJECT_JARS": "0",
    }
    subprocess.run([FLINK_CLUSTER, "up"], env=env, check=True)
    try:
        lib = {p.name for p in (var / "lib").iterdir()}
        assert not {n for n in lib if "kafka" in n or "marketlag" in n}, lib
        yield {
            "env": env,
            "python": python,
            "rest": f"http://localhost:{env['FLINK_REST_PORT']}",
            "conf": var / "conf",
        }
    finally:
        subprocess.run([FLINK_CLUSTER, "down"], env=env, check=False)


@pytest.mark.flink
def test_the_managed_flink_zip_runs_as_the_service_runs_it_exactly_once(
    managed_cluster: dict[str, Any], bootstrap: str, tmp_path: Path
) -> None:
    python: Path = managed_cluster["python"]
    missing = subprocess.run([python, "-c", "import confluent_kafka"], capture_output=True)
    assert missing.returncode != 0, "the runtime must not have what only the zip brings"
    app = unpacked(build("flink-app", tmp_path / "dist"), tmp_path / "app")

    # The test's own topics, named in the application's properties, as on the service; the
    # job's own checkpoint interval and parallelism set unlike the cluster's, to show they
    # are not applied.
    _, tree = make_job_config(tmp_path, bootstrap)
    config = load_config(tmp_path / "job.yaml")
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    settings = {
        f"topics.{feed}.{role}": tree["topics"][feed][role]
        for feed in ("rss", "polymarket")
        for role in ("input", "clean", "dlq")
    }
    settings |= {
        "job.group_id": tree["job"]["group_id"],
        "kafka.transactional_id_prefix": tree["kafka"]["transactional_id_prefix"],
        "checkpoint.interval_ms": "60000",
        "job.parallelism": "1",
    }
    properties = tmp_path / "application_properties.json"
    properties.write_text(
        json.dumps(
            [
                {"PropertyGroupId": "marketlag.job", "PropertyMap": settings},
                {
                    "PropertyGroupId": "marketlag.kafka",
                    "PropertyMap": {"KAFKA_BOOTSTRAP_SERVERS": bootstrap},
                },
            ]
        )
    )
    sent: dict[tuple[str, int, int], bytes | None] = {}
    for feed in ("rss", "polymarket"):
        records = [(k, v, h) for k, v, h in generate(feed, RECORDS, 0.05, seed=11)]
        for m in produce(bootstrap, config.feeds[feed].input, records):
            sent[(m.topic, m.partition, m.offset)] = m.value

    options = run_options()
    submit = [
        FLINK_BIN,
        "run",
        "-d",
        "-py",
        str(app / options["python"]),
        "-pyfs",
        ",".join(str(app / p) for p in options["pyFiles"].split(",")),
        "-j",
        str(app / options["jarfile"]),
        "-pyexec",
        str(python),
        "-pyclientexec",
        str(python),
    ]
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "FLINK_CONF_DIR": str(managed_cluster["conf"]),
        "MARKETLAG_APPLICATION_PROPERTIES": str(properties),
    }
    done = subprocess.run(submit, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    job = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
    assert job, done.stdout
    base = managed_cluster["rest"]
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    try:
        wait_until(
            "every input in clean or DLQ",
            lambda: len(read_all(bootstrap, outputs)) >= len(sent),
            timeout_s=300,
        )
        checkpoints = rest(base, f"/jobs/{job.group(1)}/checkpoints/config")
        vertices = rest(base, f"/jobs/{job.group(1)}")["vertices"]
    finally:
        subprocess.run(
            [FLINK_BIN, "cancel", job.group(1)], env=env, capture_output=True, check=False
        )

    committed = read_all(bootstrap, outputs)
    uncommitted = read_all(bootstrap, outputs, isolation="read_uncommitted")
    result = count(sent, committed, uncommitted)
    assert not result.lost and result.duplicated == 0 and result.committed == len(sent), result
    assert {"deserialization", "validation"} <= set(result.categories), result
    assert checkpoints["interval"] == 5000, "the cluster's checkpoint interval, not the job's"
    assert {v["parallelism"] for v in vertices} == {3}, "the cluster's parallelism"
