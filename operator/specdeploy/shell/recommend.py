"""``specdeploy recommend``: the decision the policy would take now on live metrics, without acting."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ..api import GROUP, PLURAL, VERSION, AdaptiveMode, SpecError, SpeculativeDeploymentSpec
from ..core.evaluate import evaluate
from ..core.observation import NoData, Observation
from .endpoints import Connection
from .evaluation import observe, read_gpus, valid
from .kube import make_clients

LOG = logging.getLogger(__name__)


def recommend(prometheus: Connection, namespace: str | None, name: str | None) -> Iterator[str]:
    """One line per SpeculativeDeployment: its k and what the policy would do, read from ``prometheus``."""
    clients = make_clients()
    if namespace:
        items = clients.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    else:
        items = clients.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    items = [i for i in items if name is None or i["metadata"]["name"] == name]
    if not items:
        yield "no SpeculativeDeployment found"
        return
    problems: list[str] = []

    def invalid(cr: dict[str, Any], exc: SpecError) -> None:
        problems.append(f"{cr['metadata']['namespace']}/{cr['metadata']['name']}: invalid spec: {exc.problems[0]}")

    resources = valid(items, invalid)
    yield from problems
    now = datetime.now(UTC)
    gpus = read_gpus(clients, [namespace] if namespace else [], LOG)
    for cr, spec, obs in observe(resources, lambda _: prometheus, gpus):
        yield line(cr, as_recommend(spec), obs, now)


def as_recommend(spec: SpeculativeDeploymentSpec) -> SpeculativeDeploymentSpec:
    """The spec in mode Recommend: the decision Auto would take, never carried out."""
    return spec.model_copy(update={"adaptive": spec.adaptive.model_copy(update={"mode": AdaptiveMode.RECOMMEND})})


def line(cr: dict[str, Any], spec: SpeculativeDeploymentSpec, obs: Observation | NoData, now: datetime) -> str:
    """What ``recommend`` prints for one resource."""
    meta, status = cr["metadata"], cr.get("status") or {}
    head = f"{meta['namespace']}/{meta['name']}: k={status.get('k')}"
    decision, _ = evaluate(spec, status, obs, now, site=None)  # the operator's images are not known here
    if decision is None:
        return f"{head}: nothing to decide (no speculator)"
    return f"{head}: {decision.action} -> k={decision.to_k}: {decision.reason}"
