"""The Prometheus alert rules load in Prometheus's own checker and fire as intended."""

from __future__ import annotations

import subprocess

from tests.kafka_helpers import ROOT

PROMTOOL = ROOT / "build" / "tools" / "promtool"
ALERTS = ROOT / "conf" / "alerts"


def test_rules_pass_promtool_check() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(ALERTS / "dlq.rules.yml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 6 rules found" in proc.stdout


def test_alerts_fire_on_size_and_sustained_growth_only() -> None:
    proc = subprocess.run(
        [str(PROMTOOL), "test", "rules", "dlq.rules.test.yml"],
        cwd=ALERTS,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
