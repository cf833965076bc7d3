"""Kafka ACLs for the job and the ``dlq`` tools, for brokers with an authorizer.

What each part needs (grant these on a managed Kafka the same way):

- the job: READ and DESCRIBE on the input topics; WRITE and DESCRIBE on the clean and DLQ
  topics; READ on its consumer group (offsets committed on checkpoints); WRITE and DESCRIBE on
  the transactional ids starting with ``kafka.transactional_id_prefix``; IDEMPOTENT_WRITE on
  the cluster;
- an ingest producer (``ingest.producer``): WRITE and DESCRIBE on the input and DLQ topics,
  IDEMPOTENT_WRITE on the cluster;
- ``dlq spool drain``: WRITE on the input and DLQ topics, READ and WRITE on the replay ledger,
  a transactional id of its own (``dlq-spool-drain.*``);
- ``dlq stats`` / ``analyze`` / ``monitor``: READ and DESCRIBE on the DLQ topics;
- ``dlq replay``: the same, plus WRITE on the replay targets, ``dlq.parking`` and the replay
  ledger, READ on the ledger, and a transactional id of its own.

``python -m kafkaio.acl grant ROLE User:NAME`` (and ``revoke``), as the broker's admin, grants
what a role needs for the configured topics: ``job`` (the Flink job), ``ingest`` (the ingest
producers), or ``app``: everything on every topic, group and transactional id, which
``scripts/kafka.sh up-secure`` gives the local application user (a development broker, not a
production policy).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from kafkaio.admin import admin_client
from settings.config import JobConfig, load_config

Op = AclOperation


def allow(
    principal: str,
    kind: ResourceType,
    name: str,
    operations: Iterable[AclOperation],
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
) -> list[AclBinding]:
    return [
        AclBinding(kind, name, pattern, principal, "*", op, AclPermissionType.ALLOW)
        for op in operations
    ]


def job_acls(principal: str, config: JobConfig) -> list[AclBinding]:
    """The least the job needs."""
    out = allow(principal, ResourceType.BROKER, "kafka-cluster", [Op.IDEMPOTENT_WRITE])
    out += allow(principal, ResourceType.GROUP, config.group_id, [Op.READ, Op.DESCRIBE])
    out += allow(
        principal,
        ResourceType.TRANSACTIONAL_ID,
        config.kafka.transactional_id_prefix,
        [Op.WRITE, Op.DESCRIBE],
        ResourcePatternType.PREFIXED,
    )
    for feed in config.feeds.values():
        out += allow(principal, ResourceType.TOPIC, feed.input, [Op.READ, Op.DESCRIBE])
        out += allow(principal, ResourceType.TOPIC, feed.clean, [Op.WRITE, Op.DESCRIBE])
        out += allow(
            principal,
            ResourceType.TOPIC,
            feed.dlq,
            [Op.WRITE, Op.DESCRIBE],
        )
    return out


def ingest_acls(principal: str, config: JobConfig, *, input_write: bool = True) -> list[AclBinding]:
    """What an ingest producer needs: idempotent WRITE on the input and DLQ topics.
    ``input_write=False`` leaves out writing the inputs (its records then go to the DLQ)."""
    out = allow(principal, ResourceType.BROKER, "kafka-cluster", [Op.IDEMPOTENT_WRITE])
    for feed in config.feeds.values():
        out += allow(
            principal,
            ResourceType.TOPIC,
            feed.input,
            [Op.WRITE, Op.DESCRIBE] if input_write else [Op.DESCRIBE],
        )
        out += allow(principal, ResourceType.TOPIC, feed.dlq, [Op.WRITE, Op.DESCRIBE])
    return out


def app_acls(principal: str) -> list[AclBinding]:
    """Everything on every topic, group and transactional id (the local development user)."""
    out = allow(
        principal,
        ResourceType.BROKER,
        "kafka-cluster",
        [Op.IDEMPOTENT_WRITE, Op.DESCRIBE, Op.CREATE, Op.DESCRIBE_CONFIGS],
    )
    for kind in (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID):
        out += allow(principal, kind, "*", [Op.ALL])
    return out


def create(config: JobConfig, bindings: list[AclBinding], timeout_s: float = 30) -> None:
    """Creates ACLs as the configured (admin) user; raises KafkaException on refusal."""
    client = admin_client(config.kafka.librdkafka())
    for future in client.create_acls(bindings, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


def filter_of(b: AclBinding) -> AclBindingFilter:
    """The filter that matches exactly the ACL ``b``."""
    return AclBindingFilter(
        b.restype,
        b.name,
        b.resource_pattern_type,
        b.principal,
        b.host,
        b.operation,
        b.permission_type,
    )


def revoke(config: JobConfig, bindings: list[AclBinding], timeout_s: float = 30) -> None:
    """Deletes exactly these ACLs, as the configured (admin) user."""
    filters = [filter_of(b) for b in bindings]
    client = admin_client(config.kafka.librdkafka())
    for future in client.delete_acls(filters, request_timeout=timeout_s).values():
        future.result(timeout=timeout_s)


ROLES: dict[str, Callable[[str, JobConfig], list[AclBinding]]] = {
    "app": lambda principal, _config: app_acls(principal),
    "job": job_acls,
    "ingest": ingest_acls,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m kafkaio.acl grant|revoke ROLE User:NAME`` as the broker's admin (the
    ``KAFKA_*`` environment), for the topics of ``--config`` (default conf/job.yaml)."""
    parser = argparse.ArgumentParser(prog="python -m kafkaio.acl", description=main.__doc__)
    parser.add_argument("action", choices=["grant", "revoke"])
    parser.add_argument("role", choices=sorted(ROLES), help="app: everything (development only)")
    parser.add_argument("principal", help="User:NAME")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not args.principal.startswith("User:"):
        parser.error("the principal is User:NAME")
    config = load_config(args.config)
    bindings = ROLES[args.role](args.principal, config)
    (create if args.action == "grant" else revoke)(config, bindings)
    done = "may now" if args.action == "grant" else "may no longer"
    print(
        f"kafka: {args.principal} {done} do what the {args.role} role needs ({len(bindings)} ACLs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
