"""`make bench`: the DLQ job side by side with what a user would pick instead.

    python -m bench.run [--records N] [--bad-share X] [--runs K] [--smoke]

Environment overrides: BENCH_RECORDS, BENCH_BAD_SHARE. Produces a deterministic data set once
(per size and bad share), then measures in one run on one broker, so the machine's noise hits
every system alike:

- flink_job: the job, --bounded, over the data set, from the first record read (its sources'
  record counters, ``FirstRead``) to the last transaction committed (its outputs,
  ``OutputWatch``); start-up (from launch to the first record read) is reported separately;
- plain_loop, kafka_io, udfs_only: see bench/systems.py;

each K times (median, min, max of records/s) with the peak resident memory of all its
processes (JVMs and Python workers included); then the job's throughput at 0%, 5% and 50%
bad records, and at 5% with a tenth of the records (the plain loop too, for the ratio at
that size). Writes bench/results/latest.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from jobs.local import free_port, isolated_config, start_job
from kafkaio.admin import ensure_project_topics
from kafkaio.scan import consumer as scan_consumer
from kafkaio.scan import read_to_end, watermarks
from udfs.config import FEEDS, ROOT, load_config
from udfs.sample import generate

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
RESULTS = ROOT / "bench" / "results"


class PeakRss(threading.Thread):
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += p.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)


def measured(cmd: list[str]) -> tuple[str, float, float]:
    """Runs cmd; returns (stdout, wall seconds, peak RSS in MB of its process tree)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    rss = PeakRss(proc.pid)
    rss.start()
    out, err = proc.communicate(timeout=3600)
    rss.stop.set()
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {err[-3000:]}")
    return out, wall, rss.peak / 2**20


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


class FirstRead(threading.Thread):
    """When the job's sources read their first record: Flink's REST metrics, polled.

    Sums ``numRecordsOut`` of every source operator over its subtasks every 50 ms (the run
    sets ``metrics.fetcher.update-interval`` to 100 ms) and puts the first read halfway
    between the last poll that saw none and the first that saw some.
    """

    def __init__(self, rest: str) -> None:
        super().__init__(daemon=True)
        self.rest = rest
        self.read: float | None = None
        self.stop = threading.Event()

    def _metrics(self) -> list[str] | None:
        """REST paths of the source operators' record counters, once every source has them
        (None before: the first read may come from a source that shows up later)."""
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
        last_none = time.monotonic()
        while not self.stop.is_set():
            polled = time.monotonic()
            try:
                paths = paths or self._metrics()
                read = sum(m.get("sum", 0) for p in paths or [] for m in rest(self.rest, p))
            except (OSError, ValueError, KeyError):
                read = 0
            if read > 0:
                self.read = (last_none + polled) / 2
                return
            last_none = polled
            time.sleep(0.05)


class OutputWatch(threading.Thread):
    """Times a bounded run of the job from its outputs, as a consumer would see them.

    Polls the output topics' high watermarks (everything written, committed or not) and last
    stable offsets (what read_committed sees). ``first`` is when the first record is written,
    ``done`` when every input record is in the outputs and no transaction is open. Once every
    record is written it asks the job for a checkpoint (REST), so that the run ends on that
    checkpoint's commit, as the plain loop ends on its last commit, instead of waiting a random
    part of an interval for the next periodic checkpoint.
    """

    def __init__(self, config: Path, records: int, rest_port: int) -> None:
        super().__init__(daemon=True)
        cfg = load_config(config)
        self.topics = [getattr(cfg.feeds[f], role) for f in FEEDS for role in ("clean", "dlq")]
        self.records = records
        self.rest = f"http://127.0.0.1:{rest_port}"
        self.first: float | None = None
        self.written: float | None = None
        self.done: float | None = None
        self.error: Exception | None = None
        self.ended = threading.Event()  # the job's process has exited: its outputs are final

    def _ends(self, admin: AdminClient, partitions: list[Any], level: Any) -> dict[Any, int]:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        futures = admin.list_offsets(request, isolation_level=level, request_timeout=10)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def _checkpoint(self, last: float) -> float:
        """Triggers a checkpoint of the running job, at most once a second."""
        if time.monotonic() - last < 1.0:
            return last
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            for job in running_jobs(self.rest):
                rest(self.rest, f"/jobs/{job}/checkpoints", b"{}")
        return time.monotonic()

    def run(self) -> None:
        from confluent_kafka import IsolationLevel, KafkaException

        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        md = admin.list_topics(timeout=10)
        partitions = [(t, p) for t in self.topics for p in md.topics[t].partitions]
        triggered = 0.0
        while True:
            final = self.ended.is_set()  # a poll that starts after the exit sees the end state
            try:
                if self._poll(admin, partitions, IsolationLevel):
                    return
                if self.written is not None:
                    triggered = self._checkpoint(triggered)
            except KafkaException as e:
                self.error = e
            if final:
                return
            time.sleep(0.1)

    def _poll(self, admin: AdminClient, partitions: list[Any], levels: Any) -> bool:
        written = self._ends(admin, partitions, levels.READ_UNCOMMITTED)
        now = time.monotonic()
        if self.first is None and any(written.values()):
            self.first = now
        # commit markers take offsets too: the sum reaches the count a little early at
        # worst, and "done" also needs every partition's transactions closed
        if self.first is None or sum(written.values()) < self.records:
            return False
        self.written = self.written or now
        if self._ends(admin, partitions, levels.READ_COMMITTED) != written:
            return False
        self.done = now
        return True


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


def flink_run(
    base: Path, tmp: Path, tag: str, records: int, check: bool = False
) -> tuple[float, float, float]:
    """One bounded run of the job on a fresh copy of ``base``'s outputs: (start-up seconds,
    processing seconds from the first record read to the last one committed, peak RSS).
    ``check``: verify its outputs exactly once afterwards (not timed)."""
    with fresh_outputs(base, tmp, tag) as cfg:
        result = _flink_run(cfg, records)
        if check:
            check_exactly_once(cfg, records)
        return result


def _flink_run(cfg: Path, records: int) -> tuple[float, float, float]:
    tag = cfg.stem
    port = free_port()
    tree = json.loads(cfg.read_text())
    tree["flink"]["conf"]["rest.bind-port"] = str(port)
    tree["flink"]["conf"]["metrics.fetcher.update-interval"] = "100"
    cfg.write_text(json.dumps(tree))
    watch = OutputWatch(cfg, records, port)
    first_read = FirstRead(f"http://127.0.0.1:{port}")
    start = time.monotonic()
    watch.start()
    first_read.start()
    try:
        _, _, rss = measured(
            [
                sys.executable,
                str(ROOT / "jobs" / "dlq_job.py"),
                "--config",
                str(cfg),
                "--bounded",
                "--starting-offsets",
                "earliest",
            ]
        )
    finally:
        watch.ended.set()
        first_read.stop.set()
        watch.join(60)
    if watch.first is None or watch.done is None:
        raise RuntimeError(
            f"{tag}: the job ended, but not all {records:,} records were committed "
            f"(last error watching the outputs: {watch.error})"
        )
    read = first_read.read
    if read is None or read > watch.first:
        print(
            f"{tag}: no first read in the job's REST metrics; timed from the first write",
            file=sys.stderr,
        )
        read = watch.first
    return read - start, watch.done - read, rss


def latency(tmp: Path, rate: float, seconds: float = 30.0) -> dict[str, Any]:
    """Produce-to-visibility latency under read_committed, the job running unbounded.

    Clean records keep their input's timestamp (the producer's CreateTime), so latency is the
    time a read_committed consumer receives a record minus that timestamp. A warm-up record
    must come through before the measured phase starts (job start-up is not latency).
    """
    tag = f"b{os.getpid()}-latency"
    base = bench_config(tmp, f"{tag}-base", f"{tag}.in")
    with fresh_outputs(base, tmp, tag) as cfg:
        try:
            return _latency(cfg, rate, seconds)
        finally:
            drop_topics([f"{tag}.in.{feed}" for feed in FEEDS])


def _latency(cfg: Path, rate: float, seconds: float) -> dict[str, Any]:
    from confluent_kafka import Consumer

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
    job = start_job(cfg)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    good = {f: [(k, v, h) for k, v, h in generate(f, 2000, 0.0, seed=9)] for f in FEEDS}
    samples: list[float] = []
    try:
        producer.produce(config.feeds["rss"].input, key=b"warm-up", value=good["rss"][0][1])
        producer.flush(10)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not consumer.consume(100, 1.0):
            pass
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            feed = FEEDS[n % 2]
            key, value, headers = good[feed][(n // 2) % 2000]
            producer.produce(
                config.feeds[feed].input,
                key=key,
                value=value,
                headers=[*headers, ("bench", b"measure")],
            )
            producer.poll(0)
            n += 1
            ahead = n / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
            if n % 100 == 0:  # not per record: this process shares the job's two cores
                for msg in consumer.consume(10_000, 0):
                    if msg.error() is None and ("bench", b"measure") in (msg.headers() or []):
                        samples.append(time.time() * 1000 - msg.timestamp()[1])
        producer.flush(30)
        tail_end = time.monotonic() + 30
        while len(samples) < n and time.monotonic() < tail_end:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is None and ("bench", b"measure") in (msg.headers() or []):
                    samples.append(time.time() * 1000 - msg.timestamp()[1])
    finally:
        from jobs.local import stop_process_group

        stop_process_group(job)  # type: ignore[arg-type]
        consumer.close()
    samples.sort()

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p * len(samples)))], 1) if samples else -1

    return {
        "rate_per_s": round(rate),
        "produced": n,
        "received": len(samples),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(samples[-1], 1) if samples else -1,
        "checkpoint_interval_ms": config.checkpoint_interval_ms,
    }


def system_run(
    name: str, base: Path, tmp: Path, tag: str, check: bool = False
) -> tuple[float, float, int]:
    """One run of a system of bench/systems.py on ``base``: (records/s, peak RSS, records).
    ``check``: verify its outputs exactly once afterwards (not timed)."""
    with fresh_outputs(base, tmp, tag) as cfg:
        out, _, rss = measured([sys.executable, "-m", "bench.systems", name, str(cfg)])
        if check:
            check_exactly_once(cfg, json.loads(out.strip().splitlines()[-1])["records"])
    res = json.loads(out.strip().splitlines()[-1])
    return res["records"] / max(res["seconds"], 1e-3), rss, res["records"]


def summary(rates: list[float], rss: list[float]) -> dict[str, Any]:
    return {
        "records_per_s": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
        "runs": [round(r) for r in rates],
        "peak_rss_mb": round(max(rss)),
    }


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
    args = ap.parse_args()
    if args.latency_only:
        result = latency(Path(tempfile.mkdtemp(prefix="bench-")), args.latency_only)
        print(json.dumps(result, indent=2))
        return
    if args.smoke:
        args.records, args.runs = 2_000, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    n = args.records
    print(f"data set: {n:,} records, {args.bad_share:.0%} bad", flush=True)
    base = dataset(n, args.bad_share, tmp)
    startup: list[float] = []
    systems: dict[str, Any] = {}
    walls: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("flink_job", "plain_loop", "kafka_io", "udfs_only")
    }
    processed: dict[str, int] = {}
    for r in range(args.runs):  # interleaved, so drift hits every system alike
        # The first round's outputs are checked exactly once, the job's and the loop's alike.
        start, seconds, rss = flink_run(base, tmp, f"b{os.getpid()}-flink{r}", n, check=r == 0)
        startup.append(start)
        walls["flink_job"].append((n / max(seconds, 1e-3), rss))
        for name in ("plain_loop", "kafka_io", "udfs_only"):
            rate, rss, processed[name] = system_run(
                name, base, tmp, f"b{os.getpid()}-{name}{r}", check=r == 0 and name == "plain_loop"
            )
            walls[name].append((rate, rss))
        print(
            f"round {r + 1}/{args.runs}: "
            + ", ".join(f"{k} {v[-1][0]:,.0f}/s" for k, v in walls.items()),
            flush=True,
        )
    for name, values in walls.items():
        systems[name] = summary([v[0] for v in values], [v[1] for v in values])
    systems["flink_job"]["startup_s"] = round(statistics.median(startup), 1)
    for name in ("flink_job", "plain_loop"):
        systems[name]["exactly_once_checked"] = True  # check_exactly_once raised otherwise
    for name, count in processed.items():
        systems[name]["records"] = count

    # By bad share at the full size, and the 5% share at a tenth of it (growth with volume),
    # in interleaved rounds so that the machine's drift hits each alike.
    small = max(n // 10, 1000)
    runs = {f"{share:.2f}": (n, dataset(n, share, tmp)) for share in (0.0, 0.05, 0.5)}
    runs["small"] = (small, dataset(small, args.bad_share, tmp))
    rates: dict[str, list[float]] = {key: [] for key in runs}
    small_loop: list[float] = []  # the plain loop at the small size too: the ratio by size
    for r in range(args.runs):
        for key, (count, cfg) in runs.items():
            _, seconds, _ = flink_run(
                cfg, tmp, f"b{os.getpid()}-share{key.replace('.', '')}-{r}", count
            )
            rates[key].append(count / max(seconds, 1e-3))
        rate, _, _ = system_run("plain_loop", runs["small"][1], tmp, f"b{os.getpid()}-sloop{r}")
        small_loop.append(rate)
    overhead = {key: round(statistics.median(rates[key])) for key in runs if key != "small"}
    scale = {str(small): round(statistics.median(rates["small"])), str(n): overhead["0.05"]}
    loop_small = statistics.median(small_loop)
    lat = None if args.smoke else latency(tmp, systems["flink_job"]["records_per_s"] / 2)

    f = systems["flink_job"]["records_per_s"]
    result = {
        "records": n,
        "bad_share": args.bad_share,
        "runs": args.runs,
        "smoke": args.smoke,
        "systems": systems,
        "ratios": {
            f"flink_vs_{k}": round(f / systems[k]["records_per_s"], 3)
            for k in ("plain_loop", "udfs_only", "kafka_io")
        },
        "dlq_overhead": overhead,
        "dlq_overhead_at_5pct": round(1 - overhead["0.05"] / overhead["0.00"], 3),
        "scale": scale,
        # flink_job / plain_loop at each size: the job's fixed costs per run (pipeline fill,
        # the final checkpoint) weigh more in a shorter run
        "ratio_by_size": {
            str(small): round(scale[str(small)] / loop_small, 3),
            str(n): round(f / systems["plain_loop"]["records_per_s"], 3),
        },
        "latency": lat,
        "machine": {
            "cores": os.cpu_count(),
            "cpu": cpu_model(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'system':<12}{'records/s':>12}{'min':>10}{'max':>10}{'peak RSS MB':>14}")
    for name, s in systems.items():
        print(
            f"{name:<12}{s['records_per_s']:>12,}{s['min']:>10,}{s['max']:>10,}"
            f"{s['peak_rss_mb']:>14,}"
        )
    print(f"flink_job start-up: {systems['flink_job']['startup_s']} s; ratios {result['ratios']}")
    print(f"flink_job records/s by bad share ({n:,} records): {overhead}; by size: {scale}")
    print(f"flink_vs_plain_loop by size: {result['ratio_by_size']}")
    if lat:
        print(
            f"latency at {lat['rate_per_s']}/s: p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms "
            f"(checkpoint interval {lat['checkpoint_interval_ms']} ms)"
        )
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
