"""The evaluation pipeline the operator's loop and ``specdeploy recommend`` share: valid resources -> one batch of
PromQL per metrics endpoint and window -> one observation each -> :func:`~specdeploy.core.evaluate.evaluate`.

The operator then writes status and carries out Auto decisions (:func:`evaluate_all`); ``recommend`` only prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

from ..api import AdaptiveMode, SpecError, SpeculativeDeploymentSpec, validate_spec
from ..api.endpoints import CONFIGMAP, Endpoints
from ..core.evaluate import evaluate
from ..core.observation import NoData, Observation
from ..core.reconcile import Phase
from . import telemetry
from .endpoints import Connection, EndpointSource
from .kube import Clients, k_label, list_resources, post_event, write_status
from .prometheus import Reader
from .sync import changed, reconcile_and_write

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
    resources: Iterable[Resource], connection_of: Callable[[Resource], Connection | NoData]
) -> Iterator[tuple[dict[str, Any], SpeculativeDeploymentSpec, Observation | NoData]]:
    """One batch of queries per (endpoint, window), whatever the number of resources; one observation each
    (a resource whose endpoint cannot be used gets the reason as its NoData)."""
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
            yield cr, spec, observations[(cr["metadata"]["namespace"], cr["metadata"]["name"])]


def evaluate_all(
    clients: Clients, source: EndpointSource, namespaces: list[str], last: dict[str, float], logger: logging.Logger
) -> None:
    """Read metrics for every resource that is due, evaluate each, write status, and carry out Auto decisions."""
    now = datetime.now(UTC)
    items = list_resources(clients, namespaces)
    telemetry.forget_all_but((cr["metadata"]["namespace"], cr["metadata"]["name"]) for cr in items)
    due = []
    for cr, spec in valid(items, lambda *_: None):
        meta = cr["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if spec.adaptive.mode == AdaptiveMode.OFF or meta.get("deletionTimestamp"):
            continue
        if now.timestamp() - last.get(key, 0.0) >= spec.adaptive.evaluation_interval_seconds:
            last[key] = now.timestamp()
            due.append((cr, spec))

    if not due:
        return
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

    for cr, spec, obs in observe(due, connection_of):
        _carry_out(clients, cr, spec, obs, now, logger)


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
    """Write the evaluation's status. The decision was made on the snapshot the pass listed, so it is written only
    if the resource has not changed since (the write carries the snapshot's resourceVersion): a newer spec, or
    another writer's status, wins, and the resource is evaluated afresh next pass. An Auto change of k is then
    carried out by a reconcile pass, which renders the recorded k and starts the rolling restart: recorded
    first, it happens exactly once even if the operator dies in between (the next pass applies what status
    records). A recommendation is posted as an Event once."""
    status = cr.get("status") or {}
    decision, patch = evaluate(spec, status, obs, now)
    acts = "k" in patch
    if acts:  # the rollout is about to start: no reader sees the new k beside the old rollout's Complete
        patch = {**patch, "rollout": Phase.PROGRESSING}
    try:
        version = write_status(clients, cr, changed(status, patch), guarded=True)
    except ApiException as exc:
        if exc.status != 409:
            raise
        logger.info(
            "%s/%s changed since it was read: evaluated afresh at its next interval", *telemetry.resource_key(cr)
        )
        return
    if acts:
        recorded = {**cr, "metadata": {**cr["metadata"], "resourceVersion": version}, "status": {**status, **patch}}
        reconcile_and_write(clients, recorded, logger)
    telemetry.evaluated(cr, obs, decision, {**status, **patch}, acts)
    if decision is None or not decision.changes_k:
        return
    what = "k" if decision.to_k else "speculation"
    target = decision.to_k if decision.to_k else "off"
    message = f"{decision.action}: {what} -> {target}: {decision.reason}"
    if acts:
        post_event(clients, cr, "AdaptiveChange", message)
    elif decision.reason != (status.get("lastEvaluation") or {}).get("reason"):
        post_event(clients, cr, "Recommendation", message)
