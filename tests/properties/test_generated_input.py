"""Generated input (hypothesis): whatever Prometheus answers, the metrics reader gives an observation or says why
not, and never raises; whatever sequence of observations the policy sees, it keeps its restart budget and its
cooldown."""

from __future__ import annotations

import math
import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from specdeploy.api import Adaptive
from specdeploy.core.model import top_k
from specdeploy.core.observation import NoData, Observation, assemble, queries
from specdeploy.core.policy import HOUR_S, PolicyState, Rollout, decide, rollout_seconds
from specdeploy.core.prior import prior_profile

WANTED = [("ns", "llm", "3"), ("ns", "other", "0")]
QUERY_NAMES = list(queries("60s"))

label_values = st.sampled_from(["ns", "llm", "other", "3", "0", "", "x"])
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**9).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e309", "abc", "", "0.5"]),
)
sample = st.fixed_dictionaries(
    {},
    optional={
        "metric": st.dictionaries(
            st.sampled_from(["namespace", "deployment", "specdeploy_k", "position", "le"]),
            st.one_of(label_values, st.sampled_from(["-1", "7", "two", "1.5"])),
        ),
        "value": st.one_of(st.tuples(st.floats(0, 2e9), numbers).map(list), st.just([]), st.just("garbage")),
    },
)
answers = st.dictionaries(st.sampled_from(QUERY_NAMES), st.lists(sample, max_size=6))


@settings(max_examples=300, deadline=None, database=None, derandomize="SPECDEPLOY_EXPLORE" not in os.environ)
@given(answers)
def test_any_prometheus_answer_gives_an_observation_or_a_reason(raw: dict[str, list[dict[str, Any]]]) -> None:
    out = assemble(raw, WANTED)
    assert set(out) == {(ns, dep) for ns, dep, _ in WANTED}
    for obs in out.values():
        if isinstance(obs, NoData):
            assert obs.reason
            continue
        numbers = [obs.request_rate, obs.running, obs.waiting, obs.generation_tps, obs.prompt_tps, *obs.per_position]
        assert all(math.isfinite(x) and x >= 0 for x in numbers), obs
        assert obs.pods >= 1
        if obs.itl_mean_s is not None:
            assert math.isfinite(obs.itl_mean_s) and obs.itl_mean_s >= 0


SETTINGS = Adaptive(mode="Auto", evaluation_interval_seconds=60, min_dwell_seconds=900, cooldown_seconds=600,
                    max_restarts_per_hour=2, min_tokens=1, max_tokens=6)  # fmt: skip
ROLLOUT = Rollout(replicas=2, max_surge=1, max_unavailable=0, restart_seconds=120)
PRIOR = prior_profile("meta-llama/Llama-3.1-8B-Instruct", 1, "H100")

window = st.fixed_dictionaries({
    "gap": st.integers(1, 6),  # evaluation intervals since the last one
    "qps": st.floats(0, 80),
    "waiting": st.floats(0, 300),
    "accept": st.lists(st.floats(0, 1), min_size=8, max_size=8),
    "itl_ms": st.one_of(st.none(), st.floats(1, 400)),
})  # fmt: skip


@settings(max_examples=60, deadline=None, database=None, derandomize="SPECDEPLOY_EXPLORE" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(st.lists(window, min_size=10, max_size=30), st.booleans())
def test_any_observation_sequence_keeps_the_budget_and_the_cooldown(windows: list[dict[str, Any]], sched: bool) -> None:
    state, k, now, changed_at, changes = PolicyState(), 3, 0.0, -math.inf, []
    for w in windows:
        now += w["gap"] * SETTINGS.evaluation_interval_seconds
        n = top_k(k)
        obs = Observation(
            namespace="ns", deployment="llm", k_label=str(n), pods=2, request_rate=2 * w["qps"],
            running=min(2 * w["qps"] * 2, 512), waiting=w["waiting"], generation_tps=2 * w["qps"] * 200,
            per_position=tuple(w["accept"][:n]), itl_mean_s=w["itl_ms"] / 1000 if w["itl_ms"] else None,
        )  # fmt: skip
        d = decide(obs, state, SETTINGS, ROLLOUT, PRIOR, k, now,
                   rollout_complete=now - changed_at >= rollout_seconds(ROLLOUT), schedules=sched)  # fmt: skip
        state = d.state
        if d.changes_k and d.to_k is not None and d.to_k != k:
            assert not changes or now - changes[-1] >= SETTINGS.cooldown_seconds, (changes, now, d.reason)
            changes.append(now)
            in_hour = [t for t in changes if now - t < HOUR_S]
            assert len(in_hour) <= SETTINGS.max_restarts_per_hour, (changes, d.reason)
            k, changed_at = d.to_k, now
    event(f"{len(changes)} changes")  # (pytest --hypothesis-show-statistics: the sequences do make changes)
