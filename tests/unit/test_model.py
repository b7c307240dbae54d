"""The performance model's per-batch-size schedule (pure)."""

from __future__ import annotations

import pytest

from specdeploy.core.model import DEFAULT_ACCEPTANCE, Profile, best_schedule, capacity_qps, steady_state, step_time_ms

P = list(DEFAULT_ACCEPTANCE)
KS = range(0, 9)
# Three shapes: the default (8B/H100), a cheap step with a steep compute slope (MoE-like), a slow memory-bound one.
PROFILES = [Profile(), Profile(t_mem_ms=4.5, n_knee=48, t_tok_ms=0.33, draft_cost=0.12),
            Profile(t_mem_ms=25.0, n_knee=512, t_tok_ms=0.05, max_num_seqs=64)]  # fmt: skip


@pytest.mark.parametrize("prof", PROFILES)
def test_the_schedule_is_no_slower_than_any_single_k_at_any_load(prof: Profile) -> None:
    schedule = best_schedule(prof, P, KS)
    cap = capacity_qps(prof, schedule, P)
    assert len(schedule) > 1
    for i in range(1, 40):
        qps = cap * i / 40 * 0.999
        static = [steady_state(prof, qps, k, P[:k]).token_latency_ms for k in KS if capacity_qps(prof, k, P[:k]) > qps]
        # (3%: the model runs the band of the mean batch, vLLM that of each step's batch)
        assert steady_state(prof, qps, schedule, P).token_latency_ms <= min(static) * 1.03, (qps, schedule)


@pytest.mark.parametrize("prof", PROFILES)
def test_a_load_balances_at_one_batch_only(prof: Profile) -> None:
    """Completions rise with the batch across every band edge, so no load meets them on both sides of one (a
    burst would leave such a schedule at the slower balance, past the edge)."""
    schedule = best_schedule(prof, P, KS)

    def tokens_per_s(b: int) -> float:
        k = next(k for first, k in reversed(schedule) if b >= first)
        return b * (1 + sum(P[:k])) / step_time_ms(prof, b, k)

    for first, _ in schedule[1:]:
        # (the model's throughput itself flattens, and falls by a few parts in a million, at full compute)
        assert tokens_per_s(first) >= tokens_per_s(first - 1) * (1 - 1e-4), (first, schedule)
