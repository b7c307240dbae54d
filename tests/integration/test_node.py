"""What the node decides: scheduling onto GPUs, the pod security context under a real kubelet, images from the
node's own store. The pods here are rendered by the operator's code, as a user's cluster would get them."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes
import pytest
import yaml

from specdeploy.api import validate_manifest
from specdeploy.core.render import DEFAULT_UID, Owner, Site, render_deployment

from ..conftest import ROOT, SAMPLE
from .conftest import Cluster, Operator, kubectl_apply, wait_for
from .test_operator import sample

pytestmark = pytest.mark.cluster
OWNER = Owner("llama-8b", "x", "00000000-0000-0000-0000-000000000000")
# A process that prints who it runs as and stays up (the root image has no vLLM to run).
WHOAMI = [
    "python3",
    "-c",
    "import os, signal; print('uid', os.getuid(), 'gid', os.getgid(), flush=True); signal.pause()",
]


def gpu_pod(image: str, pod_security_context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The GPU sample's rendered pod, its image swapped for one without USER (it would run as root, as vLLM's
    does) and its command for WHOAMI; everything else (security context, GPU request, volumes) as rendered."""
    doc = copy.deepcopy(SAMPLE)
    if pod_security_context is not None:
        doc["spec"]["podSecurityContext"] = pod_security_context
    dep = render_deployment(OWNER, validate_manifest(doc), 3)
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    c.update(image=image, imagePullPolicy="Never", command=WHOAMI, args=[])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        del c[probe]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "vllm-pod"}, "spec": pod}


def container_state(api: Any, ns: str) -> Any:
    statuses = api.core.read_namespaced_pod("vllm-pod", ns).status.container_statuses
    return statuses[0] if statuses else None


def test_the_rendered_gpu_pod_runs_as_non_root_under_the_kubelet(api: Any, namespace: str, cluster: Cluster) -> None:
    kubectl_apply(gpu_pod(cluster.root_image), namespace)
    st = wait_for(lambda: (s := container_state(api, namespace)) and s.state.running and s, timeout=60,
                  what="the container running")  # fmt: skip
    assert st.container_id.startswith("containerd://")
    pod = api.core.read_namespaced_pod("vllm-pod", namespace)
    assert pod.spec.node_name and pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    logs = wait_for(lambda: api.core.read_namespaced_pod_log("vllm-pod", namespace), what="the container's output")
    assert logs.split() == ["uid", str(DEFAULT_UID), "gid", str(DEFAULT_UID)]


def test_without_an_explicit_uid_the_kubelet_refuses_a_root_image(api: Any, namespace: str, cluster: Cluster) -> None:
    """What happened before a UID was rendered: the real kubelet's refusal (the unit test models it)."""
    kubectl_apply(gpu_pod(cluster.root_image, {"runAsUser": None, "runAsGroup": None, "fsGroup": None}), namespace)
    st = wait_for(lambda: (s := container_state(api, namespace)) and s.state.waiting and s.state.waiting.message and s,
                  timeout=60, what="the kubelet's verdict")  # fmt: skip
    assert st.state.waiting.reason == "CreateContainerConfigError"
    assert "runAsNonRoot and image will run as root" in st.state.waiting.message


def test_gpu_sample_pods_are_scheduled_on_gpus(api: Any, namespace: str, operator: Operator) -> None:
    """The operator's GPU pods request nvidia.com/gpu and land on the node advertising it; their image is not on
    this machine, so they wait for it (imagePullPolicy Never)."""
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)

    def scheduled() -> list[Any]:
        pods = api.core.list_namespaced_pod(namespace).items
        return len(pods) == 2 and all(p.spec.node_name for p in pods) and pods

    for pod in wait_for(scheduled, timeout=60, what="both pods scheduled"):
        assert pod.spec.containers[0].resources.requests["nvidia.com/gpu"] == "1"

    def verdicts() -> set[str]:
        pods = api.core.list_namespaced_pod(namespace).items
        return {s.state.waiting.reason for p in pods for s in p.status.container_statuses or [] if s.state.waiting}

    wait_for(lambda: verdicts() == {"ErrImageNeverPull"}, timeout=60, what="the kubelet's verdict on the image")


def test_a_simulated_pod_is_ready_through_its_probes_and_stops_on_sigterm(
    api: Any, namespace: str, cluster: Cluster
) -> None:
    """The simulated sample's pod as rendered (project image, real probes) turns Ready, and a deletion ends it
    inside its 60 s grace period: the server, PID 1 in its container, handles SIGTERM."""
    doc = yaml.safe_load((ROOT / "manifests/samples/llama-8b-simulated.yaml").read_text())
    dep = render_deployment(OWNER, validate_manifest(doc), 3, Site(sim_image=cluster.image))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sim"}, "spec": dep["spec"]["template"]["spec"]}
    kubectl_apply(pod, namespace)

    def ready() -> bool:
        conditions = api.core.read_namespaced_pod("sim", namespace).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_for(ready, timeout=90, what="Ready through the startup and readiness probes")
    assert pod["spec"]["terminationGracePeriodSeconds"] == 60
    api.core.delete_namespaced_pod("sim", namespace)

    def gone() -> bool:
        try:
            api.core.read_namespaced_pod("sim", namespace)
        except kubernetes.client.ApiException as exc:
            return exc.status == 404
        return False

    # Ignoring SIGTERM, it would be killed at 60 s; 50 leaves the kubelet of a busy 2-core machine its time.
    wait_for(gone, timeout=50, what="the pod gone before its grace period ends")
