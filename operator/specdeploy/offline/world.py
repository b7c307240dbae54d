"""The simulated world of the offline simulator, one trace step at a time: replicas at a setting serving a load, a
queue when the load exceeds their capacity, and a rolling restart during which old and new pods serve side by
side (:func:`~specdeploy.core.policy.rollout_capacity`) less the capacity the restart takes away.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..core.model import FULL_BATCH_SHARE, Mix, Profile, Setting, capacity_qps, steady_state, top_k
from ..core.policy import new_share, restart_capacity_loss, rollout_capacity
from .trace import Point, Trace


@dataclass
class StepOutcome:
    tokens: float
    token_ms: float  # per-token latency of the tokens delivered in this step
    backlog: float  # requests still queued at the end of the step
    served_qps: float
    batch: float  # per replica
    step_ms: float
    mix: Mix  # the k the new pods' steps draft, each with its share of the steps


def world_at(trace: Trace, point: Point) -> Profile:
    """The trace's world with the traffic shape of ``point``."""
    return replace(trace.profile, prompt_tokens=point.prompt_tokens, output_tokens=point.output_tokens)


def run_step(
    trace: Trace,
    point: Point,
    k: Setting,
    backlog: float,
    restarting: float,
    dt: float,
    k_from: Setting | None = None,
) -> StepOutcome:
    """One trace step at draft length k, with ``restarting`` seconds of it under a rolling restart from
    ``k_from``: old and new pods serve side by side (:func:`rollout_capacity`), less what the restart takes."""
    prof = world_at(trace, point)
    r = trace.rollout
    p = list(point.acceptance[: top_k(k)])
    cap = capacity_qps(prof, k, p)
    frac = min(restarting, dt) / dt if k_from is not None and k_from != k else 0.0
    cap_total = cap * r.replicas
    if frac:
        p_from = list(point.acceptance[: top_k(k_from)])
        cap_from = capacity_qps(prof, k_from, p_from)
        cap_total = ((1 - frac) * cap + frac * rollout_capacity(r, cap_from, cap)) * r.replicas
    demand = point.qps * dt + backlog
    served = min(demand, cap_total * dt)
    new_backlog = demand - served
    serving = r.replicas * (1 - frac * restart_capacity_loss(r))
    per_replica = min(served / dt, cap_total * FULL_BATCH_SHARE) / serving
    ss = steady_state(prof, min(per_replica, cap * FULL_BATCH_SHARE), k, p)
    engine_ms = ss.token_latency_ms
    if frac:  # tokens from the pods still on the old setting
        old = frac * (1 - new_share(r))
        ss_from = steady_state(prof, min(per_replica, cap_from * FULL_BATCH_SHARE), k_from, p_from)
        engine_ms = old * ss_from.token_latency_ms + (1 - old) * engine_ms
    wait_s = (backlog + new_backlog) / 2 / max(cap_total, 1e-9) if (backlog or new_backlog) else 0.0
    token_ms = engine_ms + wait_s * 1000 / point.output_tokens
    return StepOutcome(served * point.output_tokens, token_ms, new_backlog, served / dt, ss.batch, ss.step_ms, ss.mix)
