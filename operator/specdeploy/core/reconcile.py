"""What the operator should run and report, from what it reads (pure; the kopf handlers do the I/O).

* :func:`effective_k`: which draft length runs now. The user's k wins whenever the user changes it; otherwise
  the k in status stays (the adaptive policy may have moved it), so an operator restart changes nothing.
* :func:`rollout_of`: the Deployment's rollout state from its status, as the Deployment controller reports it.
* :func:`status_patch`: the status the operator writes, with Kubernetes-convention conditions whose
  ``lastTransitionTime`` moves only when their status flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ..api import Problem, SpeculativeDeploymentSpec, now_iso
from .render import method_name, spec_k

READY, PROGRESSING, DEGRADED, SPECULATION_ACTIVE, METRICS_AVAILABLE = (
    "Ready",
    "Progressing",
    "Degraded",
    "SpeculationActive",
    "MetricsAvailable",
)


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


def effective_k(spec: SpeculativeDeploymentSpec, status: dict[str, Any]) -> int | None:
    """The k to run: the spec's when it is new or changed, else the one recorded in status."""
    wanted = spec_k(spec)
    if status.get("specK") != wanted or "k" not in status or spec.speculator is None or spec.short_form:
        return wanted
    k = status["k"]
    if k is None or k == 0:
        return k if spec.adaptive.allow_disable else wanted
    return max(spec.adaptive.min_tokens, min(spec.adaptive.max_tokens, k))


def rollout_of(deployment: dict[str, Any] | None) -> RolloutState:
    """Rollout state as the Deployment controller reports it (kubectl rollout status logic)."""
    if deployment is None:
        return RolloutState(Phase.ABSENT, message="Deployment not found")
    spec, st = deployment.get("spec", {}), deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    total, updated = int(st.get("replicas") or 0), int(st.get("updatedReplicas") or 0)
    ready, available = int(st.get("readyReplicas") or 0), int(st.get("availableReplicas") or 0)
    base = {"replicas": want, "ready": ready, "updated": updated}
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return RolloutState(Phase.FAILED, **base, message=cond.get("message", "progress deadline exceeded"))
    if int(st.get("observedGeneration") or 0) < int(deployment.get("metadata", {}).get("generation") or 0):
        return RolloutState(Phase.PROGRESSING, **base, message="waiting for the Deployment controller")
    if updated < want:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{updated} of {want} replicas updated")
    if total > updated:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{total - updated} old replicas pending termination")
    if available < updated:
        return RolloutState(Phase.PROGRESSING, **base, message=f"{available} of {updated} updated replicas available")
    return RolloutState(Phase.COMPLETE, **base, message=f"{ready} of {want} replicas ready")


def condition(
    old: list[dict[str, Any]], type_: str, status: bool | None, reason: str, message: str, now: datetime, gen: int
) -> dict[str, Any]:
    """A condition that keeps its lastTransitionTime unless its status flips."""
    value = "Unknown" if status is None else ("True" if status else "False")
    prev = next((c for c in old if c.get("type") == type_), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now_iso(now)
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": gen,
    }


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace conditions by type, keep the others (e.g. MetricsAvailable written by the metrics loop)."""
    types = {c["type"] for c in new}
    return [*new, *(c for c in old if c.get("type") not in types)]


def status_patch(
    *,
    spec: SpeculativeDeploymentSpec | None,
    problems: list[Problem],
    old_status: dict[str, Any],
    k: int | None,
    rollout: RolloutState,
    generation: int,
    deployment_name: str,
    now: datetime,
) -> dict[str, Any]:
    """The status to write after a reconcile pass (``spec`` is None when it is invalid)."""
    old = old_status.get("conditions") or []
    out: dict[str, Any] = {"observedGeneration": generation, "deployment": deployment_name}
    if problems:
        msg = "; ".join(str(p) for p in problems)
        running = "the running Deployment is left as it was" if rollout.phase != Phase.ABSENT else "nothing runs"
        out["conditions"] = merge_conditions(
            old, [condition(old, DEGRADED, True, "InvalidSpec", f"{msg} ({running})", now, generation)]
        )
        return out
    assert spec is not None
    phase = rollout.phase
    ready = phase == Phase.COMPLETE and rollout.ready >= rollout.replicas
    degraded_reason = {Phase.FAILED: "RolloutFailed", Phase.ABSENT: "DeploymentMissing"}.get(phase)
    conds = [
        condition(
            old, READY, ready, "ReplicasReady" if ready else "ReplicasNotReady", rollout.message, now, generation
        ),
        condition(
            old,
            PROGRESSING,
            phase == Phase.PROGRESSING,
            "RollingUpdate" if phase == Phase.PROGRESSING else str(phase),
            rollout.message,
            now,
            generation,
        ),
        condition(
            old,
            DEGRADED,
            degraded_reason is not None,
            degraded_reason or "AsExpected",
            rollout.message if degraded_reason else "",
            now,
            generation,
        ),
        condition(
            old,
            SPECULATION_ACTIVE,
            k != 0,
            "Speculating" if k != 0 else "SpeculationOff",
            f"{method_name(spec)} with k={'checkpoint default' if k is None else k}"
            if k != 0
            else "serving without --speculative-config",
            now,
            generation,
        ),
    ]
    out.update(
        conditions=merge_conditions(old, conds),
        method=method_name(spec),
        k=k,
        specK=spec_k(spec),
        speculationActive=k != 0,
        replicas=rollout.replicas,
        readyReplicas=rollout.ready,
        updatedReplicas=rollout.updated,
        rollout=str(phase),
    )
    return out
