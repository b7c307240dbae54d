"""The Grafana dashboard is generated, and every query it runs reads a family vLLM 0.33 or the operator exports
(the e2e test runs each against the real Prometheus and requires data)."""

from __future__ import annotations

import json
import re
import sys

from prometheus_client import REGISTRY

from specdeploy.shell import telemetry  # noqa: F401 - registers the operator's metrics

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import dashboard

SUFFIXES = ("", "_total", "_count", "_sum", "_bucket")


def queries(board: dict) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its annotations."""
    panels = [t["expr"] for p in board["panels"] for t in p["targets"]]
    return panels + [a["expr"] for a in board["annotations"]["list"] if "expr" in a]


def test_the_dashboard_is_what_its_source_gives() -> None:
    assert (ROOT / "manifests/monitoring/dashboard.json").read_text() == dashboard.text(), "run hack/dashboard.py"


def test_every_query_reads_a_family_vllm_or_the_operator_exports() -> None:
    vllm = json.loads((ROOT / "tests/fixtures/vllm_metrics.json").read_text())["metrics"]
    known = {name + s for name in vllm for s in SUFFIXES} | {f.name + s for f in REGISTRY.collect() for s in SUFFIXES}
    board = json.loads((ROOT / "manifests/monitoring/dashboard.json").read_text())
    read = {m for q in queries(board) for m in re.findall(r"\b(?:vllm:[a-z_:]+|specdeploy_[a-z_]+)", q)}
    assert read and read <= known, read - known
    assert len(board["panels"]) == len(dashboard.PANELS) and all(p["targets"] for p in board["panels"])
