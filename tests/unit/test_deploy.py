"""docker-compose.yml, the Dockerfile and the Kubernetes manifest agree with the Makefile,
conf/ and versions.env: same topics, same job entry point, same pinned versions, files present.
(The compose stack also runs for real: tests/e2e/test_compose.py.)"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from settings.config import load_config

ROOT = Path(__file__).resolve().parents[2]
PINS = dict(
    line.split("=", 1)
    for line in (ROOT / "versions.env").read_text().splitlines()
    if line and not line.startswith("#")
)
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
K8S: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "k8s" / "flinkdeployment.yaml").read_text())


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def test_compose_pins_the_versions_of_versions_env() -> None:
    args = SERVICES["jobmanager"]["build"]["args"]
    assert {k: str(v) for k, v in args.items() if k != "BASE_IMAGE"} == {
        k: PINS[k]
        for k in (
            "FLINK_VERSION",
            "FLINK_KAFKA_CONNECTOR_VERSION",
            "KAFKA_VERSION",
            "SCALA_BINARY_VERSION",
        )
    }
    # One image for every service, the broker too (its jars resolved by Maven at the pin).
    images = {(svc["image"], str(svc["build"])) for svc in SERVICES.values()}
    assert len(images) == 1
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in DOCKERFILE
    assert '"apache-flink==${FLINK_VERSION}"' in DOCKERFILE
    assert "-Dkafka.version=${KAFKA_VERSION}" in DOCKERFILE
    major, minor, _ = PINS["FLINK_VERSION"].split(".")
    assert K8S["spec"]["flinkVersion"] == f"v{major}_{minor}"
    assert K8S["spec"]["job"]["jarURI"].endswith(f"flink-python-{PINS['FLINK_VERSION']}.jar")


def test_every_file_the_deployments_use_exists() -> None:
    for src in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, flags=re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    build = SERVICES["jobmanager"]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    for svc in SERVICES.values():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (ROOT / host).exists(), f"compose mounts missing {host}"
    assert (ROOT / "jobs" / "dlq_job.py").is_file()


def test_compose_runs_the_same_job_on_the_same_topics() -> None:
    # The one-shot topic service and the submission use conf/job.yaml, mounted read-only.
    mount = "./conf:/opt/marketlag/conf:ro"
    for name in ("topics", "submit", "jobmanager", "taskmanager", "tools"):
        assert mount in SERVICES[name]["volumes"], name
    assert command("topics") == ["dlq", "topics"]  # conf/job.yaml of the image's project root
    assert command("submit") == ["submit"]
    entrypoint = (ROOT / "deploy" / "docker" / "entrypoint.sh").read_text()
    assert 'run -d -py "$ROOT/jobs/dlq_job.py"' in entrypoint
    assert '--config "$ROOT/conf/job.yaml"' in entrypoint
    assert "jobs/dlq_job.py" in (ROOT / "scripts" / "flink-cluster.sh").read_text()
    k8s_args = K8S["spec"]["job"]["args"]
    assert k8s_args[k8s_args.index("-py") + 1] == "/opt/marketlag/jobs/dlq_job.py"
    deps = SERVICES["submit"]["depends_on"]
    assert deps["topics"]["condition"] == "service_completed_successfully"


def test_compose_broker_is_the_local_broker() -> None:
    # The broker of the stack renders the same conf/kafka/server.properties as `make kafka-up`,
    # with only its listeners from the environment.
    env = SERVICES["kafka"]["environment"]
    assert command("kafka") == ["kafka"]
    entrypoint = (ROOT / "deploy" / "docker" / "entrypoint.sh").read_text()
    assert '"$ROOT/conf/kafka/server.properties"' in entrypoint
    for key in (
        "KAFKA_LISTENERS",
        "KAFKA_ADVERTISED_LISTENERS",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
        "KAFKA_CONTROLLER_QUORUM_VOTERS",
    ):
        assert key in env and f"${{{key}:?}}" in entrypoint, key
    config = load_config(None, {})
    local = (ROOT / "conf" / "kafka" / "server.properties").read_text()
    [timeout] = re.findall(r"^transaction.max.timeout.ms=(\d+)$", local, flags=re.M)
    assert int(timeout) >= config.kafka.transaction_timeout_ms
    host = yaml.safe_load((ROOT / "docker-compose.host.yml").read_text())["services"]
    assert set(host) == set(SERVICES)
    assert {svc["network_mode"] for svc in host.values()} == {"host"}


def test_services_have_health_checks_and_the_ui_port() -> None:
    assert "healthcheck" in SERVICES["kafka"] and "healthcheck" in SERVICES["jobmanager"]
    published = yaml.safe_load((ROOT / "docker-compose.override.yml").read_text())["services"]
    assert "8081:8081" in published["jobmanager"]["ports"]
    assert SERVICES["taskmanager"]["depends_on"]["jobmanager"]["condition"] == "service_healthy"


def test_kubernetes_manifest_keeps_state_and_secrets_right() -> None:
    spec = K8S["spec"]
    assert K8S["kind"] == "FlinkDeployment"
    assert spec["job"]["upgradeMode"] == "savepoint"
    conf = spec["flinkConfiguration"]
    assert conf["execution.checkpointing.dir"].startswith("s3://")
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    env = {e["name"]: e for e in spec["podTemplate"]["spec"]["containers"][0]["env"]}
    assert "secretKeyRef" in env["KAFKA_SASL_PASSWORD"]["valueFrom"]
    assert "value" not in env["KAFKA_SASL_PASSWORD"]
    assert env["ENABLE_BUILT_IN_PLUGINS"]["value"] == (
        f"flink-s3-fs-presto-{PINS['FLINK_VERSION']}.jar"
    )
