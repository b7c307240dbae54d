"""Each rule of the adaptive policy, pinned (pure function: no clock, no I/O)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from specdeploy.api import Adaptive, GpuType, validate_spec
from specdeploy.core import learn as learning
from specdeploy.core import policy
from specdeploy.core.evaluate import evaluate
from specdeploy.core.model import (
    Profile,
    Setting,
    capacity_qps,
    k_at,
    schedule_label,
    steady_state,
    top_k,
    within_envelope,
)
from specdeploy.core.observation import NoData, Observation
from specdeploy.core.policy import (
    ACCEPTANCE_HALF_LIFE_S,
    KEEP,
    MAX_LOSS,
    ROLLBACK,
    ROLLOUT_MARGIN,
    SET_K,
    TURN_OFF,
    TURN_ON,
    Load,
    PolicyState,
    Prediction,
    Rollout,
    _gain,
    _ranked,
    _unpaid,
    as_setting,
    decide,
    effective_acceptance,
    hoped_acceptance,
    learn,
    new_share,
    restart_cost_seconds,
    rollout_capacity,
    steady_cost_ms,
)
from specdeploy.core.prior import prior_profile
from specdeploy.core.render import DEFAULT_SITE, Site

from ..conftest import ROOT

PROFILE = Profile()
P = list(PROFILE.acceptance)
ROLLOUT = Rollout(replicas=2, max_surge=1, max_unavailable=0, restart_seconds=120)
SETTINGS = Adaptive.model_validate({"mode": "Auto", "minTokens": 1, "maxTokens": 6})
T0 = 1_800_000_000.0


def obs(qps: float, k: int, p: list[float] = P, pods: int = 2, waiting: float = 0.0) -> Observation:
    """What Prometheus would report for 2 replicas at ``qps`` requests/s each, running k."""
    ss = steady_state(replace(PROFILE, acceptance=tuple(p)), qps, k, p[:k])
    return Observation(
        namespace="ns",
        deployment="d",
        k_label=str(k),
        pods=pods,
        request_rate=min(qps, ss.capacity_qps) * pods,
        running=ss.batch * pods,
        waiting=waiting,
        generation_tps=0.0,
        per_position=tuple(p[:k]),
        itl_mean_s=ss.step_ms / 1000,
    )


def run(o: Observation | NoData, k: int, state: PolicyState | None = None, now: float = T0, **kw: Any):  # type: ignore[no-untyped-def]
    settings = kw.pop("settings", SETTINGS)
    return decide(o, state or PolicyState(), settings, ROLLOUT, PROFILE, k, now, **kw)


def settled(k: int, **fields: Any) -> PolicyState:
    """A state whose setting has run for a long time, with acceptance known."""
    return PolicyState(k=k, since=T0 - 10_000, acceptance=P[:6], acceptance_time=T0 - 60, **fields)


def test_no_decision_without_fresh_metrics() -> None:
    d = run(NoData("Prometheus at http://p unavailable"), 3, settled(3))
    assert d.action == KEEP and "no decision without fresh metrics" in d.reason


def test_no_decision_while_replicas_are_missing_from_the_window() -> None:
    d = run(obs(25, 3, pods=1), 3, settled(3))
    assert d.action == KEEP and "only 1 of 2 replicas" in d.reason


def test_no_decision_during_a_rollout_or_before_its_window_fills() -> None:
    assert "rollout in progress" in run(obs(25, 3), 3, settled(3), rollout_complete=False).reason
    d = run(obs(25, 3), 3, settled(3), settled_at=T0 - 20)
    assert d.action == KEEP and "waiting for a window" in d.reason


def test_high_load_turns_speculation_off_and_low_load_turns_it_back_on() -> None:
    off = run(obs(27, 3, waiting=40), 3, settled(3))  # k=1 still serves the load, and is faster than off
    assert off.action == SET_K and off.to_k == 1
    hot = run(obs(27.3, 1, waiting=40), 1, settled(1))  # past what k=1 serves, measured by a queue
    assert hot.action == TURN_OFF and hot.to_k == 0
    # While off, nothing is measured: the last acceptance (aged) brings it back when load falls.
    state = PolicyState(k=0, since=T0 - 10_000, acceptance=P[:3], acceptance_time=T0 - 3600)
    on = run(obs(3, 0), 0, state)
    assert on.action == TURN_ON and on.to_k >= 1
    assert on.state.acceptance == P[:3]  # kept, not forgotten


def test_a_load_no_setting_serves_is_not_met_with_a_rollout_that_adds_no_capacity() -> None:
    """Past what every setting serves (a queue grows at full batch), a setting drafting there what runs drafts has
    the capacity that runs, whatever it drafts at smaller batches: rolling it out adds nothing and, in the overload,
    loses what the rollout does not serve (at vLLM's own batch cap on an H100, 1024, the shipped load_ramp peaks
    past speculation off's capacity: from k=1 the policy turned its schedule off there, 59.9 ms per token where
    keeping the schedule gives 21.3)."""
    running = ((1, 4), (10, 3), (18, 2), (33, 1), (143, 0))  # off at full batch, as speculation off
    assert capacity_qps(PROFILE, running, P) == capacity_qps(PROFILE, 0, [])
    overloaded = replace(obs(1.1 * capacity_qps(PROFILE, 0, []), 0, waiting=400), k_label=schedule_label(running))
    state = settled(running, last_waiting=100.0, last_eval=T0 - 30)  # type: ignore[arg-type]
    d = run(overloaded, running, state)  # type: ignore[arg-type]
    assert d.action == KEEP, d.reason
    # what drafts less at full batch than what runs still adds capacity, and is taken
    drafting = ((1, 4), (10, 3), (18, 2), (33, 1))
    drafting_state = settled(drafting, last_waiting=100.0, last_eval=T0 - 30)  # type: ignore[arg-type]
    d = run(replace(overloaded, k_label=schedule_label(drafting)), drafting, drafting_state)  # type: ignore[arg-type]
    assert d.changes_k and k_at(d.to_k, PROFILE.max_num_seqs) == 0, d.reason


def test_best_k_falls_as_load_rises() -> None:
    ks = [run(obs(q, 3), 3, settled(3)).to_k for q in (2, 15, 22)]
    assert ks[0] >= ks[1] >= ks[2] and ks[0] > ks[2]


DRIFTED = [x * 0.3 for x in P]  # acceptance after a change of traffic
NARROW = SETTINGS.model_copy(update={"hysteresis": 0.05})


def test_hysteresis_band_holds_small_gains() -> None:
    d = run(obs(8, 4, p=DRIFTED), 4, settled(4))
    assert d.action == KEEP and "within the hysteresis band 10%" in d.reason
    assert run(obs(8, 4, p=DRIFTED), 4, settled(4), settings=NARROW).action == SET_K


def test_the_band_is_on_predicted_latency_not_on_what_the_rollout_costs() -> None:
    """k=5 near its capacity with a queue: k=2 is 17% faster, but the rollout itself queues, so over the horizon
    the change gains 4%. The band guards against flapping on small predicted differences; the restart's cost is
    the payback test's business, and a change that pays must not be held back twice."""
    d = run(obs(16.5, 5, waiting=20), 5, settled(5))
    assert d.action == SET_K and d.to_k == 2 and 0 < d.expected_gain < SETTINGS.hysteresis


def test_dwell_cooldown_and_budget_hold() -> None:
    o = obs(8, 4, p=DRIFTED)
    recent = PolicyState(k=4, since=T0 - 300, acceptance=P[:6], acceptance_time=T0)
    assert "dwell" in run(o, 4, recent, settings=NARROW).reason
    assert "cooldown" in run(o, 4, settled(4, last_change=T0 - 100), settings=NARROW).reason
    spent = settled(4, changes=[T0 - 1000, T0 - 2000])
    assert "restart budget of 2/hour used" in run(o, 4, spent, settings=NARROW).reason
    old = settled(4, changes=[T0 - 4000, T0 - 5000])  # older than an hour: the budget is back
    assert run(o, 4, old, settings=NARROW).action == SET_K


def test_dwell_never_holds_a_setting_that_cannot_serve_the_load() -> None:
    recent = PolicyState(k=3, since=T0 - 300, acceptance=P[:6], acceptance_time=T0)
    d = run(obs(30, 3, waiting=200), 3, recent)  # dwell not over, but k=3 cannot serve 30 req/s
    assert d.action != KEEP


def test_restart_must_pay_within_the_horizon() -> None:
    short = SETTINGS.model_copy(update={"horizon_seconds": 60, "hysteresis": 0.0})
    d = run(obs(15, 3), 3, settled(3), settings=short)
    assert d.action == KEEP
    assert restart_cost_seconds(ROLLOUT) == pytest.approx(2 * 120 * 0.25 / 2)  # 2 waves, a cold quarter replica


def test_a_load_that_has_held_longer_lengthens_the_payback_horizon() -> None:
    """Off at 21.6 req/s per replica, k=1 is 40% faster with 20% headroom, but its rollout queues (priced with the
    rollout margin); that pays back over an hour, not over the configured half hour. A load that has held for an
    hour is likely to hold about as long again: then the change is made, and not before. (Windows at k=1 measured
    the tokens per step it verifies: its gain rests on no compute unmeasured.)"""
    measured = [2 * steady_state(PROFILE, 21.6, 0, []).batch, T0 - 600]

    def steady_for(seconds: float) -> PolicyState:
        return PolicyState(k=0, since=T0 - 10_000, acceptance=P[:3], acceptance_time=T0 - 600, load_qps=21.6,
                           load_time=T0 - 30, last_waiting=0.0, last_eval=T0 - 30, peak_qps=21.6,
                           peak_time=T0 - 3000, regime_qps=21.6, regime_since=T0 - seconds,
                           envelope=measured)  # fmt: skip

    assert run(obs(21.6, 0), 0, steady_for(600)).action == KEEP
    d = run(obs(21.6, 0), 0, steady_for(3600))
    assert d.action == TURN_ON and d.to_k == 1
    assert d.state.regime_since == T0 - 3600  # the regime goes on
    assert run(obs(14, 0), 0, steady_for(3600)).state.regime_since == T0  # the mean moves 10.5%: a new regime


def test_a_change_by_choice_never_rolls_out_into_a_setting_with_less_headroom_than_the_margin() -> None:
    """Off at 25 req/s per replica, k=1 is 37% faster by the model but has 4% headroom: within the model's error
    near capacity (ROLLOUT_MARGIN), its rollout would queue with nothing left to drain it. However long the load
    has held, no change is made; a measured queue would force one."""
    steady = PolicyState(k=0, since=T0 - 10_000, acceptance=P[:3], acceptance_time=T0 - 600, load_qps=25.0,
                         load_time=T0 - 30, last_waiting=0.0, last_eval=T0 - 30, peak_qps=25.0,
                         peak_time=T0 - 3000, regime_qps=25.0, regime_since=T0 - 4 * 3600)  # fmt: skip
    d = run(obs(25, 0), 0, steady)
    assert d.action == KEEP and "speculation off is best" in d.reason


def test_a_change_whose_rollout_the_model_says_never_drains_does_not_pay_however_the_running_setting_fares() -> None:
    """k=6 served 15.2 req/s per replica without a queue; the mean load, 16.1, is past its capacity by the model
    (15.5), and a rollout to k=5 (17.0, less than the rollout margin above the load) never drains by the model.
    Nothing is measured to force a move (no queue, no rise), so the model's word alone does not restart the
    deployment: keeping k=6 costs what was measured, and the endless rollout is the least gain status can hold.
    Where nothing measured what runs either, endless against endless is no gain."""
    narrow = NARROW.model_copy(update={"min_tokens": 5, "max_tokens": 6, "allow_disable": False})
    assert capacity_qps(PROFILE, 6, P[:6]) < 16.1 < capacity_qps(PROFILE, 5, P[:5]) < 16.1 * (1 + ROLLOUT_MARGIN)
    d = run(obs(15.2, 6), 6, settled(6, load_qps=16.5), settings=narrow)
    assert d.action == KEEP and "does not pay the restart" in d.reason and d.expected_gain == MAX_LOSS
    assert _gain({6: math.inf, 5: math.inf}, 6, 5) == 0


def test_where_the_model_alone_says_the_running_setting_saturates_keeping_it_costs_what_was_measured() -> None:
    """k=6 served 15.2 req/s per replica without a queue at 5.8 ms per token; the model prices it as saturating at
    the forecast, 16.1. k=3 is 20% faster, but its rollout at that load queues for long: 6.7 times what keeping
    k=6 costs over the horizon at the latency measured. That does not pay; an endless cost nobody measured would
    have made any drainable rollout a full gain."""
    narrow = NARROW.model_copy(update={"min_tokens": 3, "max_tokens": 6, "allow_disable": False})
    d = run(obs(15.2, 6), 6, settled(6, load_qps=16.5), settings=narrow)
    assert d.action == KEEP and "does not pay the restart" in d.reason and d.expected_gain < 0
    assert d.predicted_ms[3] < 0.9 * 5.8


def test_where_the_model_alone_says_the_running_setting_saturates_a_change_must_beat_its_measured_latency() -> None:
    """The model prices k=6 as saturating at the load forecast (2639 ms per token: its capacity, 15.5, is below
    16.1) while the window measured it serving at 5.8 ms, so keeping it is priced at what was measured
    (:func:`~specdeploy.core.policy.steady_cost_ms`, as ``predict`` does): k=4, predicted at 5.5, gains 5% over what
    was measured, within the hysteresis band, not 99.8% over the model's word."""
    keeping = steady_cost_ms(PROFILE, 16.1, 5.8, 1800)
    pred = Prediction(P, 6, {6: 2639.0, 4: 5.5}, {6: keeping, 4: 0.5 * keeping}, [4], 4, 0.5)
    load = Load(forecast=16.1, peak=16.1, rise=0.0, horizon=1800, measured_ms=5.8, measured_qps=15.2)
    why = _unpaid(pred, settled(6), load, SETTINGS, ROLLOUT, PROFILE, PROFILE, 0.5, 4, 6)
    assert why is not None and "within the hysteresis band" in why
    unmeasured = replace(load, measured_ms=None)
    assert _unpaid(pred, settled(6), unmeasured, SETTINGS, ROLLOUT, PROFILE, PROFILE, 0.5, 4, 6) is None


def test_candidates_rank_by_horizon_cost_then_latency_and_a_schedule_wins_a_tie() -> None:
    """Where every rollout would queue without end, the horizon cannot rank (the faster wins, not the one drafting
    least); a schedule and a static k drafting alike tie however their costs were rounded along two paths."""
    sched = ((1, 3), (16, 1))
    endless = dict.fromkeys([1, 3, sched], math.inf)
    assert sorted([1, 3, sched], key=_ranked(endless, {1: 24.0, 3: 13.5, sched: 12.8})) == [sched, 3, 1]
    alike = {1: 106548831.48880205, sched: 106548831.50169662}  # 9-digit rounding tells these apart
    assert min([1, sched], key=_ranked(alike, {1: 81.05934065851703, sched: 81.05934065849412})) == sched
    assert min([1, sched], key=_ranked({1: 100.0, sched: 100.1}, {1: 81.0, sched: 81.0})) == 1


def test_a_rollout_serves_with_old_and_new_pods_side_by_side() -> None:
    assert new_share(ROLLOUT) == pytest.approx(0.25)  # two replicas one at a time: none new, then half
    assert new_share(Rollout(replicas=4, max_surge=4, max_unavailable=0, restart_seconds=60)) == 0.0
    # k=3 serving 20 req/s per replica, going to 28: mostly the old setting, less a cold quarter replica of two
    assert rollout_capacity(ROLLOUT, 20.0, 28.0) == pytest.approx((0.75 - 0.125) * 20 + 0.25 * 28)
    # One pod at a time down (no GPU to spare): the first wave runs on one old pod, the second on one new pod
    down = Rollout(replicas=2, max_surge=0, max_unavailable=1, restart_seconds=120)
    assert rollout_capacity(down, 20.0, 28.0) == pytest.approx((20 + 28) / 2 / 2)


def rising(start: float, k: int, per_step: float, steps: int = 12) -> tuple[float, Any]:
    """Evaluate every minute on a load rising by ``per_step`` req/s per replica each minute; returns the load
    and the decision at the first change (or the last evaluation)."""
    state = settled(k)
    for i in range(steps):
        qps = start + per_step * i
        d = run(obs(qps, k), k, state, now=T0 + 60 * i)
        if d.action != KEEP:
            break
        state = d.state
    return qps, d


def test_a_rising_load_is_met_before_it_saturates_the_setting() -> None:
    capacity = steady_state(PROFILE, 1, 3, P[:3]).capacity_qps
    assert run(obs(18, 3), 3, settled(3)).action == KEEP  # at this load, without a trend, k=3 is right
    qps, d = rising(12, 3, per_step=0.4, steps=30)  # 24 req/s per replica more each hour
    assert d.action == TURN_OFF and d.to_k == 0
    assert qps < capacity - 1.5 and d.state.load_slope > 0


def test_a_trend_does_not_force_a_rollout_that_would_itself_queue() -> None:
    """Close to capacity, a rollout runs mostly on the old pods: leaving now would queue, so the trend must first
    saturate the setting for real (load often levels off)."""
    history = [[T0 - 60 * i, 19.6 - 0.24 * (i - 1)] for i in range(10, 0, -1)]  # 0.004 req/s per second
    state = settled(3, load_qps=19.6, load_history=history, load_time=T0 - 60, last_waiting=0.0, last_eval=T0 - 60)
    d = run(obs(20, 3), 3, state)
    assert d.action == KEEP and "no queue is measured and a rollout now would queue" in d.reason


def test_a_jump_in_load_is_a_peak_not_a_trend() -> None:
    _, d = rising(20, 3, per_step=0.0, steps=3)
    jump = run(obs(2, 3), 3, d.state, now=T0 + 60 * 3)
    assert jump.state.load_slope == 0.0


def test_a_burst_is_remembered_with_how_long_it_lasted() -> None:
    """2 req/s per replica, a jump to 8 for ten minutes, back to 2: the burst's onset, its length and, between
    bursts, the load it brought and the share of the time it takes (its length over the horizon until a second
    one shows how often they recur)."""
    st, now = settled(3), T0
    for q, windows in ((2.0, 10), (8.0, 20), (2.0, 2)):
        for _ in range(windows):
            now += 30
            d = run(obs(q, 3), 3, st, now=now)
            st = replace(d.state, k=3, since=T0 - 10_000)
            if q == 8.0:
                assert st.burst_base is not None and not st.burst_spans
    assert st.bursts == [T0 + 11 * 30] and st.burst_spans == [600.0] and st.burst_base is None
    _, load, _ = learn(obs(2.0, 3), st, SETTINGS, ROLLOUT, 3, now + 30)
    assert load.bursts is not None
    peak, share = load.bursts
    assert peak == pytest.approx(8.0, rel=0.05) and share == pytest.approx(600 / SETTINGS.horizon_seconds)


def test_a_jump_that_holds_for_the_horizon_is_the_load_not_a_burst() -> None:
    """A jump from 2 to 8 req/s per replica that holds: a burst under way until the horizon has passed, then the
    load itself, with no burst length to remember and none to price."""
    st = settled(3, load_qps=8.0, bursts=[T0], burst_base=2.0, peak_qps=8.0, peak_time=T0)  # the mean caught up
    during, _, _ = learn(obs(8.0, 3), st, SETTINGS, ROLLOUT, 3, T0 + SETTINGS.horizon_seconds - 30)
    assert during.burst_base == 2.0
    after, load, _ = learn(obs(8.0, 3), st, SETTINGS, ROLLOUT, 3, T0 + SETTINGS.horizon_seconds)
    assert after.burst_base is None and after.burst_spans == [] and load.bursts is None


def test_the_queue_is_measured_over_one_interval_even_across_a_rollout() -> None:
    during = run(obs(20, 1, waiting=300), 1, settled(1, pending_from=3), now=T0, rollout_complete=False)
    assert during.state.last_waiting == 150 and during.state.last_eval == T0


def test_a_draining_queue_is_not_load() -> None:
    """Completions while a queue drains exceed arrivals: offered load is completions plus the queue's change."""
    state = settled(0, last_waiting=300.0, last_eval=T0 - 60)
    d = run(obs(27.7, 0, waiting=2 * 60), 0, state)  # the queue fell from 300 to 60 per replica in a minute
    assert d.state.load_qps == pytest.approx(27.7 - 4, abs=0.1) and d.state.peak_qps < 24


def test_acceptance_drift_lowers_k() -> None:
    d = run(obs(8, 4, p=DRIFTED), 4, settled(4), settings=NARROW)
    assert d.action == SET_K and d.to_k < 4
    # the positions past k=4 a deeper setting measured are kept, no higher than position 4
    assert d.state.acceptance == pytest.approx([*DRIFTED[:4], DRIFTED[3], DRIFTED[3]], abs=1e-5)


def test_positions_past_the_k_running_keep_what_a_deeper_setting_measured() -> None:
    """k=2 at 2 req/s per replica, after a deeper setting measured positions 3-6 (0.40, 0.29, 0.21, 0.15): a
    window at k=2 keeps them, so k=5 is planned on them (13% faster) and taken. Dropped, as every window past the k
    running used to drop them, k=4 looked 6% faster by the extrapolation discounted as unmeasured, not worth
    exploring, and k=2 held: a deployment a rise of load had pushed to a small k did not come back."""
    deeper = run(obs(2, 2), 2, settled(2))
    assert deeper.action == SET_K and deeper.to_k == 5, deeper.reason
    assert deeper.state.acceptance == pytest.approx(P[:6])
    assert run(obs(2, 2), 2, replace(settled(2), acceptance=P[:2])).action == KEEP


def test_exploration_upward_is_rare() -> None:
    state = PolicyState(k=1, since=T0 - 10_000, acceptance=P[:1], acceptance_time=T0)
    first = run(obs(2, 1, p=P), 1, state)
    assert first.action == SET_K and first.to_k > 1 and first.state.last_explore == T0
    again = run(obs(2, 1, p=P), 1, replace(state, last_explore=T0 - 60))
    assert again.action == KEEP and "explored recently" in again.reason


def test_the_state_survives_status_and_leaves_the_input_untouched() -> None:
    """The policy's memory goes through status as JSON: a restarted operator, given it back, decides the same
    as one that kept it in memory; and decide never changes the state it is given."""
    state = settled(3)
    before = json.dumps(state.to_dict())
    first = run(obs(22, 3), 3, state)
    assert json.dumps(state.to_dict()) == before
    persisted = PolicyState.from_dict(json.loads(json.dumps(first.state.to_dict())))
    assert persisted == first.state
    later = T0 + 60
    assert run(obs(24, 3), 3, persisted, now=later) == run(obs(24, 3), 3, first.state, now=later)


def test_rollback_after_a_failed_rollout() -> None:
    from specdeploy.core.policy import rollback

    d = rollback(settled(2, pending_from=3), T0, "deadline")
    assert d is not None and d.action == ROLLBACK and d.to_k == 3
    assert rollback(settled(2), T0, "deadline") is None


def test_a_setting_whose_pods_failed_is_not_tried_again_for_a_while() -> None:
    from specdeploy.core.policy import FAILED_HOLD_S, rollback

    first = run(obs(27, 3, waiting=40), 3, settled(3))
    assert first.action == SET_K and first.to_k == 1
    back = rollback(first.state, T0 + 60, "deadline")
    assert back is not None and back.to_k == 3
    later = T0 + 3600
    again = run(obs(27, 3, waiting=40), 3, replace(back.state, since=later - 1000), now=later)
    assert again.to_k != 1  # another way out of the queue, or none; not the setting that crashed
    fixed = later + FAILED_HOLD_S
    retried = run(obs(27, 3, waiting=40), 3, replace(back.state, since=fixed - 1000, changes=[]), now=fixed)
    assert retried.to_k == 1


SPEC = {
    "target": {"model": "t"},
    "speculator": {"method": "eagle3", "model": "d", "numSpeculativeTokens": 3},
    "replicas": 2,
    "adaptive": {"mode": "Auto", "maxTokens": 6},
}
NOW = datetime.fromtimestamp(T0, UTC)


def status(k: int = 3, **extra: Any) -> dict[str, Any]:
    return {
        "k": k,
        "specK": 3,
        "rollout": "Complete",
        "observedGeneration": 1,
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "Complete", "message": "",
             "lastTransitionTime": "2000-01-01T00:00:00Z"},
        ],
        **extra,
    }  # fmt: skip


def test_recommend_never_acts_and_auto_does() -> None:
    hot = obs(27.3, 3, waiting=60)
    rec = validate_spec({**SPEC, "adaptive": {**SPEC["adaptive"], "mode": "Recommend"}})
    decision, patch = evaluate(rec, status(policy=settled(3).to_dict()), hot, NOW, DEFAULT_SITE)
    assert decision is not None and decision.changes_k
    assert "k" not in patch and patch["recommendedK"] == top_k(decision.to_k)
    assert patch["decisions"][-1]["applied"] is False
    auto = validate_spec(SPEC)
    decision, patch = evaluate(auto, status(policy=settled(3).to_dict()), hot, NOW, DEFAULT_SITE)
    assert patch["k"] == top_k(decision.to_k) and patch["decisions"][-1]["applied"] is True
    # An eagle3 deployment can run vLLM's per-batch-size k: the policy's schedule goes to status with its k.
    assert patch["schedule"] == schedule_label(decision.to_k) and patch["decisions"][-1]["setting"] == patch["schedule"]
    off = validate_spec({**SPEC, "adaptive": {**SPEC["adaptive"], "mode": "Off"}})
    decision, patch = evaluate(off, status(), hot, NOW, DEFAULT_SITE)
    assert decision is None and "k" not in patch and patch["metrics"]["requestRate"] > 0


def test_kubectl_columns_are_rounded_and_status_keeps_precision() -> None:
    from specdeploy.api.crd import PRINTER_COLUMNS
    from specdeploy.core.evaluate import metrics_status

    m = metrics_status(replace(obs(6.61101, 3), acceptance_rate=0.564912), 300, NOW).model_dump(by_alias=True)
    assert m["acceptanceRate"] == 0.5649 and m["summary"] == {"acceptance": "0.565", "requestRate": "13.2"}
    paths = {c["name"]: c["jsonPath"] for c in PRINTER_COLUMNS}
    assert paths["Acceptance"] == ".status.metrics.summary.acceptance"
    assert paths["QPS"] == ".status.metrics.summary.requestRate"


def test_a_restarted_operator_resumes_without_repeating_a_restart() -> None:
    spec = validate_spec(SPEC)
    _, first = evaluate(spec, status(policy=settled(3).to_dict()), obs(27.3, 3, waiting=60), NOW, DEFAULT_SITE)
    assert "k" in first
    # The operator restarts: all it has is status. The rollout has completed; load is unchanged.
    persisted = status(k=first["k"], policy=first["policy"], decisions=first["decisions"])
    later = datetime.fromtimestamp(T0 + 120, UTC)
    decision, patch = evaluate(spec, persisted, obs(27.3, first["k"]), later, DEFAULT_SITE)
    assert "k" not in patch and decision is not None and decision.action == KEEP
    assert patch["restartBudgetRemaining"] == 1


def test_metrics_unavailable_condition() -> None:
    _, patch = evaluate(validate_spec(SPEC), status(), NoData("Prometheus down"), NOW, DEFAULT_SITE)
    cond = next(c for c in patch["conditions"] if c["type"] == "MetricsAvailable")
    assert cond["status"] == "False" and cond["message"] == "Prometheus down"
    assert "k" not in patch


def test_at_light_load_a_schedule_as_fast_is_taken_for_the_headroom_it_buys() -> None:
    """k=3 at 2 req/s per replica: a schedule drafting as much at these small batches and less at large ones is as fast
    now and carries far more, and a restart costs nothing at this load: taken before any burst shows. Past half of
    k=3's capacity the restart is no longer cheap, and k=3 stays."""
    light = run(obs(2, 3), 3, settled(3), schedules=True)
    assert light.action == SET_K and not isinstance(light.to_k, int) and "more capacity" in light.reason
    assert dict(light.to_k)[1] >= 3 > light.to_k[-1][1]  # as much drafting at small batches, less at large
    busy = run(obs(12, 3), 3, settled(3), schedules=True)
    assert busy.action == KEEP


def test_at_light_load_a_schedule_faster_at_twice_the_load_is_taken_before_the_rise() -> None:
    """A schedule planned before the acceptance was measured (the first position only, discounted) drafts too
    little at large batches: with the acceptance measured, the schedule drafting the fastest k at every batch is as
    fast at 12 req/s per replica and far faster at the batches 24 bring, which no restart serves cheaply then; at 12
    a restart is cheap. At 6 req/s per replica, twice the load still runs where both draft alike: kept."""
    planned = ((1, 5), (2, 4), (10, 3), (20, 2), (38, 1), (83, 0))

    def at(qps: float) -> Any:
        ss = steady_state(PROFILE, qps, planned, P[:5])
        o = replace(obs(qps, 5), running=2 * ss.batch, itl_mean_s=ss.step_ms / 1000)
        return run(o, planned, replace(settled(0), k=planned), schedules=True)  # type: ignore[arg-type]

    light = at(12.0)
    assert light.action == SET_K and "faster at 2x the load" in light.reason, light.reason
    assert k_at(light.to_k, 120) > k_at(planned, 120)  # type: ignore[arg-type]
    assert at(6.0).action == KEEP


def saved_window(name: str) -> tuple[Setting, PolicyState, Observation, float]:
    """A window and the state a benchmark run kept (``tests/fixtures/windows``): the setting running, the policy's
    state before the window, the window, the time."""
    saved = json.loads((ROOT / f"tests/fixtures/windows/{name}.json").read_text())
    o = Observation(**{**saved["observation"], "per_position": tuple(saved["observation"]["per_position"])})
    return as_setting(saved["running"]), PolicyState.from_dict(saved["state"]), o, saved["now"]


TRACE_SETTINGS = Adaptive.model_validate({"mode": "Auto", "evaluationIntervalSeconds": 30, "windowSeconds": 30})


def test_a_rising_load_is_priced_where_it_is_headed() -> None:
    """The state a benchmark run had kept (a weak, costly drafter, the load ramping): the schedule running drafts k=1
    up to batch 89, about as fast as the model's best (off from batch 30) where the batch runs now, slower where the
    rise takes it before a change decided later could roll out. Priced where the load is headed, the change is made
    now; priced at today's load alone it waited an hour and a half, for a load 30% higher. With the load flat, the
    same window is no reason to change."""
    running, state, o, now = saved_window("weak_drafter_ramp_rising")

    def at(st: PolicyState) -> Any:
        return decide(o, st, TRACE_SETTINGS, ROLLOUT, PROFILE, running, now, schedules=True)

    rising = at(state)
    assert rising.action == SET_K and k_at(rising.to_k, 60) < k_at(running, 60), rising.reason  # type: ignore[arg-type]
    assert rising.state.load_slope and rising.state.load_slope > 0
    flat = at(replace(state, load_history=[[t, o.request_rate / o.pods] for t, _ in state.load_history]))
    assert flat.action == KEEP and flat.state.load_slope == 0.0, flat.reason


def test_a_queue_outlasting_the_horizon_does_not_credit_the_slower_setting() -> None:
    """k=8 at 25 req/s per replica, saturated, its queue growing: off and the schedule drafting up to batch 149 and
    off beyond have the same capacity, and the rollout leaves a queue both drain for longer than the horizon, at
    full batch, where they run alike. The schedule is faster once it has drained, so it is taken; counting the
    drain's full batch against the usual latency of the horizon alone took off, then a second restart 20 minutes
    later for the schedule."""
    running, state, o, now = saved_window("steady_high_saturated")
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, PROFILE, running, now, schedules=True)
    assert d.action == SET_K and isinstance(d.to_k, tuple), d.reason
    assert k_at(d.to_k, 256) == 0 < k_at(d.to_k, 1), d.reason


def test_a_queue_draining_at_full_batch_is_no_reason_to_revise() -> None:
    """The schedule taken from a saturated k=8, draining at full batch (k=0 there) the queue its rollout left: the
    window's latency is that of the full batch, not of the load arriving. Corrected at the load it served (its
    capacity), the model tells the running schedule from a near twin by nothing; had the window counted as the
    running schedule's latency beside the twin's prediction at the usual load (34 against 14 ms), it would have
    restarted into the twin."""
    running, state, o, now = saved_window("steady_high_draining")
    assert o.waiting / o.pods > 100
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, PROFILE, running, now, schedules=True)
    assert d.action == KEEP, d.reason


def test_bursts_seen_are_planned_for_between_them() -> None:
    """The MoE between two bursts (2.2 req/s per replica; the first burst, 8.6, measured 49 tokens per step): the
    schedule running drafts k=3 at the burst's batch (about 11); one drafting k=2 there (and k=1 from 12) is faster
    at the burst and alike now, so it is taken now, while a restart is cheap. Before a burst was seen to end
    (nothing to say how much of the time bursts take) the same window is no reason to change."""
    running, state, o, now = saved_window("moe_bursty_between")
    moe = prior_profile("Qwen/Qwen3-30B-A3B")

    def at(st: PolicyState) -> Any:
        return decide(o, st, TRACE_SETTINGS, ROLLOUT, moe, running, now, schedules=True)

    planned = at(state)
    assert planned.action == SET_K and k_at(planned.to_k, 11) < k_at(running, 11), planned.reason  # type: ignore[arg-type]
    assert "and bursts of 8.55 for 33% of the time" in planned.reason
    assert at(replace(state, burst_spans=[])).action == KEEP


def test_windows_of_a_few_requests_count_as_little_as_they_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A world drawn at random (`hack/gen-traces.py --unseen 8 --seed 3`, world 0: an 8B on an L4, 4000-token
    prompts, 0.17 req/s per replica between bursts) from k=8: its 30 s windows count 2-11 requests, and so few
    requests' mean ITL is far from the mean step. At the 41st window, with the schedule the first chose running (k=3,
    then k=2 from batch 43), counted as full windows the fit takes that noise for the costs and moves to k=1 (75.6
    vs 84.2 ms per token predicted): 121.9 ms per token for the run in three restarts, where the best schedule gives
    110.2. Each window weighted by the requests it counted, the schedule stays (110.5, one restart)."""
    running, state, o, now = saved_window("drawn_l4_thin")
    l4 = prior_profile("meta-llama/Llama-3.1-8B-Instruct", gpu="L4", extra_args=["--max-num-seqs", "64"])

    def at(st: PolicyState) -> Any:
        return decide(o, st, TRACE_SETTINGS, ROLLOUT, l4, running, now, schedules=True)

    kept = at(state)
    assert kept.action == KEEP, kept.reason
    monkeypatch.setattr(learning, "REQUEST_SPREAD", 0.0)  # every window counted as if it measured its step to 10%
    assert at(state).action == SET_K


def test_an_moe_waits_out_a_burst_its_rollout_would_push_past_the_batches_measured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MoE in its first burst, 8.8 req/s per replica, windows having measured past 1.5x the tokens per step the
    prior knows: a schedule drafting k=2 up to batch 43 is faster by the fitted model, but the rollout's dip would
    run the pods left at batches no window measured, where the compute may be dear; it waits for the burst to pass.
    (It waits also as a burst 2 minutes old is expected to go on only as long, then the calm: priced at the
    burst's load throughout, the dear compute alone holds it.)"""
    running, state, o, now = saved_window("moe_bursty_burst")
    moe = prior_profile("Qwen/Qwen3-30B-A3B")
    assert state.envelope and state.envelope[0] > 1.5 * moe.known_tokens_per_step and state.burst_base is not None

    def at() -> Any:
        return decide(o, state, TRACE_SETTINGS, ROLLOUT, moe, running, now, schedules=True)

    assert at().action == KEEP
    monkeypatch.setattr(policy, "_expected_bursts", lambda *_: None)
    d = at()
    assert d.action == KEEP and "would queue were the compute" in d.reason, d.reason


def test_a_gain_at_the_bursts_resting_on_compute_never_measured_is_not_taken() -> None:
    """Between bursts of 23 req/s per replica: a schedule drafting more at the burst's batch than the windows there
    measured would be faster at the burst by the fitted model, slower were that compute dear. The bursts priced in,
    that gain is still a guess, and the running schedule stays."""
    running, state, o, now = saved_window("bursty_between")
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, PROFILE, running, now, schedules=True)
    assert d.action == KEEP, d.reason


def test_within_a_burst_expected_to_end_a_gain_at_its_load_counts_only_until_it_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two minutes into the third burst of 22 req/s per replica (the last two lasted 10 minutes, every 40): a
    schedule 10% faster at the burst's load would pay its restart were the burst to last the horizon (48 minutes).
    Priced for the 8.5 minutes it is expected to go on, then the calm of 4 req/s (with its share of bursts), where
    the two schedules run alike, it does not: it stays (the restart within the burst cost the run 0.4 ms per token).
    Priced at the burst's load throughout, the same window moves."""
    running, state, o, now = saved_window("bursty_within")
    assert state.burst_base is not None and state.burst_spans

    def at() -> Any:
        return decide(o, state, TRACE_SETTINGS, ROLLOUT, PROFILE, running, now, schedules=True)

    within = at()
    assert within.action == KEEP and "and calm of 4.10 for" in within.reason, within.reason
    monkeypatch.setattr(policy, "_expected_bursts", lambda *_: None)
    assert at().action == SET_K


def test_a_first_burst_is_expected_to_last_about_as_long_as_it_has() -> None:
    """The MoE's first burst, in the window that shows it (8.4 req/s per replica, from 2.2): nothing yet says how long
    bursts last. Priced as if it held for the whole horizon, a schedule 18% faster at its load was taken there, and
    slower in the world (3.89 ms per token for the run, 3.60 for holding). A burst is expected to last about as long
    as it has run (the regime's rule too), then the load it jumped from: a change by choice waits, and the first
    burst, once over, says how long the next will last."""
    running, state, o, now = saved_window("moe_bursty_first_burst")
    moe = prior_profile("Qwen/Qwen3-30B-A3B")
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, moe, running, now, schedules=True)
    assert d.action == KEEP and d.state.burst_base is not None and not d.state.burst_spans, d.reason


def test_a_first_burst_from_no_load_at_all_is_priced_at_its_own_load() -> None:
    """A deployment idle (0 req/s) that jumps to 10: the burst has run no time, so it is expected to last no more, and
    the load it jumped from carries no tokens; the candidates are priced at the burst's load (it had divided by
    zero)."""
    idle = replace(settled(3), load_qps=0.0, load_time=T0 - 30, last_eval=T0 - 30, last_waiting=0.0)
    d = run(obs(10.0, 3), 3, idle, schedules=True)
    assert d.state.burst_base == 0.0 and d.state.bursts == [T0], d.reason
    assert all(math.isfinite(ms) for ms in d.predicted_ms.values()), d.predicted_ms


def test_a_schedule_is_not_taken_for_its_latency_at_a_load_near_capacity() -> None:
    """A 70B on 4 GPUs per replica, the load rising through 4.8 req/s per replica: twice that is 92% of what both
    schedules carry (10.4 by the model, alike), where a model's latency turns steep (29.6 against 45.4 ms per token,
    both 27 at 90%). A schedule taken for that was slower in the world (29.1 ms per token for the run, 27.0 for
    holding the running one); priced no nearer its capacity than a rise is (:data:`AHEAD_SHARE`), it is no gain."""
    running, state, o, now = saved_window("llama70b_tp4_ramp_rising")
    prior = prior_profile("meta-llama/Llama-3.1-70B-Instruct", 4)
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, prior, running, now, schedules=True)
    assert d.action == KEEP, d.reason


def test_an_moe_whose_compute_no_window_measured_hedges_at_light_load() -> None:
    """An MoE's roofline prices only its first few tokens per step: at 2 req/s per replica on k=3, the schedule it is
    offered is the one fastest were the compute past them dear (as fast at the batch running, drafting less at large
    ones), taken for the capacity it carries at worst of the two models. Once windows measured far more tokens per
    step than the prior knows, the model's own schedule is offered: here no gain, and k=3 stays."""
    moe = prior_profile("Qwen/Qwen3-30B-A3B")
    ss = steady_state(replace(moe, acceptance=tuple(P)), 2.0, 3, P[:3])
    o = replace(obs(2.0, 3), running=2 * ss.batch, itl_mean_s=ss.step_ms / 1000)

    def at(envelope: list[float] | None) -> Any:
        st = replace(settled(3), acceptance=P[:3], envelope=envelope)
        return decide(o, st, SETTINGS, ROLLOUT, moe, 3, T0, schedules=True)

    hedge = at(None)
    assert hedge.action == SET_K and "more capacity at worst" in hedge.reason, hedge.reason
    assert k_at(hedge.to_k, round(ss.batch)) >= 3 > k_at(hedge.to_k, 64)  # type: ignore[arg-type]
    assert at([200.0, T0 - 60]).action == KEEP


def test_an_moe_whose_steps_cost_a_fraction_of_its_prior_hedges_until_its_compute_is_measured() -> None:
    """moe_bursty from k=8, its first window: 16 tokens per step, just past the 15 (1.5 times the prior's known 10)
    past which an MoE's compute counted as measured, at steps a quarter of what the prior, reading every expert,
    gives. Few experts are read, and a burst's larger steps read more, at a cost no window saw: the schedule offered
    is the one fastest were that compute dear (k=1 from batch 25). The fitted one drafted k=5 at batch 25, saturated
    in the world's first burst, and the run paid 14.3 ms per token (4.19 hedged, 3.57 for the best fixed setting).
    With steps three times as dear, most of the experts are read, and the fitted schedule is offered."""
    running, state, o, now = saved_window("moe_bursty_k8_first")
    moe = prior_profile("Qwen/Qwen3-30B-A3B")

    def at(dearer: float) -> Any:
        return decide(replace(o, itl_mean_s=o.itl_mean_s * dearer), state, TRACE_SETTINGS, ROLLOUT, moe, running, now,
                      schedules=True)  # fmt: skip

    hedge, fitted = at(1.0), at(3.0)
    assert hedge.action == SET_K and k_at(hedge.to_k, 25) <= 1, hedge.reason  # type: ignore[arg-type]
    assert fitted.action == SET_K and k_at(fitted.to_k, 25) >= 3, fitted.reason  # type: ignore[arg-type]


def test_off_with_the_acceptance_never_measured_probes_it_where_off_is_the_worst_case() -> None:
    """Off at 25.6 req/s per replica, near its capacity, nothing ever measured: k=1 planned with the prior's
    acceptance discounted would not serve the load, but a schedule drafting k=1 only up to a little past the batch
    running and off beyond has off's capacity and, with the prior's acceptance, is far faster: taken, once per
    EXPLORE_EVERY_S. With the acceptance measured there is nothing to probe."""
    never = PolicyState(k=0, since=T0 - 10_000)
    probe = run(obs(25.6, 0), 0, never, schedules=True)
    assert probe.action == TURN_ON and "probe of the acceptance" in probe.reason, probe.reason
    batch = steady_state(PROFILE, 25.6, 0, []).batch
    assert probe.to_k == ((1, 1), (math.ceil(batch * 1.1), 0))
    assert run(obs(25.6, 0), 0, replace(never, last_explore=T0 - 60), schedules=True).action == KEEP
    assert run(obs(25.6, 0), 0, never).action == KEEP  # (no schedules: nothing to probe with)
    assert run(obs(25.6, 0), 0, settled(0), schedules=True).to_k != probe.to_k


def test_a_k_whose_later_positions_were_never_measured_probes_them() -> None:
    """A strong drafter (0.79, 0.67, 0.56 at the positions k=3 measures) on an MoE whose compute is cheap, in the
    trough of a diurnal load: drafting 8 would be 17% faster by the acceptance extrapolated past position 3, which
    counts discounted until measured, so no change by choice takes it, and k=3 held the whole run (8.22 ms per token
    where the best fixed schedule gives 6.68). The probe drafts the most allowed up to a little past the batch
    running, k=3 beyond (it never has less capacity than what runs). The windows of a k measure no position past it,
    so once anything was explored another probe waits until what it measured has aged by half
    (ACCEPTANCE_HALF_LIFE_S): else it would be made every half hour."""
    running, state, o, now = saved_window("strong_drafter_k3_trough")
    moe = prior_profile("Qwen/Qwen3-30B-A3B")

    def at(st: PolicyState) -> Any:
        return decide(o, st, TRACE_SETTINGS, ROLLOUT, moe, running, now, schedules=True)

    probe = at(state)
    assert probe.action == SET_K and "probe of the acceptance" in probe.reason, probe.reason
    assert k_at(probe.to_k, 1) == 8 and k_at(probe.to_k, 256) == 3, probe.to_k  # type: ignore[arg-type]
    assert at(replace(state, last_explore=now - 60)).action == KEEP
    assert at(replace(state, last_explore=now - ACCEPTANCE_HALF_LIFE_S - 60)).to_k == probe.to_k


def test_no_probe_is_made_into_a_rollout_that_may_not_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 11's world 6 (a 70B on TP4, 4000-token prompts) from off, its load at 100% of off's capacity: the probe
    from off (k=1 up to a little past the batch running, off beyond) promised 55% with the prior's acceptance, and
    a probe paid no restart, so it rolled out where the model's capacity is within 5% of the load: its queue never
    drained, 231.6 ms per token where holding off gives 147.7. Its rollout must drain at two standard deviations of
    the window's count (5.6%: 316 requests) above the load: held. Priced at the load itself, the same probe is made.
    """
    running, state, o, now = saved_window("off_probe_at_capacity")
    prior = prior_profile("meta-llama/Llama-3.1-70B-Instruct", 4)

    def at() -> Any:
        return decide(o, state, TRACE_SETTINGS, ROLLOUT, prior, running, now, schedules=True)

    assert at().action == KEEP, at().reason
    monkeypatch.setattr(policy, "NOISE_Z", 0.0)
    assert "probe of the acceptance" in at().reason, at().reason


def test_a_probe_hopes_each_position_falls_at_the_larger_of_the_measured_and_the_priors_ratio() -> None:
    """One position measured: the next ones fall as the prior's do (0.55 / 0.75 per position for the second), not
    at 0.6 as if tokens were accepted independently. Three measured, falling 0.9 per position: at 0.9, more than
    the prior's. Nothing measured: the prior's acceptance as it is."""

    def hoped(state: PolicyState, upto: int) -> list[float]:
        return hoped_acceptance(state, effective_acceptance(state, T0, upto, PROFILE)[0], PROFILE)

    one = hoped(PolicyState(acceptance=[0.6], acceptance_time=T0), 4)
    assert one[0] == pytest.approx(0.6) and one[1] == pytest.approx(0.6 * P[1] / P[0])
    assert one[3] == pytest.approx(0.6 * P[3] / P[0])
    three = hoped(PolicyState(acceptance=[0.8, 0.72, 0.648], acceptance_time=T0), 5)
    assert three[3:] == pytest.approx([0.648 * 0.9, 0.648 * 0.81])
    assert hoped(PolicyState(), 3) == pytest.approx(P[:3])


def test_from_k1_a_probe_hopes_the_positions_past_it_fall_as_the_priors_do() -> None:
    """Seed 5's world 4 from k=1 (8B on an H100, a load ramping to 21 req/s per replica), its first window: one
    position measured, 0.58. Extrapolated as if tokens were accepted independently (0.58, 0.33, 0.19, ...),
    drafting more gains too little to probe, and k=1 held the whole run at 8.29 ms per token where static k=4 gives
    5.93 (the world's acceptance falls 0.8 per position). Hoped to fall as the prior's does (0.73 per position), a
    probe drafting 8 up to a little past the batch running, k=1 beyond, promises 19%, though the schedule the plans
    rank best is held by the hysteresis band: taken (6.27 ms for the run)."""
    running, state, o, now = saved_window("k1_slow_decay_first")
    d = decide(o, state, TRACE_SETTINGS, ROLLOUT, prior_profile("meta-llama/Llama-3.1-8B-Instruct"), running, now,
               schedules=True)  # fmt: skip
    assert d.action == SET_K and "probe of the acceptance" in d.reason, d.reason
    assert k_at(d.to_k, 1) == 8 and k_at(d.to_k, 64) == 1, d.to_k  # type: ignore[arg-type]


def test_a_probe_drafts_up_to_the_batch_measured_and_none_is_made_near_the_cap() -> None:
    """The probe's edge sits a little past the batch the window measured, not the model's: at 20 req/s per replica
    the prior puts off at a batch of about 60, but a prefill-heavy world runs it at 120, where an edge at 66 would
    measure nothing, or at 240 of 256 (full, in all but name), where a replica has no capacity to spare for a
    rolling restart and no probe is made."""
    never = PolicyState(k=0, since=T0 - 10_000)

    def at(batch: int) -> Any:
        return run(replace(obs(20.0, 0), running=2 * batch), 0, never, schedules=True)

    assert steady_state(PROFILE, 20.0, 0, []).batch < 66
    probe = at(120)
    assert "probe of the acceptance" in probe.reason and probe.to_k == ((1, 1), (math.ceil(120 * 1.1), 0))
    assert at(240).action == KEEP


def test_a_candidate_drafting_what_runs_is_predicted_as_the_running_setting_was_measured() -> None:
    """The running setting is measured at the window's load, the candidates predicted at the forecast (a little
    lower: the window's count is noisy): the model's error on the running setting, applied to every candidate,
    compares like with like, so a schedule drafting k=3 at the batch k=3 runs is no gain over it."""
    qps = 0.7 * capacity_qps(PROFILE, 3, P[:3])
    ss = steady_state(PROFILE, qps, 3, P[:3])
    counted = {"generation_tps": 2 * qps * PROFILE.output_tokens, "itl_rate": 2 * ss.batch / (ss.step_ms / 1000)}
    o = replace(obs(qps, 3), **counted)
    d = run(o, 3, settled(3), schedules=True)
    alike = [c for c in d.predicted_ms if not isinstance(c, int) and k_at(c, ss.batch) == 3]
    assert d.action == KEEP and alike
    for c in alike:
        assert d.predicted_ms[c] == pytest.approx(d.predicted_ms[3], rel=1e-6)


def test_a_change_by_choice_never_rests_on_compute_no_window_measured() -> None:
    """Off at 14 req/s per replica, the windows measured about 32 tokens per step: k=3 would verify far more, and
    would saturate were that compute twice the prior's, so the policy turns on k=2, which gains either way. With
    windows measured at three times the tokens per step, k=3."""
    batch = steady_state(PROFILE, 14, 0, []).batch
    narrow = run(obs(14, 0), 0, replace(settled(0), envelope=[batch, T0 - 60]))
    wide = run(obs(14, 0), 0, replace(settled(0), envelope=[3 * batch, T0 - 60]))
    assert (narrow.action, narrow.to_k, wide.action, wide.to_k) == (TURN_ON, 2, TURN_ON, 3)


def test_past_the_tokens_per_step_measured_a_setting_drafts_at_most_one_more_than_what_runs() -> None:
    """Within the limit anything goes; past it, one token more than what runs at that batch (so a setting off at the
    batch running can still start drafting there, and measure it), never more; with requests queued, no more."""
    schedule = ((1, 5), (8, 4), (55, 3), (131, 2))
    assert within_envelope(schedule, 0, 16, 256, 1) == ((1, 5), (3, 4), (4, 3), (5, 2), (6, 1))
    assert within_envelope(schedule, 0, 16, 256, 0) == ((1, 5), (3, 4), (4, 3), (5, 2), (6, 1), (9, 0))  # queued
    assert within_envelope(3, 0, 16, 256, 1) == ((1, 3), (5, 2), (6, 1))
    assert within_envelope(3, 3, 16, 256, 1) == 3  # no more than runs: nothing to clamp
    assert within_envelope(((1, 6), (6, 5), (14, 3)), 3, 30, 256, 1) == ((1, 6), (5, 5), (6, 4), (14, 3))
    assert within_envelope(schedule, 0, math.inf, 256, 1) == schedule
    # Off from batch 13, 137 tokens per step measured there (limit 1.5x): k=1 at the batch running, no more.
    assert k_at(within_envelope(schedule, ((1, 1), (13, 0)), 1.5 * 137, 256, 1), 137) == 1


def test_an_moe_does_not_draft_far_past_what_it_measured() -> None:
    """Off at light load, an MoE (whose prior knows the cost of 10 tokens per step) turns speculation on with a
    schedule that verifies at most twice the tokens per step measured, or drafts one token where that is more (one
    more than runs: what measures the compute there); a dense model with the same figures drafts at large batches as
    the model finds best."""
    moe = replace(PROFILE, known_tokens_per_step=10.0)
    state = settled(0)
    light = replace(obs(2, 0), generation_tps=2 * 2 * 256.0, prompt_tps=2 * 2 * 512.0)  # a window to learn from
    d = decide(light, state, SETTINGS, ROLLOUT, moe, 0, T0, schedules=True)
    assert d.action == TURN_ON
    measured = d.state.envelope
    assert measured is not None and measured[0] == pytest.approx(steady_state(PROFILE, 2, 0).batch, rel=1e-3)
    limit = max(10.0, 2 * measured[0])
    assert all(k_at(d.to_k, b) <= 1 or b * (k_at(d.to_k, b) + 1) <= limit for b in range(1, 257))
    dense = decide(light, state, SETTINGS, ROLLOUT, PROFILE, 0, T0, schedules=True)
    assert any(k_at(dense.to_k, b) > 1 and b * (k_at(dense.to_k, b) + 1) > limit for b in range(1, 257))


def test_a_growing_queue_is_left_even_where_the_model_says_the_setting_serves() -> None:
    """The model says k=3 serves 15 req/s per replica (capacity 21); the queue grew over the last interval. The
    measurement wins: the setting is left within its dwell."""
    recent = PolicyState(k=3, since=T0 - 300, acceptance=P[:6], acceptance_time=T0, last_waiting=0.0,
                         last_eval=T0 - 60)  # fmt: skip
    assert run(obs(15, 3), 3, recent).action == KEEP
    assert run(obs(15, 3, waiting=40), 3, recent).action != KEEP


def test_the_users_k_set_during_the_policys_rollout_wins_even_when_it_fails() -> None:
    spec = validate_spec(SPEC)
    _, change = evaluate(spec, status(policy=settled(3).to_dict()), obs(27.3, 3, waiting=60), NOW, DEFAULT_SITE)
    assert change["decisions"][-1]["applied"] and change["policy"]["pending_from"] == 3
    # Mid-rollout the user sets k=5 in the spec: the reconcile pass records it in status; its pods then fail.
    user = validate_spec({**SPEC, "speculator": {**SPEC["speculator"], "numSpeculativeTokens": 5}})
    failed = {**status(k=5, policy=change["policy"], decisions=change["decisions"]), "specK": 5, "rollout": "Failed"}
    later = datetime.fromtimestamp(T0 + 60, UTC)
    decision, patch = evaluate(user, failed, obs(27.3, 5), later, DEFAULT_SITE)
    assert decision is not None and decision.action == KEEP and "k" not in patch  # no rollback over the user's k
    record = patch["decisions"][-1]
    assert record["action"] == "user-change" and record["toK"] == 5 and "still rolling out" in record["reason"]
    assert patch["policy"]["k"] == 5 and patch["policy"]["pending_from"] is None
    # Once adopted it is not recorded again.
    _, again = evaluate(user, {**failed, "policy": patch["policy"], "decisions": patch["decisions"]}, obs(27.3, 5),
                        later, DEFAULT_SITE)  # fmt: skip
    assert "decisions" not in again


def test_a_change_of_what_the_pods_run_forgets_what_was_learned_of_the_old_deployment() -> None:
    """The drafter replaced, vLLM upgraded by the operator's default image, the pods moved to other nodes: the
    acceptance, step costs and capacities measured before would mislead the plans, so they are forgotten and
    measured again, and the history says so; the load and the restart budget stay (the traffic and the replicas
    are the same). The user's k, the port, the name served, the replicas or the adaptive settings changed: nothing
    is forgotten; nor where the state predates the record of what it learned, nor for ``recommend`` (no site)."""
    deeper = settled(3, floors={"5": [25.0, T0 - 60]})  # what k=5 served, and the positions it measured
    _, first = evaluate(validate_spec(SPEC), status(policy=deeper.to_dict()), obs(20, 3), NOW, DEFAULT_SITE)
    learned = first["policy"]
    assert len(learned["acceptance"]) == 6 and set(learned["floors"]) == {"3", "5"} and learned["basis"]
    later = datetime.fromtimestamp(T0 + 60, UTC)

    def after(changed: dict[str, Any], site: Site | None = DEFAULT_SITE) -> dict[str, Any]:
        return evaluate(validate_spec({**SPEC, **changed}), status(policy=learned), obs(20, 3), later, site)[1]

    upgraded = replace(DEFAULT_SITE, vllm_image="vllm/vllm-openai:v0.34.0")
    drafter = after({"speculator": {**SPEC["speculator"], "model": "another-drafter"}})
    for other, named in (
        (drafter, "the pods' vLLM arguments changed:"),
        (after({}, upgraded), "the pods' image changed:"),
        (after({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}), "the pods' placement changed:"),
        (after({"image": "mine", "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]}),
         "the pods' image and environment changed:"),
    ):  # fmt: skip
        assert other["policy"]["acceptance"] == pytest.approx(P[:3], abs=1e-5)  # only what this window measured
        assert set(other["policy"]["floors"]) == {"3"} and other["policy"]["basis"] != learned["basis"]
        assert other["policy"]["load_qps"] is not None and other["decisions"][-1]["action"] == "relearn"
        assert other["decisions"][-1]["reason"].startswith(named), other["decisions"][-1]["reason"]
    for same, site in (({"speculator": {**SPEC["speculator"], "numSpeculativeTokens": 5}}, DEFAULT_SITE),
                       ({"replicas": 3, "service": {"port": 9000}}, DEFAULT_SITE),
                       ({"target": {**SPEC["target"], "servedModelName": "chat"}}, DEFAULT_SITE),
                       ({"adaptive": {**SPEC["adaptive"], "maxTokens": 8}}, DEFAULT_SITE),
                       ({"image": "mine"}, None),  # recommend: the operator's images unknown, nothing judged
                       ({"image": DEFAULT_SITE.vllm_image}, upgraded)):  # fmt: skip  # the spec's image wins
        kept = after(same, site)["policy"]
        assert len(kept["acceptance"]) == 6 and set(kept["floors"]) == {"3", "5"}, same
        assert kept["basis"] == learned["basis"], same
    # a state kept before bases were (none recorded) is taken as this deployment's
    unmarked = evaluate(
        validate_spec({**SPEC, "image": "another"}), status(policy=deeper.to_dict()), obs(20, 3), NOW, DEFAULT_SITE
    )
    assert len(unmarked[1]["policy"]["acceptance"]) == 6 and "decisions" not in unmarked[1]
    # a basis an earlier version digested whole cannot be compared part by part: taken as this deployment's, so an
    # upgrade of the operator forgets nothing, and the new basis is kept from then on
    whole = evaluate(validate_spec(SPEC), status(policy={**learned, "basis": "0123456789abcdef"}), obs(20, 3), later,
                     DEFAULT_SITE)[1]  # fmt: skip
    assert len(whole["policy"]["acceptance"]) == 6 and "decisions" not in whole
    assert whole["policy"]["basis"] == learned["basis"]


def test_pods_moved_to_other_gpus_forget_what_was_learned_on_the_old_ones() -> None:
    """No spec field changed, but the scheduler put the new pods on L4 nodes where they ran on H100s (a cluster with
    two GPU pools, and no node selector): the step costs and capacities measured on H100s are forgotten, and the
    history says which GPUs. A window whose GPUs are unknown (a node without the label, pods on both pools, or
    labels unread) keeps what was learned, and the GPU last seen."""
    deeper = settled(3, floors={"5": [25.0, T0 - 60]})
    on_h100 = replace(obs(20, 3), gpu=GpuType.H100)
    _, first = evaluate(validate_spec(SPEC), status(policy=deeper.to_dict()), on_h100, NOW, DEFAULT_SITE)
    learned = first["policy"]
    assert learned["gpu"] == "H100" and "decisions" not in first
    later = datetime.fromtimestamp(T0 + 60, UTC)
    _, unknown = evaluate(validate_spec(SPEC), status(policy=learned), obs(20, 3), later, DEFAULT_SITE)
    assert set(unknown["policy"]["floors"]) == {"3", "5"} and unknown["policy"]["gpu"] == "H100"
    assert "decisions" not in unknown
    on_l4 = replace(obs(20, 3), gpu=GpuType.L4)
    _, moved = evaluate(validate_spec(SPEC), status(policy=learned), on_l4, later, DEFAULT_SITE)
    assert set(moved["policy"]["floors"]) == {"3"} and moved["policy"]["gpu"] == "L4"
    assert moved["decisions"][-1]["action"] == "relearn" and "L4 GPUs (were H100)" in moved["decisions"][-1]["reason"]


def test_a_failed_rollout_of_the_policys_own_change_is_rolled_back() -> None:
    spec = validate_spec(SPEC)
    _, change = evaluate(spec, status(policy=settled(3).to_dict()), obs(27.3, 3, waiting=60), NOW, DEFAULT_SITE)
    failed = {**status(k=change["k"], policy=change["policy"], decisions=change["decisions"]), "rollout": "Failed"}
    if change.get("schedule"):
        failed["schedule"] = change["schedule"]
    decision, patch = evaluate(spec, failed, obs(27.3, 3), datetime.fromtimestamp(T0 + 60, UTC), DEFAULT_SITE)
    assert decision is not None and decision.action == "rollback" and patch["k"] == 3
    assert [d["action"] for d in patch["decisions"]][-1] == "rollback"


def test_a_deployment_scaled_to_zero_is_evaluated_without_error() -> None:
    """Found by the soak (hack/soak.py): replicas 0 divided by zero in the rollout's arithmetic."""
    spec = validate_spec({**SPEC, "replicas": 0})
    decision, patch = evaluate(spec, status(policy=settled(3).to_dict()), obs(4.0, 3), NOW, DEFAULT_SITE)
    assert decision is not None and patch["lastEvaluation"]["reason"]


def test_switching_to_off_mid_rollout_stops_the_policy_even_from_rolling_back() -> None:
    """Off means the operator changes nothing more: a change already rolling out is not undone when it fails (the
    user sets k in the spec to choose the setting)."""
    spec = validate_spec(SPEC)
    _, change = evaluate(spec, status(policy=settled(3).to_dict()), obs(27.3, 3, waiting=60), NOW, DEFAULT_SITE)
    failed = {**status(k=change["k"], policy=change["policy"], decisions=change["decisions"]), "rollout": "Failed"}
    if change.get("schedule"):
        failed["schedule"] = change["schedule"]
    off = validate_spec({**SPEC, "adaptive": {**SPEC["adaptive"], "mode": "Off"}})
    decision, patch = evaluate(off, failed, obs(27.3, 3), datetime.fromtimestamp(T0 + 60, UTC), DEFAULT_SITE)
    assert decision is None and "k" not in patch and "decisions" not in patch


SCHEDULE = ((1, 5), (8, 2), (40, 0))


def schedule_window(batch: float, drafted: float, drafts_share: float, per_position: tuple[float, ...]) -> Observation:
    """A window of 2 replicas on :data:`SCHEDULE` at ``batch`` sequences each, its steps drafting ``drafted``
    tokens per sequence on average, ``drafts_share`` of them drafting at all."""
    itl_rate = 2 * batch / 0.02
    return Observation(namespace="ns", deployment="d", k_label="5", pods=2, request_rate=8.0, running=2 * batch,
                       waiting=0.0, generation_tps=8.0 * 256, prompt_tps=8.0 * 512, per_position=per_position,
                       itl_mean_s=0.02, itl_rate=itl_rate, draft_rate=itl_rate * drafts_share,
                       draft_token_rate=itl_rate * drafted)  # fmt: skip


def test_positions_no_draft_of_a_window_reached_keep_what_was_measured_no_higher_than_the_last_reached() -> None:
    before = settled(5)  # P[:6] measured at light load
    # at 20 sequences the schedule drafts 2: vLLM reads positions 3-5 as 0 (never drafted there)
    window = schedule_window(20, 2.0, 1.0, (0.7, 0.5, 0.0, 0.0, 0.0))
    st, _, _ = learn(window, before, SETTINGS, ROLLOUT, SCHEDULE, T0)
    assert st.acceptance[:2] == [0.7, 0.5]
    assert st.acceptance[2:] == [min(x, 0.5) for x in P[2:6]]  # kept (P[2] = 0.40), no higher than position 2


def test_a_window_drafting_two_bands_k_is_a_sample_at_their_mean_and_no_capacity() -> None:
    # at the edge to off (40), a third of the steps drafting 2 and the rest none
    window = schedule_window(40, 2 / 3, 1 / 3, (0.75, 0.55, 0.0, 0.0, 0.0))
    st, _, _ = learn(window, settled(5), SETTINGS, ROLLOUT, SCHEDULE, T0)
    assert [round(x, 3) for x in st.samples[-1][1:3]] == [0.667, 40.0]
    assert st.floors == {}  # what it served is neither k=2's capacity nor off's
    pure = schedule_window(20, 2.0, 1.0, (0.75, 0.55, 0.0, 0.0, 0.0))
    st, _, _ = learn(pure, settled(5), SETTINGS, ROLLOUT, SCHEDULE, T0)
    assert st.samples[-1][1] == 2 and set(st.floors) == {"2"}
