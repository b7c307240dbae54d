"""The operator's own metrics (prometheus-client), served on ``specdeploy run --metrics-port``: what it decided,
what it restarted, what it predicted beside what it measured, and how its passes went.

Per-resource series carry ``namespace`` and ``name`` only (and a bounded ``action`` or ``setting``), and the series
of a resource that is gone are removed at the next evaluation pass, so cardinality follows the resources.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from ..core.model import top_k
from ..core.observation import NoData, Observation
from ..core.policy import ROLLBACK, Decision
from ..core.reconcile import Phase, recorded_setting

PER_RESOURCE = ("namespace", "name")

EVALUATIONS = Counter("specdeploy_evaluations_total", "Policy evaluations, by outcome.", ["outcome"])
DECISIONS = Counter(
    "specdeploy_decisions_total", "Policy decisions that change the setting.", [*PER_RESOURCE, "action"]
)
RESTARTS = Counter("specdeploy_restarts_total", "Rolling restarts the policy started.", PER_RESOURCE)
ROLLBACKS = Counter("specdeploy_rollbacks_total", "Rollbacks of a setting whose rollout failed.", PER_RESOURCE)
BUDGET = Gauge("specdeploy_restart_budget_remaining", "Restarts the policy may still start this hour.", PER_RESOURCE)
EFFECTIVE_K = Gauge("specdeploy_effective_k", "The k the pods run (a schedule's largest; 0 = off).", PER_RESOURCE)
PREDICTED = Gauge(
    "specdeploy_predicted_token_latency_seconds",
    "Per-token latency the policy predicts at the current setting and with speculation off.",
    [*PER_RESOURCE, "setting"],
)
OBSERVED = Gauge("specdeploy_observed_token_latency_seconds", "Per-token latency measured.", PER_RESOURCE)
METRICS_AVAILABLE = Gauge("specdeploy_metrics_available", "1 when the last evaluation had metrics.", PER_RESOURCE)
METRICS_AGE = Gauge("specdeploy_metrics_age_seconds", "Seconds since the last evaluation with metrics.", PER_RESOURCE)
ROLLOUT_FAILED = Gauge("specdeploy_rollout_failed", "1 while the workload's rollout has failed.", PER_RESOURCE)
RECONCILE_SECONDS = Histogram("specdeploy_reconcile_duration_seconds", "Duration of one reconcile pass.")
RECONCILE_ERRORS = Counter("specdeploy_reconcile_errors_total", "Reconcile passes that raised.")
CONFLICTS = Counter("specdeploy_status_conflicts_total",
                    "Status writes refused (409) because the resource changed since it was read.")  # fmt: skip
APPLY_CONFLICTS = Counter("specdeploy_apply_conflicts_total",
                          "Applies refused (409): the object moved since the pass read it.")  # fmt: skip
PASS_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # one resource to a few thousand
RESYNC_PASS = Histogram("specdeploy_resync_duration_seconds", "One resync pass over every resource.",
                        buckets=PASS_BUCKETS)  # fmt: skip
EVALUATION_PASS = Histogram("specdeploy_evaluation_pass_duration_seconds",
                            "One pass over the resources due: metrics read, policy, status writes.",
                            buckets=PASS_BUCKETS)  # fmt: skip
EVALUATION_PASS_SIZE = Gauge("specdeploy_evaluation_pass_resources", "Resources the last evaluation pass evaluated.")
EVALUATION_LAG = Gauge("specdeploy_evaluation_lag_seconds",
                       "How late the last pass started its most overdue evaluation (0: on time).")  # fmt: skip

_last_data: dict[tuple[str, str], float] = {}
_children: dict[tuple[str, str], set[tuple[Any, tuple[str, ...]]]] = {}  # per resource: (metric, label values)
_started = time.time()


def serve(port: int, logger: logging.Logger) -> None:
    """Serve /metrics on ``port`` (0: not at all). A port in use costs the metrics, never the operator."""
    if port:
        try:
            start_http_server(port)
        except OSError as exc:
            logger.error("operator metrics not served on port %d: %s", port, exc)


def resource_key(cr: dict[str, Any]) -> tuple[str, str]:
    return cr["metadata"]["namespace"], cr["metadata"]["name"]


def _of(metric: Any, key: tuple[str, str], *extra: str) -> Any:
    """The metric's child for a resource, remembered so that it can be removed with the resource."""
    _children.setdefault(key, set()).add((metric, (*key, *extra)))
    return metric.labels(*key, *extra)


def evaluated(
    cr: dict[str, Any], obs: Observation | NoData, decision: Decision | None, status: dict[str, Any], acted: bool
) -> None:
    """One evaluation and the status it produced."""
    key, now = resource_key(cr), time.time()
    EVALUATIONS.labels("no_data" if isinstance(obs, NoData) else "observed").inc()
    _of(METRICS_AVAILABLE, key).set(0 if isinstance(obs, NoData) else 1)
    if isinstance(obs, Observation):
        _last_data[key] = now
        if obs.token_latency_s:
            _of(OBSERVED, key).set(obs.token_latency_s)
    _of(METRICS_AGE, key).set(now - _last_data.get(key, _started))
    if status.get("restartBudgetRemaining") is not None:
        _of(BUDGET, key).set(status["restartBudgetRemaining"])
    setting = recorded_setting(status)
    if setting is not None:
        _of(EFFECTIVE_K, key).set(top_k(setting))
    for counter in (RESTARTS, ROLLBACKS):  # at 0 from the first evaluation: the first restart is an increase
        _of(counter, key)
    if decision is None:
        return
    for name, at in (("current", setting), ("off", 0)):
        if at in decision.predicted_ms:
            _of(PREDICTED, key, name).set(decision.predicted_ms[at] / 1000)
    if decision.changes_k:
        _of(DECISIONS, key, decision.action).inc()
        if acted:
            _of(ROLLBACKS if decision.action == ROLLBACK else RESTARTS, key).inc()


def reconciled(cr: dict[str, Any], status: dict[str, Any]) -> None:
    _of(ROLLOUT_FAILED, resource_key(cr)).set(1 if status.get("rollout") == Phase.FAILED else 0)


@contextmanager
def reconcile_pass(expected: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Time one reconcile pass; count it as an error when it raises, unless it raises what the caller handles
    (``expected``: a pass that gives way to a newer one is no error, and must not fire the alert on errors)."""
    with RECONCILE_SECONDS.time():
        try:
            yield
        except expected:
            raise
        except Exception:
            RECONCILE_ERRORS.inc()
            raise


def forget_all_but(present: Iterable[tuple[str, str]]) -> None:
    """Drop the series of resources that no longer exist."""
    keep = set(present)
    for key in [k for k in _children if k not in keep]:
        for metric, labels in _children.pop(key):
            metric.remove(*labels)
        _last_data.pop(key, None)
