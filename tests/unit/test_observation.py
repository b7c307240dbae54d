"""From Prometheus' answers to typed observations (pure), and what `specdeploy recommend` prints of them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from specdeploy.api import AdaptiveMode, validate_spec
from specdeploy.core.observation import NoData, Observation, assemble, queries
from specdeploy.shell.recommend import as_recommend, line

LABELS = {"namespace": "ns", "deployment": "llm", "specdeploy_k": "3"}


def sample(value: float | str, **extra: str) -> dict[str, Any]:
    """One vector sample as Prometheus' HTTP API returns it."""
    return {"metric": {**LABELS, **extra}, "value": [1_800_000_000.0, str(value)]}


def answers(**override: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every query of one evaluation answered for 2 pods at k=3."""
    raw = {
        "request_rate": [sample(8.0)],
        "failed_rate": [sample(0.5)],
        "running": [sample(12.0)],
        "waiting": [sample(1.5)],
        "generation_tps": [sample(2048.0)],
        "prompt_tps": [sample(4096.0)],
        "drafts": [sample(100.0)],
        "draft_tokens": [sample(300.0)],
        "accepted": [sample(170.0)],
        "per_pos": [sample(75.0, position="0"), sample(55.0, position="1"), sample(40.0, position="2")],
        "itl_sum": [sample(0.9)],
        "itl_count": [sample(100.0)],
        "itl_p50": [sample(0.008)],
        "itl_p95": [sample(0.02)],
        "kv_usage": [sample(0.25)],
        "pods": [sample(2.0)],
    }
    return {**raw, **override}


def test_every_query_is_answered_by_the_fixture() -> None:
    assert set(answers()) == set(queries("30s"))


def test_prometheus_answers_become_one_observation() -> None:
    obs = assemble(answers(), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(obs, Observation)
    assert obs.pods == 2 and obs.k_running == 3
    assert obs.per_position == pytest.approx((0.75, 0.55, 0.40))
    assert obs.acceptance_rate == pytest.approx(170 / 300)
    assert obs.mean_acceptance_length == pytest.approx(1 + 170 / 100)
    assert obs.itl_mean_s == pytest.approx(0.009)
    assert (obs.request_rate, obs.waiting, obs.prompt_tps, obs.failed_rate) == (8.0, 1.5, 4096.0, 0.5)
    only_failures = assemble(answers(request_rate=[]), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(only_failures, Observation) and only_failures.request_rate == 0.0


def test_series_of_other_pods_nan_and_gaps_are_no_data_with_the_reason() -> None:
    old_pods = {
        name: [dict(s, metric={**s["metric"], "specdeploy_k": "5"}) for s in v] for name, v in answers().items()
    }
    missing = assemble(old_pods, [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(missing, NoData) and "series only for k=5: old pods" in missing.reason
    no_rate = assemble(answers(request_rate=[sample("NaN")]), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(no_rate, NoData) and "request rate or batch size missing" in no_rate.reason
    off = answers(drafts=[], draft_tokens=[], accepted=[], per_pos=[])  # speculation off: no spec-decode series
    obs = assemble(off, [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(obs, Observation) and obs.k_running == 0 and obs.acceptance_rate is None


def test_the_token_latency_is_counted_not_derived_from_the_acceptance() -> None:
    """Under a per-batch-size schedule a step drafts the k of its batch size, or none: the window's steps over the
    tokens they yielded, not a step over what a full draft would yield."""
    obs = assemble(answers(), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(obs, Observation) and obs.token_latency_s is not None
    # 100 steps/s of 9 ms yielded 2048 - 8 tokens/s after the requests' first ones
    assert obs.token_latency_s == pytest.approx(0.9 / (2048 - 8))
    undrafted = assemble(answers(generation_tps=[sample(108.0)]), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(undrafted, Observation) and undrafted.token_latency_s == pytest.approx(0.009)
    no_count = assemble(answers(itl_count=[]), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(no_count, NoData) or no_count.token_latency_s is None


SPEC = {
    "target": {"model": "t"},
    "speculator": {"method": "eagle3", "model": "d", "numSpeculativeTokens": 3},
    "replicas": 2,
    "adaptive": {"mode": "Auto"},
}
CR = {"metadata": {"namespace": "ns", "name": "llm"}, "status": {"k": 3, "specK": 3, "rollout": "Complete"}}


def test_recommend_asks_the_policy_in_recommend_mode_and_prints_one_line() -> None:
    spec = validate_spec(SPEC)
    assert as_recommend(spec).adaptive.mode == AdaptiveMode.RECOMMEND and spec.adaptive.mode == AdaptiveMode.AUTO
    now = datetime.fromtimestamp(1_800_000_000, UTC)
    text = line(copy.deepcopy(CR), as_recommend(spec), NoData("Prometheus down"), now)
    assert text == "ns/llm: k=3: keep -> k=3: no decision without fresh metrics: Prometheus down"
    plain = validate_spec({"target": {"model": "t"}})
    assert line(copy.deepcopy(CR), plain, NoData("x"), now) == "ns/llm: k=3: nothing to decide (no speculator)"


def test_draft_counters_tell_which_positions_every_draft_reached() -> None:
    obs = assemble(answers(), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(obs, Observation)
    assert obs.drafted_per_step == pytest.approx(3.0) and obs.positions_measured == 3
    # a schedule's window drafting 3 and 2 alike: the third position was reached by half the drafts
    mixed = assemble(answers(draft_tokens=[sample(250.0)]), [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(mixed, Observation) and mixed.positions_measured == 2


def test_a_window_that_drafted_nothing_keeps_its_positions_and_measures_none() -> None:
    zero = [sample(0.0, position=str(i)) for i in range(3)]
    raw = answers(drafts=[sample(0.0)], draft_tokens=[sample(0.0)], accepted=[sample(0.0)], per_pos=zero)
    obs = assemble(raw, [("ns", "llm", "3")])[("ns", "llm")]
    assert isinstance(obs, Observation)
    assert obs.k_running == 3 and obs.per_position == (0.0, 0.0, 0.0)  # the pods run k=3: a schedule's off band
    assert obs.positions_measured == 0 and obs.drafted_per_step == 0.0
