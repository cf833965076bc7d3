"""The bounded job over a mixed corpus: every input exactly once in clean ∪ DLQ, with the
exact bytes, key and headers, the right category and field, and the right normalisation."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from kafkaio.admin import ensure_project_topics
from settings.config import load_config
from tests.corpus import Case, build_corpus
from tests.kafka_helpers import Message, make_job_config, produce, read_all, run_job
from udfs.envelope import MAX_STACKTRACE_BYTES

# One job run (the module fixture) serves every test here: they stay on one worker.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("dlq-job-run")]
COPIES = 20  # each case is produced this many times, spread over the 3 partitions


@pytest.fixture(scope="module")
def job_run(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Produces the corpus, runs the bounded job at parallelism 2, reads everything back."""
    tmp = tmp_path_factory.mktemp("dlqjob")
    path, _tree = make_job_config(
        tmp, bootstrap, **{"enrich.rss": "tests.integration.hooks:flaky", "retry.backoff_ms": 10}
    )
    config = load_config(path)
    ensure_project_topics(config, AdminClient({"bootstrap.servers": bootstrap}))
    cases = build_corpus()
    inputs: dict[tuple[str, int, int], Case] = {}
    for feed in ("rss", "polymarket"):
        topic = config.feeds[feed].input
        feed_cases = [c for c in cases if c.feed == feed]
        batch = [
            (c.key, c.value, c.headers, (i + n) % 3)
            for n in range(COPIES)
            for i, c in enumerate(feed_cases)
        ]
        order = [c for n in range(COPIES) for c in feed_cases]
        by_value = {}
        for msg in produce(bootstrap, topic, batch):
            by_value.setdefault((msg.key, msg.value, msg.partition), []).append(msg)
        for n, (key, value, _, part) in enumerate(batch):
            msg = by_value[(key, value, part)].pop(0)
            inputs[(topic, msg.partition, msg.offset)] = order[n]
    proc = run_job(path, "--parallelism", "2")
    outputs = {
        feed: {
            "clean": read_all(bootstrap, [config.feeds[feed].clean]),
            "dlq": read_all(bootstrap, [config.feeds[feed].dlq]),
        }
        for feed in ("rss", "polymarket")
    }
    return {"config": config, "inputs": inputs, "outputs": outputs, "proc": proc}


def _position(side: str, msg: Message) -> tuple[str, int, int]:
    body = orjson.loads(msg.value or b"")
    src = body["_source"] if side == "clean" else body["source"]
    return src["topic"], src["partition"], src["offset"]


def test_every_input_exactly_once_in_clean_or_dlq(job_run: dict[str, Any]) -> None:
    inputs = job_run["inputs"]
    seen: Counter[tuple[str, int, int]] = Counter()
    for sides in job_run["outputs"].values():
        for side, messages in sides.items():
            seen.update(_position(side, m) for m in messages)
    duplicated = [p for p, n in seen.items() if n > 1]
    lost = set(inputs) - set(seen)
    assert not duplicated, f"{len(duplicated)} inputs duplicated, e.g. {duplicated[:3]}"
    assert not lost, f"{len(lost)} inputs lost, e.g. {sorted(lost)[:3]}"
    assert set(seen) == set(inputs)


def test_each_record_takes_its_expected_side(job_run: dict[str, Any]) -> None:
    inputs = job_run["inputs"]
    wrong = []
    for sides in job_run["outputs"].values():
        for side, messages in sides.items():
            for m in messages:
                case = inputs[_position(side, m)]
                if (side == "clean") != (case.clean is not None):
                    wrong.append((case.name, side))
    assert not wrong, wrong[:10]


def test_clean_records_are_normalised_with_lineage_and_key(job_run: dict[str, Any]) -> None:
    inputs = job_run["inputs"]
    for sides in job_run["outputs"].values():
        for m in sides["clean"]:
            pos = _position("clean", m)
            case = inputs[pos]
            body = orjson.loads(m.value or b"")
            assert body.pop("_source") == dict(
                zip(("topic", "partition", "offset"), pos, strict=True)
            )
            assert body == case.clean, case.name
            assert m.key == case.key
            assert list(m.headers) == case.headers


def test_envelopes_carry_the_exact_original_record(job_run: dict[str, Any]) -> None:
    inputs = job_run["inputs"]
    config = job_run["config"]
    categories = Counter()
    for sides in job_run["outputs"].values():
        for m in sides["dlq"]:
            pos = _position("dlq", m)
            case = inputs[pos]
            env = orjson.loads(m.value or b"")
            payload = env["payload_b64"]
            assert (None if payload is None else base64.b64decode(payload)) == case.value
            assert env["payload_text"] == (
                case.value.decode() if case.value is not None and _utf8(case.value) else None
            )
            key = env["source"]["key_b64"]
            assert (None if key is None else base64.b64decode(key)) == case.key
            assert [
                (k, None if v is None else base64.b64decode(v)) for k, v in env["source"]["headers"]
            ] == case.headers
            assert m.key == case.key, "the DLQ record keeps the input key"
            assert m.partition == pos[1], "the DLQ record keeps the input partition"
            err = env["error"]
            assert (err["category"], err["field"], err["type"]) == (
                case.category,
                case.field,
                case.type,
            ), (case.name, err["message"])
            assert env["attempts"] == case.attempts, case.name
            assert len(err["stacktrace"].encode()) <= MAX_STACKTRACE_BYTES
            assert env["job"] == {"name": config.name, "operator": f"validate-{case.feed}"}
            assert env["replay"] == {"count": 0}
            assert isinstance(env["source"]["timestamp"], int)
            categories[err["category"]] += 1
    assert set(categories) == {"deserialization", "validation", "processing", "transient"}


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
