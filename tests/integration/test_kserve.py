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
from typing import Any

import kubernetes
import pytest
import yaml

from ..argocd import health
from ..conftest import ROOT
from .conftest import Operator, kubectl, kubectl_apply, wait_for
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
