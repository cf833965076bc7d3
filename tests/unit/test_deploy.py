"""docker-compose.yml, the Dockerfile and the Kubernetes manifest agree with the Makefile,
conf/ and versions.env. There is no Docker engine or cluster here to run them, so they are
checked statically: same topics, same job entry point, same pinned versions, files present."""

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
    assert {k: str(v) for k, v in args.items()} == {
        k: PINS[k]
        for k in (
            "FLINK_VERSION",
            "FLINK_KAFKA_CONNECTOR_VERSION",
            "KAFKA_VERSION",
            "SCALA_BINARY_VERSION",
        )
    }
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{PINS['KAFKA_VERSION']}"
    assert "FROM flink:${FLINK_VERSION}-java17" in DOCKERFILE
    assert '"apache-flink==${FLINK_VERSION}"' in DOCKERFILE
    major, minor, _ = PINS["FLINK_VERSION"].split(".")
    assert K8S["spec"]["flinkVersion"] == f"v{major}_{minor}"
    assert K8S["spec"]["job"]["jarURI"].endswith(f"flink-python-{PINS['FLINK_VERSION']}.jar")


def test_every_file_the_deployments_use_exists() -> None:
    for src in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, flags=re.M):
        assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    build = SERVICES["jobmanager"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for svc in SERVICES.values():
        for volume in svc.get("volumes", []):
            host = volume.split(":")[0]
            if host.startswith("./"):
                assert (ROOT / host).exists(), f"compose mounts missing {host}"
    assert (ROOT / "jobs" / "dlq_job.py").is_file()


def test_compose_runs_the_same_job_on_the_same_topics() -> None:
    # The one-shot topic service and the submission use conf/job.yaml, mounted read-only.
    mount = "./conf:/opt/marketlag/conf:ro"
    for name in ("topics", "submit", "jobmanager", "taskmanager"):
        assert mount in SERVICES[name]["volumes"], name
    assert command("topics")[-1] == "topics"
    assert command("topics")[command("topics").index("--config") + 1] == (
        "/opt/marketlag/conf/job.yaml"
    )
    submit = command("submit")
    assert submit[:2] == ["flink", "run"]
    assert submit[submit.index("-py") + 1] == "/opt/marketlag/jobs/dlq_job.py"
    assert submit[submit.index("--config") + 1] == "/opt/marketlag/conf/job.yaml"
    assert "jobs/dlq_job.py" in (ROOT / "scripts" / "flink-cluster.sh").read_text()
    k8s_args = K8S["spec"]["job"]["args"]
    assert k8s_args[k8s_args.index("-py") + 1] == "/opt/marketlag/jobs/dlq_job.py"
    deps = SERVICES["submit"]["depends_on"]
    assert deps["topics"]["condition"] == "service_completed_successfully"


def test_compose_broker_matches_the_local_broker_and_the_sinks() -> None:
    env = SERVICES["kafka"]["environment"]
    config = load_config(None, {})
    assert int(env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"]) >= config.kafka.transaction_timeout_ms
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, one node
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert int(env[key]) == 1
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    local = (ROOT / "conf" / "kafka" / "server.properties").read_text()
    assert f"transaction.max.timeout.ms={env['KAFKA_TRANSACTION_MAX_TIMEOUT_MS']}" in local


def test_services_have_health_checks_and_the_ui_port() -> None:
    assert "healthcheck" in SERVICES["kafka"] and "healthcheck" in SERVICES["jobmanager"]
    assert "8081:8081" in SERVICES["jobmanager"]["ports"]
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
