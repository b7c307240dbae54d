"""The trace format of ``specdeploy simulate``: a load (and acceptance) over time, the world it runs in, and the
deployment's rollout and adaptive settings.

Trace format (YAML or JSON)::

    step_seconds: 30          # one point per step
    profile: {}               # the world: optional Profile overrides (specdeploy.core.model.Profile); its batch
                              # cap is the deployment's (--max-num-seqs, else vLLM's default for the GPU) unless set
    deployment: {}            # what the spec says: {model, tensorParallelSize, gpu, modelParamsBillions, extraArgs};
                              # the policy starts from the prior the operator picks from it (core/prior.py), never
                              # the world
    replicas: 2
    restart_seconds: 120
    max_surge: 1              # optional, rollout strategy (defaults as in the API)
    max_unavailable: 0
    adaptive: {}              # optional spec.adaptive overrides for the policy (camelCase as in the CRD)
    start_k: 3                # the k the deployment starts with (the user's numSpeculativeTokens)
    schedules: true           # the method can run vLLM's per-batch-size k (eagle, eagle3, dflash): default true
    window_noise: arrivals    # how a window's figures are noisy: arrivals (as in a cluster: the batch and step
                              # time follow the load the window counted, as far as its extra arrivals carry the
                              # batch) or counts (only the counters are noisy)
    points:
      - {qps: 0.5, acceptance: [0.82, 0.64, 0.49, 0.37, 0.27, 0.19, 0.13, 0.09]}
      - {qps: 6.0, acceptance: [...], prompt_tokens: 512, output_tokens: 256}

``qps`` is the total offered load; ``acceptance[i-1]`` is the chance that the first i drafted tokens are all
accepted (vLLM's per-position counter / drafts). A point without ``acceptance`` keeps the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from ..api import Adaptive
from ..core.model import Profile
from ..core.policy import Rollout
from ..core.prior import prior_profile

DEFAULT_ADAPTIVE = {"mode": "Auto"}
WindowNoise = Literal["arrivals", "counts"]  # how a window's figures are noisy (simulate.observe)
WINDOW_NOISES: tuple[WindowNoise, ...] = get_args(WindowNoise)


@dataclass(frozen=True)
class Point:
    qps: float
    acceptance: tuple[float, ...]
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Trace:
    name: str
    step_seconds: float
    profile: Profile
    rollout: Rollout
    adaptive: Adaptive
    points: tuple[Point, ...]
    start_k: int = 3
    schedules: bool = True  # the deployment can run vLLM's per-batch-size k (eagle, eagle3, dflash; no data parallel)
    prior: Profile = field(default_factory=Profile)  # what the operator plans with before measuring; never the world
    window_noise: WindowNoise = "arrivals"

    @property
    def candidates(self) -> list[int]:
        return [0, *range(self.adaptive.min_tokens, self.adaptive.max_tokens + 1)]


DEPLOYMENT_KEYS = {"model", "tensorParallelSize", "gpu", "modelParamsBillions", "extraArgs"}


def prior_of_deployment(raw: dict[str, Any]) -> Profile:
    """The prior the operator would pick for a spec with these fields (the default 8B on an H100 otherwise)."""
    unknown = sorted(set(raw) - DEPLOYMENT_KEYS)
    if unknown:
        raise ValueError(f"deployment: unknown keys {unknown}; known: {sorted(DEPLOYMENT_KEYS)}")
    model = raw.get("model", "meta-llama/Llama-3.1-8B-Instruct")
    args = [str(a) for a in raw.get("extraArgs", [])]
    return prior_profile(
        model, int(raw.get("tensorParallelSize", 1)), raw.get("gpu"), raw.get("modelParamsBillions"), args
    )


def with_start(trace: Trace, k: int) -> Trace:
    """The same trace started from another setting (0 = off)."""
    return replace(trace, start_k=k, name=trace.name)


def load_trace(path: str | Path) -> Trace:
    raw = yaml.safe_load(Path(path).read_text())
    return parse_trace(raw, Path(path).stem)


def parse_trace(raw: dict[str, Any], name: str = "trace") -> Trace:
    if not isinstance(raw, dict) or not raw.get("points"):
        raise ValueError("a trace needs a non-empty `points` list")
    prior = prior_of_deployment(raw.get("deployment") or {})
    # The world runs the batch cap vLLM gives the spec (its arguments', else the GPU's default) unless it says.
    prof = Profile.from_dict({"max_num_seqs": prior.max_num_seqs, **(raw.get("profile") or {})})
    step = float(raw.get("step_seconds", 30))
    # The policy is evaluated once per trace step, on a window of that step.
    evaluation = {"evaluationIntervalSeconds": max(5, int(step)), "windowSeconds": max(30, int(step))}
    adaptive = Adaptive.model_validate({**DEFAULT_ADAPTIVE, **evaluation, **(raw.get("adaptive") or {})})
    replicas = int(raw.get("replicas", 1))
    rollout = Rollout(
        replicas=replicas,
        max_surge=int(raw.get("max_surge", 1)),
        max_unavailable=int(raw.get("max_unavailable", 0)),
        restart_seconds=float(raw.get("restart_seconds", adaptive.restart_seconds)),
    )
    points, acc = [], prof.acceptance
    for i, p in enumerate(raw["points"]):
        if "qps" not in p:
            raise ValueError(f"points[{i}]: qps is required")
        acc = tuple(float(x) for x in p.get("acceptance", acc))
        points.append(
            Point(
                float(p["qps"]),
                acc,
                int(p.get("prompt_tokens", prof.prompt_tokens)),
                int(p.get("output_tokens", prof.output_tokens)),
            )
        )
    start, schedules = int(raw.get("start_k", 3)), bool(raw.get("schedules", True))
    noise = raw.get("window_noise", "arrivals")
    if noise not in WINDOW_NOISES:
        raise ValueError(f"window_noise: {noise!r} is not one of {list(WINDOW_NOISES)}")
    return Trace(name, step, prof, rollout, adaptive, tuple(points), start, schedules, prior, cast(WindowNoise, noise))
