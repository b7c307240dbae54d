"""The performance model's per-batch-size schedule (pure)."""

from __future__ import annotations

import pytest

from specdeploy.core.model import (
    DEFAULT_ACCEPTANCE,
    Profile,
    accepted_per_draft,
    best_schedule,
    capacity_qps,
    steady_state,
    step_time_ms,
    tokens_per_step,
)

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


# A 70B on 4 GPUs (the llama70b_tp4_ramp world) and a schedule whose edge to off sits past the batch off balances at:
# below the edge k=1 cannot carry 9.3 req/s, from the edge on off carries more.
TP4_70B = Profile(t_mem_ms=16.0, t_kv_ms_per_ktok=0.035, n_knee=320, t_tok_ms=0.26, draft_cost=0.05,
                  prefill_ms_per_ktok=50, output_tokens=300, prompt_tokens=800,
                  acceptance=(0.78, 0.6, 0.46, 0.35, 0.26, 0.19, 0.14, 0.1))  # fmt: skip
LATE_EDGE = ((1, 5), (10, 4), (20, 3), (35, 2), (67, 1), (176, 0))


def test_a_schedule_pinned_at_a_band_edge_alternates_the_two_bands_k_so_the_load_balances() -> None:
    p, qps = list(TP4_70B.acceptance), 9.3
    ss = steady_state(TP4_70B, qps, LATE_EDGE, p)
    assert ss.batch == 176 and not ss.saturated
    (k_lo, f), (k_hi, rest) = ss.mix
    assert (k_lo, k_hi) == (1, 0) and 0 < f < 1 and f + rest == pytest.approx(1)
    # the mean step yields exactly the tokens the load needs at that batch (Little's law)
    needed = qps * TP4_70B.output_tokens * ss.step_ms / ss.tokens_per_step / 1000
    assert needed == pytest.approx(ss.batch, rel=1e-6)
    assert ss.tokens_per_step == pytest.approx(f * tokens_per_step(p, 1) + rest * tokens_per_step(p, 0))
    off = steady_state(TP4_70B, qps, 0, [])
    assert off.batch < 176 and off.token_latency_ms < ss.token_latency_ms  # the edge off past its balance costs


def test_a_proper_balance_drafts_one_k() -> None:
    ss = steady_state(TP4_70B, 2.0, LATE_EDGE, list(TP4_70B.acceptance))
    assert len(ss.mix) == 1 and ss.mix[0][1] == 1.0


def test_per_position_reads_as_vllm_counts_them_over_every_draft() -> None:
    p = [0.8, 0.6, 0.45, 0.3, 0.2]
    assert accepted_per_draft(((5, 1.0),), p) == pytest.approx(p)
    # half the drafts of 5, half of 4: the fifth position was reached by half of them
    assert accepted_per_draft(((5, 0.5), (4, 0.5)), p) == pytest.approx([*p[:4], 0.5 * p[4]])
    # a share of steps drafting nothing makes no draft: it changes no position's reading
    assert accepted_per_draft(((1, 0.25), (0, 0.75)), p) == pytest.approx(p[:1])
    assert accepted_per_draft(((0, 1.0),), p) == []
