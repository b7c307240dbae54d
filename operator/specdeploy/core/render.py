"""Spec -> the Kubernetes objects the operator owns (pure: no I/O, same input, same output).

The effective draft length ``k`` is an input, not read from the spec, because the adaptive policy may run a
different k than the user wrote (the user's spec is never rewritten). ``k == 0`` renders the same Deployment
without ``--speculative-config``. The pod template carries ``k`` in a label and an annotation, so a change of
k is a change of template and the Deployment controller performs a rolling restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..api import API_VERSION, DEFAULT_IMAGE, KIND, CacheType, Method, SpeculativeDeploymentSpec
from .model import Setting, top_k, vllm_schedule

LABEL_NAME = "app.kubernetes.io/name"
LABEL_DEPLOYMENT = "specdeploy.io/deployment"
LABEL_K = "specdeploy.io/k"
ANNOTATION_K = "specdeploy.io/num-speculative-tokens"
ANNOTATION_METHOD = "specdeploy.io/method"
MANAGER = "specdeploy"
CHECKPOINT_K = "checkpoint"  # label value when k comes from a speculators checkpoint (short form)
DEFAULT_SIM_IMAGE = "ghcr.io/specdeploy/specdeploy:0.1.0"
# The non-root identity vLLM pods get on plain Kubernetes: any UID works (the cache is an fsGroup-owned volume and
# HOME points at it); 1001 is the customary first non-system UID, not a user any image defines.
DEFAULT_UID = DEFAULT_GID = 1001


class Platform(StrEnum):
    """Where the pods run: it decides who picks the pods' UID (the pod spec, or OpenShift's SCC)."""

    KUBERNETES = "kubernetes"
    OPENSHIFT = "openshift"


@dataclass(frozen=True)
class Site:
    """What the operator's installer decides for every resource: the platform, and the images a spec that names
    none gets (``specdeploy run --platform --vllm-image --sim-image``)."""

    platform: Platform = Platform.KUBERNETES
    vllm_image: str = DEFAULT_IMAGE
    sim_image: str = DEFAULT_SIM_IMAGE
    pod_monitors: bool = False  # a PodMonitor per resource (OpenShift's user-workload monitoring needs one)


DEFAULT_SITE = Site()


def wants_pod_monitors(choice: str, platform: Platform) -> bool:
    """``--pod-monitors``: always, never, or auto (OpenShift, whose user-workload monitoring needs them)."""
    return choice == "always" or (choice == "auto" and platform == Platform.OPENSHIFT)


# How vLLM pods are scraped: the per-resource PodMonitor and manifests/monitoring/podmonitor.yaml (a test keeps them
# equal). The relabelings give every series the labels the operator queries by.
POD_METRICS_ENDPOINT: dict[str, Any] = {
    "port": "http",
    "path": "/metrics",
    "interval": "15s",
    "relabelings": [
        {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "namespace"},
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "pod"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_specdeploy_io_deployment"], "targetLabel": "deployment"},
        {"sourceLabels": ["__meta_kubernetes_pod_label_specdeploy_io_k"], "targetLabel": "specdeploy_k"},
    ],
}


@dataclass(frozen=True)
class Owner:
    """The SpeculativeDeployment the rendered objects belong to."""

    name: str
    namespace: str
    uid: str


def spec_k(spec: SpeculativeDeploymentSpec) -> int | None:
    """The k the user asked for: 0 without a speculator, None when a speculators checkpoint decides."""
    if spec.speculator is None:
        return 0
    if spec.short_form:
        return None
    return spec.speculator.num_speculative_tokens


def method_name(spec: SpeculativeDeploymentSpec) -> str:
    if spec.speculator is None:
        return "none"
    return str(spec.speculator.method or "speculators")


def speculative_config(spec: SpeculativeDeploymentSpec, setting: Setting | None) -> dict[str, Any] | None:
    """The ``--speculative-config`` object for a draft length or a per-batch-size schedule (None when
    speculation is off or implicit)."""
    sp = spec.speculator
    if sp is None or setting == 0 or spec.short_form:
        return None
    assert setting is not None and sp.method is not None
    k = top_k(setting)
    cfg: dict[str, Any] = {"method": str(sp.method), "num_speculative_tokens": k}
    if sp.model:
        cfg["model"] = sp.model
    if sp.revision:
        cfg["revision"] = sp.revision
    if sp.draft_tensor_parallel_size is not None:
        cfg["draft_tensor_parallel_size"] = sp.draft_tensor_parallel_size
    if sp.method in (Method.NGRAM, Method.NGRAM_GPU):
        if sp.prompt_lookup_min is not None:
            cfg["prompt_lookup_min"] = sp.prompt_lookup_min
        if sp.prompt_lookup_max is not None:
            cfg["prompt_lookup_max"] = sp.prompt_lookup_max
    if not isinstance(setting, int):  # the policy's schedule
        cfg["num_speculative_tokens_per_batch_size"] = vllm_schedule(setting)
    elif sp.schedule:
        # vLLM: k in a range never exceeds num_speculative_tokens; clamp when the policy lowered k.
        cfg["num_speculative_tokens_per_batch_size"] = [
            [r.min_batch_size, r.max_batch_size, min(r.num_speculative_tokens, k)] for r in sp.schedule
        ]
    cfg.update(sp.extra_config)
    return cfg


def vllm_args(spec: SpeculativeDeploymentSpec, k: Setting | None) -> list[str]:
    """Arguments after ``vllm serve``: the exact command line of vLLM 0.33."""
    tgt = spec.target
    model = tgt.model or spec.speculator.model  # type: ignore[union-attr]
    args = [str(model), "--port", str(spec.service.port)]
    if tgt.revision:
        args += ["--revision", tgt.revision]
    args += ["--served-model-name", spec.served_model_name]
    args += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
    if tgt.max_model_len is not None:
        args += ["--max-model-len", str(tgt.max_model_len)]
    if tgt.quantization:
        args += ["--quantization", tgt.quantization]
    cfg = speculative_config(spec, k)
    if cfg is not None:
        args += ["--speculative-config", json.dumps(cfg, separators=(",", ":"), sort_keys=True)]
    return args + list(spec.extra_args)


def labels(owner: Owner) -> dict[str, str]:
    """Our objects' labels. Not ``app.kubernetes.io/instance``: Argo CD's default tracking label, with which an
    Argo CD Application named like the resource would take the operator's objects for its own (and prune them)."""
    return {
        LABEL_NAME: "vllm",
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "specdeploy",
        "app.kubernetes.io/managed-by": MANAGER,
        LABEL_DEPLOYMENT: owner.name,
    }


def selector(owner: Owner) -> dict[str, str]:
    """Immutable Deployment selector: only labels that never change for an owner."""
    return {LABEL_NAME: "vllm", LABEL_DEPLOYMENT: owner.name}


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_metadata(owner: Owner) -> dict[str, Any]:
    return {
        "name": owner.name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner_reference(owner)],
    }


def k_label(setting: Setting | None) -> str:
    """The pod label value of a setting: its k, ``s3x1_1x24`` for a schedule (k x first batch size, a label-safe
    form of its status label), or ``checkpoint``. Pods of two settings never share one."""
    if setting is None:
        return CHECKPOINT_K
    if isinstance(setting, int):
        return str(setting)
    return "s" + "_".join(f"{k}x{first}" for first, k in setting)


def _env(spec: SpeculativeDeploymentSpec) -> list[dict[str, Any]]:
    cache = spec.model_cache.mount_path
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{cache}/huggingface"},
        {"name": "VLLM_CACHE_ROOT", "value": f"{cache}/vllm"},
        # A non-root, arbitrary UID (OpenShift) has no home and no passwd entry: HOME must be writable, and USER
        # answers getpass.getuser() (torch's compile cache asks it) without a passwd lookup that would fail.
        {"name": "HOME", "value": cache},
        {"name": "USER", "value": "vllm"},
    ]
    if spec.hf_token_secret:
        ref = {"name": spec.hf_token_secret.name, "key": spec.hf_token_secret.key}
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}})
    return env + list(spec.env)


def volumes_and_mounts(spec: SpeculativeDeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mc = spec.model_cache
    if mc.type == CacheType.PVC:
        cache: dict[str, Any] = {"persistentVolumeClaim": {"claimName": mc.claim_name}}
    else:
        cache = {"emptyDir": {"sizeLimit": mc.size_limit} if mc.size_limit else {}}
    volumes = [
        {"name": "model-cache", **cache},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
    ]
    mounts = [{"name": "model-cache", "mountPath": mc.mount_path}, {"name": "dshm", "mountPath": "/dev/shm"}]
    return volumes, mounts


def _probes() -> dict[str, Any]:
    """Startup probe sized for long model loads (download + load + CUDA graphs: up to 30 min for 70B)."""

    def probe(period: int, timeout: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
        }

    return {"startupProbe": probe(10, 5, 180), "readinessProbe": probe(5, 5, 3), "livenessProbe": probe(10, 10, 6)}


def render_deployment(
    owner: Owner,
    spec: SpeculativeDeploymentSpec,
    k: Setting | None,
    site: Site = DEFAULT_SITE,
    live_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The vLLM Deployment running draft length k (0 = off, None = as the speculators checkpoint says).
    ``live_selector``: the selector of a Deployment an earlier release created (immutable), kept with its labels."""
    pod_labels, pod_annotations = pod_metadata(owner, spec, k)
    pod_labels = {**(live_selector or {}), **pod_labels}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(owner),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": live_selector or selector(owner)},
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": spec.rollout.max_surge,
                    "maxUnavailable": spec.rollout.max_unavailable,
                },
            },
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _pod_spec(spec, k, site),
            },
        },
    }


def pod_metadata(
    owner: Owner, spec: SpeculativeDeploymentSpec, k: Setting | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The pods' labels and annotations: the user's, ours, and k (so a change of k is a change of template, and
    the metrics of old and new pods are told apart by the ``specdeploy_k`` label)."""
    pod_labels = {**spec.pod_labels, **labels(owner), LABEL_K: k_label(k)}
    pod_annotations = {
        **spec.pod_annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.service.port),
        "prometheus.io/path": "/metrics",
        ANNOTATION_K: k_label(k),
        ANNOTATION_METHOD: method_name(spec),
    }
    return pod_labels, pod_annotations


def pod_security_context(spec: SpeculativeDeploymentSpec, platform: Platform) -> dict[str, Any]:
    """Non-root on every platform. vllm/vllm-openai declares no USER (it would run as root, which the kubelet
    refuses under runAsNonRoot), so plain Kubernetes gets an explicit UID and fsGroup (the cache volume is then
    group-writable); OpenShift's restricted-v2 SCC assigns both from the namespace's range and rejects any other,
    so none is set there. The user's ``podSecurityContext`` fields win; a field set to null drops a default."""
    ctx: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if platform == Platform.KUBERNETES:
        ctx |= {"runAsUser": DEFAULT_UID, "runAsGroup": DEFAULT_GID, "fsGroup": DEFAULT_GID}
    return {k: v for k, v in (ctx | dict(spec.pod_security_context)).items() if v is not None}


def _pod_spec(spec: SpeculativeDeploymentSpec, k: Setting | None, site: Site) -> dict[str, Any]:
    """The pod: one vLLM container, its volumes and the user's scheduling fields."""
    volumes, mounts = volumes_and_mounts(spec)
    return {"containers": [vllm_container(spec, k, site, mounts)], "volumes": volumes, **pod_fields(spec, site)}


def pod_fields(spec: SpeculativeDeploymentSpec, site: Site) -> dict[str, Any]:
    """Pod fields beside containers and volumes: its identity and the user's scheduling fields."""
    fields: dict[str, Any] = {
        "securityContext": pod_security_context(spec, site.platform),
        "terminationGracePeriodSeconds": 60,
    }
    if spec.node_selector:
        fields["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        fields["tolerations"] = list(spec.tolerations)
    if spec.affinity:
        fields["affinity"] = dict(spec.affinity)
    if spec.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    return fields


def vllm_container(
    spec: SpeculativeDeploymentSpec, k: Setting | None, site: Site, mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """``vllm serve`` with the rendered arguments, or the simulator with the same ones (and no GPU)."""
    sim = spec.simulation.enabled
    container = {
        "name": "vllm",
        "image": (spec.simulation.image or site.sim_image) if sim else (spec.image or site.vllm_image),
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["specdeploy", "sim-server"] if sim else ["vllm", "serve"],
        "args": vllm_args(spec, k),
        "ports": [{"name": "http", "containerPort": spec.service.port, "protocol": "TCP"}],
        "env": _env(spec),
        "resources": container_resources(spec),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_probes(),
    }
    if sim and spec.simulation.profile:
        container["env"].append(
            {"name": "SPECDEPLOY_SIM_PROFILE", "value": json.dumps(spec.simulation.profile, sort_keys=True)}
        )
    return container


def container_resources(spec: SpeculativeDeploymentSpec) -> dict[str, Any]:
    """CPU, memory and GPUs of the vLLM container (no GPU for the simulator)."""
    resources: dict[str, Any] = {"requests": dict(spec.resources.requests), "limits": dict(spec.resources.limits)}
    if spec.resources.gpus and not spec.simulation.enabled:
        gpu = {spec.resources.gpu_resource_name: str(spec.resources.gpus)}
        resources["requests"].update(gpu)
        resources["limits"].update(gpu)
    return resources


def render_service(owner: Owner, spec: SpeculativeDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(owner),
        "spec": {
            "type": spec.service.type,
            "selector": selector(owner),
            "ports": [{"name": "http", "port": spec.service.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def render_pod_monitor(owner: Owner) -> dict[str, Any]:
    """A PodMonitor for this resource's pods: OpenShift's user-workload monitoring reads PodMonitors only in the
    namespace of the pods they select, so one cluster-wide PodMonitor does not reach them."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": object_metadata(owner),
        "spec": {"selector": {"matchLabels": selector(owner)}, "podMetricsEndpoints": [POD_METRICS_ENDPOINT]},
    }
