"""The evaluation pipeline the operator's loop and ``specdeploy recommend`` share: valid resources -> one batch of
PromQL per metrics endpoint and window -> one observation each -> :func:`~specdeploy.core.evaluate.evaluate`.

The operator then writes status and carries out Auto decisions (:func:`evaluate_all`); ``recommend`` only prints.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api import AdaptiveMode, SpecError, SpeculativeDeploymentSpec, now_iso, validate_spec
from ..api.endpoints import CONFIGMAP, Endpoints
from ..core.evaluate import evaluate
from ..core.model import schedule_label
from ..core.observation import NoData, Observation
from ..core.policy import RELEARN, label
from ..core.prior import gpu_of_products
from ..core.reconcile import Phase
from . import failpoints, telemetry
from .endpoints import Connection, EndpointSource
from .kube import CONFLICT, Clients, GpuProducts, gpu_products, k_label, list_resources, post_event, write_status
from .prometheus import Reader
from .sync import CONFLICT_RETRIES, changed, live_workload, read_resource, reconcile_and_write

Resource = tuple[dict[str, Any], SpeculativeDeploymentSpec]


def valid(items: Iterable[dict[str, Any]], invalid: Callable[[dict[str, Any], SpecError], None]) -> list[Resource]:
    """The resources whose spec validates, with their specs; ``invalid`` hears of the others."""
    out = []
    for cr in items:
        try:
            out.append((cr, validate_spec(cr.get("spec"))))
        except SpecError as exc:
            invalid(cr, exc)
    return out


def observe(
    resources: Iterable[Resource],
    connection_of: Callable[[Resource], Connection | NoData],
    gpus: GpuProducts | None,
) -> Iterator[tuple[dict[str, Any], SpeculativeDeploymentSpec, Observation | NoData]]:
    """One batch of queries per (endpoint, window), whatever the number of resources; one observation each
    (a resource whose endpoint cannot be used gets the reason as its NoData), with the GPUs its pods run on."""
    groups: dict[tuple[Connection, int], list[Resource]] = {}
    for res in resources:
        conn = connection_of(res)
        if isinstance(conn, NoData):
            yield res[0], res[1], conn
        else:
            groups.setdefault((conn, res[1].adaptive.window_seconds), []).append(res)
    for (conn, window), members in groups.items():
        reader = Reader(conn.url, token=conn.token, verify=conn.verify)
        wanted = [(cr["metadata"]["namespace"], cr["metadata"]["name"], k_label(cr)) for cr, _ in members]
        observations = reader.read(wanted, window)
        for cr, spec in members:
            yield cr, spec, on_gpus(observations[(cr["metadata"]["namespace"], cr["metadata"]["name"])], gpus, cr)


def read_gpus(clients: Clients, namespaces: list[str], logger: logging.Logger) -> GpuProducts | None:
    """The GPUs the pods run on (:func:`~.kube.gpu_products`); None where they cannot be read (an install whose
    role may not list pods and nodes), which leaves every GPU unknown and what the policy learned as it is."""
    try:
        return gpu_products(clients, namespaces)
    except ApiException as exc:
        logger.debug("the pods' GPUs unread: %s %s", exc.status, exc.reason)
        return None


def on_gpus(obs: Observation | NoData, gpus: GpuProducts | None, cr: dict[str, Any]) -> Observation | NoData:
    """The observation with the class of GPU its pods run on, where their nodes were read."""
    if isinstance(obs, NoData) or gpus is None:
        return obs
    meta = cr["metadata"]
    products = gpus.get((meta["namespace"], meta["name"], k_label(cr)), [])
    return dataclasses.replace(obs, gpu=gpu_of_products(products))


def evaluate_all(
    clients: Clients, source: EndpointSource, namespaces: list[str], last: dict[str, float], logger: logging.Logger
) -> None:
    """Read metrics for every resource that is due, evaluate each, write status, and carry out Auto decisions."""
    now = datetime.now(UTC)
    items = list_resources(clients, namespaces)
    telemetry.forget_all_but((cr["metadata"]["namespace"], cr["metadata"]["name"]) for cr in items)
    due, lag = [], 0.0
    for cr, spec in valid(items, lambda *_: None):
        meta = cr["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        # Not reconciled yet (its first apply refused, say): no setting runs that the policy could adopt as its own;
        # judged as speculation off, the first real setting would read as the user's change.
        unreconciled = "k" not in (cr.get("status") or {})
        if spec.adaptive.mode == AdaptiveMode.OFF or meta.get("deletionTimestamp") or unreconciled:
            continue
        late = now.timestamp() - last.get(key, 0.0) - spec.adaptive.evaluation_interval_seconds
        if late >= 0:
            lag = max(lag, late if key in last else 0.0)
            last[key] = now.timestamp()
            due.append((cr, spec))

    if not due:
        return
    telemetry.EVALUATION_LAG.set(lag)
    telemetry.EVALUATION_PASS_SIZE.set(len(due))
    with telemetry.EVALUATION_PASS.time():
        _evaluate_due(clients, source, due, read_gpus(clients, namespaces, logger), now, logger)


def _evaluate_due(
    clients: Clients,
    source: EndpointSource,
    due: list[Resource],
    gpus: GpuProducts | None,
    now: datetime,
    logger: logging.Logger,
) -> None:
    """One batch of metrics per endpoint, then each resource on its own: one's failure never stops the others."""
    try:
        config = source.load(clients)
    except SpecError as exc:
        logger.error("metrics endpoint configuration unusable: %s", exc)
        config = None
    connections: dict[str | None, Connection | NoData] = {}

    def connection_of(res: Resource) -> Connection | NoData:
        """The resource's endpoint: the one it names among the operator's, else the default; never its own."""
        name = res[1].adaptive.metrics_endpoint
        if name not in connections:
            connections[name] = _connect(clients, source, config, name)
        return connections[name]

    for cr, spec, obs in observe(due, connection_of, gpus):
        try:
            _carry_out(clients, cr, spec, obs, now, logger)
        except (ApiException, kopf.TemporaryError) as exc:  # one resource's failure must not stop the others'
            telemetry.EVALUATIONS.labels("error").inc()
            logger.warning("evaluation of %s/%s failed, retried at its next interval: %s", *telemetry.resource_key(cr),
                           exc)  # fmt: skip
        except Exception:  # a bug: its traceback, and the other resources still evaluated
            telemetry.EVALUATIONS.labels("error").inc()
            logger.exception("evaluation of %s/%s failed; retried at its next interval", *telemetry.resource_key(cr))


def _connect(
    clients: Clients, source: EndpointSource, config: Endpoints | None, name: str | None
) -> Connection | NoData:
    if config is None:
        return NoData(f"the operator's metrics endpoint configuration ({CONFIGMAP} ConfigMap) is invalid")
    try:
        return source.connect(clients, config.pick(name))
    except KeyError as exc:
        return NoData(str(exc.args[0]))
    except SpecError as exc:
        return NoData(f"metrics endpoint {name or config.default!r}: {exc}")


def _carry_out(
    clients: Clients,
    cr: dict[str, Any],
    spec: SpeculativeDeploymentSpec,
    obs: Observation | NoData,
    now: datetime,
    logger: logging.Logger,
) -> None:
    """Write the evaluation and carry out its decision. The decision is made on the snapshot the pass listed and
    written only if the resource has not changed since (the write carries the snapshot's resourceVersion). On a
    409 the resource is read again and evaluated afresh on its new state (a newer spec, or another writer's
    status, wins), as long as the observation is still of its pods; else it waits for its next interval."""
    for _ in range(CONFLICT_RETRIES + 1):
        try:
            return _record(clients, cr, spec, obs, now, logger)
        except ApiException as exc:
            if exc.status != CONFLICT:
                raise
            telemetry.CONFLICTS.inc()
        fresh = _reread(clients, cr)
        if fresh is None:
            break
        cr, spec = fresh
    logger.info("%s/%s changed since it was read: evaluated afresh at its next interval", *telemetry.resource_key(cr))


def _reread(clients: Clients, cr: dict[str, Any]) -> Resource | None:
    """The resource as it is now, if the pass's observation still applies to it: the same object, not being
    deleted, a valid spec that wants evaluating, and the same pods (the setting in status unchanged)."""
    meta = cr["metadata"]
    try:
        fresh = read_resource(clients, meta["namespace"], meta["name"], meta["uid"])
        spec = None if fresh is None else validate_spec(fresh.get("spec"))
    except (ApiException, SpecError):
        return None
    if fresh is None or spec is None or spec.adaptive.mode == AdaptiveMode.OFF or k_label(fresh) != k_label(cr):
        return None
    return fresh, spec


def _record(
    clients: Clients,
    cr: dict[str, Any],
    spec: SpeculativeDeploymentSpec,
    obs: Observation | NoData,
    now: datetime,
    logger: logging.Logger,
) -> None:
    """Evaluate, write status guarded by ``cr``'s resourceVersion (409 if it moved), then carry out an Auto change:
    a reconcile pass renders the recorded setting and starts the rolling restart. Recorded first, a change happens
    exactly once even if the operator dies at any step (the next pass applies what status records; the fail
    points of :mod:`.failpoints` are those steps). A recommendation is posted as an Event once per setting
    recommended in a row (its predicted figures move at every evaluation); a relearn as one too."""
    status = cr.get("status") or {}
    decision, patch = evaluate(spec, status, obs, now, clients.site)
    acts = "k" in patch
    action = decision.action if decision else ""
    if acts:  # the rollout is about to start: no reader sees the new k beside the old rollout's Complete
        patch = {**patch, "rollout": Phase.PROGRESSING}
        failpoints.reach("decided", action)
    live = live_workload(clients, cr) if acts else {}  # read before the write that makes ``recorded`` current
    version = write_status(clients, cr, changed(status, patch), guarded=True)
    if acts:
        failpoints.reach("recorded", action)
        recorded = {**cr, "metadata": {**cr["metadata"], "resourceVersion": version}, "status": {**status, **patch}}
        reconcile_and_write(clients, recorded, logger, applied=lambda: failpoints.reach("applied", action), live=live)
    telemetry.evaluated(cr, obs, decision, {**status, **patch}, acts)
    for entry in patch.get("decisions", []):  # what the pods run changed: what the policy measured is forgotten
        if entry["action"] == RELEARN and entry["time"] == now_iso(now):
            post_event(clients, cr, "Relearn", entry["reason"])
    if decision is None or not decision.changes_k:
        return
    message = f"{decision.action} -> {label(decision.to_k or 0)}: {decision.reason}"  # a schedule as status shows it
    last = (status.get("decisions") or [{}])[-1]  # the history before this evaluation
    if acts:
        post_event(clients, cr, "AdaptiveChange", message)
    elif last.get("applied", True) or last.get("setting") != schedule_label(decision.to_k or 0):
        post_event(clients, cr, "Recommendation", message)  # a new recommendation, not its figures moving
