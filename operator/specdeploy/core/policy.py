"""Observations + policy state + settings -> a decision (pure: no I/O, no clock of its own, deterministic).

What the policy does, per evaluation of one SpeculativeDeployment:

1. **Trust only fresh, settled data.** No observation, fewer pods than expected, or a window that still
   overlaps the last rollout: keep, and say why.
2. **Learn.** Per-position acceptance ``p_i`` is measured for every position the pods run (kept with its time,
   so it survives turning speculation off, with confidence decaying as it ages; positions a shallower setting no
   longer drafts keep what a deeper one measured). The step cost is fitted to the windows' mean ITL (vLLM
   observes one step per request) at their batch, k and prompts, pulled toward the prior (:mod:`.learn`): the load
   where speculation stops paying is measured, not configured.
3. **Predict** the per-token latency (step / E(k), or queueing once the replica saturates) for speculation off
   and every k in ``[minTokens, maxTokens]`` at the forecast load (the higher of the recent mean and the last
   window, plus what draining the queue needs; offered load counts the queue's growth, since a saturated
   replica completes only its capacity; under a rising load, the mean of that and where the load is headed by
   the time a setting chosen now must still serve it; where bursts recur, per token over the loads the horizon
   holds: between bursts, theirs for their share of the time; within one, its load for what is left of it, its
   typical length or, before one ended, as long again as it has run, then the load it jumped from). Only settings
   that would also serve the recent peak (held for the horizon, then decaying) qualify, so recurring bursts keep
   their headroom; and, under a gradually rising load (a trend, not a jump), only settings that would serve it
   until they can be left again: a rolling restart from a saturated setting runs on the old pods and queues, so the
   time to leave is before saturation.
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

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..api import Adaptive, AdaptiveMode
from .learn import (
    CAPACITY_MEMORY_S,
    ENVELOPE_GROWTH,
    ENVELOPE_STEP,
    Capacity,
    Sample,
    compute_measured,
    envelope_limit,
    keep_samples,
    learned_profile,
    remember_capacity,
    remember_envelope,
    sample_of,
    step_share,
)
from .model import (
    FULL_BATCH_SHARE,
    Profile,
    Schedule,
    Setting,
    best_schedule,
    capacity_qps,
    drafts_within,
    drain_rates,
    extend_acceptance,
    k_at,
    queue_cost_ms,
    schedule_label,
    steady_state,
    top_k,
    upto,
    within_envelope,
)
from .observation import NoData, Observation

KEEP, SET_K, TURN_OFF, TURN_ON, ROLLBACK = "keep", "set-k", "turn-off", "turn-on", "rollback"
USER_CHANGE = "user-change"  # not the policy's: the history's record that the user's spec replaced its setting
RELEARN = "relearn"  # not the policy's: the history's record that the spec changed what the pods run
HOUR_S = 3600.0  # the restart budget's window (spec.adaptive.maxRestartsPerHour)

# Tuned constants. Each was set on the shipped traces (hack/bench_policy.py) and pinned by a test in
# tests/unit/test_policy.py; the comment says what moving it trades.
# How fast an old acceptance measurement loses weight while off. Acceptance follows the traffic mix, which moves
# over hours to days; at high load a few percent of it is all the headroom a setting has, so it fades slowly.
ACCEPTANCE_HALF_LIFE_S = 8 * 3600.0
ACCEPTANCE_CONFIDENCE_FLOOR = 0.5  # however old, a measurement keeps this weight: lower turns back on later
EXTRAPOLATION_DISCOUNT = 0.7  # unmeasured positions count this much of their extrapolated value: higher explores more
EXPLORE_EVERY_S = 1800.0  # at most one move beyond the measured positions per half hour: restarts vs learning
EXPLORE_MIN_UPSIDE = 0.15  # relative gain the extrapolation must promise before exploring upward: lower risks more
PROBE_MARGIN = 0.1  # a probe drafts up to this much above the batch running: more drafts at more of its steps, and
# costs more (the running setting at a larger batch) where the acceptance disappoints
SATURATION_LATENCY_FACTOR = 20.0  # a saturated setting counts as this many times its latency: ranks it last
LOAD_MEMORY = 0.3  # EWMA weight of the newest load sample: higher follows bursts faster, lower flaps less
NOISE_Z = 2.0  # a peak counts this many standard deviations of window noise below what was seen: fewer chases noise
BURST_FACTOR = 1.5  # a window this many times the mean load is a burst (whose recurrence is remembered)
BURST_MIN_GAP_S = 600.0  # windows of one burst: a burst starting sooner after the last is the same one
BURSTS_KEPT = 5  # jumps remembered, for their recurrence
BURST_SHARE_MAX = 0.5  # bursts are priced as taking at most this share of the time: beyond it they are the load
RECURRENCE_MARGIN = 1.2  # a peak is held this much longer than bursts take to recur: jitter in their timing
QUEUE_MIN = 1.0  # requests waiting per replica that show a setting serves all it can (a capacity ceiling)
HEADROOM_MIN = 0.2  # a schedule taken for headroom alone must carry this much more load: less restarts for little
HEADROOM_LOAD_SHARE = 0.5  # ... and the load be below this share of the current capacity: a restart is cheap there
HEADROOM_LOAD = 2.0  # ... or be that much faster at this multiple of the load: the larger batches a rise brings
TREND_WINDOW_S = 900.0  # the trend is fitted over this much history: longer is surer, shorter follows turns
TREND_MIN_WINDOWS = 10  # windows before a trend counts at all: fewer, and a short noisy history forces changes
TREND_Z = 1.0  # a trend counts less this many standard errors: more waits for surer rises (0 chased noise on diurnal)
TREND_MAX_STEP = 0.1  # a load change larger than this fraction between two evaluations is a jump, not a trend
COLD_REPLICA = 0.25  # a surge pod starting cold (caches, compilation) costs this share of a replica while it warms
MAX_HORIZON_FACTOR = 4.0  # a load steady for long extends the payback horizon up to this many horizons
TREND_MAX_SHARE = 0.5  # a rising trend is trusted up to this share of the current load: more leaves settings early
AHEAD_SHARE = 0.9  # a rising load is priced where it is headed, up to this share of the running setting's capacity:
# past it saturation penalties, not latencies, would rank the candidates; lower looks less far ahead
ROLLOUT_MARGIN = 0.15  # a rollout is priced at a load this much above the forecast (its queue, or infinite where the
# new setting would not drain it): where no queue has shown a setting's capacity the model's figure is a guess, and
# a rollout that queues near capacity costs more than most changes gain; higher holds still nearer capacity
MODEL_ERROR_MAX = 2.0  # the model's error measured on the running setting scales every candidate by at most this
# factor either way: a window far off the model says more about the window than about the model
UNREAD_SHARE = 0.5  # an MoE whose steps cost under this share of the prior's (which reads every expert each step)
# read few of its experts, and more tokens per step read more: higher hedges an MoE that is only faster than its
# prior (a faster GPU, quantized weights), lower trusts its cheap steps at batches no window measured
UNMEASURED_COMPUTE_FACTOR = 2.0  # compute no window measured is planned this dear, for a change by choice, beside
# the fitted model: a prior's cost is known to within about this factor; higher changes less on the prior's word
SAME_COST = 1e-6  # relative: costs closer are one cost computed along two paths (a schedule drafting as a k does)
MAX_LOSS = -1.0  # the least relative gain reported (twice the running cost, or endless): status is JSON
MIXED_DRAFTS = 0.25  # a window drafting this many tokens per step away from its band's k ran several bands' k: its
# cost sample is at their mean, and it tells no one k's capacity; more lets a mix pass for one k
FAILED_HOLD_S = 6 * 3600.0  # a setting whose pods failed to start is not tried again for this long: the restart
# budget is not spent on it again, yet a fix (memory, image) is picked up within the working day


@dataclass
class PolicyState:
    """What the policy remembers between evaluations (kept in status.policy)."""

    k: Setting | None = None  # the setting running: a k (0 = off) or a per-batch-size schedule
    since: float | None = None  # when the current setting became fully rolled out (epoch seconds)
    acceptance: list[float] = field(default_factory=list)  # last measured p_1..p_n
    acceptance_time: float | None = None
    samples: list[list[float]] = field(default_factory=list)  # recent windows at the running k (learn.Sample)
    floors: dict[str, list[float]] = field(default_factory=dict)  # k -> [most served without a queue, time]
    ceilings: dict[str, list[float]] = field(default_factory=dict)  # k -> [served while requests waited, time]
    envelope: list[float] | None = None  # [most tokens per step a window measured, time]
    load_qps: float | None = None  # EWMA of per-replica request rate
    load_slope: float | None = None  # its significant rate of rise (req/s per replica, per second)
    load_history: list[list[float]] = field(default_factory=list)  # (time, offered load) since the last jump
    load_time: float | None = None  # when load_qps was last updated
    changes: list[float] = field(default_factory=list)  # times of restarts in the last hour
    last_change: float | None = None
    last_explore: float | None = None
    pending_from: Setting | None = None  # the setting before the restart in progress (for rollback)
    last_waiting: float | None = None  # queued requests per replica at the last evaluation, for queue growth
    last_eval: float | None = None
    peak_qps: float | None = None  # held, then decaying, maximum of the offered load per replica
    peak_time: float | None = None
    regime_qps: float | None = None  # the load level the current regime started at (per replica)
    regime_since: float | None = None  # when the load last left the band around it
    bursts: list[float] = field(default_factory=list)  # when the load last jumped up (newest last)
    burst_base: float | None = None  # the load a burst under way jumped from (None between bursts)
    burst_spans: list[float] = field(default_factory=list)  # how long the last bursts lasted, seconds (newest last)
    failed: dict[str, float] = field(default_factory=dict)  # setting label -> when its rollout failed
    basis: str | None = None  # what the pods run, as a digest (evaluate.learned_basis): what the state learned of
    gpu: str | None = None  # the class of GPU the pods were last seen on (None: never seen); what it learned of too

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> PolicyState:
        raw = dict(raw or {})
        names = set(cls.__dataclass_fields__)
        for key in ("k", "pending_from"):  # a schedule goes through JSON as a list of [first batch, k] pairs
            if isinstance(raw.get(key), list):
                raw[key] = as_setting(raw[key])
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """All fields, None included: status is written by JSON merge patch, where null deletes a key and a
        missing key would keep a stale value."""
        return asdict(self)


def on_other_gpus(state: PolicyState, gpu: str | None) -> bool:
    """Whether the pods were seen on another class of GPU than the one ``state`` learned on (neither unknown)."""
    return None not in (state.gpu, gpu) and state.gpu != gpu


def another_deployment(state: PolicyState, basis: str, gpu: str | None) -> bool:
    """Whether the pods now run another deployment than the one ``state`` learned: their ``basis`` differs (another
    model, speculator, image or vLLM argument), or the GPUs they were seen on do. A state from before bases were
    kept, or pods whose GPU is unknown, are taken as the same."""
    return state.basis not in (None, basis) or on_other_gpus(state, gpu)


def for_deployment(state: PolicyState, basis: str, gpu: str | None) -> PolicyState:
    """The state for the deployment ``basis`` and ``gpu`` describe. Another than the one the state learned
    (:func:`another_deployment`): what was measured of that one (acceptance, costs, capacities, the envelope,
    failed rollouts, the last exploration) is forgotten, as it would mislead the plans for this one; the load, the
    setting running and the restart budget stay (the traffic and the replicas are the same)."""
    known = replace(state, basis=basis, gpu=gpu or state.gpu)
    if not another_deployment(state, basis, gpu):
        return known
    return replace(known, acceptance=[], acceptance_time=None, samples=[], floors={}, ceilings={}, envelope=None,
                   failed={}, last_explore=None)  # fmt: skip


def as_setting(raw: int | list[list[int]] | Schedule) -> Setting:
    """A setting from status: a k, or a schedule as JSON lists."""
    return raw if isinstance(raw, int) else tuple((int(first), int(k)) for first, k in raw)


def label(setting: Setting) -> str:
    """How a decision names a setting."""
    return "speculation off" if setting == 0 else f"k={schedule_label(setting)}"


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
    to_k: Setting | None
    reason: str
    expected_gain: float = 0.0  # relative per-token latency improvement predicted
    predicted_ms: dict[Setting, float] = field(default_factory=dict)
    state: PolicyState = field(default_factory=PolicyState)

    @property
    def changes_k(self) -> bool:
        return self.action in (SET_K, TURN_OFF, TURN_ON, ROLLBACK)


def budget_left(state: PolicyState, now: float, per_hour: int) -> int:
    return max(0, per_hour - sum(1 for t in state.changes if now - t < HOUR_S))


def rollout_seconds(r: Rollout) -> float:
    """Pods restart in waves of ``maxSurge + maxUnavailable``, each taking ``restart_seconds``."""
    return r.restart_seconds * math.ceil(r.replicas / max(1, r.max_surge + r.max_unavailable))


def restart_capacity_loss(r: Rollout) -> float:
    """Fraction of serving capacity missing while the rollout runs.

    Each wave removes ``maxUnavailable`` replicas; with surge only no serving replica is lost, but the new pods
    start cold (caches, compilation), counted as a quarter of a replica.
    """
    lost = r.max_unavailable if r.max_unavailable > 0 else COLD_REPLICA * min(r.max_surge, r.replicas)
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
    if waves == 0:  # scaled to zero: nothing to roll, what comes up runs the new setting
        return 1.0
    return sum(min(r.replicas, j * m) for j in range(waves)) / waves / max(1, r.replicas)


def rollout_capacity(r: Rollout, cap_from: float, cap_to: float) -> float:
    """Mean per-replica capacity while a rollout from a setting serving ``cap_from`` to one serving ``cap_to``
    runs: new pods as they come, the old ones less those the restart takes away (``maxUnavailable``, or the
    cold start of surge pods). The offline simulator uses the same figure, so the policy plans with the world
    it is scored in."""
    s = new_share(r)
    return max(0.0, 1 - s - restart_capacity_loss(r)) * cap_from + s * cap_to


def rollout_overload_ms(
    prof: Profile, rollout: Rollout, qps: float, p: list[float], from_k: Setting, to_k: Setting
) -> float:
    """Token-milliseconds of queueing a rolling restart causes per replica when its reduced capacity falls
    short of the load: the backlog built while it runs waits until the new setting has drained it (a triangle
    of queue over time), and the tokens served meanwhile run at the new setting's full batch."""
    return rollout_queue(prof, rollout, qps, p, from_k, to_k)[0]


def rollout_queue(
    prof: Profile, rollout: Rollout, qps: float, p: list[float], from_k: Setting, to_k: Setting
) -> tuple[float, float]:
    """:func:`rollout_overload_ms`, and the seconds from the rollout's start until its queue is gone (0 without
    one)."""
    cap_new, excess, request_ms = drain_rates(prof, qps, to_k, upto(p, to_k))
    during = rollout_capacity(rollout, capacity_qps(prof, from_k, upto(p, from_k)), cap_new)
    if during >= qps:
        return 0.0, 0.0
    if cap_new <= qps:
        return math.inf, math.inf
    duration = rollout_seconds(rollout)
    backlog = (qps - during) * duration
    cost = backlog * duration / 2 * 1000 + queue_cost_ms(backlog, cap_new - qps, excess, request_ms)
    return cost, duration + backlog / (cap_new - qps)


def horizon_cost_ms(
    prof: Profile,
    rollout: Rollout,
    horizon_s: float,
    qps: float,
    waiting: float,
    p: list[float],
    current_k: Setting,
    k: Setting,
    token_ms: float,
    margin: float = 0.0,
) -> float:
    """Token-milliseconds per replica over the horizon if k runs: the steady per-token latency, the wait of the
    queue already there until k drains it, and, for a change, the queue the rollout itself builds, priced at a
    load ``margin`` above ``qps`` (the capacities it rests on are the model's). A rollout whose queue outlasts
    the horizon is counted until the queue is gone: its drain is priced at full batch against the usual latency
    of the same seconds, so cutting those seconds short would credit a setting with the latency it is fast at
    while it is not yet running at it."""
    cap = capacity_qps(prof, k, upto(p, k))
    if cap <= qps:
        return math.inf
    total = waiting * waiting / (cap - qps) / 2 * 1000
    span = horizon_s
    if k != current_k:
        overload, drained = rollout_queue(prof, rollout, qps * (1 + margin), p, current_k, k)
        total += overload
        span = max(span, drained)
    return total + steady_cost_ms(prof, qps, token_ms, span)


def steady_cost_ms(prof: Profile, qps: float, token_ms: float, seconds: float) -> float:
    """Token-milliseconds per replica of serving ``qps`` at ``token_ms`` per token for ``seconds``."""
    return token_ms * qps * prof.output_tokens * seconds


def effective_acceptance(state: PolicyState, now: float, upto: int, prior: Profile) -> tuple[list[float], int]:
    """p_1..p_upto from the last measurement, aged, and how many of them were measured.

    With nothing measured yet (a deployment that started with speculation off), the performance model's
    acceptance serves as a discounted prior for the first position only."""
    measured = list(state.acceptance)
    if not measured:
        return [x * EXTRAPOLATION_DISCOUNT for x in extend_acceptance(prior.acceptance, upto)], 1
    age = max(0.0, now - (state.acceptance_time or now))
    floor = ACCEPTANCE_CONFIDENCE_FLOOR
    confidence = floor + (1 - floor) * 0.5 ** (age / ACCEPTANCE_HALF_LIFE_S)
    full = extend_acceptance(measured, upto)
    out = [x * confidence * (1.0 if i < len(measured) else EXTRAPOLATION_DISCOUNT) for i, x in enumerate(full)]
    return out, min(len(measured), upto)


def hoped_acceptance(state: PolicyState, p: list[float], prior: Profile) -> list[float]:
    """The acceptance ``p`` the plans use (:func:`effective_acceptance`) as a probe hopes to find it: the positions
    ``state`` measured as measured (aged), the rest extrapolated undiscounted, each at the larger of the last
    measured ratio and the prior's own there (from one measured position the extrapolation's ratio is that
    position, as if tokens were accepted independently: 0.46, 0.21, 0.10 where drafters run more like the prior's
    0.73 per position); the prior's own while nothing was measured."""
    upto = len(p)
    measured = min(len(state.acceptance), upto)
    if not measured:
        return [x / EXTRAPOLATION_DISCOUNT for x in p]
    hoped = p[:measured]
    last = hoped[-1] / hoped[-2] if measured >= 2 and hoped[-2] > 0 else hoped[-1]
    shape = extend_acceptance(prior.acceptance, upto)
    for i in range(measured, upto):
        ratio = shape[i] / shape[i - 1] if shape[i - 1] > 0 else last
        hoped.append(hoped[-1] * min(1.0, max(last, ratio)))
    return hoped


def predict_ms(prof: Profile, qps: float, k: int, p: list[float]) -> float:
    """Per-token latency at per-replica load ``qps`` for draft length k; saturation counts heavily."""
    ss = steady_state(replace(prof, acceptance=tuple(p) or prof.acceptance), qps, k, p if k else [])
    base = ss.token_latency_ms
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
    queued: bool = False  # measured saturation: requests wait and their queue grew over the last interval
    measured_ms: float | None = None  # the running setting's per-token latency this window (steps / tokens)
    measured_qps: float = 0.0  # ... at the load this window served
    measured_full: bool = False  # ... with requests waiting: at full batch, the load served its capacity
    measured_batch: float = 0.0  # ... at this batch (requests running)
    bursts: tuple[float, float] | None = None  # where bursts recur: the other load the horizon holds (the bursts',
    # or within one the calm's) and the share of time it takes
    noise: float = 0.0  # the relative spread of this window's request count (1 / sqrt(requests counted))


def _learn_load(
    st: PolicyState, qps: float, waiting: float, noise: float, settings: Adaptive, rollout: Rollout, now: float
) -> tuple[PolicyState, Load]:
    """Offered load, its mean, trend and peak, from completions and the queue (both per replica). ``noise`` is
    the relative spread of the window's request rate: a peak or a jump counts by what is significant in it."""
    # A saturated replica completes only its capacity: arrivals = completions + the queue's change (negative
    # while a queue drains, when completions exceed arrivals).
    if st.last_waiting is not None and st.last_eval is not None and now > st.last_eval:
        growth = (waiting - st.last_waiting) / (now - st.last_eval)
    else:  # no history: assume the queue built up over the last interval
        growth = waiting / settings.evaluation_interval_seconds
    offered = max(0.0, qps + growth)
    queued = waiting >= QUEUE_MIN and growth > 0
    significant = offered * max(0.0, 1 - NOISE_Z * noise)  # what this window surely saw
    ewma = offered if st.load_qps is None else (1 - LOAD_MEMORY) * st.load_qps + LOAD_MEMORY * offered
    # The trend of a gradual change, fitted over the recent windows; a jump (a burst) is no trend and starts the
    # history anew: the peak remembers it instead.
    band = max(TREND_MAX_STEP, NOISE_Z * noise) * max(st.load_qps or 0.0, 1.0)
    gradual = st.load_qps is not None and abs(offered - st.load_qps) <= band
    history = [h for h in st.load_history if now - h[0] <= TREND_WINDOW_S] if gradual else []
    history = [*history, [now, round(offered, 4)]]
    slope = significant_slope(history)
    bursts, base, spans = _track_bursts(st, offered, significant, now, settings.horizon_seconds)
    # A peak matters as long as a change must pay for itself, or, when bursts recur, until the next is due.
    hold = max(settings.horizon_seconds, RECURRENCE_MARGIN * recurrence(bursts))
    held = now - (st.peak_time if st.peak_time is not None else now)
    remembered = (st.peak_qps or 0.0) * 0.5 ** (max(0.0, held - hold) / hold)
    peak, peak_time = (significant, now) if significant >= remembered else (remembered, st.peak_time)
    # A load that has held for a while is likely to hold about as long again (the Lindy effect): beyond the
    # configured horizon, a steady regime's age is the horizon a change must pay back over (up to 4 horizons).
    # A new regime starts when the mean leaves the band of TREND_MAX_STEP around the level it started at.
    regime_qps, regime_since = st.regime_qps, st.regime_since
    if regime_qps is None or regime_since is None or abs(ewma - regime_qps) > TREND_MAX_STEP * max(regime_qps, 1.0):
        regime_qps, regime_since = ewma, now
    horizon = min(MAX_HORIZON_FACTOR * hold, max(hold, now - regime_since))
    st = replace(
        st,
        load_qps=round(ewma, 5),
        load_slope=round(slope, 7),
        load_history=history,
        load_time=now,
        last_waiting=round(waiting, 3),
        last_eval=now,
        peak_qps=round(peak, 5),
        peak_time=peak_time,
        regime_qps=round(regime_qps, 5),
        regime_since=regime_since,
        bursts=bursts,
        burst_base=None if base is None else round(base, 5),
        burst_spans=spans,
    )
    # The queue must drain within the time a change needs to take effect (or a window, if longer).
    lead = rollout_seconds(rollout) + settings.evaluation_interval_seconds
    forecast = max(ewma, significant) + waiting / max(settings.window_seconds, lead)
    expected = _expected_bursts(st, peak, forecast, hold, horizon, now)
    return st, Load(forecast=forecast, peak=peak, rise=max(0.0, slope), horizon=horizon, queued=queued,
                    bursts=expected, noise=noise)  # fmt: skip


def _track_bursts(
    st: PolicyState, offered: float, significant: float, now: float, longest: float
) -> tuple[list[float], float | None, list[float]]:
    """The bursts' onsets, the load the one under way jumped from (None between bursts) and how long the last ones
    lasted, with this window: a burst starts where the load surely jumped :data:`BURST_FACTOR` times its mean, and
    is over once the load is back nearer where it jumped from than its peak; a jump that holds ``longest`` seconds
    is the load now, no burst."""
    bursts, base, spans = list(st.bursts), st.burst_base, list(st.burst_spans)
    onset = not bursts or now - bursts[-1] > BURST_MIN_GAP_S
    if onset and st.load_qps is not None and significant >= BURST_FACTOR * max(st.load_qps, 1.0):
        return [*bursts, now][-BURSTS_KEPT:], st.load_qps, spans
    if base is not None and bursts and offered < (base + (st.peak_qps or offered)) / 2:
        return bursts, None, [*spans, now - bursts[-1]][-BURSTS_KEPT:]
    if base is not None and bursts and now - bursts[-1] >= longest:
        return bursts, None, spans
    return bursts, base, spans


def _expected_bursts(
    st: PolicyState, peak: float, forecast: float, hold: float, horizon: float, now: float
) -> tuple[float, float] | None:
    """The other load the horizon holds besides the forecast, and the share of time it takes. Between bursts seen to
    end: the load they bring, for their typical length over their recurrence (over the time a peak is held, before
    they recurred). Within one: the load it jumped from, once the burst has run its typical length or, before one
    was seen to end, as long again as it has run (the Lindy guess the regime's horizon makes too: nothing else says
    how long it lasts), less the bursts to come. None between bursts before one ended, or once the held peak has
    decayed to no burst at all."""
    within = st.burst_base is not None and bool(st.bursts)
    if not st.burst_spans and not within:
        return None
    ran = now - st.bursts[-1] if within else 0.0
    span = sorted(st.burst_spans)[len(st.burst_spans) // 2] if st.burst_spans else 2 * ran  # (Lindy)
    share = min(BURST_SHARE_MAX, span / (recurrence(st.bursts) or hold))
    if within:  # what is left of it, then the calm with its share of bursts
        left = max(0.0, span - ran)
        busy = min(horizon, left + (horizon - left) * share)
        return (st.burst_base, 1 - busy / horizon) if busy < horizon else None
    if peak < BURST_FACTOR * max(forecast, 1e-9):
        return None
    return peak, share


def recurrence(bursts: list[float]) -> float:
    """The typical time between the load's jumps (the median gap), 0 before two of them."""
    gaps = sorted(b - a for a, b in itertools.pairwise(bursts) if b - a > 0)
    return gaps[len(gaps) // 2] if gaps else 0.0


def significant_slope(history: list[list[float]]) -> float:
    """The rise of the load over ``history`` (least squares), less :data:`NOISE_Z` standard errors: what the
    windows' noise cannot explain. 0 with too few windows or no significant rise."""
    n = len(history)
    if n < TREND_MIN_WINDOWS:
        return 0.0
    t0 = history[0][0]
    xs, ys = [h[0] - t0 for h in history], [h[1] for h in history]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return 0.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True)) / (n - 2)
    return max(0.0, slope - TREND_Z * math.sqrt(residual / sxx))


def _feasible(
    profile: Profile,
    p: list[float],
    ks: list[Setting],
    current_k: Setting,
    load: Load,
    settings: Adaptive,
    rollout: Rollout,
    served: dict[Setting, float],
    limit: float,
    step: int,
) -> list[Setting]:
    """The settings that would serve the remembered peak and a rising load until they can be left cleanly (else
    the one with the most capacity). Keeping must hold until a change decided at the next evaluation has rolled
    out and the rollout's dip in capacity is over (two rollouts); a new setting must first roll out and sit out
    its cooldown, then hold as long as keeping must. A trend is trusted up to half the current load. A setting
    that ``served`` the load already (measured, without a queue) serves it, whatever the model says. A k that
    would draft more than ``step`` tokens beyond the running setting, at more tokens per step than ``limit`` (what
    was measured, see :func:`~.model.within_envelope`), is no candidate: its cost there is a guess."""
    lead_keep, lead_change = _leads(settings, rollout)

    def need(lead: float) -> float:
        return max(load.peak, load.forecast + min(TREND_MAX_SHARE * load.forecast, load.rise * lead))

    def serves(k: Setting, qps: float) -> bool:
        full = k_at(k, profile.max_num_seqs)  # a setting's capacity is that of the k it drafts at full batch
        if served.get(full, 0.0) >= qps:
            return True
        ss = steady_state(profile, qps, k, upto(p, k))
        return drafts_within(k_at(k, ss.batch), k_at(current_k, ss.batch), ss.batch, limit, step) and not ss.saturated

    need_keep, need_change = need(lead_keep), need(lead_change)
    full = {k: k_at(k, profile.max_num_seqs) for k in ks}
    # A queue that grows is the measurement that the running setting does not serve: no model outweighs it. Requests
    # wait at full batch, so neither does a setting drafting there what runs drafts (a schedule alike at full batch).
    ok = [k for k in ks if not (load.queued and full[k] == full[current_k])
          and serves(k, need_keep if k == current_k else need_change)]  # fmt: skip

    def most(k: Setting) -> tuple[float, bool]:  # what runs wins a tie: a rollout into the overload adds nothing
        return max(served.get(full[k], 0.0), capacity_qps(profile, k, upto(p, k))), k == current_k

    return ok or [max(ks, key=most)]


def _leads(settings: Adaptive, rollout: Rollout) -> tuple[float, float]:
    """How long a setting must hold, seconds: kept, until a change decided at the next evaluation has rolled out and
    the rollout's dip in capacity is over (two rollouts); new, until it has rolled out, sat out its cooldown, and
    then held as long as keeping must."""
    rollout_s = rollout_seconds(rollout)
    keep = settings.evaluation_interval_seconds + 2 * rollout_s
    return keep, rollout_s + settings.cooldown_seconds + keep


def decide(
    obs: Observation | NoData,
    state: PolicyState,
    settings: Adaptive,
    rollout: Rollout,
    profile: Profile,
    current_k: Setting,
    now: float,
    rollout_complete: bool = True,
    settled_at: float | None = None,
    schedules: bool = False,
) -> Decision:
    """The decision for one evaluation of one deployment; ``state`` is not modified (the new one is in the
    decision). A public, documented entry point: other simulators drive the policy through it.

    ``obs``: the last window of the current pods' metrics (or why there is none); ``state``: what the policy
    remembered (``status.policy``); ``settings``: ``spec.adaptive``; ``rollout``: what a restart costs;
    ``profile``: the prior it starts from (:mod:`.prior`; what it measures replaces it, :mod:`.learn`);
    ``current_k``: the setting running (a k, 0 = off, or a schedule); ``now``: epoch seconds;
    ``rollout_complete`` and ``settled_at``: whether, and since when, every replica runs ``current_k``;
    ``schedules``: whether the deployment can run vLLM's per-batch-size k (eagle, eagle3, dflash, without data
    parallelism), which makes a per-batch-size schedule one of the candidates.

    Four stages, each a function: :func:`guard` (is there fresh, settled data?), :func:`learn` (acceptance, step
    cost, load), :func:`predict` (every candidate setting's latency and horizon cost) and :func:`gate` (act only
    when it pays, within dwell, cooldown, budget and mode).
    """
    st = _remember(state, current_k, now)
    stop = guard(obs, st, settings, rollout, current_k, now, rollout_complete, settled_at)
    if isinstance(stop, Decision):
        return stop
    assert isinstance(obs, Observation)
    st, load, waiting = learn(obs, stop, settings, rollout, current_k, now)
    samples, capacity = [Sample.from_list(s) for s in st.samples], Capacity.from_state(st.floors, st.ceilings)
    accepted = effective_acceptance(st, now, settings.max_tokens, profile)
    model = learned_profile(replace(profile, acceptance=tuple(accepted[0])), samples, capacity, now)
    dear = _dear(model, profile)
    unpriced = _compute_unmeasured(profile, dear, st, samples)
    hoped = hoped_acceptance(st, accepted[0], profile)
    pred = predict(st, accepted, load, waiting, settings, rollout, model, dear, current_k, now, schedules, unpriced,
                   hoped)  # fmt: skip
    return gate(pred, st, load, settings, rollout, model, dear, current_k, now)


def _remember(state: PolicyState, current_k: Setting, now: float) -> PolicyState:
    """Forget restarts older than an hour; adopt the running k (at the first evaluation it predates the operator's
    memory and counts as settled; otherwise it was changed elsewhere, by the user, and a new setting starts now)."""
    st = replace(state, changes=[t for t in state.changes if now - t < HOUR_S])
    if st.k is None:
        return replace(st, k=current_k)
    if st.k != current_k:
        return replace(st, k=current_k, since=now, pending_from=None)
    return st


def guard(
    obs: Observation | NoData,
    st: PolicyState,
    settings: Adaptive,
    rollout: Rollout,
    current_k: Setting,
    now: float,
    rollout_complete: bool,
    settled_at: float | None,
) -> Decision | PolicyState:
    """Stage 1: trust only fresh, settled data. A keep decision saying why not, or the state to go on with."""

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
        return no_decision(f"only {obs.pods} of {rollout.replicas} replicas reported in the window")
    # The reader counts only pods of the current template, so a window holding two evaluation intervals of
    # their data is fresh enough: waiting for a whole window would leave a saturated setting in place.
    settle = min(settings.window_seconds, 2 * settings.evaluation_interval_seconds)
    if settled_at is not None and now - settled_at < settle:
        return no_decision(f"waiting for a window of the current pods' metrics ({now - settled_at:.0f}s of {settle}s)")
    if st.since is not None and now - st.since < settle:
        return no_decision(f"the window still covers the previous setting ({now - st.since:.0f}s of {settle}s)")
    return st


def learn(
    obs: Observation, st: PolicyState, settings: Adaptive, rollout: Rollout, current_k: Setting, now: float
) -> tuple[PolicyState, Load, float]:
    """Stage 2: per-position acceptance (while speculating); the window as a sample of the deployment's own
    performance (while the pods run the k in status: :mod:`.learn` fits the model to them);
    and the load. Returns the state, the load and the queue per replica."""
    pods = max(1, obs.pods)
    qps, waiting, batch = obs.request_rate / pods, obs.waiting / pods, obs.running / pods
    # A window's request count is Poisson: its rate is known to within 1 / sqrt(requests counted).
    counted = obs.request_rate * settings.window_seconds
    noise = 1 / math.sqrt(max(1.0, counted))
    if top_k(current_k) > 0 and (reached := obs.positions_measured) > 0:
        # Positions no draft of this window reached (a schedule's high bands, at a batch drafting less; past the k
        # running, what a deeper setting measured) keep what an earlier window measured, no higher than the last
        # position reached.
        fresh = list(obs.per_position[:reached])
        measured = [*fresh, *(min(x, fresh[-1]) for x in st.acceptance[reached:])]
        st = replace(st, acceptance=[round(x, 5) for x in measured], acceptance_time=now)
    k = k_at(current_k, batch)  # a schedule drafts the k of the batch size running
    drafted = obs.drafted_per_step
    one_k = drafted is None or abs(drafted - k) <= MIXED_DRAFTS
    if top_k(current_k) == obs.k_running:
        # The window counts for that k, unless its steps drafted several (a schedule's balance at a band edge):
        # then its step time is that of their mean k, and what it served no one k's capacity.
        step_ms = obs.itl_mean_s * 1000 if obs.itl_mean_s else None
        ran = k if one_k or drafted is None else round(drafted, 3)
        sample = sample_of(now, ran, batch, step_ms, qps, obs.prompt_tps / pods, obs.generation_tps / pods, counted)
        if sample is not None:
            envelope = remember_envelope(st.envelope, sample.batch, ran, now)
            st = replace(st, samples=keep_samples([*st.samples, sample.to_list()]), envelope=envelope)
        if qps > 0 and one_k:
            floors, ceilings = remember_capacity(st.floors, st.ceilings, k, qps, noise, waiting >= QUEUE_MIN, now)
            st = replace(st, floors=floors, ceilings=ceilings)
    st, load = _learn_load(st, qps, waiting, noise, settings, rollout, now)
    if obs.token_latency_s and top_k(current_k) == obs.k_running and not load.queued:
        full = waiting >= QUEUE_MIN
        ms = obs.token_latency_s * 1000
        load = replace(load, measured_ms=ms, measured_qps=qps, measured_full=full, measured_batch=batch)
    return st, load, waiting


@dataclass(frozen=True)
class Prediction:
    """What every candidate setting would do at the forecast load (stage 3)."""

    p: list[float]  # acceptance the prediction used (measured, aged; extrapolated past the measured positions)
    measured_len: int  # how many positions of ``p`` were measured
    latency_ms: dict[Setting, float]  # predicted per-token latency of each candidate
    horizon_ms: dict[Setting, float]  # token-milliseconds per replica over the horizon, rollout included
    feasible: list[Setting]  # candidates that would serve the peak and the trend, best ranked first (:func:`_ranked`)
    best: Setting
    gain: float  # horizon cost the best setting saves over the current one, relative (1: the current cannot serve)
    probe: Setting | None = None  # a cheap way to measure acceptance positions no window measured (:func:`_probe`)
    probe_hope: float = 0.0  # what the probe would gain over what runs, relative, as hoped (:func:`hoped_acceptance`)
    unpriced: bool = False  # the compute past an MoE's known tokens per step is unmeasured: planned dear


def predict(
    st: PolicyState,
    accepted: tuple[list[float], int],
    load: Load,
    waiting: float,
    settings: Adaptive,
    rollout: Rollout,
    profile: Profile,
    dear: Profile,
    current_k: Setting,
    now: float,
    schedules: bool = False,
    unpriced: bool = False,
    hoped: list[float] | None = None,
) -> Prediction:
    """Stage 3: every candidate's per-token latency (:func:`_latencies`: at the forecast load, and where a rising load
    is headed) and horizon cost, and the best feasible.
    ``accepted``: the acceptance to plan with and how many of its positions were measured
    (:func:`effective_acceptance`). Candidates: speculation off (if allowed), every k within bounds, the running
    setting, and, where vLLM can run one, the schedule drafting at each batch size the k the model finds fastest
    there (:func:`~.model.best_schedule`; ``unpriced``, for an MoE whose compute past its known tokens per step no
    window measured (:func:`_compute_unmeasured`), fastest with that compute ``dear``, :func:`_dear`), and a probe
    of the positions no window measured, hoping for ``hoped`` (:func:`hoped_acceptance`; :func:`_probe`), where
    its rollout drains (:func:`_probe_drains`). Each prediction is corrected by the model's error on the running
    setting this window (:func:`_corrected`). With a schedule at hand, a k beyond the positions measured is tried
    only inside one, never as a static setting. At equal cost a schedule wins: it meets a change of load without a
    restart."""
    p, measured_len = accepted
    # Past the tokens per step the prior knows or ENVELOPE_GROWTH times what the windows measured, a candidate drafts
    # at most ENVELOPE_STEP tokens more than what runs; under a measured queue, past what they measured, no more than
    # what runs: a saturated setting is left for one that drafts less where drafting more was never measured to add
    # capacity.
    growth, step = (1.0, 0) if load.queued else (ENVELOPE_GROWTH, ENVELOPE_STEP)
    limit = envelope_limit(st.envelope, profile.known_tokens_per_step, growth)
    ks = [*([0] if settings.allow_disable else []), *range(settings.min_tokens, settings.max_tokens + 1)]
    candidates: list[Setting] = list(ks)
    if schedules:
        known = max(measured_len, top_k(current_k))
        candidates = [k for k in ks if k <= known]
        candidates.append(_schedule(profile, dear, unpriced, p, ks))
        candidates = [within_envelope(c, current_k, limit, profile.max_num_seqs, step) for c in candidates]
    probe = _probe(profile, st, load, settings, current_k, now) if schedules else None
    probe = None if probe is None else within_envelope(probe, current_k, limit, profile.max_num_seqs, step)
    candidates += [probe] if probe is not None else []
    candidates = [c for c in candidates if now - st.failed.get(schedule_label(c), -math.inf) > FAILED_HOLD_S]
    candidates.append(current_k)
    q = load.forecast
    latency = _latencies(profile, load, settings, rollout, current_k, p, candidates)
    served: dict[Setting, float] = {int(k): v[0] for k, v in st.floors.items() if now - v[1] <= CAPACITY_MEMORY_S}
    feasible = _feasible(profile, p, list(latency), current_k, load, settings, rollout, served, limit, step)
    horizon = _horizons(profile, rollout, load, waiting, p, current_k, latency)
    feasible = sorted(feasible, key=_ranked(horizon, latency))
    best = feasible[0]
    probe = probe if probe in feasible and _probe_drains(profile, rollout, load, p, current_k, probe) else None
    hope = 0.0 if probe is None else _probe_hope(profile, q, p, hoped or p, current_k, probe)
    gain = _gain(horizon, current_k, best)
    return Prediction(p, measured_len, latency, horizon, feasible, best, gain, probe, hope, unpriced)


def _horizons(
    profile: Profile,
    rollout: Rollout,
    load: Load,
    waiting: float,
    p: list[float],
    current_k: Setting,
    latency: dict[Setting, float],
) -> dict[Setting, float]:
    """Every candidate's horizon cost (:func:`horizon_cost_ms`). A setting with requests waiting is left however
    its rollout queues; otherwise a rollout is priced with a margin on the load. Where the model says what runs
    saturates at the forecast while it was measured serving without a growing queue, keeping it costs what was
    measured, not an endless queue nobody saw (which would make any rollout that drains a full gain)."""
    margin = 0.0 if waiting >= QUEUE_MIN else ROLLOUT_MARGIN
    q = load.forecast
    horizon = {
        k: horizon_cost_ms(profile, rollout, load.horizon, q, waiting, p, current_k, k, latency[k], margin)
        for k in latency
    }
    if math.isinf(horizon[current_k]) and load.measured_ms is not None:
        horizon[current_k] = steady_cost_ms(profile, q, load.measured_ms, load.horizon)
    return horizon


def _latencies(
    profile: Profile,
    load: Load,
    settings: Adaptive,
    rollout: Rollout,
    current_k: Setting,
    p: list[float],
    candidates: list[Setting],
) -> dict[Setting, float]:
    """Every candidate's per-token latency at the forecast load; while the load rises, the mean of that and the
    latency where it is headed by the time a setting taken now must still serve it (:func:`_leads`), short of
    saturating what runs (leaving that is :func:`_feasible`'s concern): two settings alike at today's batch can
    differ at the batches the rise brings, where a restart no longer comes cheap. Each corrected by the model's
    error on the running setting (:func:`_corrected`)."""
    q = load.forecast
    room = AHEAD_SHARE * capacity_qps(profile, current_k, upto(p, current_k))
    ahead = max(q, min(q + min(TREND_MAX_SHARE * q, load.rise * _leads(settings, rollout)[1]), room))

    def priced(k: Setting) -> float:
        today = predict_ms(profile, q, k, upto(p, k))
        if load.bursts is not None:  # per token: the other load carries its share of the time
            other, share = load.bursts
            tokens_now, tokens_other = (1 - share) * q, share * other
            if tokens_now + tokens_other <= 0:  # (a burst just begun, from no load at all: nothing else to price)
                return today
            there = predict_ms(profile, other, k, upto(p, k))
            return (tokens_now * today + tokens_other * there) / (tokens_now + tokens_other)
        return today if ahead == q else (today + predict_ms(profile, ahead, k, upto(p, k))) / 2

    return _corrected(profile, load, current_k, p, {k: priced(k) for k in dict.fromkeys(candidates)})


def _schedule(profile: Profile, dear: Profile, unpriced: bool, p: list[float], ks: list[int]) -> Setting:
    """The schedule offered (:func:`~.model.best_schedule`). Where the prior cannot price the compute past a few
    tokens per step (an MoE) and no window measured it (``unpriced``), the one fastest were that compute dear: as
    fast at the batches measured, drafting less where a burst would meet the compute (the model's own once windows
    have measured it)."""
    schedule = best_schedule(dear if unpriced else profile, p, ks)
    return schedule if len(schedule) > 1 else schedule[0][1]


def _compute_unmeasured(prior: Profile, dear: Profile, st: PolicyState, samples: list[Sample]) -> bool:
    """Whether the prior cannot price the compute past a few tokens per step (an MoE) and no window measured it:
    none verified far past those tokens (:data:`ENVELOPE_GROWTH` times), or, where the steps cost under
    :data:`UNREAD_SHARE` of the prior's (few experts read: more tokens per step read more, at a cost no window
    saw), none where that compute, were it dear, would have been a share of the step (the fit's own test,
    :func:`~.learn.compute_measured`)."""
    priced = prior.known_tokens_per_step
    if not math.isfinite(priced):
        return False
    if (st.envelope[0] if st.envelope else 0.0) <= ENVELOPE_GROWTH * priced:
        return True
    share = step_share(prior, samples)
    return share is not None and share < UNREAD_SHARE and not compute_measured(dear, samples)


def _probe_hope(
    profile: Profile, q: float, p: list[float], hoped: list[float], current_k: Setting, probe: Setting
) -> float:
    """What the probe would gain over what runs at the load ``q``, relative, with the acceptance it hopes to find
    (:func:`hoped_acceptance`; the plans, ``p``, discount what no window measured)."""
    here = predict_ms(profile, q, current_k, upto(p, current_k))
    there = predict_ms(replace(profile, acceptance=tuple(hoped)), q, probe, upto(hoped, probe))
    return (here - there) / here


def _probe_drains(
    profile: Profile, rollout: Rollout, load: Load, p: list[float], current_k: Setting, probe: Setting
) -> bool:
    """Whether the probe's rollout queue drains, priced at :data:`NOISE_Z` standard deviations of the window's
    request count above the forecast, not at :data:`ROLLOUT_MARGIN` as a change by choice is: past its edge the
    probe runs what runs, whose steps the windows measured; what they leave unsettled is the load. (Near
    capacity every restart loses what it does not serve: seed 11's world 6, a load at 100% of off's capacity,
    paid 57% for a probe rolled out into it.)"""
    return math.isfinite(
        rollout_overload_ms(profile, rollout, load.forecast * (1 + NOISE_Z * load.noise), p, current_k, probe)
    )


def _probe(
    profile: Profile, st: PolicyState, load: Load, settings: Adaptive, current_k: Setting, now: float
) -> Setting | None:
    """While speculation is off and its acceptance was never measured, the schedule that measures it cheaply: k=1
    up to :data:`PROBE_MARGIN` above the batch running, off beyond; while a k runs (whose windows measure no position
    past it) and nothing was explored for :data:`ACCEPTANCE_HALF_LIFE_S` (what a probe measured has aged by half),
    likewise the largest k allowed up to that batch, the running k beyond (within the envelope where the prior
    cannot price the compute, :func:`predict`). Where the acceptance disappoints, the batch grows past the edge and
    it runs what runs there, at a slightly larger batch; it never has less capacity. The batch running is the one
    measured, or the model's at the forecast if larger: a model that puts it lower (a prefill-heavy world at a batch
    the prior thinks far from full) would draft at full batch, where a saturated replica has no capacity to spare
    for a probe. (None where it does not apply, or the batch running is already at the cap.)"""
    if not isinstance(current_k, int):
        return None
    if current_k == 0 and not st.acceptance and settings.min_tokens <= 1:
        drafts = 1
    elif 0 < current_k < settings.max_tokens and now - (st.last_explore or -math.inf) > ACCEPTANCE_HALF_LIFE_S:
        drafts = settings.max_tokens
    else:
        return None
    p = list(profile.acceptance)
    batch = max(steady_state(profile, load.forecast, current_k, upto(p, current_k)).batch, load.measured_batch)
    edge = max(2, math.ceil(batch * (1 + PROBE_MARGIN)))
    return ((1, drafts), (edge, current_k)) if edge < profile.max_num_seqs else None


def _ranked(horizon: dict[Setting, float], latency: dict[Setting, float]) -> Callable[[Setting], Any]:
    """How candidates rank (a sort key): by horizon cost, then by latency (horizons tie where every rollout would
    queue without end, and where two settings draft alike at this load), a schedule before a static k at a tie (it
    meets a change of load without a restart), then less drafting. Costs within :data:`SAME_COST` tie."""

    def order(a: Setting, b: Setting) -> int:
        for x, y in ((horizon[a], horizon[b]), (latency[a], latency[b])):
            if not math.isclose(x, y, rel_tol=SAME_COST):  # (two endless costs tie)
                return -1 if x < y else 1
        first, second = (isinstance(a, int), top_k(a)), (isinstance(b, int), top_k(b))
        return (first > second) - (first < second)

    return functools.cmp_to_key(order)


def _gain(horizon: dict[Setting, float], current_k: Setting, target: Setting) -> float:
    """The horizon cost ``target`` saves over the running setting, relative (1: the running one cannot serve and
    ``target`` can; both endless, or no load and no cost: nothing known to gain). No less than -1 (``target`` costs
    twice as much, or without end): a loss that large is no nearer paying however it is counted, and the figure
    goes into status, where JSON has no infinity."""
    here, there = horizon[current_k], horizon[target]
    if math.isinf(here):
        return 0.0 if math.isinf(there) else 1.0
    return max(MAX_LOSS, (here - there) / here) if here > 0 else 0.0


def _corrected(
    profile: Profile, load: Load, current_k: Setting, p: list[float], latency: dict[Setting, float]
) -> dict[Setting, float]:
    """Every candidate's predicted latency corrected by the model's error on the running setting, measured this
    window: like is compared with like, so a candidate the model cannot tell from what runs is no gain (a measured
    latency beside predicted ones would credit every other candidate with the model's bias). Where the model says
    the running setting saturates at the load it was just measured serving, its word on capacity is wrong, not
    its scale: the running setting counts as measured and the others as predicted; unless requests waited, when
    it served its capacity at full batch, and the model is held to that (else a queue draining at full batch
    would count as the running setting's latency beside the others' at the usual load)."""
    if load.measured_ms is None:
        return latency
    served = load.measured_qps
    if load.measured_full:
        served = min(served, capacity_qps(profile, current_k, upto(p, current_k)) * FULL_BATCH_SHARE)
    ss = steady_state(profile, served, current_k, upto(p, current_k))
    if ss.saturated or ss.token_latency_ms <= 0:
        return {**latency, current_k: load.measured_ms}
    error = min(MODEL_ERROR_MAX, max(1 / MODEL_ERROR_MAX, load.measured_ms / ss.token_latency_ms))
    return {k: v * error for k, v in latency.items()}


def gate(
    pred: Prediction,
    st: PolicyState,
    load: Load,
    settings: Adaptive,
    rollout: Rollout,
    profile: Profile,
    dear: Profile,
    current_k: Setting,
    now: float,
) -> Decision:
    """Stage 4: act only when it pays (hysteresis on the predicted latency, payback of the restart within the
    horizon), never beyond dwell, cooldown, the hourly budget or the mode; leaving a setting that cannot serve
    the load overrides hysteresis, payback and dwell. ``dear``: the model with the compute no window measured
    dear (:func:`_dear`), which a change by choice must also gain under."""
    # Leaving a setting that cannot serve the load is not a matter of hysteresis or payback: when a queue grows
    # (measured), or a rising trend will saturate it (left ahead of time, unless the rollout itself would already
    # queue: then the saturation has to be measured first, as load often levels off). The model's word alone,
    # against a setting serving without a queue, does not force anything.
    forced = current_k not in pred.feasible and (load.queued or load.rise > 0)
    target, headroom, probing = (
        (pred.best, None, False)
        if forced
        else _by_choice(pred, st, load, profile, dear, rollout, current_k, now, settings.hysteresis)
    )
    cur, forecast, gain = pred.latency_ms[current_k], load.forecast, round(_gain(pred.horizon_ms, current_k, target), 4)
    # Moving to a k beyond the positions measured is a bet; a schedule bets only at the small batches of a low
    # load (cheap and reversible), so only a static k counts as exploring.
    exploring = isinstance(target, int) and top_k(target) > max(pred.measured_len, 1) and target > top_k(current_k)
    if exploring and (held := _exploration_held(pred, st, now)):
        return Decision(KEEP, current_k, held, gain, pred.latency_ms, st)

    def keep(reason: str) -> Decision:
        return Decision(KEEP, current_k, reason, gain, pred.latency_ms, st)

    if target == current_k:
        return keep(f"{label(current_k)} is best at {forecast:.2f} req/s per replica ({cur:.2f} ms/token predicted)")
    predicted = f"predicted {pred.latency_ms[target]:.2f} vs {cur:.2f} ms/token"
    why = f"{label(target)} {predicted} at {forecast:.2f} req/s per replica{_other_load(load)}"
    if forced and not load.queued and rollout_overload_ms(profile, rollout, forecast, pred.p, current_k, target) > 0:
        return keep(f"{why}: {label(current_k)} would saturate, but no queue is measured and a rollout now would queue")
    # A change must pay (:func:`_unpaid`). A schedule as fast now that carries much more load, taken while a
    # restart is cheap, buys headroom for a burst nobody has seen yet: it needs no latency gain to pay.
    unpaid = None
    if not forced and not headroom:
        unpaid = _unpaid(pred, st, load, settings, rollout, profile, dear, gain, target, current_k)
    if unpaid:
        return keep(f"{why}: {unpaid}")
    if headroom:
        why = f"{why}, {headroom}"
    p = pred.p
    narrower = capacity_qps(profile, target, upto(p, target)) < capacity_qps(profile, current_k, upto(p, current_k))
    held = _limits(st, settings, now, forced, narrower)
    if held:
        return keep(f"{why}; {held}")
    action = TURN_OFF if target == 0 else TURN_ON if current_k == 0 else SET_K
    if settings.mode == AdaptiveMode.RECOMMEND:
        return Decision(action, target, f"recommend {why}", gain, pred.latency_ms, st)
    changed = _changed(st, pred, current_k, target, exploring or probing, now)
    return Decision(action, target, why, gain, pred.latency_ms, changed)


def _other_load(load: Load) -> str:
    """The other load the horizon was priced with (:func:`_expected_bursts`), as a decision's reason says it."""
    if load.bursts is None:
        return ""
    other, share = load.bursts
    return f" and {'calm' if other < load.forecast else 'bursts'} of {other:.2f} for {share:.0%} of the time"


def _by_choice(
    pred: Prediction,
    st: PolicyState,
    load: Load,
    profile: Profile,
    dear: Profile,
    rollout: Rollout,
    current_k: Setting,
    now: float,
    hysteresis: float,
) -> tuple[Setting, str | None, bool]:
    """The setting to move to by choice, what it buys beyond its latency now (headroom, or a probe), and whether it
    is a probe. The best setting whose gain does not rest on compute no window measured (:func:`_surest`); a
    schedule as fast now, for what it buys ahead of the load (:func:`_headroom`; also when what runs ranks first by
    a rounding: a change costs a little even when it gains nothing now); else, where that best gains no more than
    the ``hysteresis`` band (it would not be taken), a probe of the acceptance (:func:`_probe`; one per
    :data:`EXPLORE_EVERY_S`) if what it hopes to find promises :data:`EXPLORE_MIN_UPSIDE` (:func:`_probe_hope`)."""
    target = _surest(pred, st, load, profile, dear, current_k)
    option = target if target != current_k else _roomier(pred, current_k)
    headroom = None if option is None else _headroom(pred, load, profile, dear, rollout, current_k, option)
    if headroom and option is not None:
        return option, headroom, False
    explored = _explored_recently(st, now)
    held = _steady_gain(pred, load, profile, target, current_k) <= hysteresis
    if held and pred.probe is not None and pred.probe_hope >= EXPLORE_MIN_UPSIDE and not explored:
        hoped = "with the prior's" if current_k == 0 else f"as extrapolated past position {current_k}"
        return pred.probe, f"a probe of the acceptance ({pred.probe_hope:.0%} faster {hoped})", True
    return target, None, False


def _changed(
    st: PolicyState, pred: Prediction, current_k: Setting, target: Setting, exploring: bool, now: float
) -> PolicyState:
    """The state once a change to ``target`` is decided: a restart spent, the previous setting kept for a
    rollback."""
    return replace(st, last_explore=now if exploring else st.last_explore,
                   k=target, changes=[*st.changes, now],
                   last_change=now, pending_from=current_k, since=now)  # fmt: skip


def _unpaid(
    pred: Prediction,
    st: PolicyState,
    load: Load,
    settings: Adaptive,
    rollout: Rollout,
    profile: Profile,
    dear: Profile,
    gain: float,
    target: Setting,
    current_k: Setting,
) -> str | None:
    """Why a change by choice does not pay: within the hysteresis band of the steady latency (what flaps near a
    threshold), a gain over the horizon (``gain``, relative) short of what the restart costs, or, where the prior
    cannot price the compute past a few tokens per step (an MoE), while no window measured it
    (:func:`_compute_unmeasured`) or within a burst, a rollout that would queue were that compute dear
    (:func:`_dear`). The steady gain is :func:`_steady_gain`'s."""
    steady_gain = _steady_gain(pred, load, profile, target, current_k)
    if steady_gain <= settings.hysteresis:
        return f"{steady_gain:.1%} faster, within the hysteresis band {settings.hysteresis:.0%}"
    payback, restart = gain * load.horizon, restart_cost_seconds(rollout)
    if payback <= restart:
        return f"gain over {load.horizon:.0f}s ({payback:.0f}s) does not pay the restart ({restart:.0f}s)"
    # Unpriced compute bites while no window measured it, and in a burst, whose rollout dip runs the pods left at
    # batches no window measured.
    unpriced = math.isfinite(dear.known_tokens_per_step) and (pred.unpriced or st.burst_base is not None)
    if unpriced and rollout_overload_ms(dear, rollout, load.forecast, pred.p, current_k, target) > 0:
        return "its rollout would queue were the compute no window measured dear"
    return None


def _steady_gain(pred: Prediction, load: Load, profile: Profile, target: Setting, current_k: Setting) -> float:
    """How much faster ``target`` is than what runs, at the load now: what the hysteresis band judges. Where the
    model says what runs cannot serve the load forecast while it serves without a queue, the latency it is measured
    at is the one to beat: the model's word on its saturation forces nothing (:func:`gate`), so it buys no gain."""
    lat = pred.latency_ms
    here = lat[current_k]
    saturates = capacity_qps(profile, current_k, upto(pred.p, current_k)) <= load.forecast  # (as horizon_cost_ms)
    if saturates and load.measured_ms is not None:
        here = min(here, load.measured_ms)
    return (here - lat[target]) / here


def _headroom(
    pred: Prediction,
    load: Load,
    profile: Profile,
    dear: Profile,
    rollout: Rollout,
    current_k: Setting,
    target: Setting,
) -> str | None:
    """What a move to the schedule ``target`` buys ahead of the load (None when it is no such move): the schedule
    must be no slower at the load now, the load light enough (:data:`HEADROOM_LOAD_SHARE` of the current capacity)
    that the restart queues nothing, and the schedule carry :data:`HEADROOM_MIN` more, or be that much faster at
    :data:`HEADROOM_LOAD` times the load (a schedule planned before the acceptance was measured drafts too little at
    the batches a rise brings), also were the compute no window measured dear (:func:`_dear`), priced no nearer the
    schedule's own capacity than a rise is (:data:`AHEAD_SHARE`: there its latency turns steep, and a twin of equal
    capacity, drafting a little more in one band, looks far faster; what runs may saturate there, if it carries
    less). Where the prior cannot price that compute (an MoE), carrying that much more at worst (the less of the two
    models) suffices."""
    if isinstance(target, int) or pred.latency_ms[target] > pred.latency_ms[current_k] * (1 + 1e-9):
        return None  # (equal but for rounding counts as no slower)
    p = pred.p
    here, there = capacity_qps(profile, current_k, upto(p, current_k)), capacity_qps(profile, target, upto(p, target))
    light = load.forecast <= HEADROOM_LOAD_SHARE * here and load.peak <= HEADROOM_LOAD_SHARE * here
    if not light or rollout_overload_ms(profile, rollout, load.forecast, p, current_k, target) > 0:
        return None
    more = there / here - 1 if here > 0 else 0.0
    dear_here, dear_there = capacity_qps(dear, current_k, p), capacity_qps(dear, target, p)
    if more >= HEADROOM_MIN and dear_there >= (1 + HEADROOM_MIN) * dear_here:
        return f"with {more:.0%} more capacity"
    if math.isfinite(dear.known_tokens_per_step):
        worst_there, worst_here = min(there, dear_there), min(here, dear_here)
        if worst_there >= (1 + HEADROOM_MIN) * worst_here:
            return f"with {worst_there / worst_here - 1:.0%} more capacity at worst"
    q = min(HEADROOM_LOAD * load.forecast, AHEAD_SHARE * there)

    def faster(prof: Profile, by: float) -> bool:
        return predict_ms(prof, q, target, upto(p, target)) <= (1 - by) * predict_ms(
            prof, q, current_k, upto(p, current_k)
        )

    if faster(profile, HEADROOM_MIN) and faster(dear, 0.0):
        return f"{HEADROOM_MIN:.0%} faster at {HEADROOM_LOAD:g}x the load"
    return None


def _roomier(pred: Prediction, current_k: Setting) -> Setting | None:
    """The best-ranked feasible schedule other than what runs: the one a move for headroom would take."""
    return next((k for k in pred.feasible if not isinstance(k, int) and k != current_k), None)


def _dear(model: Profile, prior: Profile) -> Profile:
    """The learned model with the compute past the knee as dear as the prior's uncertainty allows: the knee no later
    and the slope :data:`UNMEASURED_COMPUTE_FACTOR` times the steeper of the two. Windows at few tokens per step
    cannot tell the compute there, and a fit may move the knee far off to explain them. An MoE's is that of a dense
    model of its total parameters (what a step costs once its tokens route to every expert)."""
    moe = prior.known_tokens_per_step if math.isfinite(prior.known_tokens_per_step) else 1.0  # total / active
    return replace(model, n_knee=max(1, min(model.n_knee, round(prior.n_knee / moe))),
                   t_tok_ms=max(model.t_tok_ms, prior.t_tok_ms) * max(UNMEASURED_COMPUTE_FACTOR, moe))  # fmt: skip


def _surest(
    pred: Prediction, st: PolicyState, load: Load, profile: Profile, dear: Profile, current_k: Setting
) -> Setting:
    """The best feasible setting (as :func:`predict` ranks them) whose gain does not rest on compute no window
    measured (:func:`_guessed`), at the load now and at the bursts expected (:func:`_expected_bursts`); the running
    setting, failing any."""
    p = pred.p
    loads = [load.forecast, *([load.bursts[0]] if load.bursts else [])]
    # what runs at each load, were that compute dear
    running = {q: predict_ms(dear, q, current_k, upto(p, current_k)) for q in loads}

    def sure(k: Setting) -> bool:
        return k == current_k or not any(_guessed(pred, st, q, profile, dear, running[q], k) for q in loads)

    return next((k for k in pred.feasible if sure(k)), current_k)


def _guessed(
    pred: Prediction, st: PolicyState, q: float, profile: Profile, dear: Profile, running: float, target: Setting
) -> bool:
    """Whether a change's gain rests on compute no window measured: at the load ``q``, the new setting verifies more
    tokens per step than any window did, and with that compute dear (:func:`_dear`) it would gain nothing over what
    runs (``running``, its latency there) or saturate."""
    p = pred.p
    ss = steady_state(profile, q, target, upto(p, target))
    if ss.batch * (k_at(target, ss.batch) + 1) <= (st.envelope[0] if st.envelope else 0.0):
        return False
    return predict_ms(dear, q, target, upto(p, target)) >= running


def _explored_recently(st: PolicyState, now: float) -> bool:
    """Whether the last move to learn (a k beyond the measured positions, or a probe) was within
    :data:`EXPLORE_EVERY_S`."""
    return now - (st.last_explore if st.last_explore is not None else -math.inf) < EXPLORE_EVERY_S


def _exploration_held(pred: Prediction, st: PolicyState, now: float) -> str | None:
    """Why a move to a k beyond the measured positions waits: one such move per :data:`EXPLORE_EVERY_S`, and only
    for a large promised gain (the extrapolation is a guess)."""
    if _explored_recently(st, now):
        return f"{label(pred.best)} looks better by extrapolation; explored recently"
    if pred.gain < EXPLORE_MIN_UPSIDE:
        return f"{label(pred.best)} looks better by extrapolation, but only by {pred.gain:.1%}: not worth exploring"
    return None


def _limits(st: PolicyState, settings: Adaptive, now: float, forced: bool, narrower: bool) -> str | None:
    """What holds a change that pays: the mode, dwell (never for a setting that cannot serve the load, which
    ``forced`` says), cooldown and the hourly restart budget. A change by choice to a setting with less capacity
    (``narrower``) never spends the hour's last restart: that one is kept for leaving a setting the load
    saturates, which a narrower setting makes likelier."""
    if settings.mode == AdaptiveMode.OFF:
        return "adaptive mode is Off"
    if st.since is not None and now - st.since < settings.min_dwell_seconds and not forced:
        return f"dwell: {now - st.since:.0f}s of {settings.min_dwell_seconds}s"
    if st.last_change is not None and now - st.last_change < settings.cooldown_seconds:
        return f"cooldown: {now - st.last_change:.0f}s of {settings.cooldown_seconds}s"
    left = budget_left(st, now, settings.max_restarts_per_hour)
    if left <= 0:
        return f"restart budget of {settings.max_restarts_per_hour}/hour used"
    if left == 1 and narrower and not forced and settings.max_restarts_per_hour > 1:
        return "the hour's last restart is kept for leaving a setting the load saturates"
    return None


def rollback(state: PolicyState, now: float, reason: str) -> Decision | None:
    """After a failed rollout of a policy change: go back to the previous k (once), and hold the failed setting
    out of the candidates for FAILED_HOLD_S."""
    if state.pending_from is None:
        return None
    back = state.pending_from
    failed = {s: t for s, t in state.failed.items() if now - t <= FAILED_HOLD_S}
    if state.k is not None:
        failed[schedule_label(state.k)] = now
    st = replace(state, k=back, pending_from=None, since=now, last_change=now, changes=[*state.changes, now],
                 failed=failed)  # fmt: skip
    return Decision(ROLLBACK, back, f"rollout failed ({reason}); back to {label(back)}", state=st)
