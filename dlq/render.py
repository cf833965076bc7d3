"""How the ``dlq`` command shows its results to a person (the commands compute, this renders).

On a terminal, tables fit its width; piped to a file or a pager, every value is printed in
full (a table is only as wide as its contents).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=100_000)


def summary_line(doc: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a summary's counts (lists left out)."""
    return " ".join(f"{k}={v}" for k, v in doc.items() if not isinstance(v, list))


def stats_table(result: Mapping[str, Mapping[str, Any]], window: float) -> Table:
    table = Table(title="DLQ topics (read_committed)")
    for col in (
        "topic",
        "records",
        "replayed",
        f"growth/min ({window:.0f} s)",
        "oldest",
        "newest",
        "oldest expires",
        "by category",
        "top types",
    ):
        table.add_column(col)
    for name, row in result.items():
        top = sorted(row["by_type"].items(), key=lambda kv: -kv[1])[:3]
        table.add_row(
            name,
            f"{row['count']:,}",
            f"{row['replayed']:,}",
            f"{row['growth_per_min']}",
            str(row["oldest"] or "-"),
            str(row["newest"] or "-"),
            str(row["oldest_expires_at"] or "never"),
            ", ".join(f"{k} {v}" for k, v in sorted(row["by_category"].items())) or "-",
            ", ".join(f"{k} {v}" for k, v in top) or "-",
        )
    return table


def spool_line(spooled: Mapping[str, Any]) -> str:
    if "error" in spooled:
        return f"spool {spooled['location']}: {spooled['error']}"
    line = (
        f"spool {spooled['location']}: {spooled['records']:,} records in "
        f"{spooled['segments']:,} segments, oldest {spooled['oldest'] or '-'}"
    )
    if spooled["possibly_persisted"]:
        line += f", {spooled['possibly_persisted']:,} possibly persisted already"
    if spooled["records"]:
        line += " (run `dlq spool drain`)"
    return "\n  ".join([line, *spooled["problems"]])


def analysis_table(doc: Mapping[str, Any], top: int, wide: bool) -> Table:
    groups = doc["groups"]
    table = Table(title=f"{doc['total']:,} failures in {len(groups)} groups")
    for col in (
        "fingerprint",
        "count",
        "share",
        "category",
        "type",
        "field",
        "pattern",
        "first seen",
        "last seen",
        "samples (topic:partition:offset)",
    ):
        table.add_column(col)
    for g in groups[:top]:
        table.add_row(
            g["fingerprint"],
            f"{g['count']:,}",
            f"{g['share']:.1%}",
            g["category"],
            g["type"],
            g["field"] or "-",
            g["pattern"] if wide else g["pattern"][:80],
            g["first_seen"] or "-",
            g["last_seen"] or "-",
            " ".join(":".join(map(str, s)) for s in g["samples"][:3]),
        )
    return table


def replay_lines(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """What a dry-run replay would write, a line per record."""
    return [
        f"would replay {':'.join(map(str, r['dlq']))} -> "
        f"{':'.join(map(str, r['source'][:2]))} ({r['type']}"
        f"{', ' + r['field'] if r['field'] else ''})"
        for r in records
    ]
