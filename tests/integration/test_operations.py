"""The operator's loop on a real broker and the real job: bad records land in the DLQ,
`dlq stats` and `dlq analyze` report them, `dlq replay --fix` repairs and re-injects them, the
job turns them into clean records, and nothing is lost or duplicated on the way."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from kafkaio.admin import ensure_project_topics
from settings.config import JobConfig, load_config
from tests.corpus import build_corpus
from tests.kafka_helpers import dlq_cli, make_job_config, produce, read_all, run_job

# One job run (the module fixture) serves every test here: they stay on one worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("operations-run")]


@pytest.fixture(scope="module")
def loop(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ops")
    path, _ = make_job_config(
        tmp, bootstrap, **{"enrich.rss": "tests.integration.hooks:flaky", "retry.backoff_ms": 10}
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    cases = build_corpus()
    for feed in ("rss", "polymarket"):
        produce(
            bootstrap,
            config.feeds[feed].input,
            [(c.key, c.value, c.headers) for c in cases if c.feed == feed],
        )
    run_job(path, "--parallelism", "2")
    return {"path": path, "config": config, "cases": cases, "tmp": tmp}


def _json(proc: Any) -> dict[str, Any]:
    assert proc.returncode in (0, 1), proc.stderr
    return dict(json.loads(proc.stdout))


def test_stats_report_the_dlq(loop: dict[str, Any]) -> None:
    config: JobConfig = loop["config"]
    cases = loop["cases"]
    doc = _json(dlq_cli(loop["path"], "stats", "--json"))
    for feed in ("rss", "polymarket"):
        bad = [c for c in cases if c.feed == feed and c.clean is None]
        row = doc["topics"][config.feeds[feed].dlq]
        assert row["count"] == len(bad)
        assert row["by_category"] == dict(Counter(str(c.category) for c in bad))
        assert row["by_type"] == dict(Counter(str(c.type) for c in bad))
        assert row["oldest"] <= row["newest"]
        assert row["growth_per_min"] == pytest.approx(len(bad) / 5, rel=0.01)  # 5-min window
    biggest = max(r["count"] for r in doc["topics"].values())
    assert dlq_cli(loop["path"], "stats", "--threshold", str(biggest)).returncode == 0
    over = dlq_cli(loop["path"], "stats", "--threshold", str(biggest - 1))
    assert over.returncode == 1
    assert "above the threshold" in over.stderr


def test_analyze_groups_failures_by_fingerprint(loop: dict[str, Any]) -> None:
    cases = loop["cases"]
    plot = loop["tmp"] / "failures.png"
    doc = _json(dlq_cli(loop["path"], "analyze", "--json", "--plot", str(plot)))
    bad = [c for c in cases if c.clean is None]
    assert doc["total"] == len(bad)
    assert sum(g["count"] for g in doc["groups"]) == len(bad)
    # "must be between 0 and 1, got 1.5" and "... got -0.1" are one kind of failure
    price_range = [g for g in doc["groups"] if g["field"] == "price" and "between" in g["pattern"]]
    assert len(price_range) == 1 and price_range[0]["count"] == 2
    for g in doc["groups"]:
        assert len(g["samples"]) == min(g["count"], 5)
        assert g["first_seen"] <= g["last_seen"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.stat().st_size > 10_000
    # Piped (as here), the table holds every value in full: no cell cut to "…".
    table = dlq_cli(loop["path"], "analyze", "--top", "100")
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout
    for g in doc["groups"]:
        assert g["fingerprint"] in table.stdout and g["pattern"] in table.stdout


def test_replay_with_fix_turns_failures_into_clean_records(
    loop: dict[str, Any], bootstrap: str
) -> None:
    config: JobConfig = loop["config"]
    path: Path = loop["path"]
    topics = config.feeds["rss"]
    fixable = [c for c in loop["cases"] if c.feed == "rss" and c.field in ("source", "title")]
    selected = [c for c in loop["cases"] if c.feed == "rss" and c.type == "ValidationError"]
    clean_before = read_all(bootstrap, [topics.clean])

    dry = _json(
        dlq_cli(
            path,
            "replay",
            "--topic",
            topics.dlq,
            "--error-type",
            "ValidationError",
            "--dry-run",
            "--json",
        )
    )
    assert dry["selected"] == len(selected) and dry["replayed"] == 0
    assert len(read_all(bootstrap, [topics.input])) == len(
        [c for c in loop["cases"] if c.feed == "rss"]
    )

    doc = _json(
        dlq_cli(
            path,
            "replay",
            "--topic",
            topics.dlq,
            "--error-type",
            "ValidationError",
            "--fix",
            "tests.integration.fixes:fix_rss",
            "--json",
        )
    )
    assert (doc["selected"], doc["replayed"], doc["skipped"], doc["failed"]) == (
        len(selected),
        len(fixable),
        len(selected) - len(fixable),
        0,
    )
    again = _json(
        dlq_cli(
            path,
            "replay",
            "--topic",
            topics.dlq,
            "--error-type",
            "ValidationError",
            "--fix",
            "tests.integration.fixes:fix_rss",
            "--json",
        )
    )
    assert again["selected"] == 0 and again["already_replayed"] == len(selected)

    # The replayed records carry the replay count; the job turns them into clean records.
    replayed = [
        m for m in read_all(bootstrap, [topics.input]) if ("dlq.replay.count", b"1") in m.headers
    ]
    assert len(replayed) == len(fixable)
    run_job(path, "--parallelism", "2", offsets="committed")
    clean_after = read_all(bootstrap, [topics.clean])
    before = {m.position for m in clean_before}
    new = [orjson.loads(m.value or b"") for m in clean_after if m.position not in before]
    assert len(clean_after) == len(clean_before) + len(fixable), "lost or duplicated"
    assert sorted(r["event_id"] for r in new) == sorted(
        json.loads(c.value or b"")["event_id"] for c in fixable
    )
    assert all(r["source"] == "repaired-feed" or r["title"] == "Repaired title" for r in new)

    stats = _json(dlq_cli(path, "stats", "--json", "--topic", topics.dlq))["topics"][topics.dlq]
    assert stats["replayed"] == len(selected)


def test_failing_fix_exits_1_and_keeps_the_records(loop: dict[str, Any]) -> None:
    topics = loop["config"].feeds["polymarket"]
    proc = dlq_cli(
        loop["path"],
        "replay",
        "--topic",
        topics.dlq,
        "--category",
        "deserialization",
        "--fix",
        "tests.integration.fixes:broken",
        "--json",
    )
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["failed"] == doc["selected"] > 0 and doc["replayed"] == 0
    assert "this repair function is broken" in " ".join(doc["errors"])
    # Nothing was marked as handled: a later replay still selects them.
    dry = _json(
        dlq_cli(
            loop["path"],
            "replay",
            "--topic",
            topics.dlq,
            "--category",
            "deserialization",
            "--dry-run",
            "--json",
        )
    )
    assert dry["selected"] == doc["selected"]


def test_a_record_that_keeps_failing_ends_in_the_parking_lot(
    loop: dict[str, Any], bootstrap: str
) -> None:
    config: JobConfig = loop["config"]
    path: Path = loop["path"]
    topics = config.feeds["polymarket"]
    bad = [c for c in loop["cases"] if c.feed == "polymarket" and c.category == "validation"]

    first = _json(
        dlq_cli(
            path,
            "replay",
            "--topic",
            topics.dlq,
            "--category",
            "validation",
            "--max-replays",
            "1",
            "--json",
        )
    )
    assert first["replayed"] == len(bad)
    run_job(path, "--parallelism", "2", offsets="committed")  # they fail again

    envelopes = [orjson.loads(m.value or b"") for m in read_all(bootstrap, [topics.dlq])]
    again = [e for e in envelopes if e["replay"]["count"] == 1]
    assert len(again) == len(bad), "the job copies dlq.replay.count into the envelope"

    second = _json(
        dlq_cli(
            path,
            "replay",
            "--topic",
            topics.dlq,
            "--category",
            "validation",
            "--max-replays",
            "1",
            "--json",
        )
    )
    assert (second["selected"], second["parked"], second["replayed"]) == (len(bad), len(bad), 0)
    parked = [orjson.loads(m.value or b"") for m in read_all(bootstrap, [config.parking_topic])]
    assert sorted(p["payload_b64"] for p in parked) == sorted(e["payload_b64"] for e in again)
