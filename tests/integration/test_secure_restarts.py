"""The SASL_SSL broker keeps letting its users in across restarts (`make kafka-up-secure` on
the same data): five restarts with users and ACLs added and removed in between, then one
after the SCRAM credentials of both project users were deleted, which the start script makes
again. After each, the application and the admin user authenticate with SCRAM and PLAIN.

The broker is this module's own (its own data folder and ports), so the restarts disturb no
other test."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from kafkaio import acl
from tests.conftest import OwnBroker, env_file

pytestmark = pytest.mark.integration
SCRAM = ScramMechanism.SCRAM_SHA_512


def client_conf(env: dict[str, str], mechanism: str) -> dict[str, str]:
    return {
        "bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": env["KAFKA_SASL_USERNAME"],
        "sasl.password": env["KAFKA_SASL_PASSWORD"],
        "ssl.ca.location": env["KAFKA_SSL_CA_LOCATION"],
    }


class Broker(OwnBroker):
    """This module's SASL_SSL broker and its two users."""

    def users(self) -> dict[str, dict[str, str]]:
        return {
            "admin": env_file(self.var_dir / "admin.env"),
            "marketlag": env_file(self.var_dir / "client.env"),
        }

    def admin(self) -> AdminClient:
        return AdminClient({**client_conf(self.users()["admin"], "PLAIN"), "log_level": 3})


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("kafka-secure"), secure=True)
    b.run("up")
    try:
        yield b
    finally:
        b.stop()


def authenticates(broker: Broker) -> None:
    """Both users get in with both mechanisms (a metadata request answered)."""
    for user, env in broker.users().items():
        for mechanism in ("SCRAM-SHA-512", "PLAIN"):
            client = AdminClient({**client_conf(env, mechanism), "log_level": 0})
            try:
                client.list_topics(timeout=20)
            except Exception as e:
                raise AssertionError(f"{user} cannot authenticate with {mechanism}: {e}") from e


def churn(broker: Broker, rng: random.Random, round_: int) -> None:
    """Users and ACLs added, some of them removed again, as operators and tests do."""
    admin = broker.admin()
    info = ScramCredentialInfo(SCRAM, 4096)
    names = [f"user-{round_}-{i}" for i in range(3)]
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(n, info, os.urandom(12).hex().encode()) for n in names]
    ).values():
        f.result(30)
    bindings = [
        AclBinding(
            ResourceType.TOPIC,
            f"topic-{round_}",
            ResourcePatternType.LITERAL,
            f"User:{n}",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
        for n in names
    ]
    for f in admin.create_acls(bindings).values():
        f.result(30)
    gone = rng.sample(names, 2)
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(n, SCRAM) for n in gone]
    ).values():
        f.result(30)
    filters = [acl.filter_of(b) for b in bindings if b.principal.removeprefix("User:") in gone]
    for f in admin.delete_acls(filters).values():
        f.result(30)


def test_users_get_in_after_restarts_with_users_and_acls_changed(broker: Broker) -> None:
    seed = random.randrange(2**32)
    print(f"churn seed {seed}")
    rng = random.Random(seed)
    authenticates(broker)
    for round_ in range(5):
        churn(broker, rng, round_)
        broker.run("down")
        broker.run("up")
        authenticates(broker)


def test_the_start_makes_lost_scram_users_again(broker: Broker) -> None:
    admin = broker.admin()
    for f in admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(n, SCRAM) for n in ("admin", "marketlag")]
    ).values():
        f.result(30)
    broker.run("down")

    said = broker.run("up")

    for user in ("admin", "marketlag"):
        assert f"the SCRAM credential of {user} was missing" in said, said
    authenticates(broker)
