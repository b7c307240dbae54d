"""The operator against the local cluster: real apiserver (production admission plugins), Deployment controller,
garbage collector, scheduler and a kubelet running pods under containerd.

Pods that must become Ready are simulated ones (the project image, loaded into the node); the GPU sample's pods
are scheduled onto the node's GPUs but never start (its vLLM image is not on this machine: imagePullPolicy Never).
"""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from typing import Any

import pytest
import yaml

from ..argocd import health
from ..conftest import ROOT, SAMPLE
from .conftest import Operator, kubectl, kubectl_apply, wait_for

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "specdeploy.io", "v1alpha1", "speculativedeployments"


def sample(**spec_changes: Any) -> dict[str, Any]:
    """The GPU sample; its vLLM image is never pulled here (no registry access), so its pods wait for it."""
    doc = copy.deepcopy(SAMPLE)
    del doc["metadata"]["namespace"]
    doc["spec"]["imagePullPolicy"] = "Never"
    doc["spec"].update(spec_changes)
    return doc


def simulated(**spec_changes: Any) -> dict[str, Any]:
    """The simulated sample: real pods from the project image that pass their real readiness probes."""
    doc = yaml.safe_load((ROOT / "manifests/samples/llama-8b-simulated.yaml").read_text())
    del doc["metadata"]["namespace"]
    doc["spec"].update({"adaptive": {"mode": "Off"}, **spec_changes})
    return doc


def get_sd(api: Any, ns: str, name: str = "llama-8b") -> dict[str, Any]:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def args_of(dep: Any) -> list[str]:
    return dep.spec.template.spec.containers[0].args


def wait_for_a_resync(api: Any, ns: str) -> None:
    """Wait until the operator has run a reconcile pass over the resource: delete its Service (which no watch
    reports to the operator) and wait for the periodic resync to restore it."""
    uid = api.core.read_namespaced_service("llama-8b", ns).metadata.uid
    # (Kubernetes 1.20 answers a Service deletion with a Status the client cannot parse as a Service.)
    api.core.delete_namespaced_service("llama-8b", ns, _preload_content=False)
    wait_for(lambda: api.core.read_namespaced_service("llama-8b", ns).metadata.uid != uid, what="a resync pass")


def replicasets(api: Any, ns: str) -> list[Any]:
    return api.apps.list_namespaced_replica_set(ns, label_selector="specdeploy.io/deployment=llama-8b").items


def test_apply_sample_creates_deployment_service_and_status(api: Any, namespace: str, operator: Operator) -> None:
    t0 = time.monotonic()
    kubectl_apply(sample(), namespace)
    dep = wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), what="Deployment")
    created_after = time.monotonic() - t0
    assert created_after < 10
    args = args_of(dep)
    assert args[0] == "meta-llama/Llama-3.1-8B-Instruct"
    cfg = json.loads(args[args.index("--speculative-config") + 1])
    assert cfg == {
        "method": "eagle3",
        "model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "num_speculative_tokens": 3,
    }
    assert dep.metadata.owner_references[0].kind == "SpeculativeDeployment"
    svc = api.core.read_namespaced_service("llama-8b", namespace)
    assert svc.spec.ports[0].port == 8000
    sd = wait_for(lambda: (o := get_sd(api, namespace)).get("status", {}).get("k") and o, what="status")
    st = sd["status"]
    assert st["method"] == "eagle3" and st["k"] == 3 and st["observedGeneration"] == sd["metadata"]["generation"]
    assert {c["type"] for c in st["conditions"]} >= {"Ready", "Progressing", "Degraded", "SpeculationActive"}
    for c in st["conditions"]:
        assert c["reason"] and c["lastTransitionTime"] and c["status"] in ("True", "False", "Unknown")
    table = kubectl("get", "sd", "-n", namespace)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "METHOD", "K", "ACCEPTANCE", "QPS", "MODE", "READY", "AGE"]
    assert row.split()[:3] == ["llama-8b", "eagle3", "3"]
    events = kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.kind=SpeculativeDeployment")
    assert "llama-8b" in events or events.strip() == "No resources found in " + namespace + " namespace."


def test_operator_never_writes_spec_or_metadata(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    wait_for(lambda: get_sd(api, namespace).get("status", {}).get("k"), what="status")
    wait_for_a_resync(api, namespace)
    sd = get_sd(api, namespace)
    assert sd["metadata"]["generation"] == 1
    assert not any(k.startswith("kopf") for k in sd["metadata"].get("annotations", {}))
    assert not sd["metadata"].get("finalizers")
    for entry in sd["metadata"]["managedFields"]:
        if entry["manager"] != "kubectl-client-side-apply":
            assert entry.get("subresource", "status") == "status" or "f:spec" not in json.dumps(entry["fieldsV1"])


def test_editing_k_rolls_pods_and_reports_progress(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(simulated(), namespace)
    wait_for(lambda: cond(get_sd(api, namespace), "Ready").get("status") == "True", timeout=90, what="Ready")
    for pod in api.core.list_namespaced_pod(namespace).items:  # started by containerd, not by the test
        assert pod.status.container_statuses[0].container_id.startswith("containerd://")
    first = {rs.metadata.name for rs in replicasets(api, namespace)}
    assert len(first) == 1
    kubectl(
        "patch",
        "sd",
        "llama-8b",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"speculator":{"numSpeculativeTokens":2}}}',
    )
    new_rs = wait_for(
        lambda: [rs for rs in replicasets(api, namespace) if rs.metadata.name not in first], what="a new ReplicaSet"
    )[0]
    assert new_rs.spec.template.metadata.labels["specdeploy.io/k"] == "2"
    assert '"num_speculative_tokens":2' in " ".join(new_rs.spec.template.spec.containers[0].args)
    old_name = next(iter(first))
    wait_for(
        lambda: api.apps.read_namespaced_replica_set(old_name, namespace).spec.replicas == 0,
        timeout=120,
        what="old ReplicaSet scaled down",
    )
    sd = wait_for(
        lambda: (o := get_sd(api, namespace))["status"].get("rollout") == "Complete" and o, timeout=60, what="Complete"
    )
    assert sd["status"]["k"] == 2 and sd["status"]["updatedReplicas"] == 2
    assert cond(sd, "Ready")["status"] == "True"
    assert health(sd)["status"] == "Healthy"  # what Argo CD shows of the status the operator wrote
    events = kubectl("get", "events", "-n", namespace, "-o", "json")
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert "DraftLengthChanged" in reasons


def test_invalid_spec_is_degraded_and_running_deployment_untouched(
    api: Any, namespace: str, operator: Operator
) -> None:
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    before = wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), what="Deployment")
    wait_for(lambda: get_sd(api, namespace).get("status", {}).get("k"), what="status")
    # Accepted by the schema, rejected by vLLM's rule (draft TP must be 1 or the target's TP):
    kubectl(
        "patch", "sd", "llama-8b", "-n", namespace, "--type=merge",
        "-p", '{"spec":{"speculator":{"draftTensorParallelSize":2,"numSpeculativeTokens":5}}}',
    )  # fmt: skip
    sd = wait_for(
        lambda: (o := get_sd(api, namespace)) and cond(o, "Degraded").get("reason") == "InvalidSpec" and o,
        what="Degraded InvalidSpec",
    )
    msg = cond(sd, "Degraded")["message"]
    assert "spec.speculator.draftTensorParallelSize: must be 1 or the target's tensor parallel size (1) (got 2)" in msg
    assert cond(sd, "Degraded")["status"] == "True"
    assert health(sd)["status"] == "Degraded"  # what Argo CD shows of the status the operator wrote
    # The pass that wrote this condition handled the new generation, and a pass applies before it writes status:
    # a Deployment changed by the invalid spec would show it now.
    assert cond(sd, "Degraded")["observedGeneration"] == sd["metadata"]["generation"]
    after = api.apps.read_namespaced_deployment("llama-8b", namespace)
    assert after.metadata.generation == before.metadata.generation
    assert args_of(after) == args_of(before)
    assert get_sd(api, namespace)["status"]["k"] == 3
    # fixing the spec recovers
    kubectl(
        "patch", "sd", "llama-8b", "-n", namespace, "--type=json",
        "-p", '[{"op":"remove","path":"/spec/speculator/draftTensorParallelSize"}]',
    )  # fmt: skip
    wait_for(lambda: cond(get_sd(api, namespace), "Degraded").get("status") == "False", what="recovered")
    assert get_sd(api, namespace)["status"]["k"] == 5


def test_hand_deleted_or_edited_deployment_is_restored(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    dep = wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), what="Deployment")
    kubectl("delete", "deployment", "llama-8b", "-n", namespace)
    back = wait_for(
        lambda: (
            (d := api.apps.read_namespaced_deployment("llama-8b", namespace)).metadata.uid != dep.metadata.uid and d
        ),
        timeout=15,
        what="Deployment recreated",
    )
    assert args_of(back) == args_of(dep)
    kubectl("scale", "deployment", "llama-8b", "-n", namespace, "--replicas=5")
    wait_for(
        lambda: api.apps.read_namespaced_deployment("llama-8b", namespace).spec.replicas == 2,
        timeout=15,
        what="replicas restored",
    )


def test_a_deployment_an_earlier_release_made_is_taken_over_with_its_selector(
    api: Any, namespace: str, operator: Operator
) -> None:
    """Earlier releases selected pods by ``app.kubernetes.io/instance`` (Argo CD's tracking label), and a selector
    is immutable: such a Deployment keeps it and gets everything else the operator renders."""
    legacy = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": "llama-8b"}
    pod = {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.33.0"}]}
    old = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "llama-8b", "labels": legacy},
           "spec": {"replicas": 0, "selector": {"matchLabels": legacy},
                    "template": {"metadata": {"labels": legacy}, "spec": pod}}}  # fmt: skip
    kubectl_apply(old, namespace)
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    dep = wait_for(
        lambda: (d := api.apps.read_namespaced_deployment("llama-8b", namespace)).metadata.owner_references and d,
        what="the Deployment owned",
    )
    assert dep.spec.selector.match_labels == legacy and dep.spec.replicas == 2
    assert '"num_speculative_tokens":3' in " ".join(args_of(dep))
    wait_for(lambda: (get_sd(api, namespace).get("status") or {}).get("k") == 3, what="status")


def test_deleting_the_resource_garbage_collects_its_objects(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), what="Deployment")
    kubectl("delete", "sd", "llama-8b", "-n", namespace)
    wait_for(
        lambda: (
            not api.apps.list_namespaced_deployment(namespace).items
            and not [s for s in api.core.list_namespaced_service(namespace).items if s.metadata.name == "llama-8b"]
        ),
        timeout=30,
        what="garbage collection",
    )


def test_rollout_past_its_deadline_is_degraded(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(sample(adaptive={"mode": "Off"}, rollout={"progressDeadlineSeconds": 10}), namespace)
    sd = wait_for(
        lambda: (o := get_sd(api, namespace)) and cond(o, "Degraded").get("reason") == "RolloutFailed" and o,
        timeout=45,
        what="RolloutFailed",
    )
    assert sd["status"]["rollout"] == "Failed"
    assert "progress" in cond(sd, "Degraded")["message"].lower()
    assert health(sd) == {"status": "Degraded", "message": "RolloutFailed: " + cond(sd, "Degraded")["message"]}


def test_an_object_the_api_server_refuses_is_degraded_with_its_words_and_recovers(
    api: Any, namespace: str, operator: Operator
) -> None:
    """A ResourceQuota allows no Service in the namespace: the API server refuses it, status says so in Degraded
    (not only the operator's log), and once the quota is gone the next pass creates everything."""
    api.core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-services"},
                                                          "spec": {"hard": {"services": "0"}}})  # fmt: skip
    kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
    sd = wait_for(lambda: (o := get_sd(api, namespace)) and cond(o, "Degraded").get("reason") == "ApplyFailed" and o,
                  timeout=30, what="Degraded ApplyFailed")  # fmt: skip
    msg = cond(sd, "Degraded")["message"]
    assert "403" in msg and "exceeded quota: no-services" in msg, msg
    assert health(sd)["status"] == "Degraded"
    api.core.delete_namespaced_resource_quota("no-services", namespace)
    wait_for(lambda: api.core.read_namespaced_service("llama-8b", namespace), timeout=30, what="the Service created")
    sd = wait_for(lambda: (o := get_sd(api, namespace)) and cond(o, "Degraded").get("status") == "False" and o,
                  timeout=30, what="Degraded cleared")  # fmt: skip
    assert sd["status"]["observedGeneration"] == sd["metadata"]["generation"]


def test_restarting_the_operator_changes_nothing(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(simulated(), namespace)
    wait_for(lambda: cond(get_sd(api, namespace), "Ready").get("status") == "True", timeout=90, what="Ready")
    wait_for_a_resync(api, namespace)  # the running operator has caught up with the Ready pods
    dep = api.apps.read_namespaced_deployment("llama-8b", namespace)
    rs_before = {rs.metadata.name for rs in replicasets(api, namespace)}
    status = get_sd(api, namespace)["status"]
    operator.stop()
    try:
        operator.start()
        wait_for(lambda: urllib.request.urlopen(operator.liveness, timeout=1).status == 200, what="liveness")
        wait_for_a_resync(api, namespace)  # resume handlers and one resync have run
    finally:
        assert operator.alive()
    after = api.apps.read_namespaced_deployment("llama-8b", namespace)
    assert after.metadata.generation == dep.metadata.generation

    # Same template, same pods: no rollout. (The apiserver, v1.20, stamps a new managedFields time even on an
    # apply that changes nothing, so resourceVersion is no witness here.)
    assert after.spec.template == dep.spec.template
    assert {rs.metadata.name for rs in replicasets(api, namespace)} == rs_before
    new_status = get_sd(api, namespace)["status"]
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in new_status["conditions"]] == [
        (c["type"], c["status"], c["lastTransitionTime"]) for c in status["conditions"]
    ]
    assert new_status["k"] == status["k"]
