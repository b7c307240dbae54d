#!/usr/bin/env python3
"""Write the shipped traces (operator/specdeploy/offline/traces/*.yaml) used by `specdeploy simulate` and the benchmark,
or the same files into DIR (`hack/gen-traces.py [DIR]`; a test compares them with the shipped ones).

`hack/gen-traces.py DIR --unseen N --seed S` writes instead N worlds drawn at random, none of them shipped or tuned
against: a deployment the prior knows (model, GPU, tensor parallelism), a world whose every cost is that prior's
times a random factor, a random drafter and traffic. `hack/bench_policy.py --dir DIR` runs the policy on them: how
it does on deployments it has never seen.

Loads are totals over 2 replicas of the default profile (8B + EAGLE-3 on one H100-class GPU each): one replica
serves ~28 req/s without speculation and ~21 at k=3; speculation stops paying near 18-22 req/s per replica.
"""

import argparse
import math
import random
from dataclasses import asdict
from pathlib import Path

import yaml

from specdeploy.core.model import Profile, capacity_qps
from specdeploy.offline.trace import prior_of_deployment

OUT = Path(__file__).resolve().parent.parent / "operator" / "specdeploy" / "offline" / "traces"
BASE = [0.75, 0.55, 0.40, 0.29, 0.21, 0.15, 0.11, 0.08]
HEADER = {"step_seconds": 30, "replicas": 2, "restart_seconds": 120}
# The batch cap every trace's deployment sets unless it sets its own (the README's figures are measured at it);
# `--vllm-default-cap` sets none, so the worlds run vLLM's default for their GPU (1024 on an H100).
CAPPED = ["--max-num-seqs", "256"]


def capped(deployment: dict) -> dict:
    """The deployment with the batch cap :data:`CAPPED` set, unless it sets its own arguments."""
    return deployment if "extraArgs" in deployment or not CAPPED else {**deployment, "extraArgs": CAPPED}


def scaled(f: float) -> list[float]:
    return [round(min(1.0, x * f), 4) for x in BASE]


def write(
    out: Path,
    name: str,
    doc: str,
    qps: list[float],
    acceptance: list[list[float]] | None = None,
    world: dict | None = None,
    deployment: dict | None = None,
) -> None:
    """One trace; ``world`` is the Profile the simulation runs (the truth), ``deployment`` what the spec says (the
    policy starts from the prior the operator picks from it)."""
    points = []
    for i, q in enumerate(qps):
        p = {"qps": round(q, 3)}
        if acceptance is not None:
            p["acceptance"] = acceptance[i]
        elif i == 0 and not (world or {}).get("acceptance"):
            p["acceptance"] = BASE
        points.append(p)
    extra = {"profile": world} if world else {}
    extra |= {"deployment": capped(deployment or {})}
    doc_ = {**HEADER, **extra, "points": points}
    text = f"# {doc}\n" + yaml.safe_dump(doc_, sort_keys=False, default_flow_style=None)
    (out / f"{name}.yaml").write_text(text)


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    n = 240  # 2 hours at 30 s
    write(out, "steady_low", "Steady low load: speculation should stay on at a high k.", [4.0] * n)
    write(
        out,
        "steady_high",
        "Steady high load: k=3 cannot serve it; speculation off can, and k=1 serves it faster with little headroom.",
        [50.0] * n,
    )
    write(
        out,
        "diurnal",
        "Diurnal cycle compressed to 4 hours: low at night, peak past the crossover at noon.",
        [26 - 22 * math.cos(2 * math.pi * i / 480) for i in range(480)],
    )
    write(
        out,
        "bursty",
        "Low base load with 10-minute bursts past the crossover every 40 minutes.",
        [46.0 if (i % 80) in range(40, 60) else 8.0 for i in range(n)],
    )
    write(
        out,
        "acceptance_drift",
        "Moderate load while acceptance drifts down to half (the traffic changes): the best k falls.",
        [12.0] * n,
        [scaled(1.0 - 0.5 * i / (n - 1)) for i in range(n)],
    )
    write(
        out,
        "load_ramp",
        "Load ramps from 2 to 52 req/s over 2 hours, then holds for 30 minutes.",
        [2 + 50 * min(1.0, i / 240) for i in range(300)],
    )
    worlds(out)


def ramp(lo: float, hi: float, steps: int = 240, hold: int = 60) -> list[float]:
    return [lo + (hi - lo) * min(1.0, i / steps) for i in range(steps + hold)]


def worlds(out: Path) -> None:
    """Deployments the default prior does not describe: the policy has to learn them."""
    llama70b = {"t_mem_ms": 16.0, "t_kv_ms_per_ktok": 0.035, "n_knee": 320, "t_tok_ms": 0.26, "draft_cost": 0.05,
                "prefill_ms_per_ktok": 50, "output_tokens": 300, "prompt_tokens": 800,
                "acceptance": [0.78, 0.6, 0.46, 0.35, 0.26, 0.19, 0.14, 0.1]}  # fmt: skip
    write(out, "llama70b_tp4_ramp", "70B on 4 GPUs per replica, load ramping past what any k serves (off: 9.7 req/s "
          "per replica, k=1: 8.9, k=3: 7.3).", [2 * q for q in ramp(0.5, 9.3)], world=llama70b,
          deployment={"model": "meta-llama/Llama-3.1-70B-Instruct", "tensorParallelSize": 4})  # fmt: skip
    l4 = {"t_mem_ms": 58.0, "t_kv_ms_per_ktok": 0.5, "n_knee": 200, "t_tok_ms": 1.2, "draft_cost": 0.1,
          "max_num_seqs": 64, "prefill_ms_per_ktok": 190, "output_tokens": 200, "prompt_tokens": 400}  # fmt: skip
    write(out, "small_gpu_diurnal", "8B on an L4 (a tenth of an H100's bandwidth, 64 sequences): a diurnal cycle whose "
          "peak only k=1 serves (k=1: 3.0 req/s per replica, off: 2.7, k=3: 2.5).",
          [2 * (1.65 - 1.25 * math.cos(2 * math.pi * i / 480)) for i in range(480)], world=l4,
          deployment={"model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "L4",
                      "extraArgs": ["--max-num-seqs", "64"]})  # fmt: skip
    moe = {"t_mem_ms": 4.5, "t_kv_ms_per_ktok": 0.03, "n_knee": 48, "t_tok_ms": 0.33, "draft_cost": 0.12,
           "prefill_ms_per_ktok": 9, "acceptance": [0.7, 0.5, 0.35, 0.24, 0.16, 0.11, 0.07, 0.05]}  # fmt: skip
    write(out, "moe_bursty", "An MoE (30B, 3B active): a cheap memory-bound step and a steep compute slope; bursts to "
          "8.5 req/s per replica that k=1 serves (9.4) and k=3 does not (6.8).",
          [17.0 if (i % 80) in range(40, 60) else 4.0 for i in range(240)], world=moe,
          deployment={"model": "Qwen/Qwen3-30B-A3B"})  # fmt: skip
    write(out, "rag_prefill_ramp", "RAG prompts of 6000 tokens and short answers: prefill dominates, so speculation "
          "costs almost no capacity and speculation off saturates first (6.3 req/s per replica).",
          [2 * q for q in ramp(0.5, 6.2)], world={"prompt_tokens": 6000, "output_tokens": 120},
          deployment={"model": "meta-llama/Llama-3.1-8B-Instruct"})  # fmt: skip
    weak = {"draft_cost": 0.3, "acceptance": [0.45, 0.2, 0.09, 0.04, 0.02, 0.01, 0.005, 0.002]}
    write(out, "weak_drafter_ramp", "A weak, costly drafter (a small draft model, 45% first-token acceptance): k=1 "
          "pays at low load, off above ~12 req/s per replica.", [2 * q for q in ramp(1.0, 20.0)], world=weak,
          deployment={"model": "meta-llama/Llama-3.1-8B-Instruct"})  # fmt: skip


# Deployments an unseen world is drawn around: what the spec says, so the policy starts from the prior for it.
UNSEEN_DEPLOYMENTS = [
    {"model": "meta-llama/Llama-3.1-8B-Instruct"},
    {"model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "L4", "extraArgs": ["--max-num-seqs", "64"]},
    {"model": "meta-llama/Llama-3.1-8B-Instruct", "gpu": "A100"},
    {"model": "meta-llama/Llama-3.1-70B-Instruct", "tensorParallelSize": 4},
    {"model": "Qwen/Qwen3-30B-A3B"},
]
UNSEEN_COST_SPREAD = 2.0  # each of a world's costs is its prior's times up to this factor either way
UNSEEN_SHAPES = ("steady", "ramp", "diurnal", "bursty")


def unseen(out: Path, count: int, seed: int) -> None:
    """``count`` worlds drawn with ``seed`` (see the module's docstring). The load peaks between half and all of
    what one replica serves without speculation (so speculation off serves it), in one of four shapes."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        deployment = capped(rng.choice(UNSEEN_DEPLOYMENTS))
        prior = prior_of_deployment(deployment)

        def spread(x: float) -> float:
            return x * UNSEEN_COST_SPREAD ** rng.uniform(-1, 1)

        first, decay = rng.uniform(0.45, 0.85), rng.uniform(0.55, 0.85)
        world = {"t_mem_ms": round(spread(prior.t_mem_ms), 3),
                 "t_kv_ms_per_ktok": round(spread(prior.t_kv_ms_per_ktok), 4),
                 "n_knee": max(16, round(spread(prior.n_knee))), "t_tok_ms": round(spread(prior.t_tok_ms), 4),
                 "draft_cost": round(spread(prior.draft_cost), 3), "max_num_seqs": prior.max_num_seqs,
                 "prefill_ms_per_ktok": round(spread(prior.prefill_ms_per_ktok), 2),
                 "prompt_tokens": rng.choice([200, 500, 1000, 2000, 4000]),
                 "output_tokens": rng.choice([100, 200, 300, 500]),
                 "acceptance": [round(first * decay**i, 4) for i in range(8)]}  # fmt: skip
        off = capacity_qps(Profile.from_dict({**asdict(prior), **world}), 0, [])
        peak, shape = rng.uniform(0.5, 1.0) * off, rng.choice(UNSEEN_SHAPES)
        qps = {
            "steady": [peak] * 240,
            "ramp": ramp(0.1 * peak, peak, 200, 40),
            "diurnal": [peak * (0.55 - 0.45 * math.cos(2 * math.pi * i / 480)) for i in range(480)],
            "bursty": [peak if (i % 80) in range(40, 60) else 0.2 * peak for i in range(240)],
        }[shape]
        write(out, f"unseen_{seed}_{n}_{shape}", f"Unseen world {n} of seed {seed}: {deployment['model']}, {shape} "
              f"to {peak:.2f} req/s per replica (off serves {off:.2f}).", [2 * q for q in qps], world=world,
              deployment=deployment)  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", type=Path, default=OUT)
    ap.add_argument("--unseen", type=int, help="write this many worlds drawn at random instead of the shipped traces")
    ap.add_argument("--seed", type=int, default=0, help="the draw (with --unseen)")
    ap.add_argument("--vllm-default-cap", action="store_true", help="deployments that set no batch cap: vLLM's own")
    args = ap.parse_args()
    if args.vllm_default_cap:
        CAPPED = []
    if args.unseen:
        unseen(args.dir, args.unseen, args.seed)
    else:
        main(args.dir)
