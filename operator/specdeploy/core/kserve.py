"""Spec -> the KServe objects of the KServe backend (pure): a ServingRuntime and an InferenceService, both named
after the resource, as OpenShift AI's single-model serving lists them.

The split follows what changes: the ServingRuntime holds what a change of k never touches (image, command,
volumes, probes, security); the InferenceService holds the model, replicas, resources and ``vllm serve``'s
arguments, with k in its args and in its pods' labels. A change of k therefore patches the InferenceService alone,
and KServe rolls its Deployment (RawDeployment mode) as the Deployment backend would.

KServe composes the container from both: the runtime's container with the model's ``args`` appended to the
runtime's own (:func:`served_command` states that composition, which vLLM's parser judges).
"""

from __future__ import annotations

import json
from typing import Any

from ..api import SpeculativeDeploymentSpec
from .model import Setting
from .render import (
    Owner,
    Site,
    container_resources,
    object_metadata,
    pod_fields,
    pod_metadata,
    vllm_args,
    vllm_container,
    volumes_and_mounts,
)

API_GROUP = "serving.kserve.io"
ISVC_VERSION, RUNTIME_VERSION = "v1beta1", "v1alpha1"
MODEL_FORMAT = "vLLM"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer (or a modelcar) puts storageUri's weights
CONTAINER = "kserve-container"  # the name KServe gives the model server's container
DASHBOARD = {"opendatahub.io/dashboard": "true"}  # the OpenShift AI dashboard lists objects with this label


def render_serving_runtime(owner: Owner, spec: SpeculativeDeploymentSpec, site: Site) -> dict[str, Any]:
    """The runtime: vLLM (or the simulator) with everything but the arguments, which the InferenceService holds."""
    volumes, mounts = volumes_and_mounts(spec)
    container = vllm_container(spec, 0, site, mounts)
    del container["args"], container["resources"]
    meta = object_metadata(owner)
    meta["labels"] = {**meta["labels"], **DASHBOARD}
    meta["annotations"] = {
        "openshift.io/display-name": f"vLLM with speculative decoding ({owner.name})",
        "opendatahub.io/recommended-accelerators": json.dumps([spec.resources.gpu_resource_name]),
        "opendatahub.io/apiProtocol": "REST",
    }
    return {
        "apiVersion": f"{API_GROUP}/{RUNTIME_VERSION}",
        "kind": "ServingRuntime",
        "metadata": meta,
        "spec": {
            "multiModel": False,
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": True}],
            "containers": [{**container, "name": CONTAINER}],
            "volumes": volumes,
        },
    }


def render_inference_service(
    owner: Owner, spec: SpeculativeDeploymentSpec, k: Setting | None, site: Site
) -> dict[str, Any]:
    """The InferenceService running draft length k, in RawDeployment mode (a Deployment, no Knative)."""
    args = vllm_args(spec, k)
    if spec.kserve.storage_uri:
        args = [MODEL_DIR, *args[1:]]  # the model KServe downloaded, served under the spec's name
    pod_labels, pod_annotations = pod_metadata(owner, spec, k)
    model: dict[str, Any] = {"modelFormat": {"name": MODEL_FORMAT}, "runtime": owner.name, "args": args,
                             "resources": container_resources(spec)}  # fmt: skip
    if spec.kserve.storage_uri:
        model["storageUri"] = spec.kserve.storage_uri
    meta = object_metadata(owner)
    meta["labels"] = {**meta["labels"], **DASHBOARD}
    meta["annotations"] = {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "openshift.io/display-name": spec.kserve.display_name or owner.name,
    }
    predictor = {
        "minReplicas": spec.replicas,
        "maxReplicas": spec.replicas,
        "labels": pod_labels,
        "annotations": pod_annotations,
        "deploymentStrategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": spec.rollout.max_surge, "maxUnavailable": spec.rollout.max_unavailable},
        },
        **pod_fields(spec, site),
        "model": model,
    }
    return {
        "apiVersion": f"{API_GROUP}/{ISVC_VERSION}",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def served_command(runtime: dict[str, Any], isvc: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The model server's command and arguments as KServe composes them: the runtime container's command, its
    args, then the InferenceService model's args."""
    container = runtime["spec"]["containers"][0]
    return container["command"], [*container.get("args", []), *isvc["spec"]["predictor"]["model"]["args"]]
