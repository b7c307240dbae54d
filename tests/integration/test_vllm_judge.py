"""vLLM 0.33 itself (hack/vllm_judge.py in the venv hack/vllm-venv.sh builds) judges what the project renders and
what its simulator exports: its `vllm serve` parser and engine configuration take every rendered command, its
Prometheus logger lists the families the simulator must match, and the fixtures the unit tests use are its own."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from specdeploy.api import Method, validate_manifest
from specdeploy.core import render
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
