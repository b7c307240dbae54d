"""The SpeculativeDeployment API: what is accepted, the defaults, and the exact error for bad input."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from specdeploy.api import REMOVED_PROMETHEUS, AdaptiveMode, Method, SpecError, validate_manifest, validate_spec
from specdeploy.core.render import vllm_args

from ..conftest import ROOT, SAMPLE


def spec_of(**overrides: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec.update(overrides)
    return spec


def test_sample_is_accepted_as_written() -> None:
    spec = validate_manifest(SAMPLE)
    assert spec.target.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert spec.speculator is not None
    assert spec.speculator.method == "eagle3"
    assert spec.speculator.num_speculative_tokens == 3
    assert spec.adaptive.mode == "Auto"
    assert (spec.adaptive.min_tokens, spec.adaptive.max_tokens) == (1, 6)


def test_defaults() -> None:
    spec = validate_spec({"target": {"model": "m"}})
    assert spec.speculator is None
    assert spec.replicas == 1
    assert spec.image is None  # the operator's --vllm-image
    assert spec.resources.gpus == 1 and spec.resources.gpu_resource_name == "nvidia.com/gpu"
    assert spec.service.port == 8000 and spec.service.type == "ClusterIP"
    assert spec.rollout.max_surge == 1 and spec.rollout.max_unavailable == 0
    assert spec.adaptive.mode == AdaptiveMode.OFF
    assert spec.adaptive.max_restarts_per_hour == 2
    assert spec.model_cache.type == "emptyDir"
    assert spec.shm_size == "8Gi"
    assert not spec.simulation.enabled


METHOD_SPECS = {
    Method.DRAFT_MODEL: {"method": "draft_model", "model": "meta-llama/Llama-3.2-1B-Instruct"},
    Method.EAGLE: {"method": "eagle", "model": "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"},
    Method.EAGLE3: {"method": "eagle3", "model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
    Method.MTP: {"method": "mtp"},
    Method.NGRAM: {"method": "ngram", "promptLookupMin": 2, "promptLookupMax": 5},
    Method.NGRAM_GPU: {"method": "ngram_gpu", "promptLookupMax": 4},
    Method.SUFFIX: {"method": "suffix"},
    Method.DFLASH: {"method": "dflash", "model": "RedHatAI/Qwen3-8B-speculator.dflash"},
    Method.DSPARK: {"method": "dspark"},
}


@pytest.mark.parametrize("method", list(Method))
def test_every_vllm_method_is_accepted(method: Method) -> None:
    spec = validate_spec({"target": {"model": "t"}, "speculator": {**METHOD_SPECS[method], "numSpeculativeTokens": 4}})
    assert spec.speculator is not None and spec.speculator.method == method.value


def test_speculators_short_form() -> None:
    spec = validate_spec(
        {
            "speculator": {"model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"},
            "adaptive": {"mode": "Recommend"},
        }
    )
    assert spec.short_form
    assert spec.served_model_name == "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"


def test_gpus_give_tensor_parallelism_when_it_is_not_written() -> None:
    short = {"speculator": {"model": "RedHatAI/Llama-3.3-70B-Instruct-speculator.eagle3"}, "resources": {"gpus": 2}}
    spec = validate_spec(short)
    assert spec.tensor_parallel_size == 2
    args = vllm_args(spec, None)
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert validate_spec({"target": {"model": "m"}, "resources": {"gpus": 0}}).tensor_parallel_size == 1
    with pytest.raises(SpecError) as exc:  # written, and contradicted: refused
        validate_spec({**short, "target": {"tensorParallelSize": 1}})
    assert [str(p) for p in exc.value.problems] == [
        "spec.resources.gpus: must equal target.tensorParallelSize (1) (got 2)"
    ]


def test_pod_fields_are_held_to_the_kubernetes_types_and_quantities_may_be_numbers() -> None:
    raw = {
        "target": {"model": "m"},
        "tolerations": [{"operatr": "Exists"}],
        "env": [{"name": "A", "valu": "b"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": "h100"}]}]}}},
        "podSecurityContext": {"runAsUser": "1000"},
    }  # fmt: skip
    with pytest.raises(SpecError) as exc:
        validate_spec(raw)
    terms = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
    assert [str(p) for p in exc.value.problems] == [
        "spec.tolerations[0].operatr: unknown field; did you mean operator? known fields: effect, key, operator, "
        "tolerationSeconds, value",
        "spec.env[0].valu: unknown field; did you mean value? known fields: name, value, valueFrom",
        f"{terms}.matchExpressions[0].values: must be a list",
        "spec.podSecurityContext.runAsUser: must be an integer (got '1000')",
    ]
    fine = validate_spec({"target": {"model": "m"}, "tolerations": [{"operator": "Exists"}],
                          "resources": {"requests": {"cpu": 4, "memory": "8Gi"}, "limits": {"cpu": 4.5}}})  # fmt: skip
    assert fine.resources.requests == {"cpu": "4", "memory": "8Gi"} and fine.resources.limits == {"cpu": "4.5"}


def test_speculators_long_form() -> None:
    spec = validate_spec(
        {
            "target": {"model": "RedHatAI/Llama-3.1-8B-Instruct-FP8-dynamic"},
            "speculator": {
                "method": "eagle3",
                "model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
                "numSpeculativeTokens": 5,
            },
            "adaptive": {"mode": "Auto"},
        }
    )
    assert not spec.short_form


def test_schedule_and_passthrough() -> None:
    spec = validate_spec(
        {
            "target": {"model": "t"},
            "speculator": {
                **METHOD_SPECS[Method.EAGLE3],
                "numSpeculativeTokens": 4,
                "schedule": [
                    {"minBatchSize": 1, "maxBatchSize": 8, "numSpeculativeTokens": 4},
                    {"minBatchSize": 9, "maxBatchSize": 256, "numSpeculativeTokens": 0},
                ],
                "extraConfig": {"draft_sample_method": "probabilistic"},
            },
            "extraArgs": ["--enable-prefix-caching"],
        }
    )
    assert spec.speculator is not None and len(spec.speculator.schedule) == 2


SP = {"method": "eagle3", "model": "d", "numSpeculativeTokens": 3}
AUTO = {"mode": "Auto"}

INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "k zero",
        {"target": {"model": "t"}, "speculator": {**SP, "numSpeculativeTokens": 0}},
        "spec.speculator.numSpeculativeTokens: must be greater than or equal to 1 (got 0)",
    ),
    (
        "unknown method",
        {"target": {"model": "t"}, "speculator": {**SP, "method": "eagle4"}},
        "spec.speculator.method: must be 'draft_model', 'eagle', 'eagle3', 'mtp', 'ngram', 'ngram_gpu', "
        "'suffix', 'dflash' or 'dspark' (got 'eagle4')",
    ),
    (
        "typo in a field name",
        {"target": {"model": "t", "tensorParalelSize": 2}},
        "spec.target.tensorParalelSize: unknown field; did you mean tensorParallelSize? known fields: "
        "maxModelLen, model, quantization, revision, servedModelName, tensorParallelSize",
    ),
    (
        "eagle3 without a drafter",
        {"target": {"model": "t"}, "speculator": {"method": "eagle3", "numSpeculativeTokens": 3}},
        "spec.speculator.model: method eagle3 needs a draft model (a Hugging Face id or path)",
    ),
    (
        "draft_model without a drafter",
        {"target": {"model": "t"}, "speculator": {"method": "draft_model", "numSpeculativeTokens": 3}},
        "spec.speculator.model: method draft_model needs a draft model (a Hugging Face id or path)",
    ),
    (
        "ngram with a model",
        {"target": {"model": "t"}, "speculator": {"method": "ngram", "model": "x", "numSpeculativeTokens": 3}},
        "spec.speculator.model: method ngram drafts from the prompt and takes no model; remove it",
    ),
    (
        "ngram window reversed",
        {
            "target": {"model": "t"},
            "speculator": {"method": "ngram", "numSpeculativeTokens": 3, "promptLookupMin": 6, "promptLookupMax": 4},
        },
        "spec.speculator.promptLookupMin: must be <= promptLookupMax (4) (got 6)",
    ),
    (
        "draft TP neither 1 nor target TP",
        {
            "target": {"model": "t", "tensorParallelSize": 4},
            "resources": {"gpus": 4},
            "speculator": {**SP, "draftTensorParallelSize": 2},
        },
        "spec.speculator.draftTensorParallelSize: must be 1 or the target's tensor parallel size (4) (got 2)",
    ),
    (
        "k missing in the long form",
        {"target": {"model": "t"}, "speculator": {"method": "eagle3", "model": "d"}},
        "spec.speculator.numSpeculativeTokens: required field is missing; an integer >= 1",
    ),
    (
        "k in the short form",
        {"speculator": {"model": "s", "numSpeculativeTokens": 3}},
        "spec.speculator.numSpeculativeTokens: not allowed in the speculators short form (vLLM takes k from the "
        "checkpoint); set target.model to use the long form with an explicit k",
    ),
    (
        "Auto in the short form",
        {"speculator": {"model": "s"}, "adaptive": AUTO},
        "spec.adaptive.mode: Auto needs the long form (target.model, speculator.method and numSpeculativeTokens) "
        "because k is fixed by the checkpoint in the short form; use Off or Recommend",
    ),
    (
        "no model at all",
        {},
        "spec.target.model: required field is missing (or give speculator.model alone: the speculators short form)",
    ),
    (
        "a resource naming its own Prometheus (removed: the operator's installer chooses)",
        {"target": {"model": "t"}, "speculator": SP, "adaptive": {"mode": "Auto", "prometheus": {"url": "http://x"}}},
        "spec.adaptive.prometheus: " + REMOVED_PROMETHEUS,
    ),
    (
        "bad adaptive mode",
        {"target": {"model": "t"}, "adaptive": {"mode": "auto"}},
        "spec.adaptive.mode: must be 'Off', 'Recommend' or 'Auto' (got 'auto')",
    ),
    (
        "unquoted Off, as YAML 1.1 reads it",
        {"target": {"model": "t"}, **yaml.safe_load("adaptive: {mode: Off}")},
        "spec.adaptive.mode: must be 'Off', 'Recommend' or 'Auto' (got False); YAML reads an unquoted Off as false: "
        'quote it ("Off")',
    ),
    (
        "min above max",
        {"target": {"model": "t"}, "speculator": SP, "adaptive": {**AUTO, "minTokens": 5, "maxTokens": 2}},
        "spec.adaptive.minTokens: must be <= adaptive.maxTokens (2) (got 5)",
    ),
    (
        "k outside the adaptive bounds",
        {
            "target": {"model": "t"},
            "speculator": {**SP, "numSpeculativeTokens": 7},
            "adaptive": {**AUTO, "maxTokens": 6},
        },
        "spec.speculator.numSpeculativeTokens: must lie within adaptive.minTokens..maxTokens (1..6) when "
        "adaptive.mode is Auto (got 7)",
    ),
    (
        "schedule k above k",
        {
            "target": {"model": "t"},
            "speculator": {**SP, "schedule": [{"minBatchSize": 1, "maxBatchSize": 8, "numSpeculativeTokens": 5}]},
        },
        "spec.speculator.schedule[0].numSpeculativeTokens: must be <= speculator.numSpeculativeTokens (3) (got 5)",
    ),
    (
        "schedule on ngram",
        {
            "target": {"model": "t"},
            "speculator": {
                "method": "ngram",
                "numSpeculativeTokens": 3,
                "schedule": [{"minBatchSize": 1, "maxBatchSize": 8, "numSpeculativeTokens": 2}],
            },
        },
        "spec.speculator.schedule: only for eagle, eagle3 and dflash, not ngram",
    ),
    (
        "pass-through clashes with a typed field",
        {"target": {"model": "t"}, "speculator": {**SP, "extraConfig": {"num_speculative_tokens": 9}}},
        "spec.speculator.extraConfig: keys num_speculative_tokens are set by the typed fields; set them there instead",
    ),
    (
        "PVC cache without a claim",
        {"target": {"model": "t"}, "modelCache": {"type": "persistentVolumeClaim"}},
        "spec.modelCache.claimName: required when modelCache.type is persistentVolumeClaim",
    ),
    (
        "GPUs do not match TP",
        {"target": {"model": "t", "tensorParallelSize": 2}, "resources": {"gpus": 1}},
        "spec.resources.gpus: must equal target.tensorParallelSize (2) (got 1)",
    ),
    (
        "rollout that cannot progress",
        {"target": {"model": "t"}, "rollout": {"maxSurge": 0, "maxUnavailable": 0}},
        "spec.rollout.maxUnavailable: maxSurge and maxUnavailable cannot both be 0",
    ),
    (
        "negative replicas",
        {"target": {"model": "t"}, "replicas": -1},
        "spec.replicas: must be greater than or equal to 0 (got -1)",
    ),
    (
        "bad quantity",
        {"target": {"model": "t"}, "shmSize": "lots"},
        "spec.shmSize: String should match pattern '^[0-9]+(\\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|E|Ei)?$' "
        "(got 'lots')",
    ),
    (
        "a URL where an endpoint's name goes",
        {"target": {"model": "t"}, "speculator": SP, "adaptive": {"mode": "Recommend", "metricsEndpoint": "http://x"}},
        "spec.adaptive.metricsEndpoint: must name one of the operator's metrics endpoints (a DNS label such as "
        "cluster), not a URL (got 'http://x')",
    ),
]


@pytest.mark.parametrize(("raw", "message"), [(r, m) for _, r, m in INVALID], ids=[n for n, _, _ in INVALID])
def test_invalid_spec_is_rejected_with_exact_message(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_spec(raw)
    assert [str(p) for p in info.value.problems] == [message]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as info:
        validate_spec({"target": {"model": "t"}, "replicas": -1, "speculator": {**SP, "numSpeculativeTokens": 0}})
    assert len(info.value.problems) == 2


def test_manifest_envelope_is_checked() -> None:
    with pytest.raises(SpecError) as info:
        validate_manifest({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": SAMPLE["spec"]})
    assert [str(p) for p in info.value.problems] == [
        "apiVersion: must be specdeploy.io/v1alpha1 (got 'v1')",
        "kind: must be SpeculativeDeployment (got 'Pod')",
        "metadata.name: required field is missing",
    ]


def test_the_readme_example_is_the_sample_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert example == (ROOT / "manifests/samples/llama-8b.yaml").read_text()


@pytest.mark.parametrize(("path", "value"), [(("replicas",), True), (("replicas",), 2.0), (("replicas",), "2"),
                                             (("rollout", "maxUnavailable"), False)])  # fmt: skip
def test_types_are_checked_as_strictly_as_the_api_server_does(path: tuple[str, ...], value: object) -> None:
    """A boolean, 2.0 or "2" is no integer to the API server's schema, so validation must not coerce it."""
    raw = copy.deepcopy(SAMPLE["spec"])
    parent = raw
    for key in path[:-1]:
        parent = parent.setdefault(key, {})
    parent[path[-1]] = value
    with pytest.raises(SpecError) as exc:
        validate_spec(raw)
    assert exc.value.problems[0].path.startswith("spec." + ".".join(path))
