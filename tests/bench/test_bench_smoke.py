"""Smoke runs of the benchmarks (the full runs are hack/bench_*.py; their figures are in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from specdeploy.core.observation import Observation, queries
from specdeploy.shell.prometheus import Reader

from ..conftest import ROOT
from ..integration.conftest import wait_for

sys.path.insert(0, str(ROOT / "hack"))
import bench_metrics
from prometheus import Prometheus


def observed(reader: Reader, wanted: list[tuple[str, str, str]]) -> bool:
    """Every wanted deployment has an observation of pods running k=3."""
    result = reader.read(wanted, window_seconds=10).values()
    return all(isinstance(o, Observation) and o.k_running == 3 for o in result)


@pytest.mark.prometheus
def test_queries_per_evaluation_do_not_grow_with_resources() -> None:
    counts = {}
    for n in (1, 30):
        srv, port = bench_metrics.serve([f"d{d}" for d in range(n)])
        prom = Prometheus(Path(tempfile.mkdtemp(prefix="specdeploy-smoke-"))).start()
        try:
            prom.targets_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {}}]))
            wanted = [("bench", f"d{d}", "3") for d in range(n)]
            url = prom.url
            wait_for(lambda: observed(Reader(url), wanted), timeout=60, interval=1, what=f"{n} deployments observed")  # noqa: B023
            reader = Reader(prom.url)
            assert observed(reader, wanted)
            counts[n] = reader.queries_sent
        finally:
            prom.stop()
            srv.shutdown()
    assert counts[1] == counts[30] == len(queries("10s"))  # one batch, whatever the number of resources


def test_simulate_json_has_every_controller() -> None:
    trace = ROOT / "operator/specdeploy/offline/traces/steady_low.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "simulate", "--trace", str(trace), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    res = json.loads(out.stdout)
    keys = {"mean_token_latency_ms", "goodput", "slo_attained", "restarts"}
    for name in ("policy", "always_off", "best_static", "hold", "best_schedule", "oracle"):
        assert keys <= set(res[name]), name
    assert set(res["static"]) == {str(k) for k in range(1, 9)}
    assert res["hold"] == res["static"][str(res["start_k"])]
    assert res["policy"]["mean_token_latency_ms"] < res["always_off"]["mean_token_latency_ms"]
    assert res["policy"]["goodput"] >= res["always_off"]["goodput"]


def test_simulate_reports_bad_traces_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("points: [{acceptance: [0.5]}]\n")
    out = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "simulate", "--trace", str(bad)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "points[0]: qps is required" in out.stderr and "Traceback" not in out.stderr


def test_simulate_plot_draws_each_controller_over_the_trace(tmp_path: Path) -> None:
    """One run of the CLI writes the picture; the runs it draws are the controllers the table scores."""
    from specdeploy.offline.plot import runs
    from specdeploy.offline.simulate import compare
    from specdeploy.offline.trace import load_trace

    path = ROOT / "operator/specdeploy/offline/traces/steady_low.yaml"
    for name in ("p.png", "p.html"):
        out = subprocess.run(
            [sys.executable, "-m", "specdeploy.cli", "simulate", "--trace", str(path), "--plot", str(tmp_path / name)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert "steady_low" in out.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "p.html").read_text()
    bad = subprocess.run([sys.executable, "-m", "specdeploy.cli", "simulate", "--plot", "p.txt"], capture_output=True,
                         text=True)  # fmt: skip
    assert bad.returncode == 2 and "--plot p.txt" in bad.stderr
    trace = load_trace(path)
    result = compare(trace)
    drawn = runs(trace, result)
    assert [n.split(":")[0] for n in drawn][::3] == ["policy", "oracle"] and len(drawn) == 4
    assert all(len(m) == len(trace.points) for m in drawn.values())
    # every run starts where the deployment runs
    policy = next(m for n, m in drawn.items() if n.startswith("policy"))
    assert policy[0].setting == trace.start_k


@pytest.mark.cluster
@pytest.mark.prometheus
def test_soak_smoke_every_resource_is_evaluated_every_interval(cluster: Any, tmp_path: Path) -> None:
    """A short hack/soak.py (100 resources, 3 minutes of 20 s intervals): every resource evaluated at every
    interval, no evaluation failed, and the throughput ratios measured (the 1000-resource figures: README)."""
    out = tmp_path / "soak.json"
    subprocess.run([sys.executable, str(ROOT / "hack/soak.py"), "--resources", "100", "--minutes", "3",
                    "--interval", "20", "--json", str(out)], check=True, timeout=900)  # fmt: skip
    s = json.loads(out.read_text())
    assert s["evaluations_missed"] == 0 and s["evaluations_error"] == 0, s
    evaluated = s["evaluations_observed"] + s["evaluations_no_data"]  # (the first windows are not yet full)
    assert evaluated >= 100 * 3 * 60 / 20 * 0.8 and s["evaluations_observed"] > 0, s  # one per resource and interval
    assert s["resync_throughput_ratio"] > 0 and s["evaluation_throughput_ratio"] > 0, s
