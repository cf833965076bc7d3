"""The ``dlq`` command (SPEC section 8).

Exit codes: 0 success, 1 threshold exceeded or records failed, 2 usage or connection error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from udfs.config import DEFAULT_CONFIG, ConfigError, JobConfig, load_config

ENV_HELP = (
    "Environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, "
    "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SSL_CA_LOCATION (credentials are read "
    "from the environment only)."
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Context:
    config: JobConfig


def fail(message: str) -> None:
    """Prints a usage/connection error and exits with code 2."""
    click.echo(f"dlq: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


@click.group(
    epilog=ENV_HELP, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    help="Job configuration file (topic names, brokers).",
)
@click.option(
    "--bootstrap-servers",
    default=None,
    metavar="HOST:PORT",
    help="Kafka brokers [default: from the config file or KAFKA_BOOTSTRAP_SERVERS].",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path, bootstrap_servers: str | None) -> None:
    """Operate the MarketLag dead-letter queues."""
    try:
        config = load_config(config_path).with_bootstrap_servers(bootstrap_servers)
    except ConfigError as e:
        fail(str(e))
    ctx.obj = Context(config)


@cli.command(epilog=ENV_HELP)
@click.option("--timeout", default=60.0, help="Seconds to wait.")
@click.pass_obj
def wait(obj: Context, timeout: float) -> None:
    """Wait until the Kafka cluster answers (exit 2 if it does not in time)."""
    from dlq.admin import wait_for_broker

    try:
        wait_for_broker(obj.config.kafka.librdkafka(), timeout)
    except TimeoutError as e:
        fail(str(e))


@cli.command(epilog=ENV_HELP)
@click.pass_obj
def topics(obj: Context) -> None:
    """Create the input, clean, DLQ and parking topics (idempotent)."""
    from confluent_kafka import KafkaException

    from dlq.admin import admin_client, ensure_project_topics, wait_for_broker

    conf = obj.config.kafka.librdkafka()
    try:
        wait_for_broker(conf, 30)
        rows = ensure_project_topics(obj.config, admin_client(conf))
    except (TimeoutError, KafkaException) as e:
        fail(str(e))
    for name, state, max_bytes in rows:
        click.echo(f"{name:<32} {state:<8} max.message.bytes={max_bytes}")


@cli.command(epilog=ENV_HELP)
@click.argument("names", nargs=-1)
@click.pass_obj
def sql(obj: Context, names: tuple[str, ...]) -> None:
    """Print the Flink SQL of sql/ for this configuration (default: the table DDL).

    NAMES are files of sql/ without .sql, e.g. `dlq sql topics dlq_failures_per_hour`.
    """
    from dlq.sqlfiles import SQL_DIR, render

    click.echo("SET 'table.local-time-zone' = 'UTC';")
    for name in names or ("topics",):
        path = SQL_DIR / f"{name}.sql"
        if not path.is_file():
            fail(f"no such SQL file: {path}")
        text = render(path, obj.config).rstrip()
        click.echo(text if text.endswith(";") else text + ";")


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dlq", standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
