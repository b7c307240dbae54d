"""The periodic resync against the real API server: it applies only what changed since the operator applied it
(an object deleted, or edited by someone else), and nothing when nothing did. No operator process runs here, so
nothing but the passes the test makes touches the objects."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from prometheus_client import REGISTRY

from specdeploy.api import GROUP, PLURAL, VERSION
from specdeploy.core.render import LABEL_K
from specdeploy.shell.handlers import on_owned_deployment
from specdeploy.shell.kube import Clients
from specdeploy.shell.sync import reconcile_and_write, resync_all

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


QUIET_SECONDS = 2.0  # the Deployment controller writes a new Deployment's status in a few steps, milliseconds apart;
# nothing else writes it here (its pods are never scheduled). Longer only slows the test


def wait_quiet(api: Any, ns: str) -> None:
    """Until the Deployment's resourceVersion has stayed the same for QUIET_SECONDS (a pass that then applies at the
    version it read is not refused for the controller's write)."""
    seen = {"version": "", "since": 0.0}

    def quiet() -> bool:
        version, now = api.apps.read_namespaced_deployment("llama-8b", ns).metadata.resource_version, time.monotonic()
        if version != seen["version"]:
            seen.update(version=version, since=now)
        return now - seen["since"] >= QUIET_SECONDS

    wait_for(quiet, what="the Deployment controller's status writes to end")


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
    wait_quiet(api, namespace)
    resync_all(clients, [namespace], log)
    before, patches[:] = versions(), []
    resync_all(clients, [namespace], log)
    assert patches == [] and versions() == before  # nothing changed: nothing applied, nothing written

    # Someone else edits the Deployment and deletes the Service: both are restored, and only they.
    edit = '[{"op": "replace", "path": "/spec/template/spec/containers/0/args/0", "value": "edited"}]'
    kubectl("patch", "-n", namespace, "deployment", "llama-8b", "--type", "json", "-p", edit)
    api.core.delete_namespaced_service("llama-8b", namespace, _preload_content=False)
    wait_quiet(api, namespace)
    resync_all(clients, [namespace], log)
    assert sorted(patches) == ["deployment", "service"]
    args = api.apps.read_namespaced_deployment("llama-8b", namespace).spec.template.spec.containers[0].args
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    assert api.core.read_namespaced_service("llama-8b", namespace).metadata.uid != before[1]


class Interleaved:
    """A real custom-objects client that runs ``between`` once, as soon as the first read of resources (a list or a
    get) returns: another pass's work, done between this pass's read and its apply."""

    def __init__(self, api: Any, between: Callable[[], None]):
        self._api, self._between = api, between

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not name.startswith(("list_", "get_")):
            return attr

        def then(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            between, self._between = self._between, lambda: None
            between()
            return out

        return then


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def k_of(api: Any, ns: str) -> tuple[str, int]:
    dep = api.apps.read_namespaced_deployment("llama-8b", ns)
    return dep.spec.template.metadata.labels[LABEL_K], dep.metadata.generation


@pytest.mark.parametrize("trigger", ["resync", "deployment event"])
def test_a_pass_that_read_the_resource_before_another_applied_gives_way(api: Any, namespace: str, trigger: str) -> None:
    """A pass reads the resource; the user changes k and the pass of that change applies it; then the first pass
    would apply what it read. It must not: the Deployment would go back to the old k and forward again, two rolling
    restarts nobody asked for (seen in CI: the user's k set during the policy's rollout, Deployment generation 5 where
    3 changes were made). The reads and the interleaving are real; no operator process runs."""
    client = kubernetes.client.ApiClient()
    clients = Clients(client, kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client),
                      kubernetes.client.CustomObjectsApi(client))  # fmt: skip
    log = logging.getLogger("test")
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    resync_all(clients, [namespace], log)
    wait_quiet(api, namespace)
    before = api.apps.read_namespaced_deployment("llama-8b", namespace)

    def users_change() -> None:  # the user's edit, and the pass its watch event starts (kopf's on_spec)
        api.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b",
                                                  {"spec": {"speculator": {"numSpeculativeTokens": 2}}})  # fmt: skip
        reconcile_and_write(clients, get_sd(api, namespace), log)

    stale = dataclasses.replace(clients, custom=Interleaved(clients.custom, users_change))
    conflicts, errors = counted("specdeploy_apply_conflicts_total"), counted("specdeploy_reconcile_errors_total")
    if trigger == "resync":
        resync_all(stale, [namespace], log)
    else:
        body = client.sanitize_for_serialization(before)
        on_owned_deployment(type="MODIFIED", body=body, memo={"clients": stale}, logger=log)
    assert k_of(api, namespace) == ("2", before.metadata.generation + 1)  # the user's change, and only it
    assert get_sd(api, namespace)["status"]["k"] == 2
    assert counted("specdeploy_apply_conflicts_total") > conflicts  # applied at the version read, refused, read again
    assert counted("specdeploy_reconcile_errors_total") == errors  # (which is no error: no alert)
    resync_all(clients, [namespace], log)  # the next pass, from a fresh read, has nothing to undo
    assert k_of(api, namespace) == ("2", before.metadata.generation + 1)
