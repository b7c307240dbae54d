"""Observations + policy state + settings -> a decision (pure: no I/O, no clock of its own, deterministic).

What the policy does, per evaluation of one SpeculativeDeployment:

1. **Trust only fresh, settled data.** No observation, fewer pods than expected, or a window that still
   overlaps the last rollout: keep, and say why.
2. **Learn.** Per-position acceptance ``p_i`` is measured for every position the pods run (kept with its time,
   so it survives turning speculation off, with confidence decaying as it ages). The step cost is learned as
   the ratio of the observed ITL (vLLM observes one step per request) to the performance model at the observed
   batch size, seeded at 1: the load where speculation stops paying is measured, not configured.
3. **Predict** the per-token latency (step / E(k), or queueing once the replica saturates) for speculation off
   and every k in ``[minTokens, maxTokens]`` at the forecast load (the higher of the recent mean and the last
   window, plus what draining the queue needs; offered load counts the queue's growth, since a saturated
   replica completes only its capacity). Only settings that would also serve the recent peak (held for the
   horizon, then decaying) qualify, so recurring bursts keep their headroom; and, under a gradually rising load
   (a trend, not a jump), only settings that would serve it until they can be left again: a rolling restart
   from a saturated setting runs on the old pods and queues, so the time to leave is before saturation.
   ``E(k')`` for ``k' <=`` the measured length comes from measurement; above it, from cautious extrapolation
   (discounted).
4. **Act only when it pays.** The best candidate's predicted latency must beat the current setting's by more
   than the hysteresis band, and its gain over the horizon (which counts the queue the rollout itself builds;
   the configured horizon, or the age of a steady load up to four times it) must exceed the capacity the
   rolling restart takes away (replicas, restart time, maxSurge/maxUnavailable). Dwell time, cooldown and the
   hourly restart budget always hold.

The state is a JSON-able dict kept in ``status.policy``, so a restarted operator resumes it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..api import Adaptive, AdaptiveMode
from .model import Profile, capacity_qps, drain_rates, extend_acceptance, queue_cost_ms, steady_state
from .observation import NoData, Observation

KEEP, SET_K, TURN_OFF, TURN_ON, ROLLBACK = "keep", "set-k", "turn-off", "turn-on", "rollback"
# How fast an old acceptance measurement loses weight while off. Acceptance follows the traffic mix, which moves
# over hours to days; at high load a few percent of it is all the headroom a setting has, so it fades slowly.
ACCEPTANCE_HALF_LIFE_S = 8 * 3600.0
EXTRAPOLATION_DISCOUNT = 0.7  # unmeasured positions count this much of their extrapolated value
EXPLORE_EVERY_S = 1800.0  # at most one move beyond the measured positions per half hour
EXPLORE_MIN_UPSIDE = 0.15  # relative latency gain the extrapolation must promise before exploring upward
SATURATION_LATENCY_FACTOR = 20.0  # a saturated setting counts as this many times its unloaded latency
LOAD_MEMORY = 0.3  # EWMA weight of the newest load sample
TREND_MAX_STEP = 0.1  # a load change larger than this fraction between two evaluations is a jump, not a trend


@dataclass
class PolicyState:
    """What the policy remembers between evaluations (kept in status.policy)."""

    k: int | None = None  # the k currently running (0 = off)
    since: float | None = None  # when the current setting became fully rolled out (epoch seconds)
    acceptance: list[float] = field(default_factory=list)  # last measured p_1..p_n
    acceptance_time: float | None = None
    cost_scale: float = 1.0  # observed ITL / model step time
    load_qps: float | None = None  # EWMA of per-replica request rate
    load_slope: float | None = None  # EWMA of its rate of change (req/s per replica, per second)
    load_time: float | None = None  # when load_qps was last updated
    changes: list[float] = field(default_factory=list)  # times of restarts in the last hour
    last_change: float | None = None
    last_explore: float | None = None
    pending_from: int | None = None  # k before the restart in progress (for rollback)
    last_waiting: float | None = None  # queued requests per replica at the last evaluation, for queue growth
    last_eval: float | None = None
    peak_qps: float | None = None  # held, then decaying, maximum of the offered load per replica
    peak_time: float | None = None
    regime_qps: float | None = None  # the load level the current regime started at (per replica)
    regime_since: float | None = None  # when the load last left the band around it

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> PolicyState:
        raw = dict(raw or {})
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """All fields, None included: status is written by JSON merge patch, where null deletes a key and a
        missing key would keep a stale value."""
        return asdict(self)


@dataclass(frozen=True)
class Rollout:
    """What the restart of this deployment costs."""

    replicas: int
    max_surge: int
    max_unavailable: int
    restart_seconds: float


@dataclass(frozen=True)
class Decision:
    action: str
    to_k: int | None
    reason: str
    expected_gain: float = 0.0  # relative per-token latency improvement predicted
    predicted_ms: dict[int, float] = field(default_factory=dict)
    state: PolicyState = field(default_factory=PolicyState)

    @property
    def changes_k(self) -> bool:
        return self.action in (SET_K, TURN_OFF, TURN_ON, ROLLBACK)


def budget_left(state: PolicyState, now: float, per_hour: int) -> int:
    return max(0, per_hour - sum(1 for t in state.changes if now - t < 3600))


def rollout_seconds(r: Rollout) -> float:
    """Pods restart in waves of ``maxSurge + maxUnavailable``, each taking ``restart_seconds``."""
    return r.restart_seconds * math.ceil(r.replicas / max(1, r.max_surge + r.max_unavailable))


def restart_capacity_loss(r: Rollout) -> float:
    """Fraction of serving capacity missing while the rollout runs.

    Each wave removes ``maxUnavailable`` replicas; with surge only no serving replica is lost, but the new pods
    start cold (caches, compilation), counted as a quarter of a replica.
    """
    lost = r.max_unavailable if r.max_unavailable > 0 else 0.25 * min(r.max_surge, r.replicas)
    return min(1.0, lost / max(1, r.replicas))


def restart_cost_seconds(r: Rollout) -> float:
    """Full-capacity-equivalent seconds a rolling restart takes away."""
    return rollout_seconds(r) * restart_capacity_loss(r)


def new_share(r: Rollout) -> float:
    """Mean fraction of replicas serving the new setting while a rollout runs.

    Pods are replaced in waves of ``maxSurge + maxUnavailable``; the pods of a wave serve only once it is over,
    so the old setting carries the first wave entirely (two replicas one at a time: a quarter on average)."""
    m = max(1, r.max_surge + r.max_unavailable)
    waves = math.ceil(r.replicas / m)
    return sum(min(r.replicas, j * m) for j in range(waves)) / waves / max(1, r.replicas)


def rollout_capacity(r: Rollout, cap_from: float, cap_to: float) -> float:
    """Mean per-replica capacity while a rollout from a setting serving ``cap_from`` to one serving ``cap_to``
    runs: new pods as they come, the old ones less those the restart takes away (``maxUnavailable``, or the
    cold start of surge pods). The offline simulator uses the same figure, so the policy plans with the world
    it is scored in."""
    s = new_share(r)
    return max(0.0, 1 - s - restart_capacity_loss(r)) * cap_from + s * cap_to


def rollout_overload_ms(prof: Profile, rollout: Rollout, qps: float, p: list[float], from_k: int, to_k: int) -> float:
    """Token-milliseconds of queueing a rolling restart causes per replica when its reduced capacity falls
    short of the load: the backlog built while it runs waits until the new setting has drained it (a triangle
    of queue over time), and the tokens served meanwhile run at the new setting's full batch."""
    cap_new, excess = drain_rates(prof, qps, to_k, p[:to_k])
    during = rollout_capacity(rollout, capacity_qps(prof, from_k, p[:from_k]), cap_new)
    if during >= qps:
        return 0.0
    if cap_new <= qps:
        return math.inf
    duration = rollout_seconds(rollout)
    backlog = (qps - during) * duration
    return backlog * duration / 2 * 1000 + queue_cost_ms(backlog, cap_new - qps, excess)


def horizon_cost_ms(
    prof: Profile,
    rollout: Rollout,
    horizon_s: float,
    qps: float,
    waiting: float,
    p: list[float],
    current_k: int,
    k: int,
    token_ms: float,
) -> float:
    """Token-milliseconds per replica over the horizon if k runs: the steady per-token latency, the wait of the
    queue already there until k drains it, and, for a change, the queue the rollout itself builds."""
    cap = capacity_qps(prof, k, p[:k])
    if cap <= qps:
        return math.inf
    total = token_ms * qps * prof.output_tokens * horizon_s
    total += waiting * waiting / (cap - qps) / 2 * 1000
    if k != current_k:
        total += rollout_overload_ms(prof, rollout, qps, p, current_k, k)
    return total


def effective_acceptance(state: PolicyState, now: float, upto: int, prior: Profile) -> tuple[list[float], int]:
    """p_1..p_upto from the last measurement, aged, and how many of them were measured.

    With nothing measured yet (a deployment that started with speculation off), the performance model's
    acceptance serves as a discounted prior for the first position only."""
    measured = list(state.acceptance)
    if not measured:
        return [x * EXTRAPOLATION_DISCOUNT for x in extend_acceptance(prior.acceptance, upto)], 1
    age = max(0.0, now - (state.acceptance_time or now))
    confidence = 0.5 + 0.5 * 0.5 ** (age / ACCEPTANCE_HALF_LIFE_S)
    full = extend_acceptance(measured, upto)
    out = [x * confidence * (1.0 if i < len(measured) else EXTRAPOLATION_DISCOUNT) for i, x in enumerate(full)]
    return out, min(len(measured), upto)


def predict_ms(prof: Profile, qps: float, k: int, p: list[float], cost_scale: float) -> float:
    """Per-token latency at per-replica load ``qps`` for draft length k; saturation counts heavily."""
    ss = steady_state(replace(prof, acceptance=tuple(p) or prof.acceptance), qps, k, p if k else [])
    base = ss.token_latency_ms * cost_scale
    if ss.saturated:
        return base * SATURATION_LATENCY_FACTOR * (1 + qps / max(ss.capacity_qps, 1e-9))
    return base


@dataclass(frozen=True)
class Load:
    """What the policy makes of the load at one evaluation, per replica."""

    forecast: float  # what a setting must serve now: the recent load, plus draining the queue in time
    peak: float  # the remembered peak (held for the horizon, then decaying)
    rise: float  # the trend of a gradual rise, req/s per second (0 when falling, flat or jumping)
    horizon: float  # how long the load is expected to stay as it is, seconds


def _learn_load(
    st: PolicyState, qps: float, waiting: float, settings: Adaptive, rollout: Rollout, now: float
) -> tuple[PolicyState, Load]:
    """Offered load, its mean, trend and peak, from completions and the queue (both per replica)."""
    # A saturated replica completes only its capacity: arrivals = completions + the queue's change (negative
    # while a queue drains, when completions exceed arrivals).
    if st.last_waiting is not None and st.last_eval is not None and now > st.last_eval:
        growth = (waiting - st.last_waiting) / (now - st.last_eval)
    else:  # no history: assume the queue built up over the last interval
        growth = waiting / settings.evaluation_interval_seconds
    offered = max(0.0, qps + growth)
    ewma = offered if st.load_qps is None else (1 - LOAD_MEMORY) * st.load_qps + LOAD_MEMORY * offered
    # The trend of a gradual change; a jump (a burst) is no trend: the peak remembers it instead.
    gradual = st.load_qps is not None and abs(offered - st.load_qps) <= TREND_MAX_STEP * max(st.load_qps, 1.0)
    slope = 0.0
    if gradual and st.load_qps is not None and st.load_time is not None and now > st.load_time:
        rising = (ewma - st.load_qps) / (now - st.load_time)
        slope = rising if st.load_slope is None else (1 - LOAD_MEMORY) * st.load_slope + LOAD_MEMORY * rising
    # A peak matters as long as a change must pay for itself: held for the horizon, then halving each horizon.
    hold = settings.horizon_seconds
    held = now - (st.peak_time if st.peak_time is not None else now)
    remembered = (st.peak_qps or 0.0) * 0.5 ** (max(0.0, held - hold) / hold)
    peak, peak_time = (offered, now) if offered >= remembered else (remembered, st.peak_time)
    # A load that has held for a while is likely to hold about as long again (the Lindy effect): beyond the
    # configured horizon, a steady regime's age is the horizon a change must pay back over (up to 4 horizons).
    # A new regime starts when the mean leaves the band of TREND_MAX_STEP around the level it started at.
    regime_qps, regime_since = st.regime_qps, st.regime_since
    if regime_qps is None or regime_since is None or abs(ewma - regime_qps) > TREND_MAX_STEP * max(regime_qps, 1.0):
        regime_qps, regime_since = ewma, now
    horizon = min(4.0 * hold, max(hold, now - regime_since))
    st = replace(
        st,
        load_qps=round(ewma, 5),
        load_slope=round(slope, 7),
        load_time=now,
        last_waiting=round(waiting, 3),
        last_eval=now,
        peak_qps=round(peak, 5),
        peak_time=peak_time,
        regime_qps=round(regime_qps, 5),
        regime_since=regime_since,
    )
    # The queue must drain within the time a change needs to take effect (or a window, if longer).
    lead = rollout_seconds(rollout) + settings.evaluation_interval_seconds
    forecast = max(ewma, offered) + waiting / max(settings.window_seconds, lead)
    return st, Load(forecast=forecast, peak=peak, rise=max(0.0, slope), horizon=horizon)


def _feasible(
    profile: Profile, p: list[float], ks: list[int], current_k: int, load: Load, settings: Adaptive, rollout: Rollout
) -> list[int]:
    """The settings that would serve the remembered peak and a rising load until they can be left cleanly (else
    the one with the most capacity). Keeping must hold until a change decided at the next evaluation has rolled
    out and the rollout's dip in capacity is over (two rollouts); a new setting must first roll out and sit out
    its cooldown, then hold as long as keeping must. A trend is trusted up to half the current load."""
    rollout_s = rollout_seconds(rollout)
    lead_keep = settings.evaluation_interval_seconds + 2 * rollout_s
    lead_change = rollout_s + settings.cooldown_seconds + lead_keep

    def need(lead: float) -> float:
        return max(load.peak, load.forecast + min(0.5 * load.forecast, load.rise * lead))

    need_keep, need_change = need(lead_keep), need(lead_change)
    ok = [k for k in ks if not steady_state(profile, need_keep if k == current_k else need_change, k, p[:k]).saturated]
    return ok or [max(ks, key=lambda k: capacity_qps(profile, k, p[:k]))]


def decide(
    obs: Observation | NoData,
    state: PolicyState,
    settings: Adaptive,
    rollout: Rollout,
    profile: Profile,
    current_k: int,
    now: float,
    rollout_complete: bool = True,
    settled_at: float | None = None,
) -> Decision:
    """The decision for one evaluation; ``state`` is not modified (the new one is in the decision)."""
    st = replace(state, changes=[t for t in state.changes if now - t < 3600])
    if st.k is None:  # first evaluation: the setting predates the operator's memory, count it as settled
        st = replace(st, k=current_k)
    elif st.k != current_k:  # a change made elsewhere (the user edited k): a new setting starts now
        st = replace(st, k=current_k, since=now, pending_from=None)

    def no_decision(reason: str) -> Decision:
        """No decision yet; keep the queue's reference point current, so the next decision measures the
        queue's growth over one interval, not over a whole rollout."""
        seen = st
        if isinstance(obs, Observation) and obs.pods > 0:
            seen = replace(st, last_waiting=round(obs.waiting / obs.pods, 3), last_eval=now)
        return Decision(KEEP, current_k, reason, state=seen)

    if not rollout_complete:
        return no_decision("rollout in progress: waiting for every replica of the new setting")
    if st.pending_from is not None:
        st = replace(st, pending_from=None, since=now)  # the change finished rolling out
    if isinstance(obs, NoData):
        return Decision(KEEP, current_k, f"no decision without fresh metrics: {obs.reason}", state=st)
    if obs.pods < rollout.replicas:
        msg = f"only {obs.pods} of {rollout.replicas} replicas reported in the window"
        return no_decision(msg)
    # The reader counts only pods of the current template, so a window holding two evaluation intervals of
    # their data is fresh enough: waiting for a whole window would leave a saturated setting in place.
    settle = min(settings.window_seconds, 2 * settings.evaluation_interval_seconds)
    if settled_at is not None and now - settled_at < settle:
        msg = f"waiting for a window of the current pods' metrics ({now - settled_at:.0f}s of {settle}s)"
        return no_decision(msg)
    if st.since is not None and now - st.since < settle:
        msg = f"the window still covers the previous setting ({now - st.since:.0f}s of {settle}s)"
        return no_decision(msg)

    # -- learn
    pods = max(1, obs.pods)
    qps = obs.request_rate / pods
    waiting = obs.waiting / pods
    if current_k > 0 and obs.per_position:
        st = replace(st, acceptance=[round(x, 5) for x in obs.per_position], acceptance_time=now)
    if obs.itl_mean_s and qps > 0 and current_k == obs.k_running:
        p_now = list(obs.per_position)
        ss = steady_state(replace(profile, acceptance=tuple(p_now) or profile.acceptance), qps, current_k, p_now)
        if not ss.saturated:
            ratio = min(5.0, max(0.2, obs.itl_mean_s * 1000 / ss.step_ms))
            st = replace(st, cost_scale=round(0.5 * st.cost_scale + 0.5 * ratio, 4))
    st, load = _learn_load(st, qps, waiting, settings, rollout, now)

    # -- predict
    mode = settings.mode
    upto = settings.max_tokens
    p, measured_len = effective_acceptance(st, now, upto, profile)
    candidates = list(range(settings.min_tokens, settings.max_tokens + 1))
    if settings.allow_disable:
        candidates = [0, *candidates]
    if current_k not in candidates:
        candidates.append(current_k)
    forecast = load.forecast
    pred = {k: predict_ms(profile, forecast, k, p[:k], st.cost_scale) for k in sorted(set(candidates))}
    feasible = _feasible(profile, p, list(pred), current_k, load, settings, rollout)
    cost = {
        k: horizon_cost_ms(profile, rollout, load.horizon, forecast, waiting, p, current_k, k, pred[k]) for k in pred
    }
    best = min(feasible, key=lambda k: (cost[k], k))
    cur = pred[current_k]
    gain = 1.0 if math.isinf(cost[current_k]) else (cost[current_k] - cost[best]) / cost[current_k]
    action = KEEP if best == current_k else (TURN_OFF if best == 0 else TURN_ON if current_k == 0 else SET_K)
    target = best
    exploring = target > max(measured_len, 1) and target > current_k
    if exploring and now - (st.last_explore if st.last_explore is not None else -math.inf) < EXPLORE_EVERY_S:
        return Decision(KEEP, current_k, f"k={target} looks better by extrapolation; explored recently", state=st)
    if exploring and gain < EXPLORE_MIN_UPSIDE:
        msg = f"k={target} looks better by extrapolation, but only by {gain:.1%}: not worth exploring"
        return Decision(KEEP, current_k, msg, round(gain, 4), pred, st)

    def keep(reason: str) -> Decision:
        return Decision(KEEP, current_k, reason, round(gain, 4), pred, st)

    if action == KEEP:
        return keep(f"k={current_k} is best at {forecast:.2f} req/s per replica ({cur:.2f} ms/token predicted)")
    what = f"k={target}" if target else "speculation off"
    why = f"{what} predicted {pred[target]:.2f} vs {cur:.2f} ms/token at {forecast:.2f} req/s per replica"
    # Leaving a setting that cannot serve the load is not a matter of hysteresis or payback. One that only the
    # trend will saturate is left ahead of time, unless the rollout itself would already queue: then the trend
    # has to prove itself first (load often levels off).
    saturated_now = steady_state(profile, max(load.peak, forecast), current_k, p[:current_k]).saturated
    forced = current_k not in feasible
    if forced and not saturated_now and rollout_overload_ms(profile, rollout, forecast, p, current_k, target) > 0:
        return keep(f"{why}: the rising load would saturate k={current_k}, but a rollout now would already queue")
    # The band is on the steady latency the two settings predict (what flaps near a threshold); what the restart
    # itself costs is in the horizon costs, whose difference must pay it back.
    steady_gain = (cur - pred[target]) / cur
    if steady_gain <= settings.hysteresis and not forced:
        return keep(f"{why}: {steady_gain:.1%} faster, within the hysteresis band {settings.hysteresis:.0%}")
    payback = gain * load.horizon
    cost = restart_cost_seconds(rollout)
    if payback <= cost and not forced:
        return keep(f"{why}: gain over {load.horizon:.0f}s ({payback:.0f}s) does not pay the restart ({cost:.0f}s)")
    if mode == AdaptiveMode.OFF:
        return keep(f"{why}; adaptive mode is Off")
    # Dwell prevents flapping; it never holds a setting that cannot serve the load.
    if st.since is not None and now - st.since < settings.min_dwell_seconds and not forced:
        return keep(f"{why}; dwell: {now - st.since:.0f}s of {settings.min_dwell_seconds}s")
    if st.last_change is not None and now - st.last_change < settings.cooldown_seconds:
        return keep(f"{why}; cooldown: {now - st.last_change:.0f}s of {settings.cooldown_seconds}s")
    if budget_left(st, now, settings.max_restarts_per_hour) <= 0:
        return keep(f"{why}; restart budget of {settings.max_restarts_per_hour}/hour used")
    if mode == AdaptiveMode.RECOMMEND:
        return Decision(action, target, f"recommend {why}", round(gain, 4), pred, st)
    st = replace(
        st,
        last_explore=now if exploring else st.last_explore,
        k=target,
        changes=[*st.changes, now],
        last_change=now,
        pending_from=current_k,
        since=now,
    )
    return Decision(action, target, why, round(gain, 4), pred, st)


def rollback(state: PolicyState, now: float, reason: str) -> Decision | None:
    """After a failed rollout of a policy change: go back to the previous k (once)."""
    if state.pending_from is None:
        return None
    back = state.pending_from
    st = replace(state, k=back, pending_from=None, since=now, last_change=now, changes=[*state.changes, now])
    return Decision(ROLLBACK, back, f"rollout failed ({reason}); back to k={back}", state=st)
