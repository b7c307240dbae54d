"""One reconcile pass of one SpeculativeDeployment against the API server: render, apply, write status.

Reconciliation is level-based and idempotent: every trigger (the resource created, its spec changed, the operator
resumed, an owned Deployment changed or vanished, the operator-wide resync) runs :func:`reconcile`, which
validates the spec, renders the owned objects for the effective k and server-side-applies them (a no-op when
nothing changed, a restore when someone edited or deleted them), then computes the status. The operator never
writes ``spec``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api import (
    GROUP,
    PLURAL,
    VERSION,
    ConditionType,
    Problem,
    Reason,
    SpecError,
    SpeculativeDeploymentSpec,
    validate_spec,
)
from ..core.model import Setting
from ..core.objects import render_all
from ..core.reconcile import (
    Phase,
    apply_failed_patch,
    effective_k,
    rendered_unchanged,
    rollout_of,
    status_patch,
    workload_kind,
)
from ..core.render import Owner, render_deployment
from . import telemetry
from .kube import (
    CONFLICT,
    Clients,
    Live,
    api_message,
    apply,
    list_owned,
    list_resources,
    namespace_terminating,
    post_event,
    read_workload,
    retryable,
    selector_immutable,
    version_in,
    write_status,
)

Logger = logging.Logger | logging.LoggerAdapter
APPLY_RETRY_SECONDS = 5  # kopf retries a refused apply after this (the resync also does, every RESYNC_SECONDS)
TRANSIENT_REFUSAL_SECONDS = 60  # refusals worth retrying (409, 429, 5xx) are Degraded only once they last this long:
# shorter reports a conflict the next pass gets through (Degraded flapped for one pass); longer hides an outage


class ApplyFailed(kopf.TemporaryError):
    """The API server refused an object of the pass; ``status`` says so (Degraded=ApplyFailed) and must be written
    though the pass failed, so the user sees why in status, not only in the operator's log."""

    def __init__(self, message: str, status: dict[str, Any]):
        super().__init__(message, delay=APPLY_RETRY_SECONDS)
        self.status = status


CONFLICT_RETRIES = 3  # fresh reads after a 409 before a resource is left to its next pass: enough to get past a
# burst of other writers, few enough that one contended resource cannot hold up a pass over all of them


class Superseded(Exception):
    """An object the pass found live moved before the pass applied it. Someone applied it since, perhaps another
    pass from a newer read of the resource (the user's new k, the policy's change): what this pass rendered could put
    an older setting back, a rolling restart there and another back. The pass reads again and starts over."""


def reconcile(clients: Clients, body: dict[str, Any], logger: Logger, live: Live | None = None) -> dict[str, Any]:
    """One idempotent pass for one SpeculativeDeployment; returns the status to write. ``live``: the owned objects
    as they were read before ``body`` was; one still as the operator applied it is not applied again, and the others
    only if still at the version read (else :class:`Superseded`). Without ``live`` (a change of spec: nothing newer
    than the user's spec can be waiting to be applied) objects are applied whatever their version."""
    with telemetry.reconcile_pass(expected=(Superseded,)):
        new = _reconcile(clients, body, logger, live or {})
    telemetry.reconciled(body, new)
    return new


def _ensure(clients: Clients, obj: dict[str, Any], live: Live) -> dict[str, Any]:
    """The object as the server has it, applied unless it is still what was applied."""
    return clients.applied.current(obj, live) or apply(clients, obj, at_version=version_in(live, obj))


def _reconcile(clients: Clients, body: dict[str, Any], logger: Logger, live: Live) -> dict[str, Any]:
    meta, status = body["metadata"], body.get("status") or {}
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
    now = datetime.now(UTC)
    try:
        spec, problems = validate_spec(body.get("spec")), []
    except SpecError as exc:
        spec, problems = None, exc.problems
    kind = workload_kind(body.get("spec"))
    try:
        if spec is None:
            workload = read_workload(clients, kind, name, namespace)
            k = status.get("k")
        else:
            k = effective_k(spec, status)
            owner = Owner(name, namespace, meta["uid"])
            workload_obj, *others = render_all(owner, spec, k, clients.site)
            for obj in others:
                _ensure(clients, obj, live)
            workload = clients.applied.current(workload_obj, live) or _apply_workload(
                clients, workload_obj, owner, spec, k, version_in(live, workload_obj)
            )
    except ApiException as exc:
        if exc.status == CONFLICT and live:
            raise Superseded(f"{kind} {namespace}/{name} or its Service changed since this pass read them") from exc
        if namespace_terminating(exc):
            logger.info("namespace %s is terminating: nothing to restore for %s", namespace, name)
            return status
        message = f"the API server refused the {kind} or its Service: {exc.status} {api_message(exc)}"
        if retryable(exc):
            if now.timestamp() - clients.refusals.since(meta["uid"], now.timestamp()) < TRANSIENT_REFUSAL_SECONDS:
                raise kopf.TemporaryError(message, delay=APPLY_RETRY_SECONDS) from exc
        else:
            message += " (retried with backoff; the operator's RBAC or an admission policy may need a change)"
        raise ApplyFailed(message, apply_failed_patch(status, message, generation, now)) from exc
    clients.refusals.clear(meta["uid"])
    new = status_patch(
        spec=spec,
        problems=problems,
        old_status=status,
        k=k,
        rollout=rollout_of(workload, kind, unchanged=rendered_unchanged(status, generation, k)),
        generation=generation,
        deployment_name=name,
        now=now,
    )
    _post_events(clients, body, status, new, problems, logger)
    return new


def _apply_workload(
    clients: Clients,
    obj: dict[str, Any],
    owner: Owner,
    spec: SpeculativeDeploymentSpec,
    k: Setting | None,
    at_version: str | None,
) -> dict[str, Any]:
    """Apply the workload (at ``at_version`` if given). A Deployment an earlier release created selects its pods
    by Argo CD's tracking label, and a selector is immutable: such a Deployment keeps its selector (and its pods
    that label)."""
    try:
        return apply(clients, obj, at_version)
    except ApiException as exc:
        live = read_workload(clients, "Deployment", owner.name, owner.namespace) if selector_immutable(exc) else None
        if live is None:
            raise
        legacy = live["spec"]["selector"]["matchLabels"]
        return apply(clients, render_deployment(owner, spec, k, clients.site, live_selector=legacy), at_version)


def _post_events(
    clients: Clients,
    body: dict[str, Any],
    old: dict[str, Any],
    new: dict[str, Any],
    problems: list[Problem],
    logger: Logger,
) -> None:
    """Events for what changed, once per change (the periodic resync must not repeat them)."""
    if problems:
        if old.get("observedGeneration") != new["observedGeneration"]:
            post_event(clients, body, Reason.INVALID_SPEC, "; ".join(str(p) for p in problems), warning=True)
        return
    if "k" in old and old.get("k") != new.get("k"):
        post_event(clients, body, "DraftLengthChanged", f"k {old.get('k')} -> {new.get('k')}: rolling restart")
    if old.get("rollout") != new.get("rollout"):
        if new.get("rollout") == Phase.FAILED:
            post_event(clients, body, Reason.ROLLOUT_FAILED, _message(new, ConditionType.DEGRADED), warning=True)
        elif new.get("rollout") == Phase.COMPLETE and old.get("rollout"):
            post_event(clients, body, "RolloutComplete", _message(new, ConditionType.READY))
    if "observedGeneration" not in old:
        logger.info("reconciled %s/%s for the first time", body["metadata"]["namespace"], body["metadata"]["name"])


def _message(status: dict[str, Any], type_: str) -> str:
    return next((c["message"] for c in status.get("conditions", []) if c["type"] == type_), "")


def changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``new`` that differ from ``old``: what a status merge patch must carry."""
    return {k: v for k, v in new.items() if old.get(k) != v}


def reconcile_and_write(
    clients: Clients,
    cr: dict[str, Any],
    logger: Logger,
    applied: Callable[[], None] = lambda: None,
    live: Live | None = None,
) -> None:
    """Reconcile outside a kopf change handler and write what changed in status through the status subresource
    (also when the API server refused an object: then the pass still fails). A pass superseded (an object moved
    since ``live`` was read) reads the workload and then the resource again and starts over from them, a few times.
    ``applied`` runs between the apply and the status write."""
    for _ in range(CONFLICT_RETRIES + 1):
        try:
            new = reconcile(clients, cr, logger, live)
            break
        except ApplyFailed as exc:
            write_status(clients, cr, changed(cr.get("status") or {}, exc.status))
            raise
        except Superseded as exc:
            telemetry.APPLY_CONFLICTS.inc()
            logger.info("%s: read again", exc)
            live = live_workload(clients, cr)
            meta = cr["metadata"]
            fresh = read_resource(clients, meta["namespace"], meta["name"], meta["uid"])
            if fresh is None:
                return
            cr = fresh
    else:
        logger.info("%s/%s moved at every read: left to the next pass", *telemetry.resource_key(cr))
        return
    applied()
    write_status(clients, cr, changed(cr.get("status") or {}, new))


def live_workload(clients: Clients, cr: dict[str, Any]) -> Live:
    """The resource's workload as it is now, to be read before the resource is (then only a pass that read the
    resource later can have applied it since)."""
    meta, kind = cr["metadata"], workload_kind(cr.get("spec"))
    found = read_workload(clients, kind, meta["name"], meta["namespace"])
    return {} if found is None else {(kind, meta["namespace"], meta["name"]): found}


def read_resource(clients: Clients, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
    """The resource with that uid as it is now (None: deleted, replaced by another of its name, or being deleted)."""
    try:
        fresh = clients.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    gone = fresh["metadata"]["uid"] != uid or fresh["metadata"].get("deletionTimestamp")
    return None if gone else fresh


def resync_all(clients: Clients, namespaces: list[str], logger: Logger) -> None:
    """Level-based safety net: reconcile every resource (restores drift a missed watch event left behind). Owned
    objects are listed first: only those changed or missing since the operator applied them are applied."""
    live = list_owned(clients, namespaces)  # first: an object applied after it was listed is not applied again
    resources = list_resources(clients, namespaces)  # from a read older than the resource it applied (Superseded)
    clients.applied.retain(live)
    clients.refusals.retain(cr["metadata"]["uid"] for cr in resources)
    for cr in resources:
        if cr["metadata"].get("deletionTimestamp"):
            continue
        try:
            reconcile_and_write(clients, cr, logger, live=live)
        except (ApiException, kopf.TemporaryError) as exc:
            logger.warning("resync of %s/%s failed: %s", cr["metadata"]["namespace"], cr["metadata"]["name"], exc)
