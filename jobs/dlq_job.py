"""The MarketLag DLQ job: validate both feeds, dead-letter every failure, exactly once.

    python jobs/dlq_job.py [--config conf/job.yaml] [--bootstrap-servers HOST:PORT]
                           [--bounded] [--starting-offsets earliest|committed|latest]
                           [--parallelism N]

Per feed the graph is

    KafkaSource (source frame: bytes)       one record, untouched: position, key, value, headers
      -> batch-<feed> (Java)                source frames packed into batches (conf: batch.*)
      -> validate-<feed> (Python map)       exactly one outcome per record, never raises
      -> split-<feed> (Java ProcessFunction)
           main output: sink frame          key + clean JSON + headers   -> clean.<feed> sink
           side output: sink frame          key + DLQ envelope + headers -> dlq.<feed> sink

Records cross into Python and back a batch at a time; the batcher empties before every
checkpoint barrier, so it holds no state and takes nothing from exactly once. All four Kafka
sinks are EXACTLY_ONCE: they commit their transactions when a checkpoint completes, so under
read_committed every input is in clean ∪ DLQ exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import os
import signal
import site
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Consumer, KafkaException, TopicPartition
from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    MapFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors import Sink
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway

from bridge.frames import process_batch
from jobs import jvm
from jobs.jvm import Archive, archive_for
from kafkaio.scan import watermarks
from settings.application import read_application_properties
from settings.config import (
    FEEDS,
    ROOT,
    ConfigError,
    JobConfig,
    KafkaConfig,
    load_config,
    scrub_secret_environment,
)
from udfs.errors import Category
from udfs.pipeline import FeedProcessor, RetryConfig, load_callable

# Every stream in the graph carries byte frames (bridge/frames.py); Python sees batches of them.
FRAME = Types.PRIMITIVE_ARRAY(Types.BYTE())
JAVA_PACKAGE = "io.marketlag.dlq"
BROKER_WAIT_S = 60
# How long a stopped job's processes get after SIGTERM before SIGKILL.
STOP_GRACE_S = 10


class ValidateBatches(MapFunction):
    """Runs :class:`udfs.pipeline.FeedProcessor` on every record of a batch of one feed.

    In: a batch of source frames (``FrameBatcher``); out: one result batch holding, in input
    order, a clean sink frame or a DLQ sink frame per record (``BatchSplitter`` sends them to
    the main and the side output). The processor never raises for a record; a frame it cannot
    decode is a bug in this project and fails the job loudly instead of losing the record.
    """

    def __init__(self, feed: str, *, job_name: str, retry: RetryConfig, enrich: str | None) -> None:
        self.feed = feed
        self.job_name = job_name
        self.retry = retry
        self.enrich_spec = enrich
        self.processor: FeedProcessor | None = None
        self.counters: dict[str, Any] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        enrich = load_callable(self.enrich_spec) if self.enrich_spec else None
        self.processor = FeedProcessor(
            self.feed,
            job_name=self.job_name,
            operator=f"validate-{self.feed}",
            retry=self.retry,
            enrich=enrich,
        )
        group = runtime_context.get_metrics_group().add_group("feed", self.feed)
        self.counters = {"in": group.counter("records_in"), "clean": group.counter("records_clean")}
        for category in Category:
            self.counters[str(category)] = group.add_group("category", str(category)).counter(
                "records_dlq"
            )

    def map(self, value: bytes) -> bytes:
        assert self.processor is not None
        results, counts = process_batch(self.processor, value)
        self.counters["in"].inc(counts.total())
        for kind, n in counts.items():
            self.counters[kind].inc(n)
        return results


# flink-sql-connector-kafka relocates org.apache.kafka under this package.
SHADED_KAFKA = "org.apache.flink.kafka.shaded."


def java_client_properties(kafka: KafkaConfig) -> dict[str, str]:
    """Client properties for the Java Kafka clients inside Flink (source and sinks)."""
    props = {"security.protocol": kafka.security_protocol}
    if kafka.sasl_mechanism:
        props["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username is not None and kafka.sasl_password is not None:
            # The connector jar relocates kafka-clients, login modules included.
            module = SHADED_KAFKA + (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if kafka.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            user = _jaas_quote(kafka.sasl_username)
            password = _jaas_quote(kafka.sasl_password.value)
            props["sasl.jaas.config"] = (
                f'{module} required username="{user}" password="{password}";'
            )
    if kafka.ssl_ca_location:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = kafka.ssl_ca_location
    return props


def _jaas_quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def starting_offsets(mode: str) -> KafkaOffsetsInitializer:
    if mode == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if mode == "latest":
        return KafkaOffsetsInitializer.latest()
    return KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)


def end_offsets(config: JobConfig, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The current end offset of every partition of ``topics`` (where --bounded stops)."""
    consumer = Consumer(
        {**config.kafka.librdkafka(), "group.id": config.group_id, "enable.auto.commit": False}
    )
    try:
        return {tp: high for tp, (_, high) in watermarks(consumer, topics, 30).items()}
    except KafkaException as e:
        raise ConfigError(f"input {e.args[0].str()} (make topics)") from e
    finally:
        consumer.close()


def commit_offsets(config: JobConfig, offsets: dict[tuple[str, int], int]) -> None:
    """Commits a finished bounded run's end offsets to the job's consumer group.

    Flink commits offsets to Kafka only when a checkpoint completes, and a split that reached
    its stopping offset is not in the final checkpoint's commit: without this, a later
    ``--starting-offsets committed`` run would read part of this run's input again.
    """
    consumer = Consumer(
        {**config.kafka.librdkafka(), "group.id": config.group_id, "enable.auto.commit": False}
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def kafka_source(
    config: JobConfig, topic: str, offsets: str, stop_at: dict[tuple[str, int], int] | None
) -> KafkaSource:
    """A source of raw source frames: nothing is decoded before the process function."""
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(config.kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(config.group_id)
        .set_client_id_prefix(f"{config.name}-{topic}")
        .set_starting_offsets(starting_offsets(offsets))
        # Replays and upstream producers may be transactional: never read aborted data.
        .set_property("isolation.level", "read_committed")
        .set_property("commit.offsets.on.checkpoint", "true")
    )
    for key, value in {**config.source_properties, **java_client_properties(config.kafka)}.items():
        builder.set_property(key, value)
    jvm = get_gateway().jvm
    if stop_at is not None:
        spec = "".join(f"{t}\t{p}\t{o}\n" for (t, p), o in stop_at.items() if t == topic)
        builder.set_bounded(
            KafkaOffsetsInitializer(getattr(jvm, JAVA_PACKAGE).FixedOffsets.of(spec))
        )
    # PyFlink's builder only offers value-only deserializers; ours keeps the whole record.
    builder._j_builder.setDeserializer(getattr(jvm, JAVA_PACKAGE).RawRecordDeserializationSchema())
    return builder.build()


def kafka_sink(config: JobConfig, topic: str, name: str) -> Sink:
    """An EXACTLY_ONCE sink of sink frames to ``topic`` with its own transactional ids.

    The connector's KafkaSink inside ``RestartSafeKafkaSink`` (java/): a failed send (a
    revoked ACL, a deleted topic) fails the task and the job restarts from its checkpoint,
    instead of the writer's close turning the failure into a fatal TaskManager error.
    """
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(config.kafka.bootstrap_servers)
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(f"{config.kafka.transactional_id_prefix}-{name}")
        .set_property("transaction.timeout.ms", str(config.kafka.transaction_timeout_ms))
        .set_property("max.request.size", str(config.kafka.max_request_size))
    )
    for key, value in {**config.sink_properties, **java_client_properties(config.kafka)}.items():
        builder.set_property(key, value)
    jvm = get_gateway().jvm
    builder._j_builder.setRecordSerializer(
        getattr(jvm, JAVA_PACKAGE).FramedRecordSerializationSchema(topic)
    )
    return Sink(
        getattr(jvm, JAVA_PACKAGE).RestartSafeKafkaSink.of(builder.build().get_java_function())
    )


def read_batches(
    env: StreamExecutionEnvironment,
    config: JobConfig,
    feed: str,
    offsets: str,
    stop_at: dict[tuple[str, int], int] | None,
) -> DataStream:
    """The feed's input as batches of source frames: the Kafka source, then the batcher."""
    java = getattr(get_gateway().jvm, JAVA_PACKAGE)
    batch = config.batch
    # source frames: (topic, partition, offset, timestamp, key, value, headers)
    raw = env.from_source(
        kafka_source(config, config.feeds[feed].input, offsets, stop_at),
        WatermarkStrategy.no_watermarks(),
        f"source-{feed}",
        type_info=FRAME,
    ).uid(f"source-{feed}")
    return DataStream(
        raw._j_data_stream.transform(
            f"batch-{feed}",
            FRAME.get_java_type_info(),
            java.FrameBatcher(batch.max_records, batch.max_bytes, batch.max_delay_ms),
        ).uid(f"batch-{feed}")
    )


def validate(feed: str, batches: DataStream, config: JobConfig) -> DataStream:
    """Batches of source frames in, result batches out (:class:`ValidateBatches` in the
    Python workers)."""
    return (
        batches.map(
            ValidateBatches(
                feed, job_name=config.name, retry=config.retry, enrich=config.enrich[feed]
            ),
            output_type=FRAME,
        )
        .name(f"validate-{feed}")
        .uid(f"validate-{feed}")
    )


def write_results(config: JobConfig, feed: str, results: DataStream) -> None:
    """Result batches split in input order: clean records to the feed's clean topic, DLQ
    envelopes (side output) to its DLQ, through two exactly-once sinks."""
    java = getattr(get_gateway().jvm, JAVA_PACKAGE)
    topics = config.feeds[feed]
    # main output: sink frames of clean records; side output: sink frames of envelopes
    tag = f"dlq-{feed}"
    oks = DataStream(
        results._j_data_stream.process(java.BatchSplitter(tag), FRAME.get_java_type_info())
        .name(f"split-{feed}")
        .uid(f"split-{feed}")
    )
    errs = DataStream(oks._j_data_stream.getSideOutput(java.BatchSplitter.tag(tag)))
    oks.sink_to(kafka_sink(config, topics.clean, f"clean-{feed}")).name(f"clean-sink-{feed}").uid(
        f"clean-sink-{feed}"
    )
    errs.sink_to(kafka_sink(config, topics.dlq, f"dlq-{feed}")).name(f"dlq-sink-{feed}").uid(
        f"dlq-sink-{feed}"
    )


def build(
    env: StreamExecutionEnvironment,
    config: JobConfig,
    *,
    offsets: str = "committed",
    stop_at: dict[tuple[str, int], int] | None = None,
) -> None:
    """Assembles the job graph for both feeds on ``env``; ``stop_at``: bounded end offsets."""
    for feed in FEEDS:
        write_results(
            config, feed, validate(feed, read_batches(env, config, feed, offsets, stop_at), config)
        )


def needed_access(config: JobConfig) -> dict[str, list[Any]]:
    """What the job does to each topic: READ its inputs, WRITE its clean and DLQ topics."""
    from confluent_kafka.admin import AclOperation  # type: ignore[attr-defined]

    wanted: dict[str, list[Any]] = {}
    for feed in config.feeds.values():
        wanted[feed.input] = [AclOperation.READ]
        wanted[feed.clean] = [AclOperation.WRITE]
        wanted[feed.dlq] = [AclOperation.WRITE]
    return wanted


def submitted_to_cluster() -> bool:
    """True under `flink run` (and the Kubernetes operator): the Flink CLI started the JVM
    and tells PyFlink its gateway port. Then the cluster's own configuration decides where
    checkpoints go; the job must not point them at a local folder."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def flink_configuration(config: JobConfig, managed: bool = False) -> Configuration:
    """Runtime settings of the job; on the embedded mini-cluster also its checkpoint folder.
    Managed (Amazon Managed Service for Apache Flink), only the job's name: the service
    refuses a job that sets what it manages, and gives the job its jar and interpreter."""
    conf = Configuration()
    conf.set_string("pipeline.name", config.name)
    if managed:
        return conf
    missing = [str(j) for j in config.jars if not j.exists()]
    if missing:
        raise ConfigError(f"jars missing: {', '.join(missing)}; run 'make setup'")
    # The Python workers must run this interpreter (the project's venv), not whatever
    # `python` is first on PATH.
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string("python.execution-mode", config.python_execution_mode)
    conf.set_string("pipeline.jars", ";".join(j.resolve().as_uri() for j in config.jars))
    # Every operator of the job emits a new array per record and keeps none it has emitted or
    # received (the batcher copies frames into its own buffer), so chained operators may pass
    # records on without Flink copying each one (lever no_object_reuse of bench.levers).
    conf.set_string("pipeline.object-reuse", "true")
    if not submitted_to_cluster():
        conf.set_string("execution.checkpointing.dir", config.checkpoint_dir.resolve().as_uri())
    for key, value in config.flink_conf.items():
        conf.set_string(key, value)
    return conf


def export_pythonpath() -> None:
    """Makes this venv's packages and the repository importable in the Flink Python workers.

    In thread mode pemja embeds the base interpreter that the venv was made from, which does
    not see the venv's site-packages (alibaba/pemja#94); the JVM, started after this, passes
    PYTHONPATH on to it. Harmless in process mode.
    """
    paths = [*site.getsitepackages(), str(ROOT)]
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + ([current] if current else []))


def python_worker_processes(config: JobConfig) -> None:
    """In process mode, gives the embedded mini-cluster real Python worker processes.

    On a local mini-cluster PyFlink otherwise runs every Python worker inside this client
    process ("loopback"), so all Python operators share one interpreter lock and one core
    (slower: lever loopback of bench.levers). A cluster always starts worker processes; the
    setting only reaches PyFlink through this environment variable.
    """
    if config.python_execution_mode == "process":
        os.environ.setdefault("_python_worker_execution_mode", "process")


def mini_cluster_jvm_options(config: JobConfig, writes_archive: bool = False) -> Archive | None:
    """Passes ``flink.local_jvm_options`` to the JVM of the embedded mini-cluster, with its
    class-data archive (:mod:`jobs.jvm`): the one there is, or, when
    ``writes_archive``, one for the JVM to write at its exit (returned, for
    :func:`jobs.jvm.end`).

    PyFlink starts that JVM with the options in ``JVM_ARGS``; the ones already there (the
    user's) come last and so win, and a garbage collector chosen there replaces ours (the JVM
    refuses two). Under `flink run` the cluster's own configuration sets its JVMs' options.
    """
    if submitted_to_cluster():
        return None
    theirs = os.environ.get("JVM_ARGS", "").split()

    def picks_gc(option: str) -> bool:
        return option.startswith("-XX:+Use") and option.endswith("GC")

    they_pick_gc = any(picks_gc(o) for o in theirs)
    ours = [o for o in config.local_jvm_options if not (they_pick_gc and picks_gc(o))]
    options = [*ours, *theirs]
    archive = None
    if config.class_data_dir is not None:
        archive = archive_for(config.class_data_dir, options, writes_archive)
    os.environ["JVM_ARGS"] = " ".join([*options, *(archive.options if archive else [])])
    return archive


def create_env(
    config: JobConfig, managed: bool = False, writes_archive: bool = False
) -> tuple[StreamExecutionEnvironment, Archive | None]:
    """The execution environment with the job's parallelism and checkpointing; managed, the
    service's own (see :func:`managed_env`). With it, the class-data archive its JVM writes
    at exit, if it writes one (``writes_archive`` and none there yet)."""
    if managed:
        return managed_env(config), None
    export_pythonpath()
    python_worker_processes(config)
    archive = mini_cluster_jvm_options(config, writes_archive)
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(config))
    env.set_parallelism(config.parallelism)
    env.enable_checkpointing(config.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    checkpoints = env.get_checkpoint_config()
    checkpoints.set_checkpoint_timeout(config.checkpoint_timeout_ms)
    checkpoints.set_max_concurrent_checkpoints(1)
    return env, archive


def managed_env(config: JobConfig) -> StreamExecutionEnvironment:
    """On Amazon Managed Service for Apache Flink the service owns checkpointing, parallelism
    and the restart strategy, and fails a job that sets them. The job sets none; it says what
    it expects and refuses to run without checkpoints, whose completion is what commits its
    Kafka transactions (without them no record would ever become visible)."""
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(config, True))
    interval = env.get_checkpoint_config().get_checkpoint_interval()
    if interval <= 0:
        raise ConfigError(
            "checkpointing is off: this job commits its Kafka transactions on completed "
            "checkpoints; enable checkpointing in the application's CheckpointConfiguration"
        )
    print(
        f"dlq_job: managed: checkpoints every {interval} ms (the service's; "
        f"kafka.transaction_timeout_ms {config.kafka.transaction_timeout_ms} must exceed the "
        f"time between two), parallelism the service's (this job expects "
        f"{config.parallelism}, one subtask per input partition)",
        file=sys.stderr,
    )
    return env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dlq_job.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, "
        "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, "
        "KAFKA_SSL_CA_LOCATION.",
    )
    parser.add_argument(
        "--config", default=None, help="job configuration file [default: conf/job.yaml]"
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        metavar="HOST:PORT",
        help="Kafka brokers [default: from the config or the environment]",
    )
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the end offsets present at start, commit, exit 0",
    )
    parser.add_argument(
        "--starting-offsets",
        choices=("earliest", "committed", "latest"),
        default="committed",
        help="where to start without a checkpoint (committed falls back to earliest)",
    )
    parser.add_argument(
        "--parallelism",
        type=int,
        default=None,
        help="operator parallelism [default: from the config]",
    )
    return parser.parse_args(argv)


# Set by `make run`'s launcher (jobs/local.py) for the job it starts.
LAUNCHER_PID_ENV = "MARKETLAG_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def others_in_group(group: int) -> bool:
    """Whether a live process other than this one is in process group ``group`` (Linux's
    /proc; elsewhere, none is seen)."""
    me = os.getpid()
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            state, _ppid, pgrp = stat[stat.rindex(b")") + 2 :].split()[:3]
            if int(pgrp) == group and state not in (b"Z", b"X"):
                return True
    return False


def stop_with_session_on_sigterm() -> None:
    """When the job leads a session of its own (``make run`` starts it so), SIGTERM stops the
    whole session: this client, its JVM and the Python workers, none left behind. Started by
    a launcher that says so (``MARKETLAG_LAUNCHER_PID``), the job also gets that SIGTERM from
    the kernel when the launcher dies, however it dies (Linux's parent-death signal)."""
    if os.getsid(0) != os.getpid():
        return

    def stop(signum: int, frame: object) -> None:
        # SIGTERM to the whole group; whatever has not ended STOP_GRACE_S later (a JVM whose
        # shutdown hangs, a Python worker) gets SIGKILL. Exactly once never depends on a
        # graceful end: open transactions are aborted or committed on the next start.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        group = os.getpgid(0)
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while others_in_group(group) and time.monotonic() < deadline:
            time.sleep(0.1)
        if others_in_group(group):
            os.killpg(group, signal.SIGKILL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    launcher = os.environ.pop(LAUNCHER_PID_ENV, None)
    if launcher is None:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's own stop still holds
        return
    if os.getppid() != int(launcher):  # it died before the kernel was asked to tell
        stop(signal.SIGTERM, None)


@dataclass(frozen=True)
class Launch:
    """A job ready to build and run: its settings, its environment, where it starts and,
    when bounded, where it stops."""

    config: JobConfig
    env: StreamExecutionEnvironment
    offsets: str
    stop_at: dict[tuple[str, int], int] | None
    # the class-data archive the job's JVM writes when the job ends (a first bounded run)
    archive: Archive | None = None
    # the job's JVM is this process's own (the embedded mini-cluster): end it with the job
    ends_jvm: bool = False


def prepare(args: argparse.Namespace) -> Launch:
    """The settings read and checked, the environment made, the brokers asked: raises
    :class:`ConfigError` (or a connection, access or time-out error) naming the cause."""
    # the client side only, not the Python workers
    from kafkaio.admin import admin_client, check_partitions, check_topic_access, wait_for_broker

    app = read_application_properties(os.environ)
    environ = os.environ if app is None else {**os.environ, **app.environ}
    settings = None if app is None else app.settings
    config = load_config(args.config, environ, settings).with_bootstrap_servers(
        args.bootstrap_servers
    )
    if args.parallelism is not None:
        if args.parallelism < 1:
            raise ConfigError("--parallelism must be at least 1")
        config = config.with_overrides(parallelism=args.parallelism)
    if args.bounded:
        interval = config.bounded_checkpoint_interval_ms
        config = config.with_overrides(checkpoint_interval_ms=interval)
    scrub_secret_environment()  # the JVM and the Python workers must not inherit it
    # Wrong credentials, an untrusted certificate, a missing ACL or topic end the job here,
    # with the reason and before a JVM is started, instead of as restarts of a job whose
    # every Kafka client is refused.
    wait_for_broker(config.kafka.librdkafka(), BROKER_WAIT_S)
    check_topic_access(config.kafka.librdkafka(), needed_access(config))
    check_partitions(admin_client(config.kafka.librdkafka()), config)
    stop_at = None
    if args.bounded:
        stop_at = end_offsets(config, [t.input for t in config.feeds.values()])
    env, archive = create_env(config, app is not None, writes_archive=args.bounded)
    ends_jvm = app is None and not submitted_to_cluster()
    return Launch(config, env, args.starting_offsets, stop_at, archive, ends_jvm)


def run(launch: Launch) -> None:
    """Runs the built graph; a bounded run then commits its end offsets."""
    launch.env.execute(launch.config.name)
    if launch.stop_at is not None:
        commit_offsets(launch.config, launch.stop_at)
    if launch.ends_jvm:
        jvm.end(launch.archive)


@contextlib.contextmanager
def runtime_imported_meanwhile() -> Iterator[None]:
    """Imports PyFlink's Python runtime (Apache Beam, pandas: over a second here), which
    building the graph needs, on a thread while the body checks the brokers and starts the JVM.

    The cyclic garbage collector is off until the import is done: run on the importing thread,
    it could finalise a py4j object of this one and so send a command to the JVM over a second
    connection, served by another Java thread, which lacks the class loader that holds the
    job's jars ("Could not found the Java class ...KafkaSource.builder", seen once).
    """
    gc.disable()
    importer = threading.Thread(target=importlib.import_module, args=("pyflink.fn_execution",))
    importer.start()
    try:
        yield
    finally:
        importer.join()
        gc.enable()


def launched(argv: Sequence[str] | None) -> Launch:
    """:func:`prepare` for a command line; a bad setting or an unreachable broker exits 2
    with the cause named."""
    stop_with_session_on_sigterm()
    try:
        return prepare(parse_args(argv))
    except (ConfigError, TimeoutError, ConnectionError, PermissionError, ValueError) as e:
        print(f"dlq_job: error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
    with runtime_imported_meanwhile():
        launch = launched(argv)
    build(launch.env, launch.config, offsets=launch.offsets, stop_at=launch.stop_at)
    run(launch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
