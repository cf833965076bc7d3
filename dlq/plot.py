"""``dlq analyze --plot``: failures over time, one line per fingerprint."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from dlq.stats import Group

_STEPS = [timedelta(seconds=s) for s in (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400)]


def _bucket(span: timedelta) -> timedelta:
    """A bin width giving at most about 60 points over ``span``."""
    for step in _STEPS:
        if span / step <= 60:
            return step
    return _STEPS[-1]


def plot_groups(groups: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    times = [t for g in groups for t in g.times]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    if times:
        start, end = min(times), max(times)
        step = _bucket(end - start)
        base = datetime.fromtimestamp(
            start.timestamp() // step.total_seconds() * step.total_seconds(), tz=start.tzinfo
        )
        n = int((end - base) / step) + 1
        xs = [base + i * step for i in range(n)]
        for g in groups:
            counts = Counter(int((t - base) / step) for t in g.times)
            field = f" · {g.field_name}" if g.field_name else ""
            label = f"{g.type}{field} ({g.count:,}) {g.fingerprint}"
            ax.plot(
                mdates.date2num(xs),  # type: ignore[no-untyped-call]
                [counts.get(i, 0) for i in range(n)],
                marker="o",
                markersize=3,
                linewidth=1.5,
                label=label,
            )
        ax.set_ylabel(f"failures per {int(step.total_seconds())} s")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))  # type: ignore[no-untyped-call]
        fig.autofmt_xdate()
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("DLQ failures over time, by fingerprint (UTC)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
