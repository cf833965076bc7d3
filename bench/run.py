"""`make bench`: the DLQ job side by side with what a user would write instead.

    python -m bench.run [--records N] [--bad-share X] [--runs K] [--smoke]

Environment overrides: BENCH_RECORDS, BENCH_BAD_SHARE. Produces a deterministic data set once
(per size and bad share), then measures on one broker, in interleaved rounds so that the
machine's drift hits every system alike, what a user gets:

- flink_bounded_e2e: the shipped ``python jobs/dlq_job.py --bounded`` from launch to exit,
  start-up included, nothing helped from outside (it ends on its own final checkpoint);
- flink_steady: the same runs' steady rate from the job's own source counters (the records
  read between 20% and 80% of the input, over the time that took);
- plain_loop: one process doing what the job does on the job's own batch path, with Kafka
  transactions (bench/systems.py), launch to exit; plain_loop_xN: N such processes side by
  side (N = cores), each with its share of the partitions;
- kafka_io, udfs_only: the Kafka and the Python ceilings (bench/systems.py);

with peak memory as PSS (shared pages split, not counted per process) and RSS; the first
round's outputs of the job and of both loops are read back and checked exactly once. Then the
job's steady rate at 0%, 5% and 50% bad records (the DLQ overhead per round and its spread)
and the produce-to-visible latency. Every ratio is taken per round and reported with its
spread. Writes bench/results/latest.json with the commit it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from bench.harness import flink_lock, free_port, isolated_config, start_job
from jobs.sample import generate
from kafkaio.admin import ensure_project_topics
from kafkaio.scan import consumer as scan_consumer
from kafkaio.scan import read_to_end, watermarks
from settings.config import FEEDS, ROOT, load_config
from udfs.pipeline import Clean, FeedProcessor
from udfs.record import SourceRecord

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
RESULTS = ROOT / "bench" / "results"


def _part(proc: psutil.Process, roots: list[psutil.Process], root_kind: str) -> str:
    """What a process of a run is, for the breakdown of its peak memory and its CPU time."""
    if proc in roots:
        return root_kind
    if proc.name() == "java":
        return "jvm"
    return "python_worker" if "beam_boot" in " ".join(proc.cmdline()) else "other"


def broker_process() -> psutil.Process | None:
    """The broker the benchmark talks to when it runs on this machine (the process listening
    on BOOTSTRAP's port), for its share of a run's CPU time."""
    port = BOOTSTRAP.split(",")[0].rpartition(":")[2]
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == int(port):
                return psutil.Process(conn.pid) if conn.pid else None
    return None


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class Usage(threading.Thread):
    """Samples the processes of a run and all their descendants.

    Memory: the peak of the summed RSS, and of the summed PSS (shared pages split among the
    processes that share them, so the JVM's and the Python workers' shared libraries are not
    counted once per process), with the PSS of each kind of process at that peak. CPU: the
    last seen user + system time of every process, summed by kind (a process's time after
    its last sample, at most one CPU interval, is not counted), and the broker's CPU time over
    the run."""

    CPU_INTERVAL_S = 0.05
    PSS_EVERY = 6  # CPU samples per memory sample (reading smaps costs far more)

    def __init__(self, pids: list[int], root_kind: str) -> None:
        super().__init__(daemon=True)
        self.roots = [psutil.Process(pid) for pid in pids]
        self.root_kind = root_kind
        self.rss = 0
        self.pss = 0
        self.parts: dict[str, dict[str, int]] = {}
        self.cpu: dict[tuple[int, float], tuple[str, float]] = {}  # (pid, start) -> kind, s
        self.broker = broker_process()
        self.broker_start = _cpu_s(self.broker) if self.broker else 0.0
        self.broker_cpu = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop.is_set():
            memory = tick % self.PSS_EVERY == 0
            tick += 1
            rss = pss = 0
            parts: dict[str, dict[str, int]] = {}
            for root in self.roots:
                with contextlib.suppress(psutil.NoSuchProcess):
                    for proc in [root, *root.children(recursive=True)]:
                        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                            key = (proc.pid, proc.create_time())
                            seen = self.cpu.get(key)
                            kind = seen[0] if seen else _part(proc, self.roots, self.root_kind)
                            self.cpu[key] = (kind, _cpu_s(proc))
                            if not memory:
                                continue
                            info = proc.memory_full_info()
                            rss += info.rss
                            pss += info.pss
                            part = parts.setdefault(kind, {"mb": 0, "n": 0})
                            part["mb"] += info.pss
                            part["n"] += 1
            if memory:
                self.rss = max(self.rss, rss)
                if pss > self.pss:
                    self.pss = pss
                    self.parts = {
                        k: {"mb": round(v["mb"] / 2**20), "processes": v["n"]}
                        for k, v in parts.items()
                    }
            time.sleep(self.CPU_INTERVAL_S)

    def finish(self) -> None:
        self.stop.set()
        self.join(5)
        if self.broker:
            with contextlib.suppress(psutil.Error):
                self.broker_cpu = _cpu_s(self.broker) - self.broker_start

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU seconds by kind of process, the broker's included (when it runs locally)."""
        kinds: dict[str, float] = {}
        for kind, seconds in self.cpu.values():
            kinds[kind] = kinds.get(kind, 0.0) + seconds
        if self.broker:
            kinds["broker"] = self.broker_cpu
        return kinds


@dataclass
class Measured:
    """What a run of one or more processes printed, its wall time from launch to the last
    exit, its peak memory (MB) and its CPU time by kind of process (s)."""

    outputs: list[str]
    wall_s: float
    rss_mb: float
    pss_mb: float
    pss_parts: dict[str, dict[str, int]]
    cpu_s: dict[str, float]


def measured(*cmds: list[str], root_kind: str = "launcher") -> Measured:
    """Runs the commands side by side; raises if one fails. ``root_kind``: what the
    commands' own processes count as in the breakdowns."""
    start = time.monotonic()
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in cmds
    ]
    usage = Usage([p.pid for p in procs], root_kind)
    usage.start()
    outs = [p.communicate(timeout=3600) for p in procs]
    wall = time.monotonic() - start
    usage.finish()
    for cmd, p, (_, err) in zip(cmds, procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} exited {p.returncode}: {err[-3000:]}")
    return Measured(
        [o for o, _ in outs],
        wall,
        usage.rss / 2**20,
        usage.pss / 2**20,
        usage.parts,
        usage.cpu_by_kind(),
    )


def bench_config(tmp: Path, ident: str, inputs: str) -> Path:
    """A copy of conf/job.yaml (checkpoint interval as shipped) reading ``<inputs>.<feed>``."""
    _, tree = isolated_config(tmp, BOOTSTRAP, **{"job.group_id": ident})
    for feed in FEEDS:
        tree["topics"][feed]["input"] = f"{inputs}.{feed}"
    path = tmp / f"{ident}.json"
    path.write_text(json.dumps(tree))
    return path


def dataset(records: int, bad_share: float, tmp: Path) -> Path:
    """A config whose input topics hold the data set; produced once, reused after."""
    ident = f"bench-{records}-{int(bad_share * 1000)}"
    path = bench_config(tmp, ident, ident)
    config = load_config(path)
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    ensure_project_topics(config, admin)
    probe = scan_consumer({"bootstrap.servers": BOOTSTRAP})

    for i, feed in enumerate(FEEDS):
        topic = config.feeds[feed].input
        have = sum(high for _, high in watermarks(probe, [topic]).values())
        want = records // 2 + (records % 2 if i == 0 else 0)
        if have == want:
            continue
        if have:
            raise RuntimeError(f"{topic} holds {have} records, expected {want}: delete it")
        producer = Producer(
            {"bootstrap.servers": BOOTSTRAP, "linger.ms": 50, "enable.idempotence": True}
        )
        for key, value, headers in generate(feed, want, bad_share, seed=2026):
            while True:
                try:
                    producer.produce(topic, key=key, value=value, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.5)
            producer.poll(0)
        producer.flush(120)
    probe.close()
    return path


def drop_topics(topics: list[str]) -> None:
    """Deletes ``topics`` (a run's outputs: a full `make bench` writes gigabytes)."""
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # already gone
            future.result()


@contextlib.contextmanager
def fresh_outputs(base: Path, tmp: Path, tag: str) -> Iterator[Path]:
    """A copy of the data set's config with new output topics and transactional ids; the
    output topics are deleted when the block ends."""
    tree = json.loads(base.read_text())
    outputs = []
    for feed in FEEDS:
        for role in ("clean", "dlq"):
            tree["topics"][feed][role] = f"{tag}.{role}.{feed}"
            outputs.append(f"{tag}.{role}.{feed}")
    tree["kafka"]["transactional_id_prefix"] = tag
    tree["job"]["group_id"] = tag
    path = tmp / f"{tag}.json"
    path.write_text(json.dumps(tree))
    ensure_project_topics(load_config(path), AdminClient({"bootstrap.servers": BOOTSTRAP}))
    try:
        yield path
    finally:
        drop_topics(outputs)


def rest(base: str, path: str, body: bytes | None = None) -> Any:
    """A call to the job's REST API: GET, or POST ``body`` as JSON; the parsed answer."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.load(r)


def running_jobs(base: str) -> list[str]:
    return [j["id"] for j in rest(base, "/jobs")["jobs"] if j["status"] == "RUNNING"]


class SourceCounter(threading.Thread):
    """The job's own count of records read: ``numRecordsOut`` of its source operators, summed
    over their subtasks, polled from its REST API (the run sets
    ``metrics.fetcher.update-interval`` to 100 ms, so each poll gets fresh counters). Every
    such poll makes the JobManager fetch every metric of the TaskManager, which costs the
    job's JVM CPU: so it polls often (``START_POLL_S``) only until the first record is read
    and every subtask runs, then once every ``POLL_S``. Gives when the first record was read and
    the steady rate: the records read between 20% and 80% of the input over the time that
    took, after the warm-up and before the sources run dry. Also when the job was created
    (submitted) and when all its subtasks were first running (operators open, the Python
    workers started), for the phases of start-up."""

    START_POLL_S = 0.05
    POLL_S = 1.0

    def __init__(self, rest: str) -> None:
        super().__init__(daemon=True)
        self.rest = rest
        self.samples: list[tuple[float, int]] = []
        self.created: float | None = None  # time.monotonic() of the job's CREATED
        self.all_running: float | None = None
        self.stop = threading.Event()

    def _watch_tasks(self, polled: float) -> None:
        """Notes the job's creation and the first poll that finds every subtask running (or
        finished)."""
        for job in running_jobs(self.rest):
            detail = rest(self.rest, f"/jobs/{job}")
            if self.created is None:
                ago_s = detail["now"] / 1000 - detail["timestamps"]["CREATED"] / 1000
                self.created = polled - ago_s
            counts = [v["tasks"] for v in detail["vertices"]]
            # running, or already done (a bounded source can finish before the last opens)
            up = ("RUNNING", "FINISHED")
            if counts and all(sum(c.get(k, 0) for k in up) == sum(c.values()) for c in counts):
                # between this poll and the one before, like first_read
                before = self.samples[-1][0] if self.samples else polled
                self.all_running = (before + polled) / 2

    def _metrics(self) -> list[str] | None:
        """REST paths of the source operators' record counters, once every source has them."""
        paths = []
        for job in running_jobs(self.rest):
            vertices = rest(self.rest, f"/jobs/{job}")["vertices"]
            for vertex in vertices:
                base = f"/jobs/{job}/vertices/{vertex['id']}/subtasks/metrics"
                names = [
                    m["id"]
                    for m in rest(self.rest, base)
                    if m["id"].startswith("Source__") and m["id"].endswith(".numRecordsOut")
                ]
                if names:
                    paths.append(f"{base}?get={','.join(names)}&agg=sum")
            if len(paths) == sum(v["name"].startswith("Source:") for v in vertices):
                return paths
        return None

    def run(self) -> None:
        paths: list[str] | None = None
        while not self.stop.is_set():
            polled = time.monotonic()
            try:
                if self.all_running is None:
                    self._watch_tasks(polled)
                paths = paths or self._metrics()
                read = sum(int(m.get("sum", 0)) for p in paths or [] for m in rest(self.rest, p))
                self.samples.append((polled, read))
            except (OSError, ValueError, KeyError):
                pass
            started = self.all_running is not None and self.first_read() is not None
            self.stop.wait(self.POLL_S if started else self.START_POLL_S)

    def first_read(self) -> float | None:
        before = None
        for t, n in self.samples:
            if n > 0:
                return t if before is None else (before + t) / 2
            before = t
        return None

    def when_read(self, count: float) -> float | None:
        """When the count crossed ``count`` (linear between the samples around it)."""
        for (t0, n0), (t1, n1) in itertools.pairwise(self.samples):
            if n0 < count <= n1:
                return t0 + (t1 - t0) * (count - n0) / (n1 - n0)
        return None

    def steady_rate(self, total: int, low: float = 0.2, high: float = 0.8) -> float | None:
        start, end = self.when_read(low * total), self.when_read(high * total)
        if start is None or end is None or end <= start:
            return None
        return (high - low) * total / (end - start)


def check_exactly_once(cfg: Path, records: int) -> None:
    """Every input position in the run's outputs exactly once (read_committed), or an error:
    a system that is fast because it drops or repeats records is not measured."""
    config = load_config(cfg)
    outputs = [t for f in config.feeds.values() for t in (f.clean, f.dlq)]
    seen: Counter[tuple[str, int, int]] = Counter()
    for msg in read_to_end(config.kafka.librdkafka(), outputs, timeout_s=600):
        body = orjson.loads(msg.value or b"")
        src = body.get("_source") or body["source"]
        seen[(src["topic"], src["partition"], src["offset"])] += 1
    duplicated = sum(n - 1 for n in seen.values())
    if len(seen) != records or duplicated:
        raise RuntimeError(
            f"{cfg.stem}: {len(seen):,} of {records:,} inputs in the outputs, "
            f"{duplicated:,} duplicated"
        )


def _digest(messages: Iterable[SourceRecord]) -> tuple[int, int]:
    """How many records, and a digest of their keys and values that ignores their order."""
    count = total = 0
    for msg in messages:
        count += 1
        h = hashlib.blake2b(digest_size=8)
        for part in (msg.key, msg.value):
            h.update(b"\x00" if part is None else b"\x01%d:%b" % (len(part), part))
        total = (total + int.from_bytes(h.digest(), "big")) % (1 << 64)
    return count, total


def check_passed_through(cfg: Path, records: int) -> None:
    """Every input record in the clean topics exactly once, unchanged (read_committed), or an
    error: what a floor of bench/floor.py must have written."""
    config = load_config(cfg)
    conf = config.kafka.librdkafka()
    inputs = _digest(read_to_end(conf, [f.input for f in config.feeds.values()], timeout_s=600))
    outputs = _digest(read_to_end(conf, [f.clean for f in config.feeds.values()], timeout_s=600))
    if inputs != outputs or inputs[0] != records:
        raise RuntimeError(
            f"{cfg.stem}: {outputs[0]:,} records in the clean topics for {inputs[0]:,} inputs "
            f"({records:,} expected), digest {'equal' if inputs[1] == outputs[1] else 'differs'}"
        )


@dataclass
class FlinkRun:
    """One run of the shipped ``jobs/dlq_job.py --bounded`` (launch to exit, nothing helped
    from outside): its wall time, start-up (launch to the first record read), steady rate
    (its own source counters) and peak memory."""

    e2e_s: float
    startup_s: float | None
    steady_per_s: float | None
    rss_mb: float
    pss_mb: float
    pss_parts: dict[str, dict[str, int]]
    cpu_s: dict[str, float]
    phases_s: dict[str, float | None]


JOB = [str(ROOT / "jobs" / "dlq_job.py")]
# The job with its validate step swapped (bench/floor.py): what the rest of it costs.
FLOORS = {
    "floor_java": ["-m", "bench.floor", "java"],
    "floor_python": ["-m", "bench.floor", "python"],
}


Check = Callable[[Path, int], None]


def flink_run(
    base: Path,
    tmp: Path,
    tag: str,
    records: int,
    check: Check | None = None,
    job: list[str] = JOB,
) -> FlinkRun:
    """One bounded run of the job on a fresh copy of ``base``'s outputs; ``check``: verifies
    its outputs afterwards (not timed); ``job``: what Python runs (the shipped job, or a
    floor of ``bench.floor``)."""
    with fresh_outputs(base, tmp, tag) as cfg:
        port = free_port()
        tree = json.loads(cfg.read_text())
        tree["flink"]["conf"]["rest.bind-port"] = str(port)
        tree["flink"]["conf"]["metrics.fetcher.update-interval"] = "100"
        cfg.write_text(json.dumps(tree))
        with flink_lock():  # waiting for the slot (tests only) is no part of the run
            counter = SourceCounter(f"http://127.0.0.1:{port}")
            counter.start()
            start = time.monotonic()
            try:
                run = measured(
                    [
                        sys.executable,
                        *job,
                        "--config",
                        str(cfg),
                        "--bounded",
                        "--starting-offsets",
                        "earliest",
                    ]
                )
            finally:
                counter.stop.set()
                counter.join(5)
        if check is not None:
            check(cfg, records)
    first = counter.first_read()
    last = counter.when_read(records)

    def since_launch(t: float | None) -> float | None:
        return None if t is None else t - start

    phases = {  # seconds from launch, in the order they happen
        "job_created": since_launch(counter.created),
        "all_subtasks_running": since_launch(counter.all_running),
        "first_record_read": since_launch(first),
        "last_record_read": since_launch(last),
        "exit": run.wall_s,
    }
    return FlinkRun(
        run.wall_s,
        None if first is None else first - start,
        counter.steady_rate(records),
        run.rss_mb,
        run.pss_mb,
        run.pss_parts,
        run.cpu_s,
        phases,
    )


LATENCY_SYSTEMS = ("flink_job", "plain_loop")
LATENCY_BAD_SHARES = (0.0, 0.05)
MEASURE = ("bench", b"measure")  # the header of the records whose latency is taken


def latency(tmp: Path, rate: float, seconds: float = 30.0) -> dict[str, Any]:
    """Produce-to-visibility latency under read_committed of the job running unbounded and of
    the plain loop running unbounded (``plain_loop_live``), each with 0% and 5% bad records,
    one after another on fresh topics, at the same rate.

    Clean records keep their input's timestamp (the producer's CreateTime), so latency is the
    time a read_committed consumer receives a record minus that timestamp. A warm-up record
    must come through before the measured phase starts (start-up is not latency).
    """
    runs: dict[str, dict[str, Any]] = {}
    interval = 0
    for system in LATENCY_SYSTEMS:
        for bad in LATENCY_BAD_SHARES:
            tag = f"b{os.getpid()}-lat-{system.replace('_', '')}-{round(bad * 100)}"
            base = bench_config(tmp, f"{tag}-base", f"{tag}.in")
            interval = load_config(base).checkpoint_interval_ms
            slot = flink_lock() if system == "flink_job" else contextlib.nullcontext()
            with fresh_outputs(base, tmp, tag) as cfg, slot:
                try:
                    figure = _latency(cfg, system, rate, bad, seconds)
                finally:
                    drop_topics([f"{tag}.in.{feed}" for feed in FEEDS])
            runs.setdefault(system, {})[f"{bad:.0%}"] = figure
            print(f"latency {system} at {bad:.0%} bad: {figure}", flush=True)
    return {
        "rate_per_s": round(rate),
        "seconds": seconds,
        "checkpoint_interval_ms": interval,
        "systems": runs,
    }


def _start(system: str, cfg: Path) -> subprocess.Popen[bytes]:
    if system == "flink_job":
        return start_job(cfg)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.systems", "plain_loop_live", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _latency(cfg: Path, system: str, rate: float, bad: float, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Consumer

    from jobs.local import stop_process_group

    tag = cfg.stem
    config = load_config(cfg)
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": tag,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([config.feeds[f].clean for f in FEEDS])
    proc = _start(system, cfg)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    now = datetime.now(UTC)
    stream = {f: list(generate(f, 2000, bad, seed=9, now=now)) for f in FEEDS}
    # Which records reach the clean topics: the job's own validation says.
    check = {
        f: FeedProcessor(f, job_name="bench", operator=f"validate-{f}", retry=config.retry)
        for f in FEEDS
    }
    good = {
        f: [
            isinstance(check[f].process(SourceRecord(f, 0, i, None, k, v, tuple(h))), Clean)
            for i, (k, v, h) in enumerate(stream[f])
        ]
        for f in FEEDS
    }
    samples: list[float] = []
    n = expected = 0

    def collect(count: int, timeout: float) -> None:
        for msg in consumer.consume(count, timeout):
            if msg.error() is None and MEASURE in (msg.headers() or []):
                samples.append(time.time() * 1000 - msg.timestamp()[1])

    try:
        warm = next(v for (_, v, _), ok in zip(stream["rss"], good["rss"], strict=True) if ok)
        producer.produce(config.feeds["rss"].input, key=b"warm-up", value=warm)
        producer.flush(10)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not consumer.consume(100, 1.0):
            pass
        # The records due are produced every 10 ms, then the outputs read: this process shares
        # the two cores with the system measured, so it spends as little as it can.
        produce, start = producer.produce, time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            for _ in range(int(elapsed * rate) - n):
                feed, i = FEEDS[n % 2], (n // 2) % 2000
                key, value, headers = stream[feed][i]
                expected += good[feed][i]
                produce(config.feeds[feed].input, value, key, headers=[*headers, MEASURE])
                n += 1
            producer.poll(0)
            collect(10_000, 0)
            time.sleep(max(0.0, 0.01 - (time.monotonic() - start - elapsed)))
        producer.flush(30)
        tail_end = time.monotonic() + 60
        while len(samples) < expected and time.monotonic() < tail_end:
            collect(500, 1.0)
    finally:
        stop_process_group(proc)
        consumer.close()
    samples.sort()

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p * len(samples)))], 1) if samples else -1

    return {
        "produced": n,
        "good": expected,
        "received": len(samples),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(samples[-1], 1) if samples else -1,
    }


@dataclass
class SystemRun:
    """One run of a system of bench/systems.py: records, its processing time (first record to
    last commit, the slowest of its processes), wall time (launch to the last exit), memory."""

    records: int
    processing_s: float
    e2e_s: float
    rss_mb: float
    pss_mb: float
    cpu_s: dict[str, float]


def system_run(
    name: str, base: Path, tmp: Path, tag: str, check: bool = False, processes: int = 1
) -> SystemRun:
    """One run of a system of bench/systems.py on ``base`` (``processes`` > 1: the loop split
    over that many processes side by side); ``check``: verify its outputs exactly once."""
    with fresh_outputs(base, tmp, tag) as cfg:
        if processes == 1:
            cmds = [[sys.executable, "-m", "bench.systems", name, str(cfg)]]
        else:
            cmds = [
                [
                    sys.executable,
                    "-m",
                    "bench.systems",
                    f"{name}_part",
                    str(cfg),
                    str(i),
                    str(processes),
                ]
                for i in range(processes)
            ]
        run = measured(*cmds, root_kind="loop")
        results = [json.loads(out.strip().splitlines()[-1]) for out in run.outputs]
        records = sum(r["records"] for r in results)
        if check:
            check_exactly_once(cfg, records)
    seconds = max(r["seconds"] for r in results)
    return SystemRun(records, seconds, run.wall_s, run.rss_mb, run.pss_mb, run.cpu_s)


def spread(values: list[float], digits: int = 0) -> dict[str, Any]:
    """Median, min, max and every round of a figure."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "runs": [round(v, digits) for v in values],
    }


def cpu_per_record(cpu: list[dict[str, float]], records: int) -> dict[str, float]:
    """Median CPU microseconds per record over the rounds, by kind of process and in total
    (the broker's included): what the two cores are spent on."""
    kinds = sorted({k for c in cpu for k in c})
    per = {k: statistics.median(c.get(k, 0.0) for c in cpu) * 1e6 / records for k in kinds}
    per["total"] = statistics.median(sum(c.values()) for c in cpu) * 1e6 / records
    return {k: round(v, 1) for k, v in per.items()}


def median_phases(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Each moment's median over the runs that saw it (None: no run did)."""
    seen = {k: [t for r in runs if (t := r[k]) is not None] for k in runs[0]}
    return {k: round(statistics.median(v), 1) if v else None for k, v in seen.items()}


def figure(rates: list[float], rss: list[float], pss: list[float]) -> dict[str, Any]:
    """A system's records/s over the rounds, with its peak memory."""
    return {
        "records_per_s": spread(rates),
        "peak_rss_mb": round(max(rss)),
        "peak_pss_mb": round(max(pss)),
    }


def compare(base: Path, tmp: Path, n: int, rounds: int) -> dict[str, Any]:
    """The job against the alternatives over one data set, in interleaved rounds (the
    machine's drift hits every system alike); the first round's outputs are checked exactly
    once, the job's and the loops' alike."""
    cores = os.cpu_count() or 1
    tag = f"b{os.getpid()}"
    runs: dict[str, list[Any]] = {
        k: [] for k in ("flink", "loop", "loop_xn", "io", "udfs", *FLOORS)
    }
    for r in range(rounds):
        once = check_exactly_once if r == 0 else None
        runs["flink"].append(flink_run(base, tmp, f"{tag}-flink{r}", n, check=once))
        for floor, job in FLOORS.items():
            checked = check_passed_through if r == 0 else None
            runs[floor].append(flink_run(base, tmp, f"{tag}-{floor}{r}", n, checked, job))
        runs["loop"].append(system_run("plain_loop", base, tmp, f"{tag}-loop{r}", check=r == 0))
        runs["loop_xn"].append(
            system_run("plain_loop", base, tmp, f"{tag}-xn{r}", check=r == 0, processes=cores)
        )
        runs["io"].append(system_run("kafka_io", base, tmp, f"{tag}-io{r}"))
        runs["udfs"].append(system_run("udfs_only", base, tmp, f"{tag}-udfs{r}"))
        f, lp, xn = runs["flink"][-1], runs["loop"][-1], runs["loop_xn"][-1]
        print(
            f"round {r + 1}/{rounds}: job e2e {n / f.e2e_s:,.0f}/s, steady "
            f"{f.steady_per_s or 0:,.0f}/s; loop e2e {n / lp.e2e_s:,.0f}/s; loop x{cores} e2e "
            f"{n / xn.e2e_s:,.0f}/s",
            flush=True,
        )
    flink, loop, xn = runs["flink"], runs["loop"], runs["loop_xn"]
    steady = [f.steady_per_s for f in flink if f.steady_per_s]

    def mem(key: str) -> tuple[list[float], list[float]]:
        return [x.rss_mb for x in runs[key]], [x.pss_mb for x in runs[key]]

    def cpu(key: str) -> dict[str, float]:
        return cpu_per_record([x.cpu_s for x in runs[key]], n)

    systems = {
        "flink_bounded_e2e": {
            **figure([n / f.e2e_s for f in flink], *mem("flink")),
            "startup_s": spread([f.startup_s for f in flink if f.startup_s is not None], 1),
            # what the peak PSS above is made of (the round of the highest peak)
            "peak_pss_parts": max(flink, key=lambda f: f.pss_mb).pss_parts,
            "cpu_us_per_record": cpu("flink"),
            # where the launch-to-exit time goes: seconds from launch to each moment (medians)
            "phases_s": median_phases([f.phases_s for f in flink]),
            "command": "python jobs/dlq_job.py --bounded --starting-offsets earliest",
        },
        "flink_steady": {"records_per_s": spread(steady) if steady else None},
        "plain_loop": {
            **figure([n / x.e2e_s for x in loop], *mem("loop")),
            "processing_records_per_s": spread([x.records / x.processing_s for x in loop]),
            "cpu_us_per_record": cpu("loop"),
        },
        f"plain_loop_x{cores}": {
            **figure([n / x.e2e_s for x in xn], *mem("loop_xn")),
            "processing_records_per_s": spread([x.records / x.processing_s for x in xn]),
            "cpu_us_per_record": cpu("loop_xn"),
        },
        "kafka_io": {
            **figure([x.records / x.processing_s for x in runs["io"]], *mem("io")),
            "cpu_us_per_record": cpu("io"),
        },
        "udfs_only": {
            **figure([x.records / x.processing_s for x in runs["udfs"]], *mem("udfs")),
            "cpu_us_per_record": cpu("udfs"),
        },
    }
    for floor in FLOORS:  # launch to exit, as flink_bounded_e2e
        floors = runs[floor]
        systems[f"flink_{floor}"] = {
            **figure([n / f.e2e_s for f in floors], *mem(floor)),
            "startup_s": spread([f.startup_s for f in floors if f.startup_s is not None], 1),
            "cpu_us_per_record": cpu(floor),
            # from its source counters as flink_steady (None: a run too short to show one)
            "steady_records_per_s": spread(st)
            if (st := [f.steady_per_s for f in floors if f.steady_per_s])
            else None,
            "phases_s": median_phases([f.phases_s for f in floors]),
            "passed_through_checked": True,  # check_passed_through raised otherwise
        }
    for name in ("flink_bounded_e2e", "plain_loop", f"plain_loop_x{cores}"):
        systems[name]["exactly_once_checked"] = True  # check_exactly_once raised otherwise
    # Each ratio per round (the same round's runs side by side), then its spread.
    ratios = {
        "flink_bounded_e2e_vs_plain_loop": spread(
            [lp.e2e_s / f.e2e_s for f, lp in zip(flink, loop, strict=True)], 3
        ),
        f"flink_steady_vs_plain_loop_x{cores}": spread(
            [
                f.steady_per_s / (x.records / x.processing_s)
                for f, x in zip(flink, xn, strict=True)
                if f.steady_per_s
            ]
            or [0.0],
            3,
        ),
        f"flink_bounded_e2e_vs_plain_loop_x{cores}": spread(
            [x.e2e_s / f.e2e_s for f, x in zip(flink, xn, strict=True)], 3
        ),
    }
    return {"systems": systems, "ratios": ratios}


def dlq_overhead(tmp: Path, n: int, rounds: int) -> dict[str, Any]:
    """The job's steady rate with 0%, 5% and 50% bad records, interleaved; the overhead of 5%
    per round (1 - rate at 5% / rate at 0%) and its spread. And the same in CPU time per
    record, launch to exit, every process of the run and the broker counted (CPU at 5% / CPU
    at 0% - 1): on a machine whose other load moves the rates by more than the overhead, the
    CPU a run spends moves far less."""
    sets = {share: dataset(n, share, tmp) for share in (0.0, 0.05, 0.5)}
    rates: dict[float, list[float]] = {share: [] for share in sets}
    cpu: dict[float, list[dict[str, float]]] = {share: [] for share in sets}
    for r in range(rounds):
        # 0% and 5% each first in turn, so that a drift of the machine over a round does not
        # land on the overhead's side every time
        order = (0.0, 0.05, 0.5) if r % 2 == 0 else (0.05, 0.0, 0.5)
        for share in order:
            cfg = sets[share]
            run = flink_run(cfg, tmp, f"b{os.getpid()}-share{int(share * 100)}-{r}", n)
            rates[share].append(run.steady_per_s or n / run.e2e_s)
            cpu[share].append(run.cpu_s)
    overhead = [1 - five / zero for zero, five in zip(rates[0.0], rates[0.05], strict=True)]
    total = {share: [sum(c.values()) for c in runs] for share, runs in cpu.items()}
    cpu_overhead = [five / zero - 1 for zero, five in zip(total[0.0], total[0.05], strict=True)]
    return {
        "steady_records_per_s": {f"{share:.2f}": spread(v) for share, v in rates.items()},
        "overhead_at_5pct": spread(overhead, 3),
        "cpu_us_per_record": {f"{share:.2f}": cpu_per_record(c, n) for share, c in cpu.items()},
        "cpu_overhead_at_5pct": spread(cpu_overhead, 3),
    }


def git_commit() -> str:
    """The commit the figures were produced on (``+uncommitted`` when the code differs from
    it; the results files and BENCH.md, which a benchmark run itself rewrites, do not count)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)bench/results",
            ":(exclude)BENCH.md",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + ("+uncommitted" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=int(os.environ.get("BENCH_RECORDS", 1_000_000)))
    ap.add_argument(
        "--bad-share", type=float, default=float(os.environ.get("BENCH_BAD_SHARE", 0.05))
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny and once: keeps the code honest")
    ap.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    ap.add_argument(
        "--latency-only",
        type=float,
        default=None,
        metavar="RATE",
        help="only the latency measurement, at RATE records/s",
    )
    ap.add_argument("--latency-seconds", type=float, default=30.0, help="Measured phase per run.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    if args.latency_only:
        doc = latency(tmp, args.latency_only, args.latency_seconds)
        print(json.dumps(doc, indent=2))
        if args.out != RESULTS / "latest.json":
            args.out.write_text(json.dumps(doc, indent=2) + "\n")
        return
    if args.smoke:
        args.records, args.runs = 2_000, 1
    n = args.records
    print(f"data set: {n:,} records, {args.bad_share:.0%} bad", flush=True)
    result: dict[str, Any] = {
        "commit": git_commit(),
        "records": n,
        "bad_share": args.bad_share,
        "runs": args.runs,
        "smoke": args.smoke,
        **compare(dataset(n, args.bad_share, tmp), tmp, n, args.runs),
        "dlq_overhead": dlq_overhead(tmp, n, args.runs),
    }
    steady = result["systems"]["flink_steady"]["records_per_s"]
    result["latency"] = (
        None
        if args.smoke or not steady
        else latency(tmp, steady["median"] / 2, args.latency_seconds)
    )
    result["machine"] = {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'system':<22}{'records/s':>12}{'min':>10}{'max':>10}{'PSS MB':>9}")
    for name, fig in result["systems"].items():
        r = fig["records_per_s"]
        if r:
            print(
                f"{name:<22}{r['median']:>12,}{r['min']:>10,}{r['max']:>10,}"
                f"{fig.get('peak_pss_mb', '-'):>9}"
            )
    print(f"ratios (median of rounds): { {k: v['median'] for k, v in result['ratios'].items()} }")
    print(f"DLQ overhead at 5% bad: {result['dlq_overhead']['overhead_at_5pct']}")
    print(f"written to {args.out}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
