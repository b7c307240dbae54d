"""What the operator should run and report, from what it reads (pure; shell/sync.py does the I/O).

* :func:`effective_k`: which draft length runs now. The user's k wins whenever the user changes it; otherwise
  the k in status stays (the adaptive policy may have moved it), so an operator restart changes nothing.
* :func:`rollout_of`: the workload's rollout state from its status, as the Deployment controller (or KServe, for
  an InferenceService) reports it.
* :func:`status_patch`: the status fields a reconcile pass owns (what runs and how its rollout goes), built
  from the typed status model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..api import (
    METHODS_WITH_SCHEDULE,
    Backend,
    Condition,
    ConditionType,
    Problem,
    Reason,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
)
from .model import Setting, parse_schedule, schedule_label, top_k
from .render import method_name, spec_k
from .status import as_patch, condition, merge

DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"  # the Deployment controller's reason for a stuck rollout


class Phase(StrEnum):
    ABSENT = "Absent"
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclass(frozen=True)
class RolloutState:
    phase: Phase
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    message: str = ""


def effective_k(spec: SpeculativeDeploymentSpec, status: dict[str, Any]) -> Setting | None:
    """The setting to run: the spec's k when it is new or changed, else the one recorded in status (a k, or the
    policy's per-batch-size schedule where the method runs one)."""
    wanted = spec_k(spec)
    if status.get("specK") != wanted or "k" not in status or spec.speculator is None or spec.short_form:
        return wanted
    k = status["k"]
    if k is None or k == 0:
        return k if spec.adaptive.allow_disable else wanted
    setting = recorded_setting(status)
    schedulable = spec.speculator.method in METHODS_WITH_SCHEDULE
    if not isinstance(setting, int) and schedulable and top_k(setting) <= spec.adaptive.max_tokens:
        return setting
    return max(spec.adaptive.min_tokens, min(spec.adaptive.max_tokens, k))


def recorded_setting(status: dict[str, Any]) -> Setting | None:
    """The setting status records: ``k``, or the ``schedule`` whose largest k it is."""
    k, schedule = status.get("k"), status.get("schedule")
    if k and schedule:
        setting = parse_schedule(schedule)
        if top_k(setting) == k:
            return setting
    return k


def workload_kind(raw_spec: dict[str, Any] | None) -> str:
    """What runs the resource's pods, read from its raw spec (an invalid spec still names its backend)."""
    return "InferenceService" if (raw_spec or {}).get("backend") == Backend.KSERVE else "Deployment"


def rollout_of(workload: dict[str, Any] | None, kind: str = "Deployment", unchanged: bool = False) -> RolloutState:
    """Rollout state of the workload (a Deployment or an InferenceService) as its controller reports it.
    ``unchanged``: nothing the operator renders has changed since a pass found the rollout complete
    (:func:`rendered_unchanged`)."""
    if workload is None:
        return RolloutState(Phase.ABSENT, message=f"{kind} not found")
    if workload.get("kind", kind) == "InferenceService":
        return _inference_service_rollout(workload)
    return _deployment_rollout(workload, unchanged)


def rendered_unchanged(status: dict[str, Any], generation: int, setting: Setting | None) -> bool:
    """The last pass found the rollout complete, and neither the spec (its generation) nor the setting has changed
    since: what the operator applies now is what completed. A Deployment's generation also moves when only its
    annotations change (another client writing them); its controller's observedGeneration then trails for a moment,
    which must not read as a restart (a restart that keeps the policy waiting for a settled rollout)."""
    return (
        status.get("rollout") == Phase.COMPLETE
        and status.get("observedGeneration") == generation
        and recorded_setting(status) == setting
    )


def _deployment_rollout(deployment: dict[str, Any], unchanged: bool = False) -> RolloutState:
    """kubectl rollout status logic; a trailing observedGeneration is ignored when ``unchanged``."""
    spec, st = deployment.get("spec", {}), deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    total, updated = int(st.get("replicas") or 0), int(st.get("updatedReplicas") or 0)
    ready, available = int(st.get("readyReplicas") or 0), int(st.get("availableReplicas") or 0)
    base = {"replicas": want, "ready": ready, "updated": updated}
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == DEADLINE_EXCEEDED:
            return RolloutState(Phase.FAILED, **base, message=cond.get("message", "progress deadline exceeded"))
    trails = int(st.get("observedGeneration") or 0) < int(deployment.get("metadata", {}).get("generation") or 0)
    if trails and not unchanged:
        return RolloutState(Phase.PROGRESSING, **base, message="waiting for the Deployment controller")
    if updated < want:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{updated} of {want} replicas updated")
    if total > updated:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{total - updated} old replicas pending termination")
    if available < updated:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{available} of {updated} updated replicas available")
    return RolloutState(Phase.COMPLETE, **base, message=f"{ready} of {want} replicas ready")


# What KServe's modelStatus.transitionStatus says of a model that will not load without a change of spec.
KSERVE_FAILED = ("BlockedByFailedLoad", "InvalidSpec")


def _inference_service_rollout(isvc: dict[str, Any]) -> RolloutState:
    """KServe's view: its status for the current generation, Ready, or a model that failed to load. (KServe
    reports no replica counts: ready and updated are all or none.)"""
    want = int(isvc.get("spec", {}).get("predictor", {}).get("minReplicas", 1))
    st = isvc.get("status") or {}
    if int(st.get("observedGeneration") or 0) < int(isvc.get("metadata", {}).get("generation") or 0):
        return RolloutState(Phase.PROGRESSING, replicas=want, message="waiting for KServe")
    model = st.get("modelStatus") or {}
    if model.get("transitionStatus") in KSERVE_FAILED:
        failure = model.get("lastFailureInfo") or {}
        message = failure.get("message") or f"KServe: {model['transitionStatus']}"
        return RolloutState(Phase.FAILED, replicas=want, message=message)
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("status") == "True":
        return RolloutState(Phase.COMPLETE, want, want, want, message=f"InferenceService ready ({want} replicas)")
    reason = ": ".join(x for x in (ready.get("reason"), ready.get("message")) if x)
    return RolloutState(Phase.PROGRESSING, replicas=want, message=reason or "InferenceService not ready yet")


def status_patch(
    *,
    spec: SpeculativeDeploymentSpec | None,
    problems: list[Problem],
    old_status: dict[str, Any],
    k: Setting | None,
    rollout: RolloutState,
    generation: int,
    deployment_name: str,
    now: datetime,
) -> dict[str, Any]:
    """The status fields a reconcile pass owns (``spec`` is None when it is invalid)."""
    old = old_status.get("conditions") or []
    if problems:
        msg = "; ".join(str(p) for p in problems)
        running = "the running Deployment is left as it was" if rollout.phase != Phase.ABSENT else "nothing runs"
        degraded = condition(
            old, ConditionType.DEGRADED, True, Reason.INVALID_SPEC, f"{msg} ({running})", now, generation
        )
        return as_patch(
            SpeculativeDeploymentStatus(
                observed_generation=generation, deployment=deployment_name, conditions=merge(old, [degraded])
            )
        )
    assert spec is not None
    return as_patch(
        SpeculativeDeploymentStatus(
            observed_generation=generation,
            deployment=deployment_name,
            conditions=merge(old, _conditions(old, spec, k, rollout, generation, now)),
            method=method_name(spec),
            k=None if k is None else top_k(k),
            schedule=None if k is None or isinstance(k, int) else schedule_label(k),
            spec_k=spec_k(spec),
            speculation_active=k != 0,
            replicas=rollout.replicas,
            ready_replicas=rollout.ready,
            updated_replicas=rollout.updated,
            rollout=str(rollout.phase),
        )
    )


def apply_failed_patch(old_status: dict[str, Any], message: str, generation: int, now: datetime) -> dict[str, Any]:
    """The status of a pass whose objects the API server refused: Degraded with its words; everything else as it
    was (``observedGeneration`` included: this generation is not in effect)."""
    old = old_status.get("conditions") or []
    degraded = condition(old, ConditionType.DEGRADED, True, Reason.APPLY_FAILED, message, now, generation)
    return as_patch(SpeculativeDeploymentStatus(conditions=merge(old, [degraded])))


def _conditions(
    old: list[dict[str, Any]],
    spec: SpeculativeDeploymentSpec,
    k: Setting | None,
    rollout: RolloutState,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """Ready, Progressing, Degraded and SpeculationActive from the rollout and the running k."""
    phase, msg = rollout.phase, rollout.message

    def cond(type_: ConditionType, status: bool, reason: Reason | str, message: str) -> Condition:
        return condition(old, type_, status, reason, message, now, generation)

    ready = phase == Phase.COMPLETE and rollout.ready >= rollout.replicas
    degraded = {Phase.FAILED: Reason.ROLLOUT_FAILED, Phase.ABSENT: Reason.DEPLOYMENT_MISSING}.get(phase)
    progressing = phase == Phase.PROGRESSING
    active = k != 0
    running = f"{method_name(spec)} with k={'checkpoint default' if k is None else schedule_label(k)}"
    return [
        cond(ConditionType.READY, ready, Reason.REPLICAS_READY if ready else Reason.REPLICAS_NOT_READY, msg),
        cond(ConditionType.PROGRESSING, progressing, Reason.ROLLING_UPDATE if progressing else phase, msg),
        cond(ConditionType.DEGRADED, degraded is not None, degraded or Reason.AS_EXPECTED, msg if degraded else ""),
        cond(
            ConditionType.SPECULATION_ACTIVE,
            active,
            Reason.SPECULATING if active else Reason.SPECULATION_OFF,
            running if active else "serving without --speculative-config",
        ),
    ]
