"""A decision made on a stale snapshot is never carried out: the operator's evaluation writes status with the
resourceVersion it read, so a newer spec (or another writer's status) wins, against the real API server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest

from specdeploy.api import validate_spec
from specdeploy.core.observation import Observation
from specdeploy.shell.evaluation import _carry_out
from specdeploy.shell.kube import Clients

from ..integration.conftest import Operator, kubectl, kubectl_apply, wait_for
from ..integration.test_operator import get_sd, sample

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

# A load no k serves on one replica: the policy (in Auto) turns speculation off at once.
SATURATED = Observation(namespace="", deployment="llama-8b", k_label="3", pods=2, request_rate=400.0, running=512,
                        waiting=400.0, generation_tps=2e4, per_position=(0.8, 0.6, 0.4), itl_mean_s=0.2)  # fmt: skip


def clients() -> Clients:
    """The operator's clients on the test's credentials (the cluster fixture loaded them)."""
    api = kubernetes.client.ApiClient()
    return Clients(api, kubernetes.client.AppsV1Api(api), kubernetes.client.CoreV1Api(api),
                   kubernetes.client.CustomObjectsApi(api))  # fmt: skip


def test_a_decision_on_a_stale_snapshot_is_dropped_and_the_newer_spec_wins(
    api: Any, namespace: str, operator: Operator
) -> None:
    kubectl_apply(sample(adaptive={"mode": "Auto", "minTokens": 1, "maxTokens": 6}), namespace)
    wait_for(lambda: (get_sd(api, namespace).get("status") or {}).get("rollout"), what="status")
    stale = get_sd(api, namespace)
    before = api.apps.read_namespaced_deployment("llama-8b", namespace)
    # The user edits the spec after the operator's pass listed the resource.
    kubectl("patch", "-n", namespace, "sd", "llama-8b", "--type", "merge",
            "-p", '{"spec":{"speculator":{"numSpeculativeTokens":4}}}')  # fmt: skip
    wait_for(lambda: get_sd(api, namespace)["status"].get("k") == 4, what="the operator applied the user's k")
    obs = Observation(**{**SATURATED.__dict__, "namespace": namespace})
    _carry_out(clients(), stale, validate_spec(stale["spec"]), obs, datetime.now(UTC), logging.getLogger("t"))
    st = get_sd(api, namespace)["status"]
    assert st["k"] == 4 and not st.get("decisions"), st  # (the operator's own passes find no metrics here)
    assert (st.get("metrics") or {}).get("requestRate") != SATURATED.request_rate  # nothing of it was written
    dep = api.apps.read_namespaced_deployment("llama-8b", namespace)
    assert '"num_speculative_tokens":4' in " ".join(dep.spec.template.spec.containers[0].args)
    assert dep.metadata.generation == before.metadata.generation + 1  # the user's change only

    # On a fresh snapshot the evaluation is written (its pods never become ready here, so the policy holds: that
    # an Auto decision is then carried out exactly once, tests/e2e shows).
    fresh = get_sd(api, namespace)
    _carry_out(clients(), fresh, validate_spec(fresh["spec"]), obs, datetime.now(UTC), logging.getLogger("t"))
    assert get_sd(api, namespace)["status"]["metrics"]["requestRate"] == SATURATED.request_rate


def test_a_conflict_with_another_status_writer_is_retried_on_fresh_state(
    api: Any, namespace: str, operator: Operator
) -> None:
    """Another writer changes status after the pass read the resource (409 for the guarded write): the evaluation
    is made again on the resource as it is now, and both writes survive."""
    kubectl_apply(sample(adaptive={"mode": "Auto", "minTokens": 1, "maxTokens": 6}), namespace)
    wait_for(lambda: (get_sd(api, namespace).get("status") or {}).get("rollout"), what="status")
    stale = get_sd(api, namespace)
    api.custom.patch_namespaced_custom_object_status(
        "specdeploy.io", "v1alpha1", namespace, "speculativedeployments", "llama-8b",
        {"status": {"kopf": {"other-writer": "was here"}}},
    )  # fmt: skip
    obs = Observation(**{**SATURATED.__dict__, "namespace": namespace})
    _carry_out(clients(), stale, validate_spec(stale["spec"]), obs, datetime.now(UTC), logging.getLogger("t"))
    st = get_sd(api, namespace)["status"]
    assert st["metrics"]["requestRate"] == SATURATED.request_rate  # written on the second try
    assert st["kopf"]["other-writer"] == "was here"
