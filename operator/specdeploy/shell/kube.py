"""Kubernetes API access for the operator: clients, server-side apply, reads and status writes.

Everything here is I/O; what to write comes from the core.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from ..api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from ..core.kserve import API_GROUP as KSERVE_GROUP
from ..core.kserve import ISVC_VERSION
from ..core.prior import GPU_PRODUCT_LABELS
from ..core.reconcile import recorded_setting
from ..core.render import (
    DEFAULT_SITE,
    LABEL_DEPLOYMENT,
    LABEL_K,
    LABEL_NAME,
    MANAGER,
    Platform,
    Site,
    wants_pod_monitors,
)
from ..core.render import k_label as pod_k_label

FIELD_MANAGER = MANAGER
EVENT_MESSAGE_LIMIT = 1024  # the API server refuses longer Event messages
EVENT_REPEAT_SECONDS = 600.0  # the same event about the same object is posted once in this long: passes that run
# at once (a watch event, the resync, an evaluation) all see the same change; longer would hide a real recurrence
_posted: dict[tuple[str, str, str], float] = {}  # (uid, reason, message) -> when posted (monotonic)
_posting = threading.Lock()  # kopf's handlers and the operator-wide loop post from different threads


CONFLICT = 409  # the API server's answer to a write at a resourceVersion the object has moved past
LISTED_KINDS = ("Deployment", "Service")  # what a resync lists in one call per kind instead of applying each
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)
Live = dict[ObjectKey, dict[str, Any]]  # objects as the API server has them, by key


def _key(obj: dict[str, Any]) -> ObjectKey:
    return obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]


def version_in(live: Live, obj: dict[str, Any]) -> str | None:
    """The resourceVersion at which ``live`` holds ``obj`` (None: not found there)."""
    found = live.get(_key(obj))
    return None if found is None else found["metadata"].get("resourceVersion")


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class Applied:
    """What this operator last applied of each Deployment and Service, and the resourceVersion the API server gave
    the result. A live object still at that version, whose rendering has not changed since, needs no apply: nobody
    has touched it, so the apply would be a no-op. (At 1000 resources the resync's 2000 no-op applies took longer
    than its period, and evaluations ran late.) Forgotten on restart: the first resync then applies everything."""

    def __init__(self) -> None:
        self._seen: dict[ObjectKey, tuple[str, str]] = {}
        self._lock = threading.Lock()  # kopf's handler threads and the operator-wide loop all apply

    def record(self, obj: dict[str, Any], result: dict[str, Any]) -> None:
        if obj["kind"] in LISTED_KINDS:
            with self._lock:
                self._seen[_key(obj)] = (_digest(obj), result["metadata"]["resourceVersion"])

    def current(self, obj: dict[str, Any], live: Live) -> dict[str, Any] | None:
        """The live copy of ``obj`` if it is what the operator applied and nobody has changed it since, else None."""
        found = live.get(_key(obj)) if obj["kind"] in LISTED_KINDS else None
        if found is None:
            return None
        with self._lock:
            seen = self._seen.get(_key(obj))
        return found if seen == (_digest(obj), found["metadata"].get("resourceVersion")) else None

    def retain(self, keys: Iterable[ObjectKey]) -> None:
        """Forget the objects that are gone (``keys``: those a listing found)."""
        keep = set(keys)
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if k in keep}


class Refusals:
    """Since when the API server has refused each resource's objects with errors worth retrying (a conflict,
    throttling, a 5xx): a refusal that has lasted only briefly is retried without reporting Degraded, which would
    otherwise flap for one pass over what the next pass gets through."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def since(self, uid: str, now: float) -> float:
        """When this run of refusals of ``uid`` began (``now`` for the first)."""
        with self._lock:
            return self._since.setdefault(uid, now)

    def clear(self, uid: str) -> None:
        with self._lock:
            self._since.pop(uid, None)

    def retain(self, uids: Iterable[str]) -> None:
        """Forget the resources that are gone (``uids``: those a listing found)."""
        keep = set(uids)
        with self._lock:
            self._since = {uid: t for uid, t in self._since.items() if uid in keep}


@dataclass
class Clients:
    """Kubernetes API clients and operator settings, kept in kopf's memo, what was applied with them, and since
    when applies have been refused."""

    api: kubernetes.client.ApiClient
    apps: kubernetes.client.AppsV1Api
    core: kubernetes.client.CoreV1Api
    custom: kubernetes.client.CustomObjectsApi
    site: Site = DEFAULT_SITE
    applied: Applied = field(default_factory=Applied)
    refusals: Refusals = field(default_factory=Refusals)


OPENSHIFT_GROUP = "security.openshift.io"  # SecurityContextConstraints: present on OpenShift only
MONITORING_GROUP = "monitoring.coreos.com"  # the prometheus-operator's PodMonitor


def api_groups(api: kubernetes.client.ApiClient) -> set[str]:
    return {g.name for g in kubernetes.client.ApisApi(api).get_api_versions().groups}


def _load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def coordination_api() -> kubernetes.client.CoordinationV1Api:
    """The Lease API, for leader election (before kopf and its clients start)."""
    _load_config()
    return kubernetes.client.CoordinationV1Api()


def make_clients(site: Site = DEFAULT_SITE, platform: str = "auto", pod_monitors: str = "auto") -> Clients:
    """Clients for the cluster and the site as the cluster has it. ``platform`` auto: OpenShift when the cluster
    serves the SCC API group (its SCCs then assign the pods' UID and fsGroup). ``pod_monitors`` auto: on OpenShift;
    always: wherever; never: not at all; a PodMonitor is made only where the cluster serves its API."""
    _load_config()
    api = kubernetes.client.ApiClient()
    groups = api_groups(api)
    detected = Platform(platform) if platform != "auto" else (
        Platform.OPENSHIFT if OPENSHIFT_GROUP in groups else Platform.KUBERNETES
    )  # fmt: skip
    monitors = wants_pod_monitors(pod_monitors, detected) and MONITORING_GROUP in groups
    site = dataclasses.replace(site, platform=detected, pod_monitors=monitors)
    return Clients(
        api=api,
        apps=kubernetes.client.AppsV1Api(api),
        core=kubernetes.client.CoreV1Api(api),
        custom=kubernetes.client.CustomObjectsApi(api),
        site=site,
    )


def apply(clients: Clients, obj: dict[str, Any], at_version: str | None = None) -> dict[str, Any]:
    """Server-side apply with force: creates, restores hand edits of our fields, and is a no-op otherwise.
    ``at_version``: only if the object is still at that resourceVersion (the API server answers 409 Conflict
    otherwise). Returns the object as the server now has it (API field names)."""
    meta = obj["metadata"]
    body = obj if at_version is None else {**obj, "metadata": {**meta, "resourceVersion": at_version}}
    kw = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": "application/apply-patch+yaml"}
    if obj["kind"] == "Deployment":
        res = clients.apps.patch_namespaced_deployment(meta["name"], meta["namespace"], body, **kw)
    elif obj["kind"] == "Service":
        res = clients.core.patch_namespaced_service(meta["name"], meta["namespace"], body, **kw)
    else:  # a custom resource (PodMonitor)
        group, version = obj["apiVersion"].split("/")
        plural = obj["kind"].lower() + "s"
        res = clients.custom.patch_namespaced_custom_object(
            group, version, meta["namespace"], plural, meta["name"], body, **kw
        )
    out = clients.api.sanitize_for_serialization(res)
    clients.applied.record(obj, out)
    return out


def list_owned(clients: Clients, namespaces: list[str]) -> Live:
    """Every Deployment and Service the operator manages, cluster-wide or in the given namespaces: one list call
    per kind (and namespace), read as plain JSON (the client's models cost more than the call at 1000 objects)."""
    selector = {"label_selector": f"app.kubernetes.io/managed-by={MANAGER}", "_preload_content": False}
    calls = {
        "Deployment": (clients.apps.list_deployment_for_all_namespaces, clients.apps.list_namespaced_deployment),
        "Service": (clients.core.list_service_for_all_namespaces, clients.core.list_namespaced_service),
    }
    live: Live = {}
    for kind, (everywhere, within) in calls.items():
        answers = [within(ns, **selector) for ns in namespaces] if namespaces else [everywhere(**selector)]
        for answer in answers:
            for item in json.loads(answer.data)["items"]:
                live[kind, item["metadata"]["namespace"], item["metadata"]["name"]] = item
    return live


def read_workload(clients: Clients, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    """The Deployment or InferenceService of that name (None when absent, or when KServe is not installed)."""
    try:
        if kind == "InferenceService":
            return clients.custom.get_namespaced_custom_object(
                KSERVE_GROUP, ISVC_VERSION, namespace, "inferenceservices", name
            )
        res = clients.apps.read_namespaced_deployment(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return clients.api.sanitize_for_serialization(res)


def post_event(clients: Clients, obj: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """A core/v1 Event about ``obj``, written with the operator's client: kopf's own posting works only inside
    its per-object handlers, and the operator-wide loop posts too. The same event again within
    :data:`EVENT_REPEAT_SECONDS` is not posted (as client-go's event correlator folds repeats). Best effort: an
    Event that cannot be written (its namespace is terminating, say) is logged, never a reason to fail the pass."""
    meta = obj["metadata"]
    key, at = (str(meta.get("uid")), reason, message), time.monotonic()
    with _posting:
        if at - _posted.get(key, -math.inf) < EVENT_REPEAT_SECONDS:
            return
        for old in [k for k, t in _posted.items() if at - t >= EVENT_REPEAT_SECONDS]:
            del _posted[old]
        _posted[key] = at
    now = datetime.now(UTC)
    event = {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", API_VERSION),
            "kind": obj.get("kind", KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:EVENT_MESSAGE_LIMIT],
        "type": "Warning" if warning else "Normal",
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        clients.core.create_namespaced_event(meta["namespace"], event)
    except ApiException as exc:
        logging.getLogger(__name__).warning("event %s for %s/%s not posted: %s %s", reason, meta["namespace"],
                                            meta["name"], exc.status, exc.reason)  # fmt: skip


def selector_immutable(exc: ApiException) -> bool:
    """The API server refused a change of a Deployment's selector."""
    return exc.status == 422 and "selector" in str(exc.body) and "immutable" in str(exc.body)


def api_message(exc: ApiException) -> str:
    """What the API server said: its Status message (e.g. "failed to allocate a serviceIP: range is full"), else
    the HTTP reason."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def retryable(exc: ApiException) -> bool:
    return exc.status in (CONFLICT, 429) or exc.status >= 500


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


def write_status(clients: Clients, cr: dict[str, Any], changed: dict[str, Any], guarded: bool = False) -> str | None:
    """Merge-patch the changed status fields through the status subresource (nothing when nothing changed);
    returns the new resourceVersion. ``guarded``: only if the resource is still at the resourceVersion ``cr`` was
    read at (the API server answers 409 Conflict otherwise)."""
    if not changed:
        return None
    meta = cr["metadata"]
    body: dict[str, Any] = {"status": changed}
    if guarded:
        body["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    res = clients.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body
    )
    return (res.get("metadata") or {}).get("resourceVersion")


def k_label(cr: dict[str, Any]) -> str:
    """The ``specdeploy_k`` label value of the resource's current pods (the setting in status)."""
    return pod_k_label(recorded_setting(cr.get("status") or {}))


GpuProducts = dict[tuple[str, str, str], list[str | None]]  # (namespace, resource, k label) -> one per running pod


def gpu_products(clients: Clients, namespaces: list[str]) -> GpuProducts:
    """The GPU product label (:data:`~specdeploy.core.prior.GPU_PRODUCT_LABELS`) of the node of each running vLLM
    pod of the operator's resources, None for a node without one: one list of pods (per namespace watched) and one
    of the nodes carrying each label per pass, whatever the number of resources. Both backends' pods carry these
    labels."""
    wanted = {"label_selector": f"{LABEL_NAME}=vllm,{LABEL_DEPLOYMENT}", "_preload_content": False}
    if namespaces:
        answers = [clients.core.list_namespaced_pod(ns, **wanted) for ns in namespaces]
    else:
        answers = [clients.core.list_pod_for_all_namespaces(**wanted)]
    nodes: dict[str, str] = {}
    for label in GPU_PRODUCT_LABELS:
        labelled = clients.core.list_node(label_selector=label, _preload_content=False)
        for node in json.loads(labelled.data)["items"]:
            nodes.setdefault(node["metadata"]["name"], node["metadata"]["labels"][label])
    out: GpuProducts = {}
    for answer in answers:
        for pod in json.loads(answer.data)["items"]:
            meta, node = pod["metadata"], pod["spec"].get("nodeName")
            if pod.get("status", {}).get("phase") == "Running" and node:
                key = (meta["namespace"], meta["labels"][LABEL_DEPLOYMENT], meta["labels"].get(LABEL_K, ""))
                out.setdefault(key, []).append(nodes.get(node))
    return out
