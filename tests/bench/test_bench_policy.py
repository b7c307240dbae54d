"""Every shipped trace from every starting setting, as `hack/bench_policy.py` runs them (about 5 minutes on 2
cores): the adaptive-policy criteria the policy meets everywhere (never worse than holding the start, never less
goodput than always-off) must keep holding; the ones it does not yet meet everywhere (README, "Benchmarks") are a
ratchet: the mean score and the runs beyond 1.05x of the best fixed setting may not get worse."""

from __future__ import annotations

import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import bench_policy

MEAN_SCORE_FLOOR = 0.979  # oracle / policy latency over all 44 runs today: 0.9802 with windows noisy as a cluster
# makes them (0.9800 before the simulator found a noisy window's load with the model's root finder, 0.9785 before
# the drafter's cost waited for windows at a second k, 0.9648 before an MoE whose steps cost under half its prior's
# hedged until its compute was measured, 0.9639 before a first burst was expected to last as long again as it has
# run, 0.9610 before a burst was priced until it ends and headroom short of capacity, 0.9569 before prefill's feature
# came from Little's law, 0.9472 before each prior cost's pull became a factor either way; 0.9765 with the batch and
# step of the true load and the linear pull: README, "Window noise as a cluster makes it")
WITHIN_BEST_FAILURES = 5  # runs beyond 1.05x of the best fixed setting in hindsight today (6 before a first burst
# was expected to last as long again as it has run, 8 before a burst was priced until it ends and headroom short of
# capacity, 9 before Little's law's prefill, 10 before the log-normal pull; 6 with the batch and step of the true
# load)


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    jobs = [(str(p), k, None) for p in sorted(bench_policy.TRACES.glob("*.yaml")) for k in bench_policy.starts(
        bench_policy.load_trace(p))]  # fmt: skip
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(bench_policy.run, jobs))


def test_every_trace_runs_from_off_k1_the_users_k_and_the_largest(results: list[dict[str, Any]]) -> None:
    assert len(results) == 44
    assert {r["start_k"] for r in results} == {0, 1, 3, 8}


def test_the_policy_never_serves_less_than_always_off(results: list[dict[str, Any]]) -> None:
    failing = dict(bench_policy.criteria(results))
    assert failing["never less goodput than always-off"] == []


def test_no_run_gets_worse_than_holding_its_start(results: list[dict[str, Any]]) -> None:
    worse = next(failed for text, failed in bench_policy.criteria(results) if text.startswith("never worse"))
    assert worse == []


def test_the_scores_do_not_fall(results: list[dict[str, Any]]) -> None:
    scores = [bench_policy.ms(r, "oracle") / bench_policy.ms(r, "policy") for r in results]
    assert statistics.mean(scores) >= MEAN_SCORE_FLOOR
    beyond = [r for r in results if bench_policy.beyond_best(r)]
    assert len(beyond) <= WITHIN_BEST_FAILURES
