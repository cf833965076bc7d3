"""The ``dlq`` command (SPEC section 8).

Exit codes: 0 success, 1 threshold exceeded or records failed, 2 usage or connection error.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from dlq.replay import Replayer
from settings.config import DEFAULT_CONFIG, ConfigError, JobConfig, load_config
from udfs.errors import Category

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
@click.option("--brokers", default=1, help="Wait until this many brokers are in the metadata.")
@click.pass_obj
def wait(obj: Context, timeout: float, brokers: int) -> None:
    """Wait until the Kafka cluster answers (exit 2 if it does not in time)."""
    from kafkaio.admin import wait_for_broker

    try:
        wait_for_broker(obj.config.kafka.librdkafka(), timeout, brokers)
    except (TimeoutError, ConnectionError) as e:
        fail(str(e))


@cli.command(epilog=ENV_HELP)
@click.pass_obj
def topics(obj: Context) -> None:
    """Create the input, clean, DLQ and parking topics (idempotent)."""
    from confluent_kafka import KafkaException

    from kafkaio.admin import admin_client, ensure_project_topics, retention_ms, wait_for_broker

    conf = obj.config.kafka.librdkafka()
    keep = [*obj.config.dlq_topics, obj.config.parking_topic]
    try:
        wait_for_broker(conf, 30)
        client = admin_client(conf)
        rows = ensure_project_topics(obj.config, client)
        deleting = {t: retention_ms(client, t) for t in keep}
    except (KafkaException, TimeoutError, ConnectionError) as e:
        fail(str(e))
    for name, state, max_bytes in rows:
        click.echo(f"{name:<32} {state:<8} max.message.bytes={max_bytes}")
    for name, ms in deleting.items():
        if ms is not None:
            click.echo(
                f"dlq: warning: {name} deletes records after {ms / 86_400_000:g} days "
                f"(retention.ms={ms}): what nobody looked at by then is lost. Keep them: "
                f"kafka-configs --alter --entity-type topics --entity-name {name} "
                "--add-config retention.ms=-1",
                err=True,
            )


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


def _conf(obj: Context) -> dict[str, str]:
    return obj.config.kafka.librdkafka()


def _check_broker(obj: Context, reads: list[str] | None = None) -> None:
    """Fails fast (exit 2) when no broker answers, or refuses us, or this principal may not
    read the topics in ``reads``: instead of hanging in a scan, or reporting nothing."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]

    from kafkaio.admin import check_topic_access, wait_for_broker

    try:
        wait_for_broker(_conf(obj), 20)
        if reads:
            check_topic_access(_conf(obj), {t: [AclOperation.READ] for t in reads})
    except (KafkaException, TimeoutError, ConnectionError, PermissionError) as e:
        fail(str(e))


def _dlq_topics(obj: Context, topic: str | None) -> list[str]:
    if topic is None:
        return list(obj.config.dlq_topics)
    return [topic]


@cli.command(epilog=ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--threshold",
    type=click.IntRange(min=0),
    default=None,
    help="Exit 1 when any DLQ topic holds more than this many records.",
)
@click.option("--window", default=300.0, help="Seconds over which growth is measured.")
@click.option("--topic", default=None, help="One DLQ topic [default: every feed's DLQ].")
@click.pass_obj
def stats(
    obj: Context, as_json: bool, threshold: int | None, window: float, topic: str | None
) -> None:
    """Per DLQ topic: committed records, growth, oldest/newest failure, categories, types."""
    import orjson
    from confluent_kafka import KafkaException

    from dlq.replay import load_ledger
    from dlq.stats import TopicStats
    from ingest.spool import SpoolError, open_spool, summarise
    from kafkaio.admin import admin_client, retention_ms
    from kafkaio.scan import read_dlq

    _check_broker(obj, _dlq_topics(obj, topic))
    now_ms = int(time.time() * 1000)
    result: dict[str, dict[str, object]] = {}
    try:
        client = admin_client(_conf(obj))
        for name in _dlq_topics(obj, topic):
            figures = TopicStats(name, window_s=window)
            for rec in read_dlq(_conf(obj), [name]):
                figures.add(rec)
            row = figures.as_dict(now_ms, retention_ms(client, name))
            row["replayed"] = len(load_ledger(_conf(obj), obj.config.ledger_topic, name))
            result[name] = row
    except (KafkaException, TimeoutError, ConnectionError) as e:
        fail(str(e))
    try:
        spooled: dict[str, Any] = summarise(open_spool(obj.config.ingest.spool)).as_dict()
    except SpoolError as e:
        spooled = {"location": obj.config.ingest.spool, "error": str(e)}
    if as_json:
        doc = {"topics": result, "spool": spooled, "threshold": threshold}
        click.echo(orjson.dumps(doc).decode())
    else:
        from dlq.render import console, spool_line, stats_table

        console().print(stats_table(result, window))
        console().print(spool_line(spooled), markup=False)
    over = [
        t
        for t, row in result.items()
        if threshold is not None and int(str(row["count"])) > threshold
    ]
    if over:
        click.echo(f"dlq: {', '.join(over)} above the threshold of {threshold} records", err=True)
        sys.exit(EXIT_FAILED)


@cli.command(epilog=ENV_HELP)
@click.option("--topic", default=None, help="One DLQ topic [default: every feed's DLQ].")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Draw failures over time per fingerprint into this PNG file.",
)
@click.option("--top", default=10, help="Groups shown in the table and the plot.")
@click.pass_obj
def analyze(obj: Context, topic: str | None, as_json: bool, plot: Path | None, top: int) -> None:
    """Group failures by fingerprint (type + normalised message + field)."""
    import orjson
    from confluent_kafka import KafkaException

    from dlq.stats import analysis_doc
    from dlq.stats import analyze as group_failures
    from kafkaio.scan import read_dlq

    _check_broker(obj, _dlq_topics(obj, topic))
    try:
        records = list(read_dlq(_conf(obj), _dlq_topics(obj, topic)))
    except (KafkaException, TimeoutError, ConnectionError) as e:
        fail(str(e))
    groups = group_failures(records)
    doc = analysis_doc(groups)
    if plot is not None:
        from dlq.plot import plot_groups

        plot_groups(groups[:top], plot)
    if as_json:
        click.echo(orjson.dumps(doc).decode())
        return
    from dlq.render import analysis_table, console

    console().print(analysis_table(doc, top, wide=not sys.stdout.isatty()))
    if plot is not None:
        click.echo(f"plot written to {plot}")


@cli.command(epilog=ENV_HELP)
@click.option(
    "--port", type=click.IntRange(1, 65535), required=True, help="HTTP port for /metrics."
)
@click.option("--address", default="0.0.0.0", help="Address to listen on.")
@click.option("--window", default=300.0, help="Seconds over which growth is measured.")
@click.option("--refresh", default=15.0, help="Seconds between ledger and lag refreshes.")
@click.pass_obj
def monitor(obj: Context, port: int, address: str, window: float, refresh: float) -> None:
    """Serve the DLQ figures and the job's input lag as Prometheus metrics."""
    from dlq.monitor import serve

    _check_broker(obj, list(obj.config.dlq_topics))
    click.echo(
        f"serving Prometheus metrics on http://{address}:{port}/metrics (Ctrl-C stops)", err=True
    )
    try:
        serve(obj.config, port, window, refresh, address)
    except KeyboardInterrupt:
        pass
    except OSError as e:
        fail(f"cannot listen on {address}:{port}: {e.strerror}")


def _parse_when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"not an ISO-8601 time: {value!r} (e.g. 2026-11-30T18:00:00Z)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_offsets(values: tuple[str, ...]) -> dict[int, tuple[int, int]] | None:
    if not values:
        return None
    spans = {}
    for text in values:
        try:
            part, _, span = text.partition(":")
            first, _, last = span.partition("-")
            spans[int(part)] = (int(first), int(last or first))
        except ValueError:
            fail(f"--offsets takes PARTITION:FIRST[-LAST], got {text!r}")
    return spans


@cli.command(epilog=ENV_HELP)
@click.option("--topic", required=True, help="The DLQ topic to replay from.")
@click.option(
    "--category",
    type=click.Choice([str(c) for c in Category]),
    default=None,
)
@click.option("--error-type", default=None, help="Only this error type (e.g. ValidationError).")
@click.option("--fingerprint", default=None, help="Only this failure group (dlq analyze).")
@click.option("--since", default=None, help="Only failures at or after this ISO time.")
@click.option("--until", default=None, help="Only failures before this ISO time.")
@click.option(
    "--offsets",
    multiple=True,
    metavar="P:FIRST-LAST",
    help="Only these DLQ offsets of partition P (repeatable).",
)
@click.option(
    "--fix",
    "fix_spec",
    default=None,
    metavar="MODULE:FUNCTION",
    help="Repair function(value, envelope) -> bytes | None (None: skip).",
)
@click.option("--to", default=None, help="Write to this topic instead of the original one.")
@click.option("--dry-run", is_flag=True, help="List what would be replayed; write nothing.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many records per second.",
)
@click.option(
    "--max-replays",
    default=3,
    show_default=True,
    help="Records replayed this often already go to the parking lot.",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document.")
@click.pass_obj
def replay(
    obj: Context,
    topic: str,
    category: str | None,
    error_type: str | None,
    fingerprint: str | None,
    since: str | None,
    until: str | None,
    offsets: tuple[str, ...],
    fix_spec: str | None,
    to: str | None,
    dry_run: bool,
    rate: float | None,
    max_replays: int,
    as_json: bool,
) -> None:
    """Write DLQ records back to their original topic and partition, exactly once."""
    import orjson
    from confluent_kafka import KafkaException

    from dlq.replay import Selection

    fix = _load_fix(fix_spec) if fix_spec else None
    selection = Selection(
        category=category,
        error_type=error_type,
        fingerprint=fingerprint,
        since=_parse_when(since),
        until=_parse_when(until),
        offsets=_parse_offsets(offsets),
    )
    _check_broker(obj, [topic])
    replayer = Replayer(
        _conf(obj),
        dlq_topic=topic,
        ledger_topic=obj.config.ledger_topic,
        parking_topic=obj.config.parking_topic,
        selection=selection,
        fix=fix,
        to=to,
        max_replays=max_replays,
        rate=rate,
        dry_run=dry_run,
        max_request_size=obj.config.kafka.max_request_size,
    )
    try:
        summary = _with_progress(
            "replay",
            replayer.dlq_topic,
            replayer.total,
            replayer.run,
            show=sys.stderr.isatty() and not as_json,
        )
    except (KafkaException, TimeoutError, ConnectionError) as e:
        fail(f"replay stopped: {e}")
    doc = summary.as_dict(with_records=dry_run)
    if as_json:
        click.echo(orjson.dumps(doc).decode())
    else:
        from dlq.render import replay_lines, summary_line

        for line in replay_lines(summary.records):
            click.echo(line)
        for line in summary.errors:
            click.echo(f"failed: {line}", err=True)
        click.echo(summary_line(doc))
    if summary.failed:
        sys.exit(EXIT_FAILED)


def _load_fix(spec: str) -> Any:
    """The ``--fix module:function``, importable from the current directory (SPEC section 8)."""
    from udfs.pipeline import load_callable

    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        return load_callable(spec)
    except (ImportError, AttributeError, ValueError, TypeError) as e:
        fail(f"--fix {spec}: {e}")


T = TypeVar("T")


def _with_progress(
    verb: str,
    what: str,
    total: Callable[[], int],
    run: Callable[..., T],
    show: bool,
) -> T:
    """``run(progress=...)`` with a progress bar on a terminal (``total()`` sizes it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if not show:
        return run()
    with Progress(
        TextColumn(f"{verb} {{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total())
        return run(progress=lambda n: bar.advance(task, n))


@cli.group()
def spool() -> None:
    """The ingest producers' spool: records that reached neither their topic nor their DLQ."""


@spool.command(epilog=ENV_HELP)
@click.option(
    "--spool",
    "location",
    default=None,
    metavar="DIR|s3://BUCKET/PREFIX",
    help="The spool [default: ingest.spool of the config, or MARKETLAG_SPOOL].",
)
@click.option("--dry-run", is_flag=True, help="List what would be sent; write nothing.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many records per second.",
)
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document.")
@click.pass_obj
def drain(
    obj: Context, location: str | None, dry_run: bool, rate: float | None, as_json: bool
) -> None:
    """Send spooled records to their topics (envelopes to their DLQ), exactly once."""
    import orjson
    from confluent_kafka import KafkaException

    from ingest.drain import Drainer, DrainError
    from ingest.spool import open_spool
    from kafkaio.claims import StorageError

    _check_broker(obj)
    try:
        drainer = Drainer(
            _conf(obj),
            open_spool(location or obj.config.ingest.spool),
            ledger_topic=obj.config.ledger_topic,
            dry_run=dry_run,
            rate=rate,
            max_request_size=obj.config.kafka.max_request_size,
        )
        summary = _with_progress(
            "drain",
            drainer.spool.location,
            drainer.total,
            drainer.run,
            show=sys.stderr.isatty() and not as_json,
        )
    except (KafkaException, TimeoutError, ConnectionError, StorageError, DrainError) as e:
        fail(f"drain stopped: {e}")
    doc = summary.as_dict(with_records=dry_run)
    if as_json:
        click.echo(orjson.dumps(doc).decode())
    else:
        from dlq.render import summary_line

        for r in summary.records:
            click.echo(f"would send {r['id']} ({r['kind']}, {r['bytes']} bytes) -> {r['topic']}")
        for line in summary.problems:
            click.echo(f"skipped: {line}", err=True)
        click.echo(summary_line(doc))


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="dlq", standalone_mode=True)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
