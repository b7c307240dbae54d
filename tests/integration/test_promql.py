"""The operator's PromQL evaluated by Prometheus' own engine (promtool's unit tests) on series as vLLM exports them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from specdeploy.core.observation import queries

pytestmark = pytest.mark.prometheus
POD = 'namespace="ns",deployment="d",specdeploy_k="3",pod="p"'


def test_request_rate_counts_served_requests_and_failures_apart(tmp_path: Path) -> None:
    """Per 15 s scrape: 15 stopped, 3 at their length (served: 1.2/s), 3 aborted and 0.75 failed (0.25/s)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus (hack/setup.sh installs it)"
    counts = {"stop": 15, "length": 3, "abort": 3, "error": 0.75}
    series = [
        {"series": f'vllm:request_success_total{{{POD},finished_reason="{reason}"}}', "values": f"0+{n}x40"}
        for reason, n in counts.items()
    ]
    q = queries("60s")
    group = '{namespace="ns",deployment="d",specdeploy_k="3"}'
    test = {
        "rule_files": [],
        "tests": [{
            "interval": "15s",
            "input_series": series,
            "promql_expr_test": [
                {"expr": q["request_rate"], "eval_time": "5m", "exp_samples": [{"labels": group, "value": 1.2}]},
                {"expr": q["failed_rate"], "eval_time": "5m", "exp_samples": [{"labels": group, "value": 0.25}]},
            ],
        }],
    }  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    out = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
