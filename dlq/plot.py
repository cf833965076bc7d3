"""``dlq analyze --plot``: failures over time, stacked by fingerprint.

It must read well for a burst inside one second, an hour, or weeks: the bin width follows the
span (from milliseconds to a week, at most about 60 bins), the bars are stacked per bin (one
bin is still a bar, not a lone dot), the y axis counts from zero in whole failures, and the
time axis is labelled at the scale of the span (ConciseDateFormatter), with a bin's margin on
either side.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from dlq.stats import Group

_STEPS = [
    timedelta(seconds=s)
    for s in (0.001, 0.01, 0.1, 1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
]


def bucket(span: timedelta) -> timedelta:
    """A bin width giving at most about 60 bins over ``span``."""
    for step in _STEPS:
        if span / step <= 60:
            return step
    return _STEPS[-1]


def step_label(step: timedelta) -> str:
    seconds = step.total_seconds()
    for unit, size in (("week", 7 * 86400), ("day", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            n = seconds / size
            return f"{n:g} {unit}"
    return f"{seconds * 1000:g} ms"


def plot_groups(groups: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    times = [t for g in groups for t in g.times]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    if times:
        start, end = min(times), max(times)
        step = bucket(end - start)
        seconds = step.total_seconds()
        base = datetime.fromtimestamp(start.timestamp() // seconds * seconds, tz=start.tzinfo)
        n = int((end - base) / step) + 1
        lefts = mdates.date2num([base + i * step for i in range(n)])  # type: ignore[no-untyped-call]
        width = seconds / 86400  # matplotlib dates count days
        below = [0] * n
        for g in groups:
            counts = Counter(int((t - base) / step) for t in g.times)
            heights = [counts.get(i, 0) for i in range(n)]
            field = f" · {g.field_name}" if g.field_name else ""
            ax.bar(
                lefts,
                heights,
                width=width,
                bottom=below,
                align="edge",
                label=f"{g.type}{field} ({g.count:,}) {g.fingerprint}",
            )
            below = [b + h for b, h in zip(below, heights, strict=True)]
        ax.set_xlim(lefts[0] - width, lefts[-1] + 2 * width)
        ax.set_ylim(0, max(below) * 1.1)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.set_ylabel(f"failures per {step_label(step)}")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("DLQ failures over time, by fingerprint (UTC)")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
