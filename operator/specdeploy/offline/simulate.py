"""``specdeploy simulate``: the policy in closed loop on the performance model over a trace, side by side with
speculation always off, every static k, the best static k in hindsight, and an oracle.

Objective (what users feel): **mean per-token latency**, token-weighted over the trace. A token's latency is the
engine's per-token latency at the load each replica carries (step / E(k)) plus, when the offered load exceeds
what the running setting serves, the time its request waited in the queue spread over its tokens. A rolling
restart replaces pods wave by wave: while it lasts, old and new pods serve side by side, less the capacity the
restart takes away (``policy.rollout_capacity``, the figure the policy plans with). Also reported: goodput
(tokens delivered per second within the trace), the fraction of tokens within a per-token latency SLO, and
restarts.

The oracle knows the whole trace: dynamic programming over (time step, k) minimising the same objective, with
the restart cost on every change; its schedule is then scored by the same simulation as everything else.

The trace format is in :mod:`.trace`; the world a step at a time in :mod:`.world`; the oracle in :mod:`.oracle`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..core.model import (
    FULL_BATCH_SHARE,
    Mix,
    Setting,
    accepted_per_draft,
    capacity_qps,
    k_at,
    root,
    schedule_label,
    steady_state,
    top_k,
)
from ..core.observation import Observation
from ..core.policy import PolicyState, decide, rollout_seconds
from .oracle import hindsight_schedule, oracle_schedule
from .trace import Point, Trace
from .world import StepOutcome, run_step, world_at


@dataclass
class Totals:
    tokens: float = 0.0
    latency_weighted: float = 0.0  # token-ms
    within_slo: float = 0.0
    restarts: int = 0
    delivered_in_trace: float = 0.0

    def add(self, out: StepOutcome, slo_ms: float, in_trace: bool = True) -> None:
        """Count one step's tokens; those served after the trace's end count for latency, not goodput."""
        self.tokens += out.tokens
        self.delivered_in_trace += out.tokens if in_trace else 0.0
        self.latency_weighted += out.tokens * out.token_ms
        self.within_slo += out.tokens if out.token_ms <= slo_ms else 0.0

    def result(self, duration: float) -> dict[str, Any]:
        return {
            "mean_token_latency_ms": round(self.latency_weighted / self.tokens, 4) if self.tokens else 0.0,
            "goodput": round(self.delivered_in_trace / duration, 3),
            "slo_attained": round(self.within_slo / self.tokens, 4) if self.tokens else 1.0,
            "restarts": self.restarts,
        }


@dataclass(frozen=True)
class Moment:
    """One step of a run, for plots: when, the offered load, the setting running, the k it drafted at the batch
    size that ran (a schedule's band), the per-token latency."""

    t: float
    qps: float
    setting: Setting
    k_drafted: int
    token_ms: float


def simulate(
    trace: Trace,
    choose: Callable[[int, StepOutcome | None, float], Setting],
    score_from: int = 0,
    record: list[Moment] | None = None,
) -> dict[str, Any]:
    """Run the trace with a controller ``choose(step, last_outcome, now) -> k``; returns the figures.

    Every controller starts from the deployment as it runs (``trace.start_k``): any other setting, even at
    the first step, is a rolling restart and costs one. With ``score_from``, the figures count only the steps
    from there on (the controller still runs from the start). ``record`` gets every step's :class:`Moment`."""
    dt, slo = trace.step_seconds, trace.adaptive.slo_ms
    rollout_s = rollout_seconds(trace.rollout)
    tot, backlog, k, k_from, restart_left, last = Totals(), 0.0, trace.start_k, trace.start_k, 0.0, None
    for i, point in enumerate(trace.points):
        want = choose(i, last, i * dt)
        if want != k:
            k_from, k, restart_left = k, want, rollout_s
            tot.restarts += 1
        out = run_step(trace, point, k, backlog, restart_left, dt, k_from)
        restart_left = max(0.0, restart_left - dt)
        backlog, last = out.backlog, out
        if record is not None:
            record.append(Moment(i * dt, point.qps, k, k_at(k, out.batch), out.token_ms))
        if i >= score_from:
            tot.add(out, slo)
    # Requests still queued at the end are served afterwards; their wait counts, their tokens not in goodput.
    last_point = trace.points[-1]
    while backlog > 1e-9:
        out = run_step(trace, replace(last_point, qps=0.0), k, backlog, 0.0, dt)
        tot.add(out, slo, in_trace=False)
        backlog = out.backlog
    return tot.result((len(trace.points) - min(score_from, len(trace.points) - 1)) * dt)


def observe(trace: Trace, i: int, k: Setting, last: StepOutcome, rng: random.Random) -> Observation:
    """What Prometheus would report of step ``i`` (its window). The requests a window counts are Poisson (relative
    spread 1 / sqrt(requests)); the mean ITL and the acceptance average many more events. With the trace's
    ``window_noise: arrivals`` (as in a cluster) the batch and step time are those of the load the window counted
    (Little's law: more arrivals, a larger batch, a longer step; :func:`_at_arrivals`, as far as the window's extra
    arrivals carry the batch); with ``counts``, only the counters are noisy and
    the batch and step are those of the true load."""
    point, r = trace.points[i], trace.rollout
    requests = max(1.0, last.served_qps * trace.step_seconds)
    count = max(0.0, 1 + rng.gauss(0, 1 / math.sqrt(requests)))
    batch, step_ms, mix, scale = last.batch, last.step_ms, last.mix, count
    if trace.window_noise == "arrivals" and not last.backlog and last.step_ms:
        # The counted load ran its own batch and steps: its ITL count is theirs, not the true load's scaled.
        batch, step_ms, mix = _at_arrivals(trace, point, k, last.served_qps / r.replicas, count)
        scale = 1.0
    itl_rate = batch * r.replicas / (step_ms / 1000) * scale if step_ms else None
    share = sum(s for drafted, s in mix if drafted > 0)
    # vLLM counts per position the drafts that accepted it, over every draft: a position a step did not draft
    # counts 0 there (under a schedule, the bands drafting less).
    ideal = accepted_per_draft(mix, point.acceptance)
    ideal += [0.0] * (top_k(k) - len(ideal))
    drafts = max(1.0, (itl_rate or 0.0) * trace.step_seconds * share)
    draft_rate, draft_token_rate = (
        (itl_rate * share, itl_rate * sum(d * s for d, s in mix)) if itl_rate is not None and top_k(k) else (None, None)
    )
    accepted = tuple(min(1.0, max(0.0, p + rng.gauss(0, math.sqrt(p * (1 - p) / drafts)))) for p in ideal)
    return Observation(
        namespace="sim",
        deployment=trace.name,
        k_label=str(top_k(k)),
        pods=r.replicas,
        request_rate=last.served_qps * count,
        running=batch * r.replicas,
        waiting=last.backlog,
        generation_tps=last.tokens / trace.step_seconds * count,
        prompt_tps=last.served_qps * point.prompt_tokens * count,
        per_position=accepted if top_k(k) else (),
        itl_mean_s=step_ms / 1000 * (1 + rng.gauss(0, 0.5 / math.sqrt(requests))),
        itl_rate=itl_rate,
        draft_rate=draft_rate,
        draft_token_rate=draft_token_rate,
    )


def _at_arrivals(trace: Trace, point: Point, k: Setting, qps: float, count: float) -> tuple[float, float, Mix]:
    """The batch, step time and k drafted per replica of the world at ``point`` when a window counted ``count``
    times the load ``qps`` it serves: the steady state at the load counted (short of saturating: a window that
    queued nothing ran below capacity), as far as the window's extra (or missing) arrivals carry the batch from the
    true load's. A batch grows only by the requests that arrive beyond those that finish; near capacity the steady
    state of a load a few percent higher runs a batch several times larger, which a window's surplus arrivals,
    half of them on average over the window, cannot fill (taken whole, a window counting 7% above a load at 94% of
    capacity ran 5x the batch at 4x the step)."""
    prof = world_at(trace, point)
    p = list(point.acceptance[: top_k(k)])
    cap = capacity_qps(prof, k, p) * FULL_BATCH_SHARE
    true, counted = steady_state(prof, min(qps, cap), k, p), steady_state(prof, min(qps * count, cap), k, p)
    reach = abs(count - 1) * qps * trace.step_seconds / 2
    if abs(counted.batch - true.batch) <= reach:
        return counted.batch, counted.step_ms, counted.mix
    # The load between the two whose steady state runs the batch the window's arrivals reached.
    want = true.batch + math.copysign(reach, counted.batch - true.batch)
    lo, hi = sorted((min(qps, cap), min(qps * count, cap)))
    ss = steady_state(prof, root(lambda q: want - steady_state(prof, q, k, p).batch, lo, hi), k, p)
    return ss.batch, ss.step_ms, ss.mix


def policy_controller(trace: Trace, seed: int = 0) -> Callable[[int, StepOutcome | None, float], Setting]:
    """The operator's policy as it runs in a cluster: fed each step's observation as Prometheus would give it
    (:func:`observe`), planning with the trace's prior (what the operator would pick from the spec), never with
    the world's profile."""
    state, rng = PolicyState(), random.Random(seed)
    current = {"k": trace.start_k, "changed_at": -math.inf}
    r = trace.rollout
    rollout_s = rollout_seconds(r)

    def choose(i: int, last: StepOutcome | None, now: float) -> Setting:
        nonlocal state
        if last is None:
            return current["k"]
        k = current["k"]
        d = decide(
            observe(trace, i - 1, k, last, rng),
            state,
            trace.adaptive,
            r,
            trace.prior,
            k,
            now,
            rollout_complete=now - current["changed_at"] >= rollout_s,
            schedules=trace.schedules,
        )
        state = d.state
        if d.changes_k and d.to_k is not None:
            current.update(k=d.to_k, changed_at=now)
        return current["k"]

    return choose


def compare(trace: Trace, schedule: list[Setting] | None = None, score_from: int = 0) -> dict[str, Any]:
    """Every controller on one trace, as `specdeploy simulate --json` prints it. ``schedule`` is the oracle's,
    if already known; ``score_from`` as in :func:`simulate`."""
    static = {}
    for k in range(max(1, trace.adaptive.min_tokens), trace.adaptive.max_tokens + 1):
        static[str(k)] = simulate(trace, lambda *_, k=k: k, score_from)
    best_k = min(static, key=lambda k: static[k]["mean_token_latency_ms"])
    always_off = simulate(trace, lambda *_: 0, score_from)
    schedule = oracle_schedule(trace) if schedule is None else schedule
    oracle = simulate(trace, lambda i, *_: schedule[i], score_from)
    # Every static schedule is one the oracle could follow: it is at least as good as the best of them.
    oracle = min([oracle, always_off, static[best_k]], key=lambda r: r["mean_token_latency_ms"])
    schedule_ = hindsight_schedule(trace)
    fixed = {"0": always_off, **static}  # every setting held from the start (a change first costs a restart)
    fixed[schedule_label(schedule_)] = simulate(trace, lambda *_: schedule_, score_from)
    best_fixed = min(fixed, key=lambda k: fixed[k]["mean_token_latency_ms"])
    return {
        "trace": trace.name,
        "start_k": trace.start_k,
        "policy": simulate(trace, policy_controller(trace), score_from),
        "always_off": always_off,
        "static": static,
        "best_static": {"k": int(best_k), **static[best_k]},
        "hold": fixed.get(str(trace.start_k)) or simulate(trace, lambda *_: trace.start_k, score_from),
        "best_schedule": {"k": best_fixed, **fixed[best_fixed]},
        "oracle": oracle,
    }


def table(results: list[dict[str, Any]]) -> str:
    """Side-by-side text table of mean per-token latency (ms), goodput, SLO and restarts."""
    cols = ("policy", "off", "best k", "oracle", "score", "restarts", "goodput p/off")
    widths = (9, 9, 11, 9, 7, 9, 14)
    head = f"{'trace':<18}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    lines = [head, "-" * len(head)]
    for r in results:
        pol, off, bs, ora = r["policy"], r["always_off"], r["best_static"], r["oracle"]
        score = ora["mean_token_latency_ms"] / pol["mean_token_latency_ms"]
        lines.append(
            f"{r['trace']:<18}{pol['mean_token_latency_ms']:>9.2f}{off['mean_token_latency_ms']:>9.2f}"
            f"{bs['mean_token_latency_ms']:>8.2f}@{bs['k']:<2}{ora['mean_token_latency_ms']:>9.2f}{score:>7.3f}"
            f"{pol['restarts']:>9}{pol['goodput'] / off['goodput']:>14.4f}"
        )
    return "\n".join(lines)
