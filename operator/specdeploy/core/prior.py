"""The performance model the policy starts from, before it has measured anything: a guess from the spec (pure).

The default :class:`~.model.Profile` describes an 8B model with an EAGLE-3 head on one H100-class GPU. Other
deployments are scaled from it by roofline arithmetic:

* the memory-bound step (weights read once per step) grows with the model's parameters per GPU and shrinks with
  the GPU's memory bandwidth; tensor parallelism adds an all-reduce per step;
* compute per token past the knee and prefill grow with the *active* parameters per GPU (an MoE such as
  ``Qwen3-30B-A3B`` reads 30B of weights but computes with 3B) and shrink with the GPU's dense FLOPS;
* the knee (tokens per step where compute starts to dominate) follows the GPU's FLOPS per byte of bandwidth,
  and the cheaper compute of an MoE moves it up;
* KV-cache reads grow with the square root of the parameters (layers x KV width) per GPU.

Parameters come from the model name (``8B``, ``70B``, ``30B-A3B``) unless ``adaptive.prior.modelParamsBillions``
says; the GPU from ``adaptive.prior.gpu``, else from the product label NVIDIA's GPU feature discovery or AMD's node
labeller puts on the pods' nodes (:func:`gpu_of_products`), else H100-class. It is only a start: :mod:`.learn`
replaces what the deployment's own metrics measure, so a wrong guess costs the first windows, not the deployment.
Figures measured elsewhere (``adaptive.prior.profile``) replace the estimate where given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ..api import GpuType, SpeculativeDeploymentSpec
from .model import Profile

REFERENCE_PARAMS_B = 8.0  # the default profile's model


@dataclass(frozen=True)
class Gpu:
    bandwidth_tbs: float  # HBM/GDDR bandwidth, TB/s
    dense_tflops: float  # BF16 dense tensor throughput
    memory_gb: float  # device memory: vLLM's default batch cap follows it (:func:`batch_cap_default`)


GPUS = {
    GpuType.H100: Gpu(3.35, 989.0, 80),
    GpuType.H200: Gpu(4.8, 989.0, 141),
    GpuType.B200: Gpu(8.0, 2250.0, 180),
    GpuType.A100: Gpu(2.0, 312.0, 80),
    GpuType.L40S: Gpu(0.864, 362.0, 48),
    GpuType.A10G: Gpu(0.6, 125.0, 24),
    GpuType.L4: Gpu(0.3, 121.0, 24),
    GpuType.MI300X: Gpu(5.3, 1307.0, 192),
}
REFERENCE_GPU = GpuType.H100
ALL_REDUCE_MS = 0.4  # per step and tensor-parallel group beyond one GPU (NVLink-class): small next to the step

_PARAMS = re.compile(r"(?<![\w.])(?:(\d+)x)?(\d+(?:\.\d+)?)[bB](?:-[aA](\d+(?:\.\d+)?)[bB])?(?![a-zA-Z])")
MIXTURE_ACTIVE_EXPERTS = 2  # an "NxMB" mixture routes each token through this many experts (Mixtral)


def params_of(model: str | None) -> tuple[float, float] | None:
    """(total, active) parameters in billions from a model id such as ``meta-llama/Llama-3.1-70B-Instruct`` or
    ``Qwen/Qwen3-30B-A3B``; None when the name does not say."""
    if not model:
        return None
    found = _PARAMS.findall(model.rsplit("/", 1)[-1].replace("_", "-"))
    if not found:
        return None
    experts, size, active = found[-1]
    if experts:
        return int(experts) * float(size), MIXTURE_ACTIVE_EXPERTS * float(size)
    return float(size), float(active or size)


# The node labels that name the GPU's product: NVIDIA's GPU feature discovery (part of the GPU operator, so of
# OpenShift AI's GPU nodes: NVIDIA-H100-80GB-HBM3, NVIDIA-L4, NVIDIA-A100-SXM4-40GB-MIG-1g.5gb) and AMD's node
# labeller (AMD_Instinct_MI300X_OAM).
GPU_PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")
# A product sliced by MIG or shared by time-slicing gives a pod a part of the GPU, which the card's figures overstate.
GPU_SLICED = ("MIG", "SHARED")


def gpu_of_products(products: Iterable[str | None]) -> GpuType | None:
    """The GPU class the pods run on, from their nodes' product labels: the class each names, if they all name
    the same whole GPU; None when a node has no label, a GPU this module has no card for, a slice of one, or the
    pods run on several classes (an unknown is better than a wrong card: the prior then stays what the spec says)."""
    classes = set()
    for product in products:
        parts = set((product or "").upper().replace("_", "-").split("-"))
        named = [gpu for gpu in GpuType if gpu.value in parts]
        if len(named) != 1 or parts & set(GPU_SLICED):
            return None
        classes.add(named[0])
    return classes.pop() if len(classes) == 1 else None


def prior_of_spec(spec: SpeculativeDeploymentSpec, seen: str | None = None) -> Profile:
    """The prior the spec suggests: its target model (or the speculators checkpoint), tensor parallelism and the
    hints in ``adaptive.prior``; the GPU class the pods were ``seen`` on where the spec names none."""
    model = spec.target.model or (spec.speculator.model if spec.speculator else None)
    hint = spec.adaptive.prior
    gpu = hint.gpu or seen
    estimate = prior_profile(model, spec.tensor_parallel_size, gpu, hint.model_params_billions, spec.extra_args)
    measured = hint.profile.model_dump(exclude_none=True)
    if {"n_knee", "t_tok_ms"} & set(measured):  # a benchmark's compute figures are known at every batch
        measured["known_tokens_per_step"] = math.inf
    return replace(estimate, **measured)


def batch_cap(args: Sequence[str]) -> int | None:
    """The batch cap the pods run with, from ``--max-num-seqs N`` (or ``=N``) in the extra ``vllm serve``
    arguments; None when they leave vLLM's default. A replica's capacity is its throughput at this batch."""
    found = _flag(args, "--max-num-seqs")
    return int(found) if found is not None and found.isdigit() and int(found) > 0 else None


def _flag(args: Sequence[str], name: str) -> str | None:
    """The value of the last ``name V`` or ``name=V`` in a command line (as argparse takes it), or None."""
    found = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith(f"{name}="):
            found = arg.split("=", 1)[1]
    return found


# vLLM 0.33's batch cap where the arguments set none (``EngineArgs.get_batch_defaults``, for the API server): the
# large cap on a GPU of LARGE_GPU_GB or more but an A100 (throughput at large batches, where their memory holds the
# KV cache), the small one elsewhere; ``--performance-mode throughput`` doubles it.
LARGE_GPU_GB, LARGE_GPU_BATCH_CAP, SMALL_GPU_BATCH_CAP = 70, 1024, 256
THROUGHPUT_MODE = "throughput"


def batch_cap_default(gpu: GpuType, args: Sequence[str] = ()) -> int:
    """The batch cap vLLM 0.33 gives pods on ``gpu`` whose arguments set no ``--max-num-seqs``."""
    large = GPUS[gpu].memory_gb >= LARGE_GPU_GB and gpu != GpuType.A100
    cap = LARGE_GPU_BATCH_CAP if large else SMALL_GPU_BATCH_CAP
    return cap * 2 if _flag(args, "--performance-mode") == THROUGHPUT_MODE else cap


def prior_profile(
    model: str | None,
    tensor_parallel: int = 1,
    gpu: str | None = None,
    params_b: float | None = None,
    extra_args: Sequence[str] = (),
) -> Profile:
    """The default profile scaled to this model, tensor parallelism and GPU, with the batch cap ``extra_args``
    set (:func:`batch_cap`), else vLLM's for the GPU (:func:`batch_cap_default`)."""
    ref, base = GPUS[REFERENCE_GPU], Profile()
    gpu_type = GpuType(gpu) if gpu else REFERENCE_GPU
    card = GPUS[gpu_type]
    named = params_of(model)
    total, active = (params_b, params_b) if params_b else (named or (REFERENCE_PARAMS_B, REFERENCE_PARAMS_B))
    tp = max(1, tensor_parallel)
    memory = total / tp / REFERENCE_PARAMS_B * ref.bandwidth_tbs / card.bandwidth_tbs
    compute = active / tp / REFERENCE_PARAMS_B * ref.dense_tflops / card.dense_tflops
    knee = (card.dense_tflops / card.bandwidth_tbs) / (ref.dense_tflops / ref.bandwidth_tbs) * total / active
    return replace(
        base,
        t_mem_ms=base.t_mem_ms * memory + (ALL_REDUCE_MS if tp > 1 else 0.0),
        t_kv_ms_per_ktok=base.t_kv_ms_per_ktok
        * (total / REFERENCE_PARAMS_B) ** 0.5
        / tp
        * ref.bandwidth_tbs
        / card.bandwidth_tbs,
        t_tok_ms=base.t_tok_ms * compute,
        n_knee=max(16, round(base.n_knee * knee)),
        prefill_ms_per_ktok=base.prefill_ms_per_ktok * compute,
        # An MoE step verifying n tokens reads the experts they route to: up to every expert's weights from about
        # total / active tokens on. What that costs depends on the routing; the roofline cannot say.
        known_tokens_per_step=total / active if active < total else math.inf,
        max_num_seqs=batch_cap(extra_args) or batch_cap_default(gpu_type, extra_args),
    )
