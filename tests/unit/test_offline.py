"""The offline simulator (`specdeploy simulate`): trace format, the rollout model, the oracle, the scored window."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from specdeploy.core.model import FULL_BATCH_SHARE, Profile, capacity_qps, steady_state
from specdeploy.core.policy import rollout_overload_ms
from specdeploy.offline.oracle import hindsight_schedule, oracle_schedule
from specdeploy.offline.simulate import compare, observe, policy_controller, simulate
from specdeploy.offline.trace import load_trace, parse_trace
from specdeploy.offline.world import run_step

from ..conftest import ROOT

P = list(Profile().acceptance)


CAPPED = {"extraArgs": ["--max-num-seqs", "256"]}  # the batch cap of the shipped traces' deployments


def trace(qps: list[float], **extra: object):  # type: ignore[no-untyped-def]
    """A trace of the default deployment with its batch capped at 256, as the shipped traces are."""
    return parse_trace({"step_seconds": 30, "replicas": 2, "restart_seconds": 60, "points": [
        {"qps": q, "acceptance": P} for q in qps], "deployment": CAPPED, **extra}, "t")  # fmt: skip


def test_trace_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="non-empty `points`"):
        parse_trace({"points": []})
    with pytest.raises(ValueError, match=r"points\[1\]: qps is required"):
        parse_trace({"points": [{"qps": 1}, {"acceptance": P}]})
    with pytest.raises(ValueError, match=r"deployment: unknown keys \['gpus'\]"):
        parse_trace({"points": [{"qps": 1}], "deployment": {"gpus": 1}})
    with pytest.raises(ValueError, match=r"window_noise: 'poisson' is not one of \['arrivals', 'counts'\]"):
        parse_trace({"points": [{"qps": 1}], "window_noise": "poisson"})


@pytest.mark.parametrize("setting", [3, ((1, 3), (20, 1))])
def test_a_windows_batch_step_and_drafts_follow_the_arrivals_it_counted(setting: object) -> None:
    """In a cluster the counters are exact and the arrivals vary: a window that counted more requests ran a larger
    batch at a longer step (Little's law), and a schedule drafted the k of that batch. Each window is then the
    world's steady state at the load it counted (away from capacity its arrivals reach it: below); with
    ``window_noise: counts`` only the counts vary."""
    t = trace([20.0])
    last = run_step(t, t.points[0], setting, 0.0, 0.0, 30.0)
    rng = random.Random(1)
    windows = [observe(t, 0, setting, last, rng) for _ in range(40)]
    assert len({round(w.request_rate, 6) for w in windows}) > 30  # the counts vary
    for w in windows:
        ss = steady_state(t.profile, w.request_rate / 2, setting, P[:3])
        assert w.running / 2 == pytest.approx(ss.batch, rel=1e-6)
        assert w.itl_mean_s * 1000 == pytest.approx(ss.step_ms, rel=0.1)  # the mean ITL's own noise (2%)
        assert w.drafted_per_step == pytest.approx(sum(k * s for k, s in ss.mix))
    counted = replace(t, window_noise="counts")
    assert {observe(counted, 0, setting, last, rng).running for _ in range(5)} == {last.batch * 2}


# A prefill-heavy world (`hack/gen-traces.py --unseen 8 --seed 5`, world 1: an 8B on an A100, 2000-token prompts):
# near capacity its steady-state batch climbs steeply with the load (20 at 94% of k=3's capacity, 49 at 99%).
RAG_A100 = {"t_mem_ms": 11.568, "t_kv_ms_per_ktok": 0.0742, "n_knee": 69, "t_tok_ms": 0.214, "draft_cost": 0.059,
            "prefill_ms_per_ktok": 112.91, "prompt_tokens": 2000, "output_tokens": 200}  # fmt: skip


def test_a_window_near_capacity_runs_the_batch_its_extra_arrivals_reach() -> None:
    """At 94% of k=3's capacity, the steady state of a load a few percent higher runs a batch several times larger.
    A window that counted that much more got only its surplus arrivals into the batch (half of them on average
    over the window): its batch stays within their reach of the true load's, and where the steady state of the
    load it counted is within that reach, the window is that steady state. (Taken whole, the first window of that
    draw from k=3, counting 7% over a load at 94% of capacity, showed the policy k=3 at 5x the batch and 4x the step
    of the load's steady state, and it left k=3, the best setting there, for a restart that cost 18%.)"""
    world = Profile.from_dict(RAG_A100)
    p = P[:3]  # the acceptance the trace's points give
    cap = capacity_qps(world, 3, p)
    t = trace([2 * 0.94 * cap], profile=RAG_A100)
    last = run_step(t, t.points[0], 3, 0.0, 0.0, 30.0)
    rng = random.Random(2)
    beyond = 0
    for w in (observe(t, 0, 3, last, rng) for _ in range(60)):
        counted = w.request_rate / 2
        reach = abs(counted - last.served_qps / 2) * t.step_seconds / 2
        assert abs(w.running / 2 - last.batch) <= reach + 1e-6
        whole = steady_state(world, min(counted, cap * FULL_BATCH_SHARE), 3, p)
        if abs(whole.batch - last.batch) > reach:
            beyond += 1
        else:
            assert w.running / 2 == pytest.approx(whole.batch, rel=1e-6)
    assert beyond > 10


def test_the_prior_is_what_the_deployment_says_never_the_world() -> None:
    t = trace([1.0], profile={"max_num_seqs": 64, "t_mem_ms": 58.0},
              deployment={"gpu": "L4", "extraArgs": ["--max-num-seqs", "64"]})  # fmt: skip
    assert t.prior.max_num_seqs == 64  # what the spec runs vLLM with
    assert t.prior.t_mem_ms != t.profile.t_mem_ms  # estimated from the GPU, not taken from the world
    # the world runs the batch cap vLLM gives the spec unless it says otherwise: the GPU's default here
    assert trace([1.0], deployment={}).prior.max_num_seqs == trace([1.0], deployment={}).profile.max_num_seqs == 1024
    assert trace([1.0], deployment={"gpu": "L4"}).profile.max_num_seqs == 256


def test_a_rollout_away_from_a_saturated_setting_still_queues() -> None:
    """Pods are replaced wave by wave: until the rollout is over, mostly the saturated old setting serves."""
    t = trace([2 * 24.0])
    cap3 = capacity_qps(Profile(), 3, P[:3])
    assert cap3 < 24 < capacity_qps(Profile(), 0, [])
    during = run_step(t, t.points[0], 0, 0.0, 30.0, 30.0, k_from=3)
    after = run_step(t, t.points[0], 0, 0.0, 0.0, 30.0, k_from=3)
    assert during.backlog > 0 and after.backlog == 0


def test_the_oracles_own_schedule_beats_every_static_setting() -> None:
    """Scored by itself (compare() also takes the best static when it is better; here it must not need to)."""
    t = trace([4.0] * 20 + [44.0] * 20 + [4.0] * 20)
    schedule = oracle_schedule(t)
    oracle = simulate(t, lambda i, *_: schedule[i])["mean_token_latency_ms"]
    static = [simulate(t, lambda *_, k=k: k)["mean_token_latency_ms"] for k in t.candidates]
    assert oracle < min(static)
    res = compare(t, schedule)
    assert set(res) == {"trace", "start_k", "policy", "always_off", "static", "best_static", "hold", "best_schedule",
                        "oracle"}  # fmt: skip
    assert res["hold"] == res["static"][str(t.start_k)]
    assert res["oracle"]["mean_token_latency_ms"] == pytest.approx(oracle)
    assert res["best_static"]["mean_token_latency_ms"] == min(static[1:])


def test_score_from_counts_only_the_later_steps() -> None:
    t = trace([30.0] * 10 + [4.0] * 30)
    whole, later = simulate(t, lambda *_: 3), simulate(t, lambda *_: 3, score_from=10)
    steady = simulate(trace([4.0] * 30), lambda *_: 3)
    assert later["mean_token_latency_ms"] < whole["mean_token_latency_ms"]
    assert later["goodput"] == pytest.approx(steady["goodput"])


def test_the_policy_leaves_a_saturated_setting_at_its_first_evaluation() -> None:
    t = trace([2 * 25.0] * 10)
    choose, ks = policy_controller(t), []
    simulate(t, lambda i, last, now: ks.append(choose(i, last, now)) or ks[-1])
    assert ks[0] == 3 and ks[1] != 3 and len(set(ks[1:])) == 1


def test_oracle_counts_what_a_slowly_draining_queue_still_costs() -> None:
    """At 25 req/s per replica k=3 saturates and k=1 serves with little spare: the best schedule leaves k=3 for
    the setting with the most capacity, and takes k=1 once that has drained the queue. Ranked by cost so far
    (or by a queue drained at the highest capacity), deferring k=1 looked free at every step, and the oracle
    stayed off: worse than a schedule anyone could write down. (Static settings only: no per-batch-size k.)"""
    t = trace([2 * 25.0] * 120, schedules=False)
    schedule = oracle_schedule(t)
    oracle = simulate(t, lambda i, *_: schedule[i])["mean_token_latency_ms"]
    off_then_k1 = simulate(t, lambda i, *_: 0 if i < 20 else 1)["mean_token_latency_ms"]
    assert schedule[0] == 0 and schedule[-1] == 1
    assert oracle <= off_then_k1 < simulate(t, lambda *_: 0)["mean_token_latency_ms"]


@pytest.mark.parametrize(("qps", "k_from", "k_to"), [(24.0, 3, 0), (22.0, 3, 2)])
def test_the_policy_prices_a_rollouts_queue_as_the_simulator_counts_it(qps: float, k_from: int, k_to: int) -> None:
    """Leaving a saturated setting queues while the rollout runs; the policy's estimate of what that costs is the
    one the simulator scores (a queue's wait is a triangle over time, not its peak held until drained)."""
    t = parse_trace({"step_seconds": 30, "replicas": 2, "restart_seconds": 120, "start_k": k_from,
                     "points": [{"qps": 2 * qps, "acceptance": P}] * 80, "deployment": CAPPED}, "t")  # fmt: skip
    tokens = 2 * qps * Profile().output_tokens * 80 * 30
    steady = steady_state(Profile(), qps, k_to, P[:k_to]).token_latency_ms
    simulated = (simulate(t, lambda *_: k_to)["mean_token_latency_ms"] - steady) * tokens
    predicted = 2 * rollout_overload_ms(Profile(), t.rollout, qps, P, k_from, k_to)
    assert predicted == pytest.approx(simulated, rel=0.1)


def test_a_per_batch_size_schedule_meets_bursts_without_a_restart() -> None:
    """Low load with bursts a high k cannot serve: a schedule (a high k at small batches, less at large ones) is
    fast between bursts and serves the bursts, where every single k is either slow or queues."""
    t = trace(([4.0] * 20 + [44.0] * 10) * 4)
    schedule = hindsight_schedule(t)
    assert len(schedule) > 1 and schedule[0][0] == 1 and schedule[0][1] > schedule[-1][1]  # k falls with the batch
    with_schedule = simulate(t, lambda *_: schedule)
    static = [simulate(t, lambda *_, k=k: k)["mean_token_latency_ms"] for k in t.candidates]
    assert with_schedule["mean_token_latency_ms"] < min(static)
    assert with_schedule["restarts"] == 1  # the one change from the starting k=3


# An MoE with cheap compute (seed 20261206's world 0 of the draws), from k=3 through the first half of a diurnal day.
STRONG_DRAFTER_WORLD = {
    "t_mem_ms": 17.75,
    "t_kv_ms_per_ktok": 0.1287,
    "n_knee": 2723,
    "t_tok_ms": 0.0624,
    "draft_cost": 0.065,
    "prefill_ms_per_ktok": 10.39,
    "prompt_tokens": 200,
    "output_tokens": 500,
}


@pytest.mark.parametrize(("acceptance", "bound"), [
    ([0.784, 0.665, 0.564, 0.478, 0.405, 0.344, 0.292, 0.247], 0.95),  # as k=3 measures it, and on
    ([0.784, 0.665, 0.564, 0.1, 0.05, 0.03, 0.02, 0.01], 1.02),  # a drafter trained for 3 tokens: the probe disappoints
])  # fmt: skip
def test_a_probe_past_the_k_running_pays_where_the_drafter_holds_up_and_costs_little_where_it_does_not(
    acceptance: list[float], bound: float
) -> None:
    """From k=3 the positions past 3 are planned discounted, so no change by choice drafts more; a probe drafting
    the most allowed at the batches running measures them. Where the acceptance holds up, the run is more than 5%
    faster than holding k=3 (it held, before the probe); where it collapses past position 3, the probe is made and
    costs under 2%: it drafts deeper only up to the batch running, and runs k=3 past it."""
    t = parse_trace({"step_seconds": 30, "replicas": 2, "restart_seconds": 120,
                     "profile": {**STRONG_DRAFTER_WORLD, "acceptance": acceptance},
                     "deployment": {"model": "Qwen/Qwen3-30B-A3B", **CAPPED},
                     "points": [{"qps": 2 * 11.94 * (0.55 - 0.45 * math.cos(math.pi * i / 240))} for i in range(240)]},
                    "strong_drafter")  # fmt: skip
    policy, hold = simulate(t, policy_controller(t)), simulate(t, lambda *_: 3)
    assert policy["restarts"] >= 1
    assert policy["mean_token_latency_ms"] <= bound * hold["mean_token_latency_ms"]


def test_a_held_oracle_keeps_the_starting_setting_and_cannot_do_better() -> None:
    t = trace([4.0] * 10 + [44.0] * 10 + [4.0] * 10)
    free, held = oracle_schedule(t), oracle_schedule(t, hold=11)
    assert held[:11] == [t.start_k] * 11
    latency = [simulate(t, lambda i, *_, s=s: s[i])["mean_token_latency_ms"] for s in (free, held)]
    assert latency[0] <= latency[1]


def test_the_shipped_traces_are_what_gen_traces_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "hack" / "gen-traces.py"), str(tmp_path)], check=True)
    shipped = ROOT / "operator" / "specdeploy" / "offline" / "traces"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in shipped.glob("*.yaml"))
    for written in tmp_path.iterdir():
        assert written.read_text() == (shipped / written.name).read_text(), (
            f"stale: run hack/gen-traces.py ({written.name})"
        )


def test_unseen_worlds_are_drawn_anew_per_seed_and_off_serves_their_peak(tmp_path: Path) -> None:
    """`gen-traces.py --unseen`: worlds none of the shipped ones, each a deployment the prior knows with costs away
    from that prior, a load that speculation off serves; another seed draws other worlds."""
    gen = [sys.executable, str(ROOT / "hack" / "gen-traces.py")]
    for seed in (1, 2):
        subprocess.run([*gen, str(tmp_path / str(seed)), "--unseen", "3", "--seed", str(seed)], check=True)
    drawn = {seed: sorted((tmp_path / str(seed)).iterdir()) for seed in (1, 2)}
    assert [len(d) for d in drawn.values()] == [3, 3]
    worlds = [load_trace(p) for d in drawn.values() for p in d]
    assert len({w.profile for w in worlds}) == 6
    for w in worlds:
        assert w.profile != w.prior
        off = capacity_qps(w.profile, 0, [])
        assert max(pt.qps for pt in w.points) / w.rollout.replicas <= off
