"""The KServe backend against the real API server, with KServe's CRDs (schemas this project writes for its tests,
tests/fixtures/crds) and no KServe controller: the operator's objects are accepted and owned, a change of k patches
the InferenceService alone, and the rollout is read from the status KServe writes.

What KServe itself would do (and does not here): create the predictor's Deployment ``<name>-predictor`` and its
Service from the two objects, put the storageUri's weights at /mnt/models, roll the Deployment when the
InferenceService's args change, and report the result in the InferenceService's status.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from pydantic.alias_generators import to_camel

from specdeploy.core.reconcile import recorded_setting
from specdeploy.core.render import k_label

from ..argocd import health
from ..conftest import ROOT
from .conftest import Operator, kubectl, kubectl_apply, wait_for
from .sim_helpers import Prometheus, SimProcess, write_targets
from .test_operator import cond, get_sd

pytestmark = pytest.mark.cluster

CRDS = ROOT / "tests/fixtures/crds/serving.kserve.io.yaml"
SAMPLE = yaml.safe_load((ROOT / "manifests/samples/llama-8b-kserve.yaml").read_text())
NAME = SAMPLE["metadata"]["name"]


@pytest.fixture(scope="module")
def kserve_crds(cluster: Any) -> Iterator[None]:
    kubectl("apply", "-f", str(CRDS))
    for crd in ("inferenceservices", "servingruntimes"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.serving.kserve.io", "--timeout=30s")
    yield
    kubectl("delete", "-f", str(CRDS), check=False)


def get(api: Any, ns: str, plural: str) -> dict[str, Any] | None:
    version = "v1beta1" if plural == "inferenceservices" else "v1alpha1"
    try:
        return api.custom.get_namespaced_custom_object("serving.kserve.io", version, ns, plural, NAME)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def resource() -> dict[str, Any]:
    doc = copy.deepcopy(SAMPLE)
    del doc["metadata"]["namespace"]
    doc["spec"]["adaptive"] = {"mode": "Off"}
    return doc


def test_the_rendered_inference_service_and_runtime_are_accepted(kserve_crds: None, namespace: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "render", "-f", "-", "-n", namespace, "-o", "json"],
        input=yaml.safe_dump(resource()), capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(out.stdout)
    assert [i["kind"] for i in doc["items"]] == ["InferenceService", "ServingRuntime"]
    for item in doc["items"]:
        del item["metadata"]["ownerReferences"]  # the placeholder owner does not exist
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(doc))
    assert result.count("(server dry run)") == 2, result
    # The schema is typed where the operator writes: a wrong type is refused.
    doc["items"][0]["spec"]["predictor"]["model"]["args"] = "--port 8000"
    refused = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(doc), check=False)
    assert "spec.predictor.model.args" in refused, refused


def test_a_change_of_k_patches_the_inference_service_and_kserves_status_is_read(
    kserve_crds: None, api: Any, namespace: str, operator: Operator
) -> None:
    kubectl_apply(resource(), namespace)
    isvc = wait_for(lambda: get(api, namespace, "inferenceservices"), timeout=60, what="InferenceService")
    runtime = wait_for(lambda: get(api, namespace, "servingruntimes"), timeout=30, what="ServingRuntime")
    sd = get_sd(api, namespace, NAME)
    assert {o["metadata"]["ownerReferences"][0]["uid"] for o in (isvc, runtime)} == {sd["metadata"]["uid"]}
    # No KServe controller: nothing reports on this generation yet.
    wait_for(lambda: (get_sd(api, namespace, NAME).get("status") or {}).get("rollout") == "Progressing",
             what="Progressing")  # fmt: skip
    assert cond(get_sd(api, namespace, NAME), "Progressing")["message"] == "waiting for KServe"
    assert health(get_sd(api, namespace, NAME)) == {"status": "Progressing", "message": "waiting for KServe"}

    kubectl("patch", "-n", namespace, "sd", NAME, "--type", "merge",
            "-p", json.dumps({"spec": {"speculator": {"numSpeculativeTokens": 2}}}))  # fmt: skip

    def patched() -> dict[str, Any] | None:
        i = get(api, namespace, "inferenceservices")
        args = i["spec"]["predictor"]["model"]["args"] if i else []
        return i if any('"num_speculative_tokens":2' in a for a in args) else None

    after = wait_for(patched, what="k=2 in the args")
    assert (
        get(api, namespace, "servingruntimes")["metadata"]["resourceVersion"] == runtime["metadata"]["resourceVersion"]
    )
    assert after["metadata"]["generation"] == isvc["metadata"]["generation"] + 1
    before_pred, after_pred = isvc["spec"]["predictor"], after["spec"]["predictor"]
    assert {k: v for k, v in before_pred.items() if k not in ("model", "labels", "annotations")} == {
        k: v for k, v in after_pred.items() if k not in ("model", "labels", "annotations")
    }
    assert {k: v for k, v in before_pred["model"].items() if k != "args"} == {
        k: v for k, v in after_pred["model"].items() if k != "args"
    }

    # KServe's report, written as KServe writes it (the status subresource), is what the resource shows.
    conditions = [{"type": "Ready", "status": "True"}, {"type": "PredictorReady", "status": "True"}]
    ready = {"observedGeneration": after["metadata"]["generation"], "conditions": conditions}
    api.custom.patch_namespaced_custom_object_status(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", NAME, {"status": ready}
    )
    done = wait_for(lambda: (s := get_sd(api, namespace, NAME).get("status") or {}).get("rollout") == "Complete" and s,
                    timeout=60, what="Complete from KServe's status")  # fmt: skip
    assert done["k"] == 2 and done["readyReplicas"] == 2
    assert cond(get_sd(api, namespace, NAME), "Ready")["status"] == "True"
    # The operator-wide loop saw the rollout complete (no watch on InferenceServices) and posted its Event.
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    assert {"DraftLengthChanged", "RolloutComplete"} <= {e["reason"] for e in events if e["source"].get("component")
                                                        == "specdeploy"}  # fmt: skip


# The e2e test's engine: small and compute-bound (one replica serves 20 req/s off, 13 at k=3), cheap to simulate.
ENGINE = {"t_mem_ms": 15, "n_knee": 16, "t_tok_ms": 1.5, "max_num_seqs": 32, "output_tokens": 32,
          "prompt_tokens": 128, "prefill_ms_per_ktok": 20, "t_kv_ms_per_ktok": 0.1}  # fmt: skip


@pytest.mark.prometheus
def test_the_closed_loop_changes_k_by_patching_the_inference_service_alone(
    kserve_crds: None, cluster: Any, api: Any, namespace: str, operator: Operator, tmp_path: Path
) -> None:
    """The policy in Auto, on metrics from a real Prometheus: two simulator processes stand in for the pods KServe
    would run for the InferenceService, labelled as its predictor labels them (the PodMonitor's relabelings give
    namespace, deployment, specdeploy_k) and loaded past what k=3 serves. The operator decides from them and
    carries the decision out by patching the InferenceService's args (and its pods' k label): the ServingRuntime
    and every other field stay as they were."""
    prom = Prometheus(tmp_path / "prom").start()
    sims = [SimProcess(f"{NAME}-predictor-{i}", 3, 18.5, namespace=namespace, deployment=NAME, seed=i + 1,
                       profile=ENGINE) for i in range(2)]  # fmt: skip
    operator.stop()
    auto = Operator(cluster.kubeconfig, tmp_path / "op.log", cluster.image, args=("--prometheus-url", prom.url))
    try:
        write_targets(prom.targets_file, sims)
        auto.start()
        doc = resource()
        measured = {k: v for k, v in ENGINE.items() if k not in ("output_tokens", "prompt_tokens")}
        doc["spec"]["adaptive"] = {
            "mode": "Auto", "minTokens": 1, "maxTokens": 6, "evaluationIntervalSeconds": 5, "windowSeconds": 30,
            "minDwellSeconds": 20, "cooldownSeconds": 10, "restartSeconds": 5, "horizonSeconds": 60,
            "prior": {"profile": {to_camel(k): v for k, v in measured.items()}},
        }  # fmt: skip
        kubectl_apply(doc, namespace)
        isvc = wait_for(lambda: get(api, namespace, "inferenceservices"), timeout=60, what="InferenceService")
        runtime = get(api, namespace, "servingruntimes")
        ready = {"observedGeneration": isvc["metadata"]["generation"],
                 "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
        api.custom.patch_namespaced_custom_object_status(
            "serving.kserve.io", "v1beta1", namespace, "inferenceservices", NAME, {"status": ready}
        )  # KServe's report on the pods the simulators stand in for

        def changed() -> dict[str, Any] | None:
            i = get(api, namespace, "inferenceservices")
            return i if i and i["metadata"]["generation"] > isvc["metadata"]["generation"] else None

        after = wait_for(changed, timeout=150, interval=1, what="the policy's change in the InferenceService")
        st = get_sd(api, namespace, NAME)["status"]
        assert st["decisions"][-1]["applied"] is True, st["decisions"]
        assert (
            get(api, namespace, "servingruntimes")["metadata"]["resourceVersion"]
            == runtime["metadata"]["resourceVersion"]
        )
        before_pred, after_pred = isvc["spec"]["predictor"], after["spec"]["predictor"]
        assert before_pred["model"]["args"] != after_pred["model"]["args"]
        assert {k: v for k, v in before_pred["model"].items() if k != "args"} == {
            k: v for k, v in after_pred["model"].items() if k != "args"
        }
        assert {k: v for k, v in before_pred.items() if k not in ("model", "labels", "annotations")} == {
            k: v for k, v in after_pred.items() if k not in ("model", "labels", "annotations")
        }
        # (a k, or a per-batch-size schedule: eagle3 runs vLLM's)
        assert after_pred["labels"]["specdeploy.io/k"] == k_label(recorded_setting(st)) != "3"
        assert {k: v for k, v in after.items() if k not in ("spec", "metadata", "status")} == {
            k: v for k, v in isvc.items() if k not in ("spec", "metadata", "status")
        }
        print(f"the policy's change: {st['decisions'][-1]['reason']}")
    finally:
        auto.stop()
        operator.start()
        for s in sims:
            s.stop()
        prom.stop()
