"""The Flink SQL files in ``sql/``, rendered for this configuration.

``${bootstrap_servers}``, ``${topics.<feed>.<role>}`` and ``${topics.parking}`` are filled in
from the job configuration, so the SQL client sees the same topics as the job.
"""

from __future__ import annotations

import re
from pathlib import Path

from settings.config import ROOT, JobConfig

SQL_DIR = ROOT / "sql"
_PLACEHOLDER = re.compile(r"\$\{([a-z_.]+)\}")


def values(config: JobConfig) -> dict[str, str]:
    out = {
        "bootstrap_servers": config.kafka.bootstrap_servers,
        "topics.parking": config.parking_topic,
    }
    for feed, topics in config.feeds.items():
        for role in ("input", "clean", "dlq"):
            out[f"topics.{feed}.{role}"] = getattr(topics, role)
    return out


def render(path: Path, config: JobConfig) -> str:
    """The file's SQL with every placeholder filled; an unknown placeholder is an error."""
    known = values(config)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in known:
            raise KeyError(f"{path.name}: unknown placeholder ${{{name}}}")
        return known[name]

    return _PLACEHOLDER.sub(fill, path.read_text(encoding="utf-8"))
