"""Kubernetes API access for the operator: clients, server-side apply, reads and status writes.

Everything here is I/O; what to write comes from the core.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from ..api import GROUP, PLURAL, VERSION
from ..core.reconcile import recorded_setting
from ..core.render import DEFAULT_SITE, MANAGER, Platform, Site
from ..core.render import k_label as pod_k_label

FIELD_MANAGER = MANAGER


@dataclass
class Clients:
    """Kubernetes API clients and operator settings, kept in kopf's memo."""

    api: kubernetes.client.ApiClient
    apps: kubernetes.client.AppsV1Api
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    site: Site = DEFAULT_SITE


OPENSHIFT_GROUP = "security.openshift.io"  # SecurityContextConstraints: present on OpenShift only


def detect_platform(api: kubernetes.client.ApiClient) -> Platform:
    """OpenShift when the cluster serves the SCC API group (its SCCs then assign the pods' UID and fsGroup)."""
    groups = kubernetes.client.ApisApi(api).get_api_versions().groups
    return Platform.OPENSHIFT if any(g.name == OPENSHIFT_GROUP for g in groups) else Platform.KUBERNETES


def _load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def make_clients(site: Site = DEFAULT_SITE, platform: str = "auto") -> Clients:
    """Clients for the cluster; ``platform`` auto asks the cluster, which then replaces ``site.platform``."""
    _load_config()
    api = kubernetes.client.ApiClient()
    detected = detect_platform(api) if platform == "auto" else Platform(platform)
    return Clients(
        api=api,
        apps=kubernetes.client.AppsV1Api(api),
        core=kubernetes.client.CoreV1Api(api),
        custom=kubernetes.client.CustomObjectsApi(api),
        site=dataclasses.replace(site, platform=detected),
    )


def apply(clients: Clients, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with force: creates, restores hand edits of our fields, and is a no-op otherwise.
    Returns the object as the server now has it (API field names)."""
    meta = obj["metadata"]
    kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    if obj["kind"] == "Deployment":
        res = clients.apps.patch_namespaced_deployment(meta["name"], meta["namespace"], obj, **kw)
    else:
        res = clients.core.patch_namespaced_service(meta["name"], meta["namespace"], obj, **kw)
    return clients.api.sanitize_for_serialization(res)


def read_deployment(clients: Clients, name: str, namespace: str) -> dict[str, Any] | None:
    try:
        res = clients.apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return clients.api.sanitize_for_serialization(res)


def retryable(exc: ApiException) -> bool:
    return exc.status in (409, 429) or exc.status >= 500


def namespace_terminating(exc: ApiException) -> bool:
    """The namespace is being deleted: nothing may be created in it, and nothing needs to be."""
    return exc.status == 403 and "NamespaceTerminating" in str(exc.body or "")


def list_resources(clients: Clients, namespaces: list[str]) -> list[dict[str, Any]]:
    """Every SpeculativeDeployment, cluster-wide or in the given namespaces."""
    if not namespaces:
        return clients.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return [
        item
        for ns in namespaces
        for item in clients.custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    ]


def write_status(clients: Clients, cr: dict[str, Any], changed: dict[str, Any]) -> None:
    """Merge-patch the changed status fields through the status subresource (nothing when nothing changed)."""
    if changed:
        meta = cr["metadata"]
        clients.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": changed}
        )


def k_label(cr: dict[str, Any]) -> str:
    """The ``specdeploy_k`` label value of the resource's current pods (the setting in status)."""
    return pod_k_label(recorded_setting(cr.get("status") or {}))
