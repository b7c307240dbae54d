"""One evaluation of one SpeculativeDeployment: observation + status -> decision + status patch (pure).

Shared by the operator's metrics loop and ``specdeploy recommend``, so both say the same thing. In ``Auto``
mode a decision that changes k writes the new k to status; the next reconcile renders it, which starts the
rolling restart. ``Recommend`` writes the recommendation only; ``Off`` writes metrics only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..api import (
    METHODS_WITH_SCHEDULE,
    AdaptiveMode,
    Condition,
    ConditionType,
    DecisionRecord,
    MetricsSummary,
    ObservedMetrics,
    Reason,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
    now_iso,
)
from .model import schedule_label, top_k
from .observation import NoData, Observation
from .policy import (
    KEEP,
    RELEARN,
    USER_CHANGE,
    Decision,
    PolicyState,
    Rollout,
    another_deployment,
    budget_left,
    decide,
    for_deployment,
    label,
    on_other_gpus,
    rollback,
)
from .prior import prior_of_spec
from .reconcile import Phase, recorded_setting
from .render import Site, pod_fields, spec_k, vllm_container
from .status import as_patch, condition, merge, transition_time

HISTORY = 10  # decisions kept in status
# What the policy learns is of what the pods run: the vLLM container's image, command, arguments, environment and
# resources, and the nodes (so the GPUs) it is placed on. A change of any of them runs another model, drafter, vLLM,
# GPU or argument, whose acceptance and costs must be measured again.
# Each part is digested on its own, so a relearn can say which changed (what the pods run: the container's fields,
# then the pod's placement).
BASIS_PARTS = {
    "image": ("image",),
    "vLLM arguments": ("command", "args"),
    "environment": ("env",),
    "resources": ("resources",),
    "placement": ("nodeSelector", "tolerations", "affinity"),
}
BASIS_DIGEST_CHARS = 8  # per part: a chance collision (1 in 4e9) would keep what was learned of a changed part
NEUTRAL_K = 1  # the k every spec's basis is rendered with: the k and the schedule are the policy's own knob
NEUTRAL_NAME, NEUTRAL_PORT = "served", 8000  # the name served and the port: clients see them, the GPUs do not


def learned_basis(spec: SpeculativeDeploymentSpec, site: Site) -> str:
    """A digest of what the pods run, part by part (:data:`BASIS_PARTS`), whatever k and schedule, with the images the
    operator gives a spec that names none, so its upgrade of vLLM counts too. Rendered as the pods are, so every
    field that changes them counts, and none that does not (replicas, the rollout, the adaptive settings: the
    policy's figures are per replica, and its settings are how it plans, not what it measured)."""
    sp = spec.speculator
    neutral = spec.model_copy(
        update={
            "target": spec.target.model_copy(update={"served_model_name": NEUTRAL_NAME}),
            "service": spec.service.model_copy(update={"port": NEUTRAL_PORT}),
            "speculator": sp and sp.model_copy(update={"num_speculative_tokens": NEUTRAL_K, "schedule": []}),
        }
    )
    container = vllm_container(neutral, spec_k(neutral), site, [])
    placement = pod_fields(neutral, site)
    fields = container | placement

    def digest(keys: tuple[str, ...]) -> str:
        raw = json.dumps({key: fields.get(key) for key in keys}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()[:BASIS_DIGEST_CHARS]

    return ".".join(digest(keys) for keys in BASIS_PARTS.values())


def basis_changes(old: str, new: str) -> list[str]:
    """The parts of what the pods run (:data:`BASIS_PARTS`) that differ between two bases, by name."""
    return [name for name, a, b in zip(BASIS_PARTS, old.split("."), new.split("."), strict=True) if a != b]


def comparable(state: PolicyState) -> PolicyState:
    """The state with a basis digested otherwise (by an earlier version, whose parts cannot be told apart) taken
    as unknown, as one from before bases were kept: upgrading the operator forgets nothing it learned."""
    parts = None if state.basis is None else len(state.basis.split("."))
    return state if parts in (None, len(BASIS_PARTS)) else replace(state, basis=None)


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


SHOWN_FIGURES = 3  # significant figures in `kubectl get sd`: enough to compare, few enough to read


def shown(x: float | None) -> str | None:
    """A number for people: 0.5649 -> '0.565', 13.2202 -> '13.2'."""
    return None if x is None else f"{x:.{SHOWN_FIGURES}g}"


def metrics_status(obs: Observation, window: int, now: datetime) -> ObservedMetrics:
    def r(x: float | None, n: int = 4) -> float | None:
        return None if x is None else round(x, n)

    return ObservedMetrics(
        time=now_iso(now),
        window_seconds=window,
        request_rate=r(obs.request_rate),
        failed_request_rate=r(obs.failed_rate),
        running=r(obs.running),
        waiting=r(obs.waiting),
        generation_tokens_per_second=r(obs.generation_tps, 2),
        acceptance_rate=r(obs.acceptance_rate),
        mean_acceptance_length=r(obs.mean_acceptance_length),
        per_position_acceptance=[round(x, 4) for x in obs.per_position[: obs.positions_measured]],
        itl_p50_ms=r(obs.itl_p50_s and obs.itl_p50_s * 1000, 3),
        itl_p95_ms=r(obs.itl_p95_s and obs.itl_p95_s * 1000, 3),
        kv_cache_usage=r(obs.kv_usage),
        pods=obs.pods,
        summary=MetricsSummary(acceptance=shown(obs.acceptance_rate), request_rate=shown(obs.request_rate)),
    )  # every field set, None included: null deletes a stale value in the merge patch


def evaluate(
    spec: SpeculativeDeploymentSpec,
    status: dict[str, Any],
    obs: Observation | NoData,
    now: datetime,
    site: Site | None,
) -> tuple[Decision | None, dict[str, Any]]:
    """The decision (None in mode Off) and the status fields to write. ``site``: the images the operator renders
    with, to tell what the pods run (:func:`learned_basis`); None keeps what the state learned whatever the spec
    says (``specdeploy recommend``, which does not know the operator's images, must not forget for it).

    Evaluation owns ``metrics``, the MetricsAvailable condition, ``policy``, ``recommendedK``,
    ``restartBudgetRemaining``, ``lastEvaluation`` and ``decisions``; in Auto it also sets ``k``, the setting
    the next reconcile pass renders (which then reports the rollout it starts)."""
    gen = int(status.get("observedGeneration") or 0)
    old = status.get("conditions") or []
    out = SpeculativeDeploymentStatus(conditions=merge(old, [_metrics_condition(old, obs, now, gen)]))
    if isinstance(obs, Observation):
        out.metrics = metrics_status(obs, spec.adaptive.window_seconds, now)
    settings = spec.adaptive
    if settings.mode == AdaptiveMode.OFF or spec.speculator is None or spec.short_form:
        return None, as_patch(out)
    before = comparable(PolicyState.from_dict(status.get("policy")))
    basis, gpu = None if site is None else learned_basis(spec, site), obs.gpu if isinstance(obs, Observation) else None
    state = before if basis is None else for_deployment(before, basis, gpu)
    decision = _decide(spec, status, state, obs, now, gpu or state.gpu)
    ts, k = now.timestamp(), int(status.get("k") or 0)
    out.policy = decision.state.to_dict()
    to = decision.to_k
    out.recommended_k = None if to is None else top_k(to)
    out.restart_budget_remaining = budget_left(decision.state, ts, settings.max_restarts_per_hour)
    acts = settings.mode == AdaptiveMode.AUTO and decision.changes_k
    if acts and to is not None:  # a change of setting is a change of pod template: reconcile starts the rollout
        out.k = top_k(to)
        out.schedule = None if isinstance(to, int) else schedule_label(to)
    out.last_evaluation = {"time": now_iso(now), "reason": decision.reason}
    entries = [e for e in [_user_change(before, status, now)] if e is not None]
    if basis is not None and another_deployment(before, basis, gpu):
        entries.append(_relearned(before, basis, gpu, status, now))
    if decision.action != KEEP:
        entries.append(
            DecisionRecord(
                time=now_iso(now),
                action=decision.action,
                from_k=k,
                to_k=out.recommended_k,
                setting=None if to is None else schedule_label(to),
                reason=decision.reason,
                expected_gain=decision.expected_gain,
                applied=acts,
            )
        )
    if entries:
        history = [DecisionRecord.model_validate(d) for d in status.get("decisions") or []]
        out.decisions = [*history, *entries][-HISTORY:]
    return decision, as_patch(out)


def _user_change(state: PolicyState, status: dict[str, Any], now: datetime) -> DecisionRecord | None:
    """The setting running is not the one the policy last chose or adopted (``state``, as status kept it): the
    user changed the spec (in the middle of the policy's own rollout, perhaps). The history says so; the policy
    adopts it as a new setting."""
    running = recorded_setting(status) or 0
    if state.k is None or state.k == running:
        return None
    replaced = (
        f"; the policy's change to {label(state.k)} was still rolling out" if state.pending_from is not None else ""
    )
    return DecisionRecord(
        time=now_iso(now),
        action=USER_CHANGE,
        from_k=top_k(state.k),
        to_k=top_k(running),
        setting=schedule_label(running),
        reason=f"the spec now asks for {label(running)} (was {label(state.k)}): the user's setting wins{replaced}",
        applied=True,
    )


def _relearned(
    before: PolicyState, basis: str, gpu: str | None, status: dict[str, Any], now: datetime
) -> DecisionRecord:
    """The history's record that what the pods run changed, and what the policy learned of the old deployment was
    forgotten (:func:`~.policy.for_deployment`): the pods moved to other GPUs, or the spec (or the operator's
    default image) changed a part of what they run, named (the model and the speculator are vLLM arguments)."""
    running = recorded_setting(status) or 0
    what = [f"the pods now run on {gpu} GPUs (were {before.gpu})"] if on_other_gpus(before, gpu) else []
    if before.basis not in (None, basis):
        *others, last = basis_changes(before.basis, basis)  # (two bases of one format differ in a part at least)
        what.append(f"the pods' {', '.join(others)} and {last} changed" if others else f"the pods' {last} changed")
    return DecisionRecord(
        time=now_iso(now),
        action=RELEARN,
        from_k=top_k(running),
        to_k=top_k(running),
        setting=schedule_label(running),
        reason=f"{'; '.join(what)}: what was measured of the deployment before is forgotten, and learned again",
        applied=True,
    )


def _metrics_condition(old: list[dict[str, Any]], obs: Observation | NoData, now: datetime, gen: int) -> Condition:
    if isinstance(obs, NoData):
        return condition(old, ConditionType.METRICS_AVAILABLE, False, Reason.NO_METRICS, obs.reason, now, gen)
    msg = f"{obs.pods} pods in the window"
    return condition(old, ConditionType.METRICS_AVAILABLE, True, Reason.OBSERVED, msg, now, gen)


def _decide(
    spec: SpeculativeDeploymentSpec,
    status: dict[str, Any],
    state: PolicyState,
    obs: Observation | NoData,
    now: datetime,
    gpu: str | None,
) -> Decision:
    """A rollback after a failed rollout of the policy's own change (not of a setting the user has since put in
    its place: that one is the user's to fix, and Degraded says why), else the policy's decision."""
    ts = now.timestamp()
    if status.get("rollout") == Phase.FAILED and state.k == (recorded_setting(status) or 0):
        back = rollback(state, ts, "new pods did not become ready before the progress deadline")
        if back is not None:
            return back
    old = status.get("conditions") or []
    return decide(
        obs,
        state,
        spec.adaptive,
        rollout_of_spec(spec),
        prior_of_spec(spec, gpu),
        recorded_setting(status) or 0,
        ts,
        rollout_complete=status.get("rollout") == Phase.COMPLETE,
        settled_at=transition_time(old, ConditionType.PROGRESSING, "False"),
        schedules=spec.speculator is not None and spec.speculator.method in METHODS_WITH_SCHEDULE,
    )
