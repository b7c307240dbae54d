"""kopf handlers: what starts a reconcile pass or an evaluation. The work is in :mod:`.sync` (render, apply,
status) and :mod:`.evaluation` (metrics, policy); the operator's own bookkeeping lives under ``status.kopf``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import kopf
import urllib3
from kubernetes.client.rest import ApiException

from ..api import GROUP, KIND, PLURAL, VERSION, Reason
from ..api.endpoints import CONFIGMAP
from ..core.render import DEFAULT_SITE, LABEL_DEPLOYMENT, MANAGER
from . import telemetry
from .endpoints import EndpointSource, operator_namespace
from .evaluation import evaluate_all
from .kube import Clients, make_clients
from .sync import ApplyFailed, changed, read_resource, reconcile, reconcile_and_write, resync_all

RESYNC_SECONDS = float(os.environ.get("SPECDEPLOY_RESYNC_SECONDS", "30"))
TICK_SECONDS = min(5.0, RESYNC_SECONDS)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
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
        memo["clients"] = make_clients(
            memo.get("site", DEFAULT_SITE), memo.get("platform", "auto"), memo.get("pod_monitors", "auto")
        )
        logger.info(f"site: {memo['clients'].site}")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_spec(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Spec created or changed (or operator resumed): reconcile; a bad spec is Degraded and fails for good."""
    try:
        new = reconcile(memo["clients"], dict(body), logger)
    except ApplyFailed as exc:  # kopf writes the patch though the handler fails, and retries it
        patch.status.update(changed(dict(body.get("status") or {}), exc.status))
        raise
    patch.status.update(changed(dict(body.get("status") or {}), new))
    invalid = next((c for c in new["conditions"] if c["reason"] == Reason.INVALID_SPEC), None)
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
        cr = read_resource(clients, namespace, owner["name"], owner["uid"])
        if cr is not None:
            # The Deployment as this event has it was read before the resource: applied only if still at its version.
            live = {} if type == "DELETED" else {("Deployment", namespace, body["metadata"]["name"]): dict(body)}
            reconcile_and_write(clients, cr, logger, live=live)
    except ApiException as exc:
        if exc.status != 404:  # (404: the owner is gone; garbage collection removes the rest)
            logger.warning(f"{owner['name']}: not reconciled after its Deployment changed ({exc.status} {exc.reason}); "
                           "the resync will")  # fmt: skip
    except (OSError, urllib3.exceptions.HTTPError, kopf.TemporaryError) as exc:  # kopf retries no event handler
        logger.warning(
            f"{owner['name']}: not reconciled after its Deployment changed ({exc.__class__.__name__}); the resync will"
        )


async def control_loop(memo: kopf.Memo, logger: logging.Logger) -> None:
    """One operator-wide loop rather than per-object kopf timers: timers put a finalizer on every resource,
    which blocks deletion (and GitOps pruning) whenever the operator is not running. It resyncs every
    resource and evaluates metrics for those that are due, one batch of Prometheus queries for all."""
    clients: Clients = memo["clients"]
    namespaces = memo.get("namespaces", [])
    source = EndpointSource(memo.get("metrics_namespace") or operator_namespace(), memo.get("prometheus_url"))
    logger.info("metrics endpoints: ConfigMap %s/%s%s", source.namespace, CONFIGMAP,
                f", default {source.default_url}" if source.default_url else "")  # fmt: skip
    last_eval: dict[str, float] = {}
    next_resync = time.monotonic() + RESYNC_SECONDS
    while True:
        await asyncio.sleep(TICK_SECONDS)
        try:
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + RESYNC_SECONDS
                with telemetry.RESYNC_PASS.time():
                    await asyncio.to_thread(resync_all, clients, namespaces, logger)
            await asyncio.to_thread(evaluate_all, clients, source, namespaces, last_eval, logger)
        except Exception as exc:  # the loop must survive an API or Prometheus outage
            logger.warning("control loop pass failed, retrying: %s", exc)


@kopf.on.startup()
async def start_loop(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    telemetry.serve(memo.get("metrics_port", 0), logger)
    memo["loop"] = asyncio.create_task(control_loop(memo, logging.getLogger("specdeploy.loop")))


@kopf.on.cleanup()
async def stop_loop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("loop")
    if task:
        task.cancel()
