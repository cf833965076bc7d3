"""The job's settings on Amazon Managed Service for Apache Flink: the application's runtime
properties.

The service writes an application's property groups to ``/etc/flink/application_properties.json``
(a list of ``{"PropertyGroupId": ..., "PropertyMap": {...}}``); a job that finds the file runs
"managed". Two groups are read, everything else is left to its owner:

- ``marketlag.job``: settings of ``conf/job.yaml`` by their dotted path (``topics.rss.input``,
  ``kafka.transactional_id_prefix``, ``retry.max_attempts``), laid over the packaged
  ``conf/job.yaml``. Values are strings (the service has no other type) read as YAML scalars:
  ``3`` is a number, ``true`` a boolean, ``[a, b]`` a list.
- ``marketlag.kafka``: the connection variables of SPEC section 6 (``KAFKA_BOOTSTRAP_SERVERS``,
  ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME``,
  ``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_CA_LOCATION``), taken as the job's environment.

``MARKETLAG_APPLICATION_PROPERTIES`` names another file (to run the packaged application on a
cluster of one's own the way the service runs it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from settings.config import ConfigError

PROPERTIES_FILE = Path("/etc/flink/application_properties.json")
JOB_GROUP = "marketlag.job"
KAFKA_GROUP = "marketlag.kafka"
KAFKA_VARIABLES = frozenset(
    {
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_MECHANISM",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_CA_LOCATION",
    }
)


@dataclass(frozen=True)
class ApplicationProperties:
    """What the two groups say: settings by dotted path, and connection variables."""

    settings: dict[str, Any]
    environ: dict[str, str]


def properties_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("MARKETLAG_APPLICATION_PROPERTIES") or PROPERTIES_FILE)


def read_application_properties(environ: Mapping[str, str]) -> ApplicationProperties | None:
    """The application's properties, or None when the job does not run managed (no file)."""
    path = properties_file(environ)
    if not path.is_file():
        return None
    try:
        groups = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the application properties {path}: {e}") from e
    if not isinstance(groups, list):
        raise ConfigError(f"{path}: expected a list of property groups")
    found: dict[str, dict[str, str]] = {}
    for group in groups:
        if not isinstance(group, Mapping) or not isinstance(group.get("PropertyMap"), Mapping):
            raise ConfigError(f"{path}: a property group without PropertyGroupId and PropertyMap")
        found[str(group.get("PropertyGroupId"))] = {
            str(k): str(v) for k, v in group["PropertyMap"].items()
        }
    unknown = sorted(set(found.get(KAFKA_GROUP, {})) - KAFKA_VARIABLES)
    if unknown:
        raise ConfigError(
            f"property group {KAFKA_GROUP} takes {', '.join(sorted(KAFKA_VARIABLES))}; "
            f"unknown: {', '.join(unknown)}"
        )
    settings = {key: _scalar(key, text) for key, text in found.get(JOB_GROUP, {}).items()}
    return ApplicationProperties(settings, dict(found.get(KAFKA_GROUP, {})))


def _scalar(key: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"property {JOB_GROUP} {key}: not a value: {e}") from e
