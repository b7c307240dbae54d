"""One evaluation of one SpeculativeDeployment: observation + status -> decision + status patch (pure).

Shared by the operator's metrics loop and ``specdeploy recommend``, so both say the same thing. In ``Auto``
mode a decision that changes k writes the new k to status; the next reconcile renders it, which starts the
rolling restart. ``Recommend`` writes the recommendation only; ``Off`` writes metrics only.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ..api import AdaptiveMode, ObservedMetrics, SpeculativeDeploymentSpec, now_iso
from .model import Profile
from .observation import NoData, Observation
from .policy import KEEP, Decision, PolicyState, Rollout, budget_left, decide, rollback
from .reconcile import METRICS_AVAILABLE, condition, merge_conditions

HISTORY = 10  # decisions kept in status


def _int_or_percent(value: int | str, replicas: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    frac = float(str(value).rstrip("%")) / 100 * replicas
    return math.ceil(frac) if round_up else math.floor(frac)


def rollout_of_spec(spec: SpeculativeDeploymentSpec) -> Rollout:
    """The restart's shape, resolving percentages as the Deployment controller does."""
    r = spec.replicas
    return Rollout(
        replicas=r,
        max_surge=_int_or_percent(spec.rollout.max_surge, r, round_up=True),
        max_unavailable=_int_or_percent(spec.rollout.max_unavailable, r, round_up=False),
        restart_seconds=float(spec.adaptive.restart_seconds),
    )


def profile_of_spec(spec: SpeculativeDeploymentSpec) -> Profile:
    """The performance model seeding the policy: the simulation's profile when one is given, else the default."""
    return Profile.from_dict(spec.simulation.profile) if spec.simulation.profile else Profile()


def metrics_status(obs: Observation, window: int, now: datetime) -> dict[str, Any]:
    def r(x: float | None, n: int = 4) -> float | None:
        return None if x is None else round(x, n)

    return ObservedMetrics(
        time=now_iso(now),
        window_seconds=window,
        request_rate=r(obs.request_rate),
        running=r(obs.running),
        waiting=r(obs.waiting),
        generation_tokens_per_second=r(obs.generation_tps, 2),
        acceptance_rate=r(obs.acceptance_rate),
        mean_acceptance_length=r(obs.mean_acceptance_length),
        per_position_acceptance=[round(x, 4) for x in obs.per_position],
        itl_p50_ms=r(obs.itl_p50_s and obs.itl_p50_s * 1000, 3),
        itl_p95_ms=r(obs.itl_p95_s and obs.itl_p95_s * 1000, 3),
        kv_cache_usage=r(obs.kv_usage),
        pods=obs.pods,
    ).model_dump(by_alias=True)  # None included: null deletes a stale value in the merge patch


def evaluate(
    spec: SpeculativeDeploymentSpec,
    status: dict[str, Any],
    obs: Observation | NoData,
    now: datetime,
) -> tuple[Decision | None, dict[str, Any]]:
    """The decision (None in mode Off) and the status fields to write."""
    gen = int(status.get("observedGeneration") or 0)
    old = status.get("conditions") or []
    k = int(status.get("k") or 0)
    ts = now.timestamp()
    patch: dict[str, Any] = {}
    if isinstance(obs, NoData):
        cond = condition(old, METRICS_AVAILABLE, False, "NoMetrics", obs.reason, now, gen)
    else:
        cond = condition(old, METRICS_AVAILABLE, True, "Observed", f"{obs.pods} pods in the window", now, gen)
        patch["metrics"] = metrics_status(obs, spec.adaptive.window_seconds, now)
    patch["conditions"] = merge_conditions(old, [cond])
    settings = spec.adaptive
    if settings.mode == AdaptiveMode.OFF or spec.speculator is None or spec.short_form:
        return None, patch
    state = PolicyState.from_dict(status.get("policy"))
    decision = None
    if status.get("rollout") == "Failed":
        decision = rollback(state, ts, "new pods did not become ready before the progress deadline")
    if decision is None:
        decision = decide(
            obs,
            state,
            settings,
            rollout_of_spec(spec),
            profile_of_spec(spec),
            k,
            ts,
            rollout_complete=status.get("rollout") == "Complete",
            settled_at=_rollout_completed_at(old),
        )
    patch["policy"] = decision.state.to_dict()
    patch["recommendedK"] = decision.to_k
    patch["restartBudgetRemaining"] = budget_left(decision.state, ts, settings.max_restarts_per_hour)
    acts = settings.mode == AdaptiveMode.AUTO and decision.changes_k
    if acts:  # a change of k is a change of pod template: a rollout starts now
        patch["k"] = decision.to_k
        patch["rollout"] = "Progressing"
    patch["lastEvaluation"] = {"time": now_iso(now), "reason": decision.reason}
    if decision.action != KEEP:
        history = list(status.get("decisions") or [])
        entry = {
            "time": now_iso(now),
            "action": decision.action,
            "fromK": k,
            "toK": decision.to_k,
            "reason": decision.reason,
            "expectedGain": decision.expected_gain,
            "applied": acts,
        }
        patch["decisions"] = [*history, entry][-HISTORY:]
    return decision, patch


def _rollout_completed_at(conditions: list[dict[str, Any]]) -> float | None:
    """When the last rollout finished: the Progressing condition's transition to False."""
    prog = next((c for c in conditions if c.get("type") == "Progressing"), None)
    if not prog or prog.get("status") != "False":
        return None
    return datetime.strptime(prog["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def utcnow() -> datetime:
    return datetime.now(UTC)
