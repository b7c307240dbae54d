"""The simulator's model, engine and /metrics, against the performance model and vLLM 0.33's metric list."""

from __future__ import annotations

import json
import sys

import pytest

from specdeploy.core.model import Profile, capacity_qps, extend_acceptance, steady_state, tokens_per_step
from specdeploy.sim.engine import Engine
from specdeploy.sim.server import draft_length, load_profile, parse_args

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import vllm_check

FIXTURE = json.loads((ROOT / "tests/fixtures/vllm_metrics.json").read_text())


def vllm_families(k: int) -> dict[str, object]:
    """vLLM 0.33's families (tests/fixtures/vllm_metrics.json, generated from vLLM), with or without speculation."""
    return {n: m for n, m in FIXTURE["metrics"].items() if k or n not in FIXTURE["only_with_speculation"]}


@pytest.mark.parametrize("k", [0, 3])
def test_metrics_match_vllm_names_types_labels_and_buckets(k: int) -> None:
    required = vllm_check.read_families() if k else set()
    assert vllm_check.metric_differences(vllm_families(k), vllm_check.simulator_families(k), required) == []


def test_a_wrong_family_type_label_bucket_or_value_is_a_difference() -> None:
    sim = vllm_check.simulator_families(3)
    wrong = {
        "vllm:num_requests_running": {**sim["vllm:num_requests_running"], "type": "counter"},
        "vllm:request_success": {**sim["vllm:request_success"], "labels": ["engine", "model", "finished_reason"]},
        "vllm:inter_token_latency_seconds": {**sim["vllm:inter_token_latency_seconds"], "buckets": [0.01, 1.0]},
        "vllm:spec_decode_num_accepted_tokens_per_pos": {
            **sim["vllm:spec_decode_num_accepted_tokens_per_pos"], "values": {"position": ["1", "2", "3"]}},
        "vllm:num_preemptions_total": {"type": "counter", "labels": ["engine", "model_name"], "values": {}},
    }  # fmt: skip
    sim.pop("vllm:generation_tokens")
    got = vllm_check.metric_differences(vllm_families(3), {**sim, **wrong}, vllm_check.read_families())
    assert got == [
        "vllm:inter_token_latency_seconds: buckets [0.01, 1.0] where vLLM has "
        f"{FIXTURE['metrics']['vllm:inter_token_latency_seconds']['buckets']}",
        "vllm:num_preemptions_total: the simulator exports it, vLLM does not",
        "vllm:num_requests_running: type counter where vLLM has gauge",
        "vllm:request_success: labels ['engine', 'model', 'finished_reason'] where vLLM has "
        "['engine', 'finished_reason', 'model_name']",
        "vllm:spec_decode_num_accepted_tokens_per_pos: position values ['1', '2', '3'] where vLLM has ['0', '1', '2']",
        "vllm:generation_tokens: the operator reads it, the simulator does not export it",
    ]


def test_engine_counters_follow_vllm_semantics() -> None:
    e = Engine(Profile(output_tokens=64), 4, seed=7)
    e.set_load(qps=30)
    e.run_for(60)
    c = e.c
    assert c.draft_tokens == 4 * c.drafts
    assert sum(c.per_pos) == c.accepted
    assert all(a >= b for a, b in zip(c.per_pos, c.per_pos[1:], strict=False))
    measured = [n / c.drafts for n in c.per_pos]
    assert measured == pytest.approx(list(Profile().acceptance[:4]), abs=0.02)
    assert c.success["length"] == pytest.approx(30 * 60, rel=0.1)


def test_engine_matches_the_steady_state_model() -> None:
    prof = Profile(output_tokens=64)
    e = Engine(prof, 3, seed=3)
    e.set_load(qps=40)
    e.run_for(30)
    itl_model = steady_state(prof, 40, 3).step_ms / 1000
    assert e.c.itl.total / e.c.itl.n == pytest.approx(itl_model, rel=0.15)


def test_model_speedup_and_crossover() -> None:
    p = Profile()
    low = steady_state(p, 0.5, 0).token_latency_ms / steady_state(p, 0.5, 3).token_latency_ms
    assert 1.5 <= low <= 2.5  # the published low-load speed-up of EAGLE-3 at k=3
    assert capacity_qps(p, 0, p.acceptance) > capacity_qps(p, 3, p.acceptance)  # speculation costs capacity
    best = [min(range(6), key=lambda k: steady_state(p, q, k).token_latency_ms) for q in (1, 20, 30, 40)]
    assert best == sorted(best, reverse=True) and best[0] > best[-1]  # the best k falls as load rises
    assert tokens_per_step([0.5, 0.25], 4) == pytest.approx(1 + 0.5 + 0.25 + 0.125 + 0.0625)
    assert extend_acceptance([], 2) == [0.0, 0.0]


def test_profile_rejects_unknown_keys_and_bad_acceptance() -> None:
    with pytest.raises(ValueError, match="unknown profile keys"):
        Profile.from_dict({"t_mem": 1})
    with pytest.raises(ValueError, match="non-increasing"):
        Profile.from_dict({"acceptance": [0.5, 0.7]})


def test_draft_length_from_the_command_line() -> None:
    assert draft_length("t", '{"method":"eagle3","num_speculative_tokens":4}') == (4, "eagle3")
    assert draft_length("RedHatAI/Qwen3-8B-speculator.eagle3", None) == (3, "speculators")
    assert draft_length("t", None) == (0, "none")


def test_the_batch_cap_the_pod_is_started_with_caps_the_simulated_batch_as_it_caps_vllms() -> None:
    """``--max-num-seqs`` in a spec's extra arguments reaches vLLM, and so the simulator, over its profile's."""
    args, ignored = parse_args(["m", "--sim-profile", '{"max_num_seqs": 64}', "--max-num-seqs", "8", "--enforce-eager"])
    assert ignored == ["--enforce-eager"] and load_profile(args.sim_profile).max_num_seqs == 64
    engine = Engine(load_profile(args.sim_profile, args.max_num_seqs), 3, seed=5)
    engine.set_load(qps=200.0)
    engine.run_for(5.0)
    assert len(engine.running) == 8 and engine.waiting


def test_a_schedule_from_the_command_line_drafts_the_k_of_each_batch_size() -> None:
    cfg = {
        "method": "eagle3",
        "num_speculative_tokens": 3,
        "num_speculative_tokens_per_batch_size": [[1, 7, 3], [8, 65536, 1]],
    }
    setting, method = draft_length("t", json.dumps(cfg))
    assert setting == ((1, 3), (8, 1)) and method == "eagle3"
    small, large = (Engine(Profile(output_tokens=32), setting, seed=5) for _ in range(2))
    small.set_load(qps=2.0)
    large.set_load(qps=200.0)
    small.run_for(20.0)
    large.run_for(20.0)
    # draft tokens per draft is the k of the batch: 3 when a few requests run, 1 when the batch is large
    assert small.c.draft_tokens / small.c.drafts == pytest.approx(3, abs=0.2)
    assert large.c.draft_tokens / large.c.drafts == pytest.approx(1, abs=0.2)
    assert len(large.c.per_pos) == 3  # positions up to num_speculative_tokens, as vLLM counts them


def test_the_simulator_can_be_told_which_settings_crash() -> None:
    from specdeploy.sim.server import fails_at_start

    assert fails_at_start("5", ["5", "3@1,1@24"]) and fails_at_start("3@1,1@24", ["5", "3@1,1@24"])
    assert not fails_at_start("3", ["5"]) and not fails_at_start("3", [])
    assert fails_at_start("0", ["!3"]) and fails_at_start("2@1,0@40", ["!3"]) and not fails_at_start("3", ["!3"])
