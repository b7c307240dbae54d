"""The evaluation pipeline the operator's loop and ``specdeploy recommend`` share: valid resources -> one batch of
PromQL per Prometheus endpoint and window -> one observation each -> :func:`~specdeploy.core.evaluate.evaluate`.

The operator then writes status and carries out Auto decisions (:func:`evaluate_all`); ``recommend`` only prints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from ..api import SpecError, SpeculativeDeploymentSpec, validate_spec
from ..core.evaluate import evaluate
from ..core.observation import NoData, Observation
from .kube import Clients, k_label, list_resources, prometheus_token, write_status
from .prometheus import Reader
from .sync import changed, reconcile

Resource = tuple[dict[str, Any], SpeculativeDeploymentSpec]


@dataclass(frozen=True)
class Endpoint:
    """Where one batch of queries goes."""

    url: str
    token: str | None = None
    verify_tls: bool = True


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
    resources: Iterable[Resource], endpoint_of: Callable[[Resource], Endpoint]
) -> Iterator[tuple[dict[str, Any], SpeculativeDeploymentSpec, Observation | NoData]]:
    """One batch of queries per (endpoint, window), whatever the number of resources; one observation each."""
    groups: dict[tuple[Endpoint, int], list[Resource]] = {}
    for res in resources:
        groups.setdefault((endpoint_of(res), res[1].adaptive.window_seconds), []).append(res)
    for (endpoint, window), members in groups.items():
        reader = Reader(endpoint.url, token=endpoint.token, verify_tls=endpoint.verify_tls)
        wanted = [(cr["metadata"]["namespace"], cr["metadata"]["name"], k_label(cr)) for cr, _ in members]
        observations = reader.read(wanted, window)
        for cr, spec in members:
            yield cr, spec, observations[(cr["metadata"]["namespace"], cr["metadata"]["name"])]


def evaluate_all(clients: Clients, namespaces: list[str], last: dict[str, float], logger: logging.Logger) -> None:
    """Read metrics for every resource that is due, evaluate each, write status, and carry out Auto decisions."""
    now = datetime.now(UTC)
    due = []
    for cr, spec in valid(list_resources(clients, namespaces), lambda *_: None):
        meta = cr["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        if spec.adaptive.prometheus is None or meta.get("deletionTimestamp"):
            continue
        if now.timestamp() - last.get(key, 0.0) >= spec.adaptive.evaluation_interval_seconds:
            last[key] = now.timestamp()
            due.append((cr, spec))

    def endpoint_of(res: Resource) -> Endpoint:
        cr, spec = res
        prom = spec.adaptive.prometheus
        assert prom is not None
        try:
            token = prometheus_token(clients, cr["metadata"]["namespace"], spec)
        except (ApiException, KeyError) as exc:
            logger.warning("%s: Prometheus token secret unreadable: %s", cr["metadata"]["name"], exc)
            token = None
        return Endpoint(prom.url, token, not prom.insecure_skip_verify)

    for cr, spec, obs in observe(due, endpoint_of):
        _carry_out(clients, cr, spec, obs, now, logger)


def _carry_out(
    clients: Clients,
    cr: dict[str, Any],
    spec: SpeculativeDeploymentSpec,
    obs: Observation | NoData,
    now: datetime,
    logger: logging.Logger,
) -> None:
    """Write the evaluation's status. An Auto change of k is carried out at once by a reconcile pass, which
    renders the new k and starts the rolling restart; its status goes out in the same write, so no reader sees
    the new k beside the old rollout's state. A recommendation is posted as an Event once."""
    status = cr.get("status") or {}
    decision, patch = evaluate(spec, status, obs, now)
    acts = "k" in patch
    if acts:
        patch = {**patch, **reconcile(clients, {**cr, "status": {**status, **patch}}, logger)}
    write_status(clients, cr, changed(status, patch))
    if decision is None or not decision.changes_k:
        return
    what = "k" if decision.to_k else "speculation"
    target = decision.to_k if decision.to_k else "off"
    message = f"{decision.action}: {what} -> {target}: {decision.reason}"
    if acts:
        kopf.info(cr, reason="AdaptiveChange", message=message)
    elif decision.reason != (status.get("lastEvaluation") or {}).get("reason"):
        kopf.info(cr, reason="Recommendation", message=message)
