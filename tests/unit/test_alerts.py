"""The alert rules pass promtool's own tests, and ask only for metrics the operator exports."""

from __future__ import annotations

import re
import subprocess

import yaml
from prometheus_client import REGISTRY

from specdeploy.shell import telemetry  # noqa: F401 - registers the operator's metrics

from ..conftest import ROOT

RULES = ROOT / "manifests/monitoring/rules/specdeploy.rules.yaml"


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(ROOT / "tests/fixtures/alerts_test.yaml")]):
        out = subprocess.run(["promtool", *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_an_alert_reads_is_one_the_operator_exports() -> None:
    families = list(REGISTRY.collect())
    exported = {f.name + suffix for f in families for suffix in ("", "_total", "_count", "_sum", "_bucket")}
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    read = {name for r in rules for name in re.findall(r"\bspecdeploy_[a-z_]+", r["expr"])}
    assert read and read <= exported, read - exported
