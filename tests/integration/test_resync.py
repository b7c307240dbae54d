"""The periodic resync against the real API server: it applies only what changed since the operator applied it
(an object deleted, or edited by someone else), and nothing when nothing did. No operator process runs here, so
nothing but the passes the test makes touches the objects."""

from __future__ import annotations

import logging
from typing import Any

import kubernetes
import pytest

from specdeploy.shell.kube import Clients
from specdeploy.shell.sync import resync_all

from .conftest import kubectl, kubectl_apply, wait_for
from .test_operator import get_sd, sample

pytestmark = pytest.mark.cluster


class Counting:
    """A real API client that notes each patch (an apply) it sends."""

    def __init__(self, api: Any, patches: list[str]):
        self._api, self._patches = api, patches

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not name.startswith("patch_namespaced_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._patches.append(name.removeprefix("patch_namespaced_"))
            return attr(*args, **kwargs)

        return counted


def test_a_resync_applies_only_what_changed_since_the_operator_applied_it(api: Any, namespace: str) -> None:
    patches: list[str] = []
    client = kubernetes.client.ApiClient()
    clients = Clients(client, Counting(kubernetes.client.AppsV1Api(client), patches),
                      Counting(kubernetes.client.CoreV1Api(client), patches),
                      kubernetes.client.CustomObjectsApi(client))  # fmt: skip
    log = logging.getLogger("test")
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    resync_all(clients, [namespace], log)
    assert sorted(patches) == ["deployment", "service"]
    assert get_sd(api, namespace)["status"]["k"] == 3

    def versions() -> tuple[str, str]:
        dep = api.apps.read_namespaced_deployment("llama-8b", namespace)
        return dep.metadata.resource_version, api.core.read_namespaced_service("llama-8b", namespace).metadata.uid

    # The Deployment controller writes its status after the apply (a new resourceVersion): one more apply.
    wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace).status.observed_generation,
             what="the Deployment controller's status")  # fmt: skip
    resync_all(clients, [namespace], log)
    before, patches[:] = versions(), []
    resync_all(clients, [namespace], log)
    assert patches == [] and versions() == before  # nothing changed: nothing applied, nothing written

    # Someone else edits the Deployment and deletes the Service: both are restored, and only they.
    edit = '[{"op": "replace", "path": "/spec/template/spec/containers/0/args/0", "value": "edited"}]'
    kubectl("patch", "-n", namespace, "deployment", "llama-8b", "--type", "json", "-p", edit)
    api.core.delete_namespaced_service("llama-8b", namespace, _preload_content=False)
    resync_all(clients, [namespace], log)
    assert sorted(patches) == ["deployment", "service"]
    args = api.apps.read_namespaced_deployment("llama-8b", namespace).spec.template.spec.containers[0].args
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert api.core.read_namespaced_service("llama-8b", namespace).metadata.uid != before[1]
