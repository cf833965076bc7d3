"""SCRAM users of a broker, for the local secure broker's start (``scripts/kafka.sh``).

    python -m kafkaio.scram ensure NAME...

As the broker's admin (the ``KAFKA_*`` environment; PLAIN works when SCRAM does not), makes
sure each NAME has a SCRAM-SHA-512 credential, and makes the missing ones from the password
in the environment variable ``SCRAM_PASSWORD_<NAME>`` (upper case; never a command-line
argument, which other users of the machine can read). Prints what it restored.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import Future
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from kafkaio.admin import admin_client
from settings.config import load_config

MECHANISM = ScramMechanism.SCRAM_SHA_512
ITERATIONS = 8192
TIMEOUT_S = 30


def missing(names: list[str]) -> list[str]:
    """The users among ``names`` without a SCRAM-SHA-512 credential."""
    client = admin_client(load_config().kafka.librdkafka())
    absent = []
    # Asked for named users, it answers with a future per user.
    futures = cast(
        "dict[str, Future[Any]]",
        client.describe_user_scram_credentials(names, request_timeout=TIMEOUT_S),
    )
    for name, future in futures.items():
        try:
            infos = future.result(timeout=TIMEOUT_S).scram_credential_infos
        except KafkaException as e:
            if e.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                raise
            infos = []
        if not any(info.mechanism == MECHANISM for info in infos):
            absent.append(name)
    return absent


def ensure(names: list[str]) -> list[str]:
    """Makes the credentials of the ``names`` that have none; returns those it made."""
    absent = missing(names)
    if not absent:
        return []
    passwords = {n: os.environ.get(f"SCRAM_PASSWORD_{n.upper()}") for n in absent}
    if unknown := [n for n, p in passwords.items() if not p]:
        raise SystemExit(f"kafkaio.scram: no SCRAM_PASSWORD_<NAME> for {', '.join(unknown)}")
    info = ScramCredentialInfo(MECHANISM, ITERATIONS)
    client = admin_client(load_config().kafka.librdkafka())
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(n, info, str(p).encode()) for n, p in passwords.items()
    ]
    for future in client.alter_user_scram_credentials(upserts, request_timeout=TIMEOUT_S).values():
        future.result(timeout=TIMEOUT_S)
    return absent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kafkaio.scram", description=__doc__)
    parser.add_argument("action", choices=["ensure"])
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    for name in ensure(args.names):
        print(f"kafka: the SCRAM credential of {name} was missing; made again from secrets.env")
    return 0


if __name__ == "__main__":
    sys.exit(main())
