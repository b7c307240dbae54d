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

Trace format (YAML or JSON)::

    step_seconds: 30          # one point per step
    profile: {}               # optional Profile overrides (specdeploy.sim.model.Profile)
    replicas: 2
    restart_seconds: 120
    max_surge: 1              # optional, rollout strategy (defaults as in the API)
    max_unavailable: 0
    adaptive: {}              # optional spec.adaptive overrides for the policy (camelCase as in the CRD)
    start_k: 3                # the k the deployment starts with (the user's numSpeculativeTokens)
    points:
      - {qps: 0.5, acceptance: [0.82, 0.64, 0.49, 0.37, 0.27, 0.19, 0.13, 0.09]}
      - {qps: 6.0, acceptance: [...], prompt_tokens: 512, output_tokens: 256}

``qps`` is the total offered load; ``acceptance[i-1]`` is the chance that the first i drafted tokens are all
accepted (vLLM's per-position counter / drafts). A point without ``acceptance`` keeps the previous one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..api import Adaptive
from ..core.model import Profile, capacity_qps, drain_rates, queue_cost_ms, steady_state
from ..core.observation import Observation
from ..core.policy import (
    PolicyState,
    Rollout,
    decide,
    new_share,
    restart_capacity_loss,
    rollout_capacity,
    rollout_seconds,
)

DEFAULT_ADAPTIVE = {"mode": "Auto", "prometheus": {"url": "http://simulated:9090"}}


@dataclass(frozen=True)
class Point:
    qps: float
    acceptance: tuple[float, ...]
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    step_seconds: float
    profile: Profile
    rollout: Rollout
    adaptive: Adaptive
    points: tuple[Point, ...]
    start_k: int = 3

    @property
    def candidates(self) -> list[int]:
        return [0, *range(self.adaptive.min_tokens, self.adaptive.max_tokens + 1)]


def load_trace(path: str | Path) -> Trace:
    raw = yaml.safe_load(Path(path).read_text())
    return parse_trace(raw, Path(path).stem)


def parse_trace(raw: dict[str, Any], name: str = "trace") -> Trace:
    if not isinstance(raw, dict) or not raw.get("points"):
        raise ValueError("a trace needs a non-empty `points` list")
    prof = Profile.from_dict(raw.get("profile"))
    step = float(raw.get("step_seconds", 30))
    # The policy is evaluated once per trace step, on a window of that step.
    evaluation = {"evaluationIntervalSeconds": max(5, int(step)), "windowSeconds": max(30, int(step))}
    adaptive = Adaptive.model_validate({**DEFAULT_ADAPTIVE, **evaluation, **(raw.get("adaptive") or {})})
    replicas = int(raw.get("replicas", 1))
    rollout = Rollout(
        replicas=replicas,
        max_surge=int(raw.get("max_surge", 1)),
        max_unavailable=int(raw.get("max_unavailable", 0)),
        restart_seconds=float(raw.get("restart_seconds", adaptive.restart_seconds)),
    )
    points, acc = [], prof.acceptance
    for i, p in enumerate(raw["points"]):
        if "qps" not in p:
            raise ValueError(f"points[{i}]: qps is required")
        acc = tuple(float(x) for x in p.get("acceptance", acc))
        points.append(
            Point(
                float(p["qps"]),
                acc,
                int(p.get("prompt_tokens", prof.prompt_tokens)),
                int(p.get("output_tokens", prof.output_tokens)),
            )
        )
    return Trace(name, step, prof, rollout, adaptive, tuple(points), int(raw.get("start_k", 3)))


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


@dataclass
class StepOutcome:
    tokens: float
    token_ms: float  # per-token latency of the tokens delivered in this step
    backlog: float  # requests still queued at the end of the step
    served_qps: float
    batch: float  # per replica
    step_ms: float


def run_step(
    trace: Trace, point: Point, k: int, backlog: float, restarting: float, dt: float, k_from: int | None = None
) -> StepOutcome:
    """One trace step at draft length k, with ``restarting`` seconds of it under a rolling restart from
    ``k_from``: old and new pods serve side by side (:func:`rollout_capacity`), less what the restart takes."""
    prof = replace(trace.profile, prompt_tokens=point.prompt_tokens, output_tokens=point.output_tokens)
    r = trace.rollout
    p = list(point.acceptance[:k]) if k else []
    cap = capacity_qps(prof, k, p)
    frac = min(restarting, dt) / dt if k_from is not None and k_from != k else 0.0
    cap_total = cap * r.replicas
    if frac:
        p_from = list(point.acceptance[:k_from]) if k_from else []
        cap_from = capacity_qps(prof, k_from, p_from)
        cap_total = ((1 - frac) * cap + frac * rollout_capacity(r, cap_from, cap)) * r.replicas
    demand = point.qps * dt + backlog
    served = min(demand, cap_total * dt)
    new_backlog = demand - served
    serving = r.replicas * (1 - frac * restart_capacity_loss(r))
    per_replica = min(served / dt, cap_total * 0.999) / serving
    ss = steady_state(prof, min(per_replica, cap * 0.999), k, p)
    engine_ms = ss.token_latency_ms
    if frac:  # tokens from the pods still on the old setting
        old = frac * (1 - new_share(r))
        ss_from = steady_state(prof, min(per_replica, cap_from * 0.999), k_from, p_from)
        engine_ms = old * ss_from.token_latency_ms + (1 - old) * engine_ms
    wait_s = (backlog + new_backlog) / 2 / max(cap_total, 1e-9) if (backlog or new_backlog) else 0.0
    token_ms = engine_ms + wait_s * 1000 / point.output_tokens
    return StepOutcome(served * point.output_tokens, token_ms, new_backlog, served / dt, ss.batch, ss.step_ms)


def simulate(
    trace: Trace, choose: Callable[[int, StepOutcome | None, float], int], score_from: int = 0
) -> dict[str, Any]:
    """Run the trace with a controller ``choose(step, last_outcome, now) -> k``; returns the figures.

    Every controller starts from the deployment as it runs (``trace.start_k``): any other setting, even at
    the first step, is a rolling restart and costs one. With ``score_from``, the figures count only the steps
    from there on (the controller still runs from the start)."""
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
        if i >= score_from:
            tot.add(out, slo)
    # Requests still queued at the end are served afterwards; their wait counts, their tokens not in goodput.
    last_point = trace.points[-1]
    while backlog > 1e-9:
        out = run_step(trace, replace(last_point, qps=0.0), k, backlog, 0.0, dt)
        tot.add(out, slo, in_trace=False)
        backlog = out.backlog
    return tot.result((len(trace.points) - min(score_from, len(trace.points) - 1)) * dt)


def policy_controller(trace: Trace) -> Callable[[int, StepOutcome | None, float], int]:
    """The operator's policy, fed the observation Prometheus would give for the last step."""
    state = PolicyState()
    current = {"k": trace.start_k, "changed_at": -math.inf}
    r = trace.rollout
    rollout_s = rollout_seconds(r)

    def choose(i: int, last: StepOutcome | None, now: float) -> int:
        nonlocal state
        if last is None:
            return current["k"]
        k, point = current["k"], trace.points[i - 1]
        obs = Observation(
            namespace="sim",
            deployment=trace.name,
            k_label=str(k),
            pods=r.replicas,
            request_rate=last.served_qps,
            running=last.batch * r.replicas,
            waiting=last.backlog,
            generation_tps=last.tokens / trace.step_seconds,
            per_position=tuple(point.acceptance[:k]) if k else (),
            itl_mean_s=last.step_ms / 1000,
        )
        d = decide(
            obs,
            state,
            trace.adaptive,
            r,
            trace.profile,
            k,
            now,
            rollout_complete=now - current["changed_at"] >= rollout_s,
        )
        state = d.state
        if d.changes_k and d.to_k is not None:
            current.update(k=d.to_k, changed_at=now)
        return current["k"]

    return choose


def oracle_schedule(trace: Trace, hold: int = 0) -> list[int]:
    """Dynamic programming over (step, k, rollout progress) knowing the whole trace, restart costs included.
    With ``hold``, the starting setting is kept for that many steps: the best a controller can do that has no
    reason to change before then.

    A change starts a rolling restart lasting ``rollout_seconds`` (no further change until it ends), as the
    operator does. Each state carries the queue backlog and the setting the rollout came from of its best path,
    so saturating a setting costs what it costs in the simulation (an approximation of the full problem; its
    schedule is scored like any other). Paths meeting in a state are ranked by their cost plus what the queue
    they leave must still cost at their setting and the load (:func:`~.model.queue_cost_ms`), so a path that is
    cheap so far but leaves a queue its setting drains slowly does not win over one that ends cheaper.
    """
    ks, dt = trace.candidates, trace.step_seconds
    rollout_s = rollout_seconds(trace.rollout)
    settled = math.ceil(rollout_s / dt)
    # After the trace no request arrives: what is left then drains at the full capacity of the setting.
    points = (*trace.points, replace(trace.points[-1], qps=0.0))
    n = trace.rollout.replicas

    @functools.cache
    def drains(k: int, i: int) -> tuple[float, float]:
        """Per replica: how k drains a queue at point i (``drain_rates``), with a floor on the spare capacity."""
        point = points[i]
        prof = replace(trace.profile, output_tokens=point.output_tokens, prompt_tokens=point.prompt_tokens)
        cap, excess = drain_rates(prof, point.qps / n, k, point.acceptance[:k])
        return max(cap - point.qps / n, 0.01 * cap), excess

    def queue_cost(k: int, i: int, backlog: float) -> float:
        """What the queue a path leaves still costs, its replicas sharing it evenly: n times the cost of b / n."""
        return n * queue_cost_ms(backlog / n, *drains(k, i))

    # state (k, steps since the change started) -> (rank, cost, backlog, previous state, k the rollout came from)
    State = tuple[int, int]
    Value = tuple[float, float, float, State | None, int]
    layer: dict[State, Value] = {}
    k0 = trace.start_k
    for k in ks if hold <= 0 else [k0]:  # from the running setting: anything else starts with a restart
        out = run_step(trace, trace.points[0], k, 0.0, 0.0 if k == k0 else rollout_s, dt, k0)
        cost = out.tokens * out.token_ms
        layer[(k, settled if k == k0 else 1)] = (cost + queue_cost(k, 0, out.backlog), cost, out.backlog, None, k0)
    history = [layer]
    for i, point in enumerate(trace.points[1:], start=1):
        nxt: dict[State, Value] = {}
        for (j, s), (_, c, b, _, j_from) in layer.items():
            moves = [(j, min(s + 1, settled), max(0.0, rollout_s - s * dt), j_from)]
            if s >= settled and i >= hold:
                moves += [(k, 1, rollout_s, j) for k in ks if k != j]
            for k, s2, restarting, k_from in moves:
                out = run_step(trace, point, k, b, restarting, dt, k_from)
                cost = c + out.tokens * out.token_ms
                rank = cost + queue_cost(k, i, out.backlog)
                if (k, s2) not in nxt or rank < nxt[(k, s2)][0]:
                    nxt[(k, s2)] = (rank, cost, out.backlog, (j, s), k_from)
        layer = nxt
        history.append(layer)
    end = len(points) - 1
    state: State | None = min(layer, key=lambda st: layer[st][1] + queue_cost(st[0], end, layer[st][2]))
    schedule = []
    for layer_i in reversed(history):
        assert state is not None
        schedule.append(state[0])
        state = layer_i[state][3]
    return schedule[::-1]


def compare(trace: Trace, schedule: list[int] | None = None, score_from: int = 0) -> dict[str, Any]:
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
    return {
        "trace": trace.name,
        "start_k": trace.start_k,
        "policy": simulate(trace, policy_controller(trace), score_from),
        "always_off": always_off,
        "static": static,
        "best_static": {"k": int(best_k), **static[best_k]},
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
