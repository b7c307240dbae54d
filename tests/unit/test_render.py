"""Rendering a spec into the Deployment and Service the operator owns."""

from __future__ import annotations

import json
from typing import Any

import pytest

from specdeploy.api import validate_manifest, validate_spec
from specdeploy.cli import main
from specdeploy.core.objects import render_all
from specdeploy.core.render import (
    ANNOTATION_K,
    DEFAULT_UID,
    LABEL_K,
    Owner,
    Platform,
    Site,
    render_deployment,
    spec_k,
    speculative_config,
    vllm_args,
)

from ..conftest import ROOT, SAMPLE, SAMPLES
from .test_api import METHOD_SPECS

OWNER = Owner("llama-8b", "inference", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
FIELDS = json.loads((ROOT / "tests/fixtures/vllm_speculative_config_fields.json").read_text())


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_sample_renders_exact_vllm_command() -> None:
    spec = validate_manifest(SAMPLE)
    dep, svc = render_all(OWNER, spec, spec_k(spec))
    c = _container(dep)
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "--port",
        "8000",
        "--served-model-name",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--tensor-parallel-size",
        "1",
        "--max-model-len",
        "8192",
        "--speculative-config",
        '{"method":"eagle3","model":"RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3","num_speculative_tokens":3}',
    ]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert dep["spec"]["replicas"] == 2
    assert svc["kind"] == "Service" and svc["spec"]["ports"][0]["port"] == 8000
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_speculative_config_fields_are_all_known_to_vllm() -> None:
    spec = validate_manifest(SAMPLE)
    cfg = json.loads(_arg(_container(render_deployment(OWNER, spec, 3))["args"], "--speculative-config"))
    assert set(cfg) <= set(FIELDS["user_fields"])
    assert cfg["method"] in FIELDS["methods"]


@pytest.mark.parametrize("method", sorted(METHOD_SPECS))
def test_every_method_renders_fields_vllm_accepts(method: str) -> None:
    raw = {"target": {"model": "t"}, "speculator": {**METHOD_SPECS[method], "numSpeculativeTokens": 4}}
    cfg = speculative_config(validate_spec(raw), 4)
    assert cfg is not None
    assert set(cfg) <= set(FIELDS["user_fields"])
    assert cfg["method"] == method and cfg["num_speculative_tokens"] == 4


def test_passthrough_schedule_and_extra_args() -> None:
    spec = validate_spec(
        {
            "target": {"model": "t"},
            "speculator": {
                "method": "eagle3",
                "model": "d",
                "numSpeculativeTokens": 4,
                "draftTensorParallelSize": 1,
                "schedule": [{"minBatchSize": 1, "maxBatchSize": 8, "numSpeculativeTokens": 4}],
                "extraConfig": {"draft_sample_method": "probabilistic"},
            },
            "extraArgs": ["--enable-prefix-caching"],
        }
    )
    args = vllm_args(spec, 2)
    cfg = json.loads(_arg(args, "--speculative-config"))
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 8, 2]]  # clamped to the running k
    assert cfg["draft_sample_method"] == "probabilistic"
    assert set(cfg) <= set(FIELDS["user_fields"])
    assert args[-1] == "--enable-prefix-caching"


def test_speculation_off_is_same_deployment_without_config() -> None:
    spec = validate_manifest(SAMPLE)
    on, off = render_deployment(OWNER, spec, 3), render_deployment(OWNER, spec, 0)
    assert "--speculative-config" not in _container(off)["args"]
    assert [a for a in _container(on)["args"] if not a.startswith("{")] == [
        *_container(off)["args"],
        "--speculative-config",
    ]
    assert off["spec"]["template"]["metadata"]["annotations"][ANNOTATION_K] == "0"


def test_change_of_k_changes_template_only_where_needed() -> None:
    spec = validate_manifest(SAMPLE)
    a, b = render_deployment(OWNER, spec, 3), render_deployment(OWNER, spec, 2)
    assert a["spec"]["template"] != b["spec"]["template"]
    assert a["spec"]["selector"] == b["spec"]["selector"]
    assert b["spec"]["template"]["metadata"]["labels"][LABEL_K] == "2"
    assert {k: v for k, v in a["spec"].items() if k != "template"} == {
        k: v for k, v in b["spec"].items() if k != "template"
    }


def test_speculators_short_form_serves_the_speculator() -> None:
    spec = validate_spec({"speculator": {"model": "RedHatAI/Qwen3-8B-speculator.eagle3"}})
    args = vllm_args(spec, spec_k(spec))
    assert args[0] == "RedHatAI/Qwen3-8B-speculator.eagle3"
    assert "--speculative-config" not in args
    assert spec_k(spec) is None


# OpenShift's restricted-v2 SCC, as far as a pod spec decides it: UID and fsGroup come from the namespace's range
# (a pod naming its own is rejected unless it happens to fall inside), capabilities all dropped, no privilege
# escalation, RuntimeDefault seccomp, and only these volume types.
RESTRICTED_V2_VOLUMES = {"configMap", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                         "secret", "csi"}  # fmt: skip


def restricted_v2_problems(pod: dict[str, Any]) -> list[str]:
    out = []
    psc = pod.get("securityContext", {})
    for c in pod["containers"]:
        sc = {**psc, **c.get("securityContext", {})}
        out += [f"{c['name']}: sets {f}" for f in ("runAsUser", "fsGroup", "seLinuxOptions") if f in sc]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            out.append(f"{c['name']}: must drop ALL capabilities")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            out.append(f"{c['name']}: seccomp must be RuntimeDefault")
    out += [f"volume {v['name']}" for v in pod["volumes"] if not set(v) - {"name"} <= RESTRICTED_V2_VOLUMES]
    return out


def kubelet_refusal(pod: dict[str, Any], image_user: int = 0) -> str | None:
    """What the kubelet says of a container with runAsNonRoot whose image runs as ``image_user`` (vllm/vllm-openai
    declares no USER: root), before it starts it (kubelet's verifyRunAsNonRoot)."""
    for c in pod["containers"]:
        sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        uid = sc.get("runAsUser", image_user)
        if sc.get("runAsNonRoot") and uid == 0:
            return "container has runAsNonRoot and image will run as root"
    return None


def test_gpu_pods_start_on_kubernetes_and_are_admitted_by_openshift_restricted_v2() -> None:
    spec = validate_manifest(SAMPLE)
    kube = render_deployment(OWNER, spec, 3)["spec"]["template"]["spec"]
    ocp = render_deployment(OWNER, spec, 3, Site(Platform.OPENSHIFT))["spec"]["template"]["spec"]
    assert kubelet_refusal(kube) is None and kube["securityContext"]["runAsUser"] == DEFAULT_UID
    assert kube["securityContext"]["fsGroup"] == DEFAULT_UID  # the cache volume is writable by that UID
    assert restricted_v2_problems(ocp) == []
    assert restricted_v2_problems(kube) == ["vllm: sets runAsUser", "vllm: sets fsGroup"]
    # Without the explicit UID the kubelet refuses the root image, as the real node does (tests/integration).
    assert kubelet_refusal({**kube, "securityContext": {"runAsNonRoot": True}}) is not None
    env = {e["name"]: e.get("value") for e in _container(render_deployment(OWNER, spec, 3))["env"]}
    assert env["HOME"] == spec.model_cache.mount_path and env["USER"]


def test_the_users_pod_security_context_wins() -> None:
    spec = validate_manifest({**SAMPLE, "spec": {**SAMPLE["spec"], "podSecurityContext": {"runAsUser": 4242}}})
    pod = render_deployment(OWNER, spec, 3)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 4242 and pod["securityContext"]["runAsNonRoot"] is True


def test_cli_render_for_openshift_sets_no_uid(capsys: pytest.CaptureFixture[str]) -> None:
    main(["render", "-f", str(ROOT / "manifests/samples/llama-8b.yaml"), "--platform", "openshift", "-o", "json"])
    dep = json.loads(capsys.readouterr().out)["items"][0]
    assert restricted_v2_problems(dep["spec"]["template"]["spec"]) == []


def test_owner_reference_labels_probes_and_scrape_annotations() -> None:
    dep = render_deployment(OWNER, validate_manifest(SAMPLE), 3)
    ref = dep["metadata"]["ownerReferences"][0]
    assert ref["uid"] == OWNER.uid and ref["controller"] is True and ref["kind"] == "SpeculativeDeployment"
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "specdeploy"
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8000"
    c = _container(dep)
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800


def test_user_settings_reach_the_pod() -> None:
    spec = validate_spec(
        {
            "target": {"model": "t", "tensorParallelSize": 2},
            "resources": {"gpus": 2, "gpuResourceName": "amd.com/gpu", "requests": {"cpu": "8", "memory": "64Gi"}},
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "hfTokenSecret": {"name": "hf", "key": "token"},
            "modelCache": {"type": "persistentVolumeClaim", "claimName": "models"},
            "podLabels": {"team": "a"},
            "service": {"type": "LoadBalancer", "port": 8080},
            "rollout": {"maxSurge": 0, "maxUnavailable": "50%"},
        }
    )
    dep = render_deployment(OWNER, spec, 0)
    pod, c = dep["spec"]["template"]["spec"], _container(dep)
    assert c["resources"]["requests"] == {"cpu": "8", "memory": "64Gi", "amd.com/gpu": "2"}
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in c["env"]
    assert pod["volumes"][0] == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "models"}}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "a"
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": "50%"}
    assert _arg(c["args"], "--port") == "8080"


def test_simulation_swaps_image_and_command_only() -> None:
    raw = {**SAMPLE["spec"], "simulation": {"enabled": True, "profile": {"t_mem_ms": 7}}}
    spec = validate_spec(raw)
    real, sim = (
        render_deployment(OWNER, validate_manifest(SAMPLE), 3),
        render_deployment(OWNER, spec, 3, Site(sim_image="img:1")),
    )
    assert _container(sim)["command"] == ["specdeploy", "sim-server"]
    assert _container(sim)["image"] == "img:1"
    assert _container(sim)["args"] == _container(real)["args"]
    assert "nvidia.com/gpu" not in _container(sim)["resources"]["limits"]


def test_a_spec_naming_no_image_gets_the_operators_and_one_naming_its_own_keeps_it() -> None:
    site = Site(vllm_image="registry.redhat.io/rhaiis/vllm-cuda-rhel9:3")
    assert _container(render_deployment(OWNER, validate_manifest(SAMPLE), 3))["image"] == "vllm/vllm-openai:v0.33.0"
    assert _container(render_deployment(OWNER, validate_manifest(SAMPLE), 3, site))["image"] == site.vllm_image
    own = validate_spec({**SAMPLE["spec"], "image": "example.com/vllm:mine"})
    assert _container(render_deployment(OWNER, own, 3, site))["image"] == "example.com/vllm:mine"


@pytest.mark.parametrize("sample", [p.name for p in SAMPLES])
def test_samples_render_what_was_reviewed(sample: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`specdeploy render` of each shipped sample is exactly the reviewed manifest in tests/fixtures/rendered.
    After an intended change: `specdeploy render -f manifests/samples/NAME > tests/fixtures/rendered/NAME`."""
    assert main(["render", "-f", str(ROOT / "manifests/samples" / sample)]) == 0
    assert capsys.readouterr().out == (ROOT / "tests/fixtures/rendered" / sample).read_text()


def test_rendering_leaves_the_spec_as_it_was() -> None:
    spec = validate_manifest(SAMPLE)
    before = spec.model_dump()
    dep = render_deployment(OWNER, spec, 3)
    _container(dep)["env"].append({"name": "X", "value": "y"})
    dep["spec"]["template"]["spec"].setdefault("tolerations", []).append({"key": "k"})
    assert spec.model_dump() == before
    assert render_deployment(OWNER, spec, 3) != dep


def test_a_policy_schedule_renders_as_vllm_per_batch_size_k_and_labels_the_pods() -> None:
    spec = validate_manifest(SAMPLE)
    dep = render_deployment(OWNER, spec, ((1, 3), (29, 2), (53, 1), (135, 0)))
    cfg = json.loads(_arg(_container(dep)["args"], "--speculative-config"))
    assert cfg["num_speculative_tokens"] == 3
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 28, 3], [29, 52, 2], [53, 134, 1], [135, 65536, 0]]
    assert set(cfg) <= set(FIELDS["user_fields"])
    assert dep["spec"]["template"]["metadata"]["labels"][LABEL_K] == "s3x1_2x29_1x53_0x135"
    assert dep["spec"]["template"]["metadata"]["labels"][LABEL_K] != render_deployment(OWNER, spec, 3)["spec"][
        "template"]["metadata"]["labels"][LABEL_K]  # fmt: skip


ARGO_TRACKING_LABEL = "app.kubernetes.io/instance"


@pytest.mark.parametrize("backend", ["Deployment", "KServe"])
def test_no_object_or_pod_carries_argo_cds_tracking_label(backend: str) -> None:
    """An Argo CD Application named like the resource would otherwise take them for its own, and prune them."""
    spec = validate_spec({**SAMPLE["spec"], "backend": backend})
    text = json.dumps(render_all(OWNER, spec, 3, Site(pod_monitors=True)))
    assert ARGO_TRACKING_LABEL not in text


def test_a_deployment_from_an_earlier_release_keeps_its_immutable_selector() -> None:
    legacy = {"app.kubernetes.io/name": "vllm", ARGO_TRACKING_LABEL: OWNER.name}
    dep = render_deployment(OWNER, validate_manifest(SAMPLE), 3, live_selector=legacy)
    assert dep["spec"]["selector"]["matchLabels"] == legacy
    assert legacy.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
