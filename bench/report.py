"""The tables of BENCH.md, rendered from the results files (``python -m bench.report``).

Every figure BENCH.md publishes comes from here: the block between the markers
``<!-- results:begin -->`` and ``<!-- results:end -->`` is replaced by tables made from
bench/results/latest.json, ingest.json and levers.json, each with the commit it ran on, so
the prose around them need not repeat (or recompute) a number.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from settings.config import ROOT

RESULTS = ROOT / "bench" / "results"
BENCH_MD = ROOT / "BENCH.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _n(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _spread(fig: dict[str, Any] | None, ratio: bool = False) -> tuple[str, str]:
    if not fig:
        return "-", "-"
    show = (lambda v: f"{v:.3f}") if ratio else _n
    return show(fig["median"]), f"{show(fig['min'])} - {show(fig['max'])}"


def job_tables(doc: dict[str, Any]) -> list[str]:
    out = [
        f"`bench/results/latest.json`: {doc['records']:,} records, {doc['bad_share']:.0%} bad, "
        f"{doc['runs']} interleaved rounds, commit `{doc['commit'][:12]}`, "
        f"{doc['machine']['cores']} cores ({doc['machine']['cpu']}).",
        "",
        "| system | records/s (median) | min - max | peak PSS MB | peak RSS MB |",
        "|---|---:|---|---:|---:|",
    ]
    for name, fig in doc["systems"].items():
        median, span = _spread(fig.get("records_per_s"))
        pss, rss = fig.get("peak_pss_mb"), fig.get("peak_rss_mb")
        out.append(f"| {name} | {median} | {span} | {_n(pss)} | {_n(rss)} |")
    parts = doc["systems"]["flink_bounded_e2e"].get("peak_pss_parts")
    if parts:
        out.append(
            "\nflink_bounded_e2e's peak PSS by process: "
            + ", ".join(
                f"{name} {p['mb']:,} MB ({p['processes']} processes)"
                for name, p in sorted(parts.items(), key=lambda kv: -kv[1]["mb"])
            )
            + "."
        )
    startup = doc["systems"]["flink_bounded_e2e"].get("startup_s")
    if startup:
        out += [
            "",
            f"Job start-up (launch to first record read): {_spread(startup)[0]} s "
            f"(range {_spread(startup)[1]} s).",
        ]
    phases = doc["systems"]["flink_bounded_e2e"].get("phases_s")
    if phases:
        out += [
            "",
            "Where flink_bounded_e2e's launch-to-exit time goes (seconds from launch, medians): "
            + ", ".join(f"{name.replace('_', ' ')} {_n(t)}" for name, t in phases.items())
            + ".",
        ]
    for name, fig in doc["systems"].items():
        if name.startswith("flink_floor_") and fig.get("phases_s"):
            out.append(
                f"{name} (bench/floor.py, launch to exit; every input checked in its clean "
                f"topics): steady {_spread(fig.get('steady_records_per_s'))[0]} records/s, "
                f"start-up {_spread(fig['startup_s'])[0]} s; "
                + ", ".join(f"{k.replace('_', ' ')} {_n(t)}" for k, t in fig["phases_s"].items())
                + "."
            )
    for name in ("plain_loop", *[k for k in doc["systems"] if k.startswith("plain_loop_x")]):
        proc = doc["systems"][name].get("processing_records_per_s")
        if proc:
            out.append(f"{name} from its first record to its last commit: {_n(proc['median'])}/s.")
    out += cpu_table(doc["systems"])
    out += ["", "| ratio (per round, then median) | median | min - max |", "|---|---:|---|"]
    for name, fig in doc["ratios"].items():
        median, span = _spread(fig, ratio=True)
        out.append(f"| {name} | {median} | {span} |")
    over = doc["dlq_overhead"]
    out += ["", "| bad share | job steady records/s (median) | min - max |", "|---|---:|---|"]
    for share, fig in over["steady_records_per_s"].items():
        median, span = _spread(fig)
        out.append(f"| {float(share):.0%} | {median} | {span} |")
    median, span = _spread(over["overhead_at_5pct"], ratio=True)
    out.append(
        f"\nDLQ overhead at 5% bad (1 - steady at 5% / steady at 0%, per round): "
        f"median {median}, range {span}."
    )
    if "cpu_overhead_at_5pct" in over:
        median, span = _spread(over["cpu_overhead_at_5pct"], ratio=True)
        per = ", ".join(
            f"{float(share):.0%} {_n(c['total'])}" for share, c in over["cpu_us_per_record"].items()
        )
        out.append(
            f"In CPU time (every process of the run and the broker, launch to exit; CPU at 5% / "
            f"CPU at 0% - 1, per round): median {median}, range {span}; CPU us per record "
            f"(median) at {per}."
        )
    lat = doc.get("latency")
    if lat:
        out += [
            "",
            f"Produce to visible under read_committed, each system running unbounded at "
            f"{_n(lat['rate_per_s'])} records/s for {_n(lat['seconds'])} s (checkpoint or "
            f"commit interval {_n(lat['checkpoint_interval_ms'])} ms), one run each:",
            "",
            "| system | bad share | p50 ms | p99 ms | max ms | good records produced | received |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for system, by_share in lat["systems"].items():
            for share, f in by_share.items():
                out.append(
                    f"| {system} | {share} | {_n(f['p50_ms'])} | {_n(f['p99_ms'])} | "
                    f"{_n(f['max_ms'])} | {f['good']:,} | {f['received']:,} |"
                )
    return out


def cpu_table(systems: dict[str, Any]) -> list[str]:
    """CPU microseconds per record by kind of process, launch to exit (medians)."""
    cpu = {
        name: fig["cpu_us_per_record"]
        for name, fig in systems.items()
        if "cpu_us_per_record" in fig
    }
    if not cpu:
        return []
    kinds = [*sorted({k for c in cpu.values() for k in c} - {"total"}), "total"]
    return [
        "",
        "CPU microseconds per record, launch to exit, by process (median over the rounds; "
        "broker: the Kafka broker's over the same time):",
        "",
        "| system | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
        *(
            f"| {name} | " + " | ".join(_n(c.get(k)) for k in kinds) + " |"
            for name, c in cpu.items()
        ),
    ]


def ingest_tables(doc: dict[str, Any]) -> list[str]:
    out = [
        f"`bench/results/ingest.json`: {doc['records']:,} records per producer batch "
        f"({doc['record_mb']} MB), {doc['pairs']} pairs of batches; "
        f"{doc['drain_and_replay_records']:,} records per drain and replay, {doc['rounds']} "
        f"rounds; commit `{doc['commit'][:12]}`.",
        "",
        "| system | records/s (median) | min - max |",
        "|---|---:|---|",
    ]
    for name, fig in doc["systems"].items():
        out.append(f"| {name} | {_n(fig['records_per_s'])} | {_n(fig['min'])} - {_n(fig['max'])} |")
    out += [
        "",
        "| ingest_producer against bare_producer, per pair | median | 95% CI of the median "
        "| min - max |",
        "|---|---:|---|---|",
    ]
    for key, what in (
        ("ingest_vs_bare", "records/s, ingest / bare"),
        ("ingest_vs_bare_cpu", "CPU time of the sending process, ingest / bare"),
    ):
        r = doc[key]
        lo, hi = r["ci95"]
        out.append(
            f"| {what} | {r['median']:.3f} | {lo:.3f} - {hi:.3f} | {r['min']} - {r['max']} |"
        )
    cpu = doc["cpu_us_per_record"]
    out.append(
        f"\nCPU per record (median): bare_producer {cpu['bare_producer']} us, ingest_producer "
        f"{cpu['ingest_producer']} us."
    )
    return out


def levers_table(doc: dict[str, Any]) -> list[str]:
    out = [
        f"`bench/results/levers.json`: {doc['records']:,} records, {doc['bad_share']:.0%} bad, "
        f"{doc['rounds']} interleaved rounds, commit `{str(doc.get('commit', '?'))[:12]}`.",
        "",
        "| lever | what it changes | steady records/s (median) | launch to exit, records/s | "
        "peak PSS MB | CPU us/record: JVM, Python workers |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, lever in doc["levers"].items():
        cpu = lever.get("cpu_us_per_record", {})
        out.append(
            f"| {name} | {lever['what']} | {_n(lever['records_per_s'])} | "
            f"{_n(lever.get('e2e_records_per_s'))} | {_n(lever.get('peak_pss_mb'))} | "
            f"{_n(cpu.get('jvm'))}, {_n(cpu.get('python_worker'))} |"
        )
    return out


def render() -> str:
    """The tables of every results file produced on the commit of latest.json; a file from
    another commit is named, not published (its figures are not this code's)."""
    parts: list[str] = []
    docs = {
        name: json.loads((RESULTS / f"{name}.json").read_text())
        for name in ("latest", "ingest", "levers")
        if (RESULTS / f"{name}.json").exists()
    }
    commit = docs.get("latest", {}).get("commit")
    stale = [n for n, d in docs.items() if d.get("commit") != commit]
    sections = [
        ("latest", "The job and what a user would write instead", job_tables),
        ("ingest", "The ingest side", ingest_tables),
        ("levers", "Levers", levers_table),
    ]
    for name, title, table in sections:
        if name in docs and name not in stale:
            parts += [f"### {title}", "", *table(docs[name]), ""]
    for name in stale:
        parts.append(
            f"`bench/results/{name}.json` was produced on another commit "
            f"(`{str(docs[name].get('commit', '?'))[:12]}`) and is not published here: "
            f"`python -m bench.{'run' if name == 'latest' else name}` produces it again.\n"
        )
    return "\n".join(parts)


def main() -> int:
    text = BENCH_MD.read_text()
    if BEGIN not in text or END not in text:
        print(f"{BENCH_MD} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    BENCH_MD.write_text(f"{head}{BEGIN}\n{render()}{END}{tail}")
    print(f"{BENCH_MD}: tables rendered from {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
