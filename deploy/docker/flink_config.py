"""Writes the Flink configuration of a container: conf/flink with its placeholders filled in
for the image, FLINK_PROPERTIES ("key: value" lines, as in Flink's own images) laid over
config.yaml, and the console logging of a process in the foreground.

    python flink_config.py SOURCE_DIR TARGET_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

PLACES = {
    "@ROOT@": "/opt/marketlag",
    "@VAR@": "/opt/marketlag/var/flink",
    "@PYTHON@": "/opt/venv/bin/python",
    "@RPC_PORT@": os.environ.get("FLINK_RPC_PORT", "6123"),
    "@REST_PORT@": os.environ.get("FLINK_REST_PORT", "8081"),
}


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out |= flat(value, f"{name}.") if isinstance(value, dict) else {name: value}
    return out


def main(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        text = path.read_text()
        for place, value in PLACES.items():
            text = text.replace(place, value)
        (target / path.name).write_text(text)
    config = flat(yaml.safe_load((target / "config.yaml").read_text()))
    for line in os.environ.get("FLINK_PROPERTIES", "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and not key.lstrip().startswith("#"):
            config[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
