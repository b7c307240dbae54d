"""vLLM 0.33 itself (hack/vllm_judge.py in the venv hack/vllm-venv.sh builds) judges what the project renders and
what its simulator exports: its `vllm serve` parser and engine configuration take every rendered command, its
Prometheus logger lists the families the simulator must match, and the fixtures the unit tests use are its own."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdeploy.api import MAX_K, METHODS_WITH_SCHEDULE, Method, SpecError, validate_manifest, validate_spec
from specdeploy.core import render
from specdeploy.core.render import spec_k
from specdeploy.sim import server

from ..conftest import ROOT, SAMPLE

sys.path.insert(0, str(ROOT / "hack"))
import vllm_check

pytestmark = pytest.mark.vllm


def test_the_samples_and_one_resource_per_method_render_only_commands_vllm_accepts() -> None:
    named = vllm_check.resources(vllm_check.DEFAULT_RESOURCES)
    assert {spec.speculator.method for _, spec in named if spec.speculator and spec.speculator.method} == set(Method)
    items = vllm_check.containers(named)
    assert any("schedule" in i["name"] for i in items) and any(i["name"].endswith("k=0") for i in items)
    assert any(i["args"][0] == "/mnt/models" for i in items)  # the KServe backend's, as KServe composes it
    assert vllm_check.refusals(vllm_check.judge("commands", items)) == []


def test_a_wrong_flag_or_speculative_config_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    named = [("sample", validate_manifest(SAMPLE))]
    good = vllm_check.containers(named)[0]
    args, config = render.vllm_args, render.speculative_config

    def with_flag(spec: Any, k: Any) -> list[str]:
        return [*args(spec, k), "--num-speculative-tokens", "3"]  # a flag vLLM 0.33 does not have

    monkeypatch.setattr(render, "vllm_args", with_flag)
    flag = {**vllm_check.containers(named)[0], "name": "wrong flag"}
    monkeypatch.setattr(render, "vllm_args", args)

    def with_key(spec: Any, k: Any) -> dict[str, Any] | None:
        cfg = config(spec, k)
        return cfg and {**cfg, "num_spec_tokens": 3}  # SpeculativeConfig's field is num_speculative_tokens

    monkeypatch.setattr(render, "speculative_config", with_key)
    key = {**vllm_check.containers(named)[0], "name": "wrong key"}

    verdicts = {v["name"]: v for v in vllm_check.judge("commands", [good, flag, key])}
    assert verdicts[good["name"]]["ok"], verdicts
    assert not verdicts["wrong flag"]["ok"] and "--num-speculative-tokens" in verdicts["wrong flag"]["error"]
    assert not verdicts["wrong key"]["ok"] and "num_spec_tokens" in verdicts["wrong key"]["error"]


def test_the_simulator_exports_vllm_families_and_a_wrong_label_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    assert vllm_check.simulator_differences() == []

    def mislabelled(self: server.Metrics, family: Any, *metrics: tuple[str, str, float]) -> Any:
        for name, doc, value in metrics:
            m = family(name, doc, labels=["model", "engine"])  # vLLM says model_name
            m.add_metric(self.labels, value)
            yield m

    monkeypatch.setattr(server.Metrics, "_scalars", mislabelled)
    assert "vllm:num_requests_running: labels ['engine', 'model'] where vLLM has ['engine', 'model_name']" in (
        vllm_check.simulator_differences()
    )


def test_the_fixtures_the_unit_tests_read_are_what_vllm_generates() -> None:
    stale = [
        name
        for name, doc in vllm_check.fixtures().items()
        if json.loads((vllm_check.FIXTURES / name).read_text()) != json.loads(json.dumps(doc))
    ]
    assert stale == [], "regenerate with: hack/vllm-check.sh --fixtures"


LLAMA, QWEN = "meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen3-8B"
PAIRS = {  # method -> target and speculator model, from the models hack/vllm/hf-configs.json holds
    Method.DRAFT_MODEL: (LLAMA, "meta-llama/Llama-3.2-1B-Instruct"),
    Method.EAGLE: (LLAMA, "yuhuili/EAGLE-LLaMA3.1-Instruct-8B"),
    Method.EAGLE3: (LLAMA, "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3"),
    Method.DFLASH: (QWEN, "RedHatAI/Qwen3-8B-speculator.dflash"),
    Method.MTP: ("deepseek-ai/DeepSeek-V3", None),
    Method.NGRAM: (LLAMA, None),
    Method.NGRAM_GPU: (LLAMA, None),
    Method.SUFFIX: (LLAMA, None),
    Method.DSPARK: (QWEN, None),
}
small = st.none() | st.integers(1, 8)


@st.composite
def raw_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec as a user might write one: any method, k, window, schedule, range, context and GPU count."""
    method = draw(st.sampled_from(sorted(PAIRS)))
    target, model = PAIRS[method]
    speculator: dict[str, Any] = {"method": method.value, "numSpeculativeTokens": draw(st.integers(1, MAX_K))}
    if model:
        speculator["model"] = model
    if method in (Method.NGRAM, Method.NGRAM_GPU):
        speculator |= {k: v for k, v in (("promptLookupMin", draw(small)), ("promptLookupMax", draw(small))) if v}
    if method in METHODS_WITH_SCHEDULE and draw(st.booleans()):
        firsts = [1, *sorted(draw(st.sets(st.integers(2, 256), max_size=3)))]
        ends = [f - 1 for f in firsts[1:]] + [512]
        n = len(firsts)
        ks = draw(st.lists(st.integers(0, speculator["numSpeculativeTokens"]), min_size=n, max_size=n))
        bands = zip(firsts, ends, ks, strict=True)
        speculator["schedule"] = [
            {"minBatchSize": a, "maxBatchSize": b, "numSpeculativeTokens": k} for a, b, k in bands
        ]
    lo = draw(st.integers(1, MAX_K))
    return {
        "target": {"model": target, "maxModelLen": draw(st.sampled_from([None, 2048, 8192, 32768]))},
        "speculator": speculator,
        "resources": {"gpus": draw(st.sampled_from([1, 2, 4, 8]))},
        "adaptive": {"minTokens": lo, "maxTokens": draw(st.integers(lo, MAX_K)), "allowDisable": draw(st.booleans())},
    }


def own_and_largest(spec: Any) -> list[Any]:
    """The spec's setting and the largest k the operator may choose for it (the full range costs minutes)."""
    return [spec_k(spec), spec.adaptive.max_tokens]


def test_every_spec_validation_accepts_renders_commands_vllm_accepts() -> None:
    """Hypothesis writes specs (validation must refuse field by field, never with a traceback); every one it
    accepts is rendered, and the batch is judged in one vLLM process (a process per example would cost 10 s)."""
    accepted: dict[str, tuple[dict[str, Any], Any]] = {}

    # The same examples every run unless SPECDEPLOY_EXPLORE is set: then new ones each time.
    @settings(
        max_examples=60, derandomize="SPECDEPLOY_EXPLORE" not in os.environ, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(raw_specs())
    def validate(raw: dict[str, Any]) -> None:
        try:
            spec = validate_spec(raw)
        except SpecError as exc:
            assert exc.problems and all(str(p).startswith("spec.") for p in exc.problems), exc.problems
            return
        accepted[json.dumps(raw, sort_keys=True)] = (raw, spec)

    validate()
    named = [(f"generated-{i}", spec) for i, (_, spec) in enumerate(accepted.values())]
    raws = {f"generated-{i}": raw for i, (raw, _) in enumerate(accepted.values())}
    items = vllm_check.containers(named, own_and_largest)
    print(f"{len(named)} generated specs accepted; {len(items)} commands judged")
    assert len(named) >= 30, "the generator should mostly write valid specs"
    refused = vllm_check.refusals(vllm_check.judge("commands", items))
    assert refused == [], "\n".join(f"{r}\n  spec: {raws[r.split()[0]]}" for r in refused)
