"""The job's configuration: one frozen, typed object, loaded once and passed explicitly.

Values come from ``conf/job.yaml``; connection settings can be overridden from the
environment (SPEC section 6). Credentials come from the environment only and are held in
:class:`Secret`, whose ``repr`` and ``str`` never show the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from udfs.pipeline import RetryConfig
from udfs.records import FEEDS as FEEDS  # the feeds the configuration names

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "conf" / "job.yaml"


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message says where."""


@dataclass(frozen=True)
class Secret:
    """A credential. Printing, logging or formatting it shows ``***``, never the value."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True)
class KafkaConfig:
    """How to reach the brokers; security settings from the environment only."""

    bootstrap_servers: str
    transactional_id_prefix: str
    transaction_timeout_ms: int
    max_request_size: int
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: str | None = None

    def librdkafka(self) -> dict[str, str]:
        """Client settings for confluent-kafka (librdkafka names)."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.value
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf


@dataclass(frozen=True)
class FeedTopics:
    """The three topics of one feed."""

    input: str
    clean: str
    dlq: str


@dataclass(frozen=True)
class BatchConfig:
    """How records are grouped for the crossing between the JVM and the Python workers."""

    max_records: int
    max_bytes: int
    max_delay_ms: int


@dataclass(frozen=True)
class IngestConfig:
    """The ingest producers' settings (``ingest`` in conf/job.yaml; SPEC section 9)."""

    spool: str  # a directory or s3://bucket/prefix (MARKETLAG_SPOOL overrides it)
    delivery_timeout_ms: int
    dlq_timeout_ms: int
    producer: Mapping[str, str]  # extra librdkafka settings


@dataclass(frozen=True)
class JobConfig:
    """Everything the job and the tools read from ``conf/job.yaml`` and the environment."""

    name: str
    group_id: str
    parallelism: int
    python_execution_mode: str
    kafka: KafkaConfig
    feeds: Mapping[str, FeedTopics]
    parking_topic: str
    ledger_topic: str
    partitions: int
    checkpoint_interval_ms: int
    # --bounded: the run ends on the checkpoint after its last record, so a shorter interval
    # ends it sooner (checkpoint.bounded_interval_ms)
    bounded_checkpoint_interval_ms: int
    checkpoint_timeout_ms: int
    checkpoint_dir: Path
    retry: RetryConfig
    enrich: Mapping[str, str | None]
    jars: tuple[Path, ...]
    flink_conf: Mapping[str, str]
    batch: BatchConfig
    # Extra Kafka client properties of the job's source (consumer) and sinks (producers).
    source_properties: Mapping[str, str]
    sink_properties: Mapping[str, str]
    # JVM options of the embedded mini-cluster only (flink.local_jvm_options).
    local_jvm_options: tuple[str, ...]
    # Where the embedded mini-cluster's JVM keeps its class-data archive (flink.class_data_dir;
    # None: no archive).
    class_data_dir: Path | None
    ingest: IngestConfig
    # retention.ms of the DLQ topics and the parking lot that `dlq topics` creates
    # (-1: never deleted by time or size).
    dlq_retention_ms: int

    @property
    def dlq_topics(self) -> tuple[str, ...]:
        return tuple(t.dlq for t in self.feeds.values())

    def with_overrides(self, **changes: Any) -> JobConfig:
        """A copy with top-level fields replaced (command-line options)."""
        return replace(self, **changes)

    def with_bootstrap_servers(self, servers: str | None) -> JobConfig:
        if not servers:
            return self
        return replace(self, kafka=replace(self.kafka, bootstrap_servers=servers))


def _get(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing setting '{path}'")
        node = node[part]
    return node


def _int(tree: Mapping[str, Any], path: str, minimum: int = 0) -> int:
    value = _get(tree, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"setting '{path}' must be an integer >= {minimum}, got {value!r}")
    return value


def _properties(tree: Mapping[str, Any], path: str) -> dict[str, str]:
    """A mapping of Kafka client properties; credentials are refused (environment only)."""
    value = _get(tree, path) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"setting '{path}' must be a mapping of Kafka client properties")
    props = {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    if secret := [k for k in props if k.startswith("sasl.") or "password" in k]:
        raise ConfigError(
            f"setting '{path}' must not hold credentials ({', '.join(secret)}): "
            "they come from the environment (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
        )
    return props


def _jvm_options(tree: Mapping[str, Any], path: str) -> tuple[str, ...]:
    value = _get(tree, path) or []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(
        isinstance(v, str) and v.startswith("-") for v in value
    ):
        raise ConfigError(f"setting '{path}' must be a list of JVM options such as -Xmx1g")
    return tuple(value)


def _folder(tree: Mapping[str, Any], path: str) -> Path | None:
    """A folder relative to the repository root; None when the setting is empty."""
    value = _get(tree, path)
    return ROOT / str(value) if value else None


def _retention(tree: Mapping[str, Any], path: str) -> int:
    value = _get(tree, path)
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
        raise ConfigError(f"setting '{path}' must be -1 (keep for ever) or milliseconds > 0")
    return value


# Environment variables that hold secrets (SPEC section 6).
SECRET_ENV = ("KAFKA_SASL_PASSWORD",)


def scrub_secret_environment() -> None:
    """Removes the secrets from this process's environment once the config holds them.

    Child processes inherit the environment, and some log it: Flink's Python runner (Beam)
    logs the whole environment of its Python workers at INFO. The job reads the password
    into its configuration and then drops it from the environment before the JVM starts.
    """
    for name in SECRET_ENV:
        os.environ.pop(name, None)


def _read(path: Path) -> Mapping[str, Any]:
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(tree, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return tree


def _laid_over(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` laid over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        below = base.get(key)
        both = isinstance(value, Mapping) and isinstance(below, Mapping)
        out[key] = _laid_over(below, value) if both else value  # type: ignore[arg-type]
    return out


def with_setting(tree: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``tree`` with the setting at the dotted ``path`` set to ``value``. The path follows the
    tree's mappings as far as they go; what is left is one key, so that a setting named with
    dots (``kafka.source.fetch.max.bytes``, ``flink.conf.rest.port``) lands under its section.
    A path outside the sections of conf/job.yaml is an error: a typo would pass unseen."""
    head, _, rest = path.partition(".")
    if head not in tree:
        raise ConfigError(f"unknown setting '{path}': conf/job.yaml has no section {head!r}")
    if rest and not isinstance(tree[head], Mapping):
        raise ConfigError(f"unknown setting '{path}': '{head}' is not a section")
    return {**tree, head: _set_in(tree[head], rest, value, path) if rest else value}


def _set_in(node: Mapping[str, Any], path: str, value: Any, full: str) -> dict[str, Any]:
    head, _, rest = path.partition(".")
    if rest and isinstance(node.get(head), Mapping):
        return {**node, head: _set_in(node[head], rest, value, full)}
    if rest and head in node:
        raise ConfigError(f"unknown setting '{full}': '{head}' is a value, not a section")
    return {**node, path: value}


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> JobConfig:
    """Reads the configuration and applies the environment's overrides.

    ``conf/job.yaml`` is the one source of defaults: a file given here is laid over it, so it
    need only hold what it changes. ``settings`` ({dotted path: value}, from a managed
    service's application properties) are laid over both.
    """
    env = os.environ if environ is None else environ
    tree: Mapping[str, Any] = _read(DEFAULT_CONFIG)
    if path and Path(path).resolve() != DEFAULT_CONFIG.resolve():
        tree = _laid_over(tree, _read(Path(path)))
    for dotted, value in (settings or {}).items():
        tree = with_setting(tree, dotted, value)

    password = env.get("KAFKA_SASL_PASSWORD")
    kafka = KafkaConfig(
        bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS")
        or str(_get(tree, "kafka.bootstrap_servers")),
        transactional_id_prefix=str(_get(tree, "kafka.transactional_id_prefix")),
        transaction_timeout_ms=_int(tree, "kafka.transaction_timeout_ms", 1),
        max_request_size=_int(tree, "kafka.max_request_size", 1),
        security_protocol=env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
        sasl_mechanism=env.get("KAFKA_SASL_MECHANISM") or None,
        sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
        sasl_password=Secret(password) if password else None,
        ssl_ca_location=env.get("KAFKA_SSL_CA_LOCATION") or None,
    )
    if kafka.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(
            f"KAFKA_SECURITY_PROTOCOL must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, "
            f"got {kafka.security_protocol!r}"
        )

    feeds = {}
    for feed in FEEDS:
        topics = _get(tree, f"topics.{feed}")
        try:
            feeds[feed] = FeedTopics(
                input=str(topics["input"]), clean=str(topics["clean"]), dlq=str(topics["dlq"])
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"topics.{feed} needs input, clean and dlq topic names") from e

    mode = str(_get(tree, "job.python_execution_mode"))
    if mode not in ("thread", "process"):
        raise ConfigError(f"job.python_execution_mode must be thread or process, got {mode!r}")
    retryable = _get(tree, "retry.retryable") or []
    enrich = _get(tree, "enrich") or {}
    return JobConfig(
        name=str(_get(tree, "job.name")),
        group_id=str(_get(tree, "job.group_id")),
        parallelism=_int(tree, "job.parallelism", 1),
        python_execution_mode=mode,
        kafka=kafka,
        feeds=feeds,
        parking_topic=str(_get(tree, "topics.parking")),
        ledger_topic=str(_get(tree, "topics.replay_ledger")),
        partitions=_int(tree, "topics.partitions", 1),
        checkpoint_interval_ms=_int(tree, "checkpoint.interval_ms", 100),
        bounded_checkpoint_interval_ms=_int(tree, "checkpoint.bounded_interval_ms", 100),
        checkpoint_timeout_ms=_int(tree, "checkpoint.timeout_ms", 1000),
        checkpoint_dir=ROOT / str(_get(tree, "checkpoint.dir")),
        retry=RetryConfig(
            max_attempts=_int(tree, "retry.max_attempts", 1),
            backoff_ms=_int(tree, "retry.backoff_ms", 0),
            max_backoff_ms=_int(tree, "retry.max_backoff_ms", 0),
            retryable=tuple(str(r) for r in retryable),
        ),
        enrich={feed: (str(enrich[feed]) if enrich.get(feed) else None) for feed in FEEDS},
        jars=tuple(ROOT / str(j) for j in _get(tree, "flink.jars")),
        flink_conf={str(k): str(v) for k, v in (_get(tree, "flink.conf") or {}).items()},
        source_properties=_properties(tree, "kafka.source"),
        sink_properties=_properties(tree, "kafka.sink"),
        local_jvm_options=_jvm_options(tree, "flink.local_jvm_options"),
        class_data_dir=_folder(tree, "flink.class_data_dir"),
        ingest=IngestConfig(
            spool=env.get("MARKETLAG_SPOOL") or str(_get(tree, "ingest.spool")),
            delivery_timeout_ms=_int(tree, "ingest.delivery_timeout_ms", 1),
            dlq_timeout_ms=_int(tree, "ingest.dlq_timeout_ms", 1),
            producer=_properties(tree, "ingest.producer"),
        ),
        dlq_retention_ms=_retention(tree, "topics.dlq_retention_ms"),
        batch=BatchConfig(
            max_records=_int(tree, "batch.max_records", 1),
            max_bytes=_int(tree, "batch.max_bytes", 1),
            max_delay_ms=_int(tree, "batch.max_delay_ms", 1),
        ),
    )
