"""kopf handlers: the only code that talks to Kubernetes. They move data in and out of the pure core.

Reconciliation is level-based and idempotent: every trigger (the resource created, its spec changed, the
operator resumed, an owned Deployment changed or vanished, the operator-wide resync loop) runs
:func:`reconcile`, which validates the spec, renders the owned objects for the effective k and
server-side-applies them (a no-op when nothing changed, a restore when someone edited or deleted them), then
writes status. The operator never
writes ``spec``; its own bookkeeping lives under ``status.kopf``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
import kubernetes
from kubernetes.client.rest import ApiException

from ..api import GROUP, KIND, PLURAL, VERSION, Problem, SpecError, SpeculativeDeploymentSpec, validate_spec
from ..core.evaluate import evaluate
from ..core.observation import NoData, Observation
from ..core.reconcile import Phase, effective_k, rollout_of, status_patch
from ..core.render import CHECKPOINT_K, DEFAULT_SIM_IMAGE, LABEL_DEPLOYMENT, MANAGER, Owner, render_all
from .prometheus import Reader

FIELD_MANAGER = MANAGER
RESYNC_SECONDS = float(os.environ.get("SPECDEPLOY_RESYNC_SECONDS", "30"))
TICK_SECONDS = min(5.0, RESYNC_SECONDS)


@dataclass
class Clients:
    """Kubernetes API clients and operator settings, kept in kopf's memo."""

    api: kubernetes.client.ApiClient
    apps: kubernetes.client.AppsV1Api
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    sim_image: str = DEFAULT_SIM_IMAGE


def _load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def make_clients(sim_image: str = DEFAULT_SIM_IMAGE) -> Clients:
    _load_config()
    api = kubernetes.client.ApiClient()
    return Clients(
        api=api,
        apps=kubernetes.client.AppsV1Api(api),
        core=kubernetes.client.CoreV1Api(api),
        custom=kubernetes.client.CustomObjectsApi(api),
        sim_image=sim_image,
    )


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in status (never in the user's spec or metadata) and set up clients."""
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.lastHandledConfiguration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.reconnect_backoff = 1.0
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.execution.max_workers = 8
    if "clients" not in memo:
        memo["clients"] = make_clients(memo.get("sim_image", DEFAULT_SIM_IMAGE))


def _apply(clients: Clients, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with force: creates, restores hand edits of our fields, and is a no-op otherwise.
    Returns the object as the server now has it (API field names)."""
    meta = obj["metadata"]
    kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    if obj["kind"] == "Deployment":
        res = clients.apps.patch_namespaced_deployment(meta["name"], meta["namespace"], obj, **kw)
    else:
        res = clients.core.patch_namespaced_service(meta["name"], meta["namespace"], obj, **kw)
    return clients.api.sanitize_for_serialization(res)


def _read_deployment(clients: Clients, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        res = clients.apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return clients.api.sanitize_for_serialization(res)


def _retryable(exc: ApiException) -> bool:
    return exc.status in (409, 429) or exc.status >= 500


def _namespace_terminating(exc: ApiException) -> bool:
    """The namespace is being deleted: nothing may be created in it, and nothing needs to be."""
    return exc.status == 403 and "NamespaceTerminating" in str(exc.body or "")


def reconcile(clients: Clients, body: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter) -> dict[str, Any]:
    """One idempotent pass for one SpeculativeDeployment; returns the status to write."""
    meta, status = body["metadata"], body.get("status") or {}
    name, namespace, generation = meta["name"], meta["namespace"], int(meta.get("generation") or 1)
    now = datetime.now(UTC)
    try:
        spec, problems = validate_spec(body.get("spec")), []
    except SpecError as exc:
        spec, problems = None, exc.problems
    try:
        if spec is None:
            dep = _read_deployment(clients, name, namespace)
            k = status.get("k")
        else:
            k = effective_k(spec, status)
            owner = Owner(name, namespace, meta["uid"])
            dep_obj, svc_obj = render_all(owner, spec, k, clients.sim_image)
            _apply(clients, svc_obj)
            dep = _apply(clients, dep_obj)
    except ApiException as exc:
        if _namespace_terminating(exc):
            logger.info("namespace %s is terminating: nothing to restore for %s", namespace, name)
            return status
        if _retryable(exc):
            raise kopf.TemporaryError(f"Kubernetes API: {exc.status} {exc.reason}", delay=5) from exc
        raise
    new = status_patch(
        spec=spec,
        problems=problems,
        old_status=status,
        k=k,
        rollout=rollout_of(dep),
        generation=generation,
        deployment_name=name,
        now=now,
    )
    _post_events(body, status, new, problems, logger)
    return new


def _post_events(
    body: dict[str, Any],
    old: dict[str, Any],
    new: dict[str, Any],
    problems: list[Problem],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Events for what changed, once per change (the periodic resync must not repeat them)."""
    if problems:
        if old.get("observedGeneration") != new["observedGeneration"]:
            kopf.warn(body, reason="InvalidSpec", message="; ".join(str(p) for p in problems))
        return
    if "k" in old and old.get("k") != new.get("k"):
        kopf.info(body, reason="DraftLengthChanged", message=f"k {old.get('k')} -> {new.get('k')}: rolling restart")
    if old.get("rollout") != new.get("rollout"):
        if new.get("rollout") == Phase.FAILED:
            kopf.warn(body, reason="RolloutFailed", message=_cond(new, "Degraded"))
        elif new.get("rollout") == Phase.COMPLETE and old.get("rollout"):
            kopf.info(body, reason="RolloutComplete", message=_cond(new, "Ready"))
    if "observedGeneration" not in old:
        logger.info("reconciled %s/%s for the first time", body["metadata"]["namespace"], body["metadata"]["name"])


def _cond(status: dict[str, Any], type_: str) -> str:
    return next((c["message"] for c in status.get("conditions", []) if c["type"] == type_), "")


def _changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in new.items() if old.get(k) != v}


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_spec(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Spec created or changed (or operator resumed): reconcile; a bad spec is Degraded and fails for good."""
    new = reconcile(memo["clients"], dict(body), logger)
    patch.status.update(_changed(dict(body.get("status") or {}), new))
    invalid = next((c for c in new["conditions"] if c["reason"] == "InvalidSpec"), None)
    if invalid:
        raise kopf.PermanentError(invalid["message"])


@kopf.on.event(
    "apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": MANAGER, LABEL_DEPLOYMENT: kopf.PRESENT}
)
def on_owned_deployment(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """An owned Deployment changed or vanished: restore it if needed and refresh the owner's status."""
    owner = next(
        (r for r in body["metadata"].get("ownerReferences", []) if r.get("kind") == KIND and r.get("controller")),
        None,
    )
    if owner is None or type is None:
        return
    clients: Clients = memo["clients"]
    namespace = body["metadata"]["namespace"]
    try:
        cr = clients.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, owner["name"])
    except ApiException as exc:
        if exc.status == 404:
            return  # the owner is gone: garbage collection removes the rest
        raise
    if cr["metadata"]["uid"] == owner["uid"] and not cr["metadata"].get("deletionTimestamp"):
        reconcile_and_write(clients, cr, logger)


def reconcile_and_write(clients: Clients, cr: dict[str, Any], logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Reconcile outside a kopf change handler and write what changed in status through the status subresource."""
    changed = _changed(cr.get("status") or {}, reconcile(clients, cr, logger))
    if changed:
        meta = cr["metadata"]
        clients.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": changed}
        )


def _list_resources(clients: Clients, namespaces: list[str]) -> list[dict[str, Any]]:
    if not namespaces:
        return clients.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return [
        item
        for ns in namespaces
        for item in clients.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    ]


def resync_all(clients: Clients, namespaces: list[str], logger: logging.Logger) -> None:
    """Level-based safety net: reconcile every resource (restores drift a missed watch event left behind)."""
    for cr in _list_resources(clients, namespaces):
        if cr["metadata"].get("deletionTimestamp"):
            continue
        try:
            reconcile_and_write(clients, cr, logger)
        except (ApiException, kopf.TemporaryError) as exc:
            logger.warning("resync of %s/%s failed: %s", cr["metadata"]["namespace"], cr["metadata"]["name"], exc)


def _token(clients: Clients, namespace: str, spec: SpeculativeDeploymentSpec) -> str | None:
    ref = spec.adaptive.prometheus.bearer_token_secret if spec.adaptive.prometheus else None
    if ref is None:
        return None
    secret = clients.core.read_namespaced_secret(ref.name, namespace)
    return base64.b64decode((secret.data or {})[ref.key]).decode().strip()


def evaluate_all(clients: Clients, namespaces: list[str], last: dict[str, float], logger: logging.Logger) -> int:
    """Read metrics for every resource that is due, one batch of queries per Prometheus and window, then
    evaluate each, write status, and carry out Auto decisions. Returns the number of batches read."""
    now = datetime.now(UTC)
    groups: dict[tuple[str, str | None, int, bool], list[tuple[dict[str, Any], SpeculativeDeploymentSpec]]] = {}
    for cr in _list_resources(clients, namespaces):
        meta = cr["metadata"]
        try:
            spec = validate_spec(cr.get("spec"))
        except SpecError:
            continue
        prom = spec.adaptive.prometheus
        if prom is None or meta.get("deletionTimestamp"):
            continue
        key = f"{meta['namespace']}/{meta['name']}"
        if now.timestamp() - last.get(key, 0.0) < spec.adaptive.evaluation_interval_seconds:
            continue
        last[key] = now.timestamp()
        try:
            token = _token(clients, meta["namespace"], spec)
        except (ApiException, KeyError) as exc:
            logger.warning("%s: Prometheus token secret unreadable: %s", key, exc)
            token = None
        group = (prom.url, token, spec.adaptive.window_seconds, not prom.insecure_skip_verify)
        groups.setdefault(group, []).append((cr, spec))
    for (url, token, window, verify), members in groups.items():
        reader = Reader(url, token=token, verify_tls=verify)
        wanted = [(cr["metadata"]["namespace"], cr["metadata"]["name"], _k_label(cr)) for cr, _ in members]
        observations = reader.read(wanted, window)
        for cr, spec in members:
            meta = cr["metadata"]
            obs = observations[(meta["namespace"], meta["name"])]
            _apply_evaluation(clients, cr, spec, obs, now, logger)
    return len(groups)


def _k_label(cr: dict[str, Any]) -> str:
    k = (cr.get("status") or {}).get("k")
    return CHECKPOINT_K if k is None else str(k)


def _apply_evaluation(
    clients: Clients,
    cr: dict[str, Any],
    spec: SpeculativeDeploymentSpec,
    obs: Observation | NoData,
    now: datetime,
    logger: logging.Logger,
) -> None:
    meta, status = cr["metadata"], cr.get("status") or {}
    decision, patch = evaluate(spec, status, obs, now)
    changed = _changed(status, patch)
    if changed:
        clients.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": changed}
        )
    if decision is None or not decision.changes_k:
        return
    what = "k" if decision.to_k else "speculation"
    target = decision.to_k if decision.to_k else "off"
    if "k" in patch:  # Auto: carry it out now through the rolling-restart primitive
        kopf.info(cr, reason="AdaptiveChange", message=f"{decision.action}: {what} -> {target}: {decision.reason}")
        reconcile_and_write(clients, {**cr, "status": {**status, **changed}}, logger)
    elif decision.reason != (status.get("lastEvaluation") or {}).get("reason"):
        kopf.info(cr, reason="Recommendation", message=f"{decision.action}: {what} -> {target}: {decision.reason}")


async def control_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """One operator-wide loop rather than per-object kopf timers: timers put a finalizer on every resource,
    which blocks deletion (and GitOps pruning) whenever the operator is not running. It resyncs every
    resource and evaluates metrics for those that are due, one batch of Prometheus queries for all."""
    clients: Clients = memo["clients"]
    namespaces = memo.get("namespaces", [])
    last_eval: dict[str, float] = {}
    next_resync = time.monotonic() + RESYNC_SECONDS
    while True:
        await asyncio.sleep(TICK_SECONDS)
        try:
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + RESYNC_SECONDS
                await asyncio.to_thread(resync_all, clients, namespaces, logger)
            await asyncio.to_thread(evaluate_all, clients, namespaces, last_eval, logger)
        except Exception as exc:  # the loop must survive an API or Prometheus outage
            logger.warning("control loop pass failed, retrying: %s", exc)


@kopf.on.startup()
async def start_loop(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    memo["loop"] = asyncio.create_task(control_loop(memo, logging.getLogger("specdeploy.loop")))


@kopf.on.cleanup()
async def stop_loop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("loop")
    if task:
        task.cancel()
