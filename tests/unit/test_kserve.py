"""The KServe backend: an InferenceService and its ServingRuntime for OpenShift AI, k only in the former, and the
rollout read from KServe's status."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from specdeploy.api import SpecError, validate_manifest, validate_spec
from specdeploy.core.kserve import MODEL_DIR, served_command
from specdeploy.core.objects import render_all
from specdeploy.core.reconcile import Phase, rollout_of
from specdeploy.core.render import DEFAULT_SITE, Owner, Platform, Site, vllm_args

from ..conftest import ROOT
from ..scc import restricted_v2_violations

DOC = yaml.safe_load((ROOT / "manifests/samples/llama-8b-kserve.yaml").read_text())
OWNER = Owner("llama-8b-kserve", "inference", "uid-1")


def rendered(k: int, site: Site = DEFAULT_SITE) -> tuple[dict[str, Any], dict[str, Any]]:
    isvc, runtime = render_all(OWNER, validate_manifest(DOC), k, site)
    return isvc, runtime


def test_the_backend_renders_a_raw_deployment_inference_service_and_its_runtime_for_the_dashboard() -> None:
    isvc, runtime = rendered(3)
    assert (isvc["kind"], runtime["kind"]) == ("InferenceService", "ServingRuntime")
    assert isvc["metadata"]["name"] == runtime["metadata"]["name"] == isvc["spec"]["predictor"]["model"]["runtime"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    for obj in (isvc, runtime):
        assert obj["metadata"]["labels"]["opendatahub.io/dashboard"] == "true"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert isvc["metadata"]["annotations"]["openshift.io/display-name"] == DOC["spec"]["kserve"]["displayName"]
    assert runtime["metadata"]["annotations"]["opendatahub.io/recommended-accelerators"] == '["nvidia.com/gpu"]'
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"].startswith("oci://")
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 2
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_the_served_command_is_vllm_serve_with_the_downloaded_model_and_the_specs_arguments() -> None:
    spec = validate_manifest(DOC)
    isvc, runtime = rendered(3)
    command, args = served_command(runtime, isvc)
    assert command == ["vllm", "serve"]
    assert args == [MODEL_DIR, *vllm_args(spec, 3)[1:]]
    hub = validate_spec({**DOC["spec"], "kserve": {}})  # no storageUri: vLLM downloads target.model itself
    isvc, runtime = render_all(OWNER, hub, 3)
    assert served_command(runtime, isvc)[1] == vllm_args(hub, 3)


def test_a_change_of_k_touches_the_inference_services_args_and_pod_k_label_only() -> None:
    (on, runtime_on), (off, runtime_off) = rendered(3), rendered(1)
    assert runtime_on == runtime_off
    pred_on, pred_off = on["spec"]["predictor"], off["spec"]["predictor"]
    differ = sorted(
        f"{part}.{key}"
        for part in ("labels", "annotations", "model")
        for key in pred_on[part]
        if pred_on[part][key] != pred_off[part][key]
    )
    assert differ == ["annotations.specdeploy.io/num-speculative-tokens", "labels.specdeploy.io/k", "model.args"]
    rest = {k: v for k, v in pred_on.items() if k not in ("labels", "annotations", "model")}
    assert rest == {k: v for k, v in pred_off.items() if k not in ("labels", "annotations", "model")}
    assert {k: v for k, v in on.items() if k != "spec"} == {k: v for k, v in off.items() if k != "spec"}


def test_on_openshift_the_runtime_and_predictor_pass_restricted_v2() -> None:
    isvc, runtime = rendered(3, Site(Platform.OPENSHIFT))
    pod = {**isvc["spec"]["predictor"], "containers": runtime["spec"]["containers"],
           "volumes": runtime["spec"]["volumes"]}  # fmt: skip
    assert restricted_v2_violations(pod) == []


def isvc_with(status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    isvc, _ = rendered(3)
    return {**isvc, "metadata": {**isvc["metadata"], "generation": generation}, "status": status}


READY = {"type": "Ready", "status": "True"}


@pytest.mark.parametrize(
    ("status", "phase", "message"),
    [
        ({"observedGeneration": 1, "conditions": [READY]}, Phase.PROGRESSING, "waiting for KServe"),
        ({"observedGeneration": 2, "conditions": [READY]}, Phase.COMPLETE, "InferenceService ready (2 replicas)"),
        (
            {"observedGeneration": 2,
             "conditions": [{"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable"}]},
            Phase.PROGRESSING,
            "MinimumReplicasUnavailable",
        ),
        (
            {"observedGeneration": 2, "modelStatus": {"transitionStatus": "BlockedByFailedLoad",
             "lastFailureInfo": {"message": "container vllm crashed"}}},
            Phase.FAILED,
            "container vllm crashed",
        ),
    ],
)  # fmt: skip
def test_the_rollout_is_read_from_kserves_status(status: dict[str, Any], phase: Phase, message: str) -> None:
    state = rollout_of(isvc_with(status), "InferenceService")
    assert (state.phase, state.message) == (phase, message)
    assert state.ready == (2 if phase == Phase.COMPLETE else 0)
    assert rollout_of(None, "InferenceService").message == "InferenceService not found"


def test_kserve_settings_need_the_kserve_backend() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({**DOC["spec"], "backend": "Deployment"})
    assert [str(p) for p in info.value.problems] == [
        "spec.kserve.storageUri: only with backend: KServe",
        "spec.kserve.displayName: only with backend: KServe",
    ]
    with pytest.raises(SpecError, match=r"spec.kserve.storageUri: String should match pattern"):
        validate_spec({**DOC["spec"], "kserve": {"storageUri": "ftp://x"}})
