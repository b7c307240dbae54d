"""The performance model of speculative decoding that the simulator, the offline simulator and the policy share.

Pure functions over a :class:`Profile` (see ``../shared``-style reference in README, "Performance model"):

* tokens per verification step ``E(k) = 1 + p_1 + ... + p_k`` where ``p_i`` is the chance that the first i
  drafted tokens are all accepted (what vLLM's per-position counter / drafts measures);
* step time ``t(B, k) = T(B*(k+1)) + k * c * T(B)`` with ``T(n) = t_mem + t_kv*B*ctx + t_tok * n^2/(n + n_knee)``
  for n tokens verified per step and a drafter costing c per drafted token: memory-bound at small batches,
  compute-bound past the knee (the last term is a smooth ``max(0, n - n_knee)``), where every rejected draft
  token still costs target compute;
* the steady state of one replica at a request rate (Little's law: ``B = rate * request_time``), or its
  saturation when the rate exceeds what it can serve.

Defaults are calibrated on the published figures for an 8B target with an EAGLE-3 drafter on one H100-class GPU:
6-8 ms memory-bound step, E(3) ~ 2.7 and ~2.2x speed-up at low load, a compute knee of ~256 tokens per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

OPEN_BATCH = 65536  # the last band's upper batch size as rendered: beyond any batch cap
ROOT_ITERATIONS = 60  # at most (bisection's worst case); Newton converges in a handful
ROOT_TOLERANCE = 1e-9  # balance of the steady-state batch, relative: far below anything a figure shows
FULL_BATCH_SHARE = 0.999  # a load this share of capacity runs at full batch: the steady state just short of saturating
PIN_TOLERANCE = 1e-6  # a balance this close to a band edge (relative) is pinned there: far below one sequence

# EAGLE-3 on Llama-3.1-8B-Instruct, chat traffic: cumulative per-position acceptance p_1..p_8.
DEFAULT_ACCEPTANCE = (0.75, 0.55, 0.40, 0.29, 0.21, 0.15, 0.11, 0.08)


@dataclass(frozen=True)
class Profile:
    """A model + drafter + GPU + traffic profile. Times in milliseconds."""

    t_mem_ms: float = 6.5  # memory-bound decode step of the target (weights read once)
    t_kv_ms_per_ktok: float = 0.04  # per sequence per 1000 context tokens: 128 KB/token KV read at ~3.3 TB/s
    n_knee: int = 256  # tokens per step where compute starts to dominate
    t_tok_ms: float = 0.1  # effective compute per token past the knee (vLLM tops out near 10k tok/s for 8B/H100)
    draft_cost: float = 0.08  # c: one drafted token costs c * t_mem (EAGLE-3 head ~0.03-0.1)
    acceptance: tuple[float, ...] = DEFAULT_ACCEPTANCE
    max_num_seqs: int = 256  # vLLM's batch cap; requests beyond it wait
    prompt_tokens: int = 512
    output_tokens: int = 256
    prefill_ms_per_ktok: float = 20.0  # prompt processing, for TTFT
    kv_capacity_tokens: int = 400_000  # KV-cache size in tokens, for kv_cache_usage_perc
    # Tokens per step up to which these costs are known before any measurement (a roofline estimate of a dense
    # model: all of them; of an MoE, few: how many experts a step reads depends on the routing of its tokens).
    known_tokens_per_step: float = math.inf

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Profile:
        """Build from a (partial) dict; unknown keys are an error naming the known ones."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown profile keys {unknown}; known: {sorted(known)}")
        if "acceptance" in raw:
            raw["acceptance"] = tuple(float(x) for x in raw["acceptance"])
        prof = replace(cls(), **raw)
        check_acceptance(prof.acceptance)
        return prof


def check_acceptance(p: Sequence[float]) -> None:
    if any(not 0 <= x <= 1 for x in p) or any(b > a + 1e-12 for a, b in itertools.pairwise(p)):
        raise ValueError(f"acceptance must be non-increasing values in [0, 1], got {list(p)}")


def extend_acceptance(p: Sequence[float], k: int) -> list[float]:
    """p_1..p_k, extrapolating past the known positions with the last observed ratio p_i / p_(i-1)."""
    out = list(p[:k])
    if len(out) >= k:
        return out
    if not out:
        return [0.0] * k
    ratio = out[-1] / out[-2] if len(out) >= 2 and out[-2] > 0 else out[-1]
    while len(out) < k:
        out.append(out[-1] * min(ratio, 1.0))
    return out


def tokens_per_step(p: Sequence[float], k: int) -> float:
    """E(k) = 1 + p_1 + ... + p_k (1 without speculation)."""
    return 1.0 + sum(extend_acceptance(p, k)) if k > 0 else 1.0


def step_time_ms(prof: Profile, batch: float, k: int, context: float | None = None) -> float:
    """One engine step with ``batch`` running sequences verifying k draft tokens each."""
    if batch <= 0:
        return 0.0
    ctx = prof.prompt_tokens + prof.output_tokens / 2 if context is None else context

    def target(n: float) -> float:
        kv = prof.t_kv_ms_per_ktok * batch * ctx / 1000
        return prof.t_mem_ms + kv + prof.t_tok_ms * n * n / (n + prof.n_knee)

    # The drafter runs on the same batch: each drafted token costs c times a one-token target step.
    return target(batch * (k + 1)) + k * prof.draft_cost * target(batch)


Mix = tuple[tuple[int, float], ...]  # the k steps draft, each with its share of the steps


@dataclass(frozen=True)
class SteadyState:
    """One replica at a constant request rate."""

    batch: float  # mean running sequences
    step_ms: float  # engine step time = vLLM's ITL observation per request
    tokens_per_step: float  # E(k)
    token_latency_ms: float  # per-token latency seen by a user: step / E(k), plus queueing when saturated
    capacity_qps: float  # the most requests/s this replica completes at this k
    served_qps: float
    waiting: float  # requests queued (bounded by a horizon when saturated)
    saturated: bool
    mix: Mix  # the k the steps draft, each with its share of the steps


def accepted_per_draft(mix: Mix, p: Sequence[float]) -> list[float]:
    """What vLLM's per-position accepted counter over its drafts counter reads for steps drafting as ``mix`` says:
    position i is accepted with chance ``p[i]`` in the drafts that reach it and counts 0 in the others (under a
    schedule, those of the bands drafting less)."""
    drafts = sum(share for k, share in mix if k > 0)
    top = max((k for k, _ in mix), default=0)
    return [sum(share for k, share in mix if k > i) * p[i] / drafts if drafts else 0.0 for i in range(top)]


def prefill_share(prof: Profile, qps: float) -> float:
    """Fraction of GPU time spent on prompt prefill at this request rate (chunked into decode steps)."""
    return qps * prof.prompt_tokens * prof.prefill_ms_per_ktok / 1e6


Schedule = tuple[tuple[int, int], ...]  # ((first batch size, k), ...), ascending: vLLM's per-batch-size k
Setting = int | Schedule  # one k for every step (0 = off), or a schedule


def k_at(setting: Setting, batch: float) -> int:
    """The k a setting drafts at this many running sequences (a schedule's band, as vLLM looks it up)."""
    if isinstance(setting, int):
        return setting
    k = setting[0][1]
    for first, band_k in setting:
        if batch >= first:
            k = band_k
    return k


def upto(p: Sequence[float], setting: Setting) -> list[float]:
    """The acceptance of the positions a setting drafts."""
    return list(p[: top_k(setting)])


def top_k(setting: Setting) -> int:
    """The largest k a setting drafts (what ``num_speculative_tokens`` must allow)."""
    return setting if isinstance(setting, int) else max(k for _, k in setting)


def capacity_qps(prof: Profile, k: Setting, p: Sequence[float]) -> float:
    """Requests/s one replica completes at full batch, prefill included: q = X / (1 + X * prefill per request)."""
    b = prof.max_num_seqs
    k = k_at(k, b)
    x = b * tokens_per_step(p, k) / (step_time_ms(prof, b, k) / 1000) / prof.output_tokens
    return x / (1 + x * prof.prompt_tokens * prof.prefill_ms_per_ktok / 1e6)


def steady_state(prof: Profile, qps: float, setting: Setting, p: Sequence[float] | None = None) -> SteadyState:
    """Fixed point of B = qps * request_time(B) (request_time grows with B); a schedule drafts the k of the
    batch size each step runs.

    A mean engine step lasts ``t(B, k) / (1 - prefill_share)``: prompts are prefilled inside decode steps."""
    p = prof.acceptance if p is None else p
    cap = capacity_qps(prof, setting, p)
    if qps <= 0:
        k = k_at(setting, 1)
        step, e = step_time_ms(prof, 1, k), tokens_per_step(p, k)
        return SteadyState(0.0, step, e, step / e, cap, 0.0, 0.0, False, ((k, 1.0),))
    if qps >= cap:
        b = float(prof.max_num_seqs)
        k = k_at(setting, b)
        step, e = step_time_ms(prof, b, k) / (1 - prefill_share(prof, cap)), tokens_per_step(p, k)
        return SteadyState(b, step, e, step / e, cap, cap, float("inf"), True, ((k, 1.0),))
    stretch = 1 / (1 - prefill_share(prof, qps))
    demand = qps * prof.output_tokens / 1000  # tokens per millisecond a replica must yield

    def excess(b: float) -> float:
        k = k_at(setting, b)
        return demand * step_time_ms(prof, b, k) * stretch / tokens_per_step(p, k) - b

    b = max(root(excess, 0.0, float(prof.max_num_seqs)), 1e-9)
    pinned = _pinned(setting, b, excess)
    if pinned is not None:
        return _mixed(prof, setting, p, pinned, demand, stretch, cap, qps)
    k = k_at(setting, b)
    step, e = step_time_ms(prof, max(b, 1.0), k) * stretch, tokens_per_step(p, k)
    return SteadyState(b, step, e, step / e, cap, qps, 0.0, False, ((k, 1.0),))


def _pinned(setting: Setting, b: float, excess: Callable[[float], float]) -> int | None:
    """The band edge a schedule's balance is pinned at, if it is: the k below the edge is too slow to carry the
    load (the batch grows into the next band) and the k from the edge on too fast (it shrinks back), so the
    engine alternates between the two bands' k at the edge batch. None where the balance is a proper one."""
    if isinstance(setting, int):
        return None
    for first, _ in setting[1:]:
        if abs(b - first) <= PIN_TOLERANCE * first and excess(first - PIN_TOLERANCE * first) > 0 > excess(first):
            return first
    return None


def _mixed(
    prof: Profile,
    setting: Setting,
    p: Sequence[float],
    edge: int,
    demand: float,
    stretch: float,
    cap: float,
    qps: float,
) -> SteadyState:
    """The steady state of a schedule pinned at a band edge: at the edge batch, the share ``f`` of steps drafting
    the lower band's k that makes the mean step yield exactly the tokens the load needs
    (``edge * (f E_lo + (1-f) E_hi) = demand * (f s_lo + (1-f) s_hi)``)."""
    k_lo, k_hi = k_at(setting, edge - 1), k_at(setting, edge)
    s_lo, s_hi = (step_time_ms(prof, edge, k) * stretch for k in (k_lo, k_hi))
    e_lo, e_hi = tokens_per_step(p, k_lo), tokens_per_step(p, k_hi)
    f = (demand * s_hi - edge * e_hi) / (edge * (e_lo - e_hi) - demand * (s_lo - s_hi))
    f = min(1.0, max(0.0, f))
    step, e = f * s_lo + (1 - f) * s_hi, f * e_lo + (1 - f) * e_hi
    return SteadyState(float(edge), step, e, step / e, cap, qps, 0.0, False, ((k_lo, f), (k_hi, 1 - f)))


def best_schedule(prof: Profile, p: Sequence[float], ks: Sequence[int]) -> Schedule:
    """The schedule that drafts, at each batch size up to the cap, the k whose step yields tokens fastest there
    (least ``step(B, k) / E(k)``; the smaller k of equals), cut into vLLM's bands.

    At every batch size it completes more tokens per second than any other choice, so at every load its balance
    (the batch where completions meet arrivals) is the smallest, and with it the per-token latency: the one
    schedule is best at every load at once. Its throughput rises with the batch across every band edge (at an
    edge both ks are equally fast), so a load balances at one batch only; a schedule whose edge sits where the
    smaller k is slower balances twice, below and past the edge, and a burst leaves it stuck at the slow one."""
    ks = sorted(set(ks))
    bands: list[tuple[int, int]] = []
    for b in range(1, prof.max_num_seqs + 1):
        k = min(ks, key=lambda k: (step_time_ms(prof, b, k) / tokens_per_step(p[:k], k), k))
        if not bands or k != bands[-1][1]:
            bands.append((b, k))
    return tuple(bands)


def within_envelope(setting: Setting, running: Setting, limit: float, max_batch: int, step: int) -> Setting:
    """``setting`` drafting, at every batch size where it would verify more than ``limit`` tokens per step (more
    than the deployment was measured at), no more than the limit allows or ``step`` tokens more than ``running``
    drafts there: the compute past the tokens per step measured is the model's guess, what runs is the baseline, and
    a token more is how it is measured (else a setting off at the batch running, B tokens per step, never drafts
    there: k=1 verifies 2B, past any limit a multiple of B below 2). The setting itself where that changes nothing,
    else the schedule it becomes."""
    ks = []
    for b in range(1, max_batch + 1):
        k, here = k_at(setting, b), k_at(running, b)
        ks.append(k if drafts_within(k, here, b, limit, step) else max(here + step, math.floor(limit / b) - 1))
    if all(k == k_at(setting, b) for b, k in enumerate(ks, start=1)):
        return setting
    bands = tuple((b, k) for b, k in enumerate(ks, start=1) if b == 1 or k != ks[b - 2])
    return bands[0][1] if len(bands) == 1 else bands


def drafts_within(k: int, running_k: int, batch: float, limit: float, step: int) -> bool:
    """Whether drafting k at this batch size is ground a change may take: ``step`` tokens more than what runs there
    at most, or no more than ``limit`` tokens verified per step (:func:`within_envelope`)."""
    return k <= running_k + step or batch * (k + 1) <= limit


def schedule_label(setting: Setting) -> str:
    """A setting as status shows it: ``3`` or ``3@1,1@24,0@120`` (k from that batch size on)."""
    return str(setting) if isinstance(setting, int) else ",".join(f"{k}@{first}" for first, k in setting)


def parse_schedule(label: str) -> Schedule:
    """The schedule :func:`schedule_label` wrote."""
    return tuple((int(first), int(k)) for k, first in (band.split("@") for band in label.split(",")))


def vllm_schedule(schedule: Schedule) -> list[list[int]]:
    """``num_speculative_tokens_per_batch_size``: ``[first, last, k]`` bands from batch size 1, the last one open
    (vLLM extends the last band to its batch cap)."""
    ends = [first - 1 for first, _ in schedule[1:]] + [OPEN_BATCH]
    return [[first, end, k] for (first, k), end in zip(schedule, ends, strict=True)]


def from_vllm_schedule(bands: Sequence[Sequence[int]]) -> Schedule:
    """A schedule from vLLM's ``[first, last, k]`` bands (a gap keeps the band before it, as vLLM does)."""
    return tuple((int(first), int(k)) for first, _, k in sorted(bands))


def root(f: Callable[[float], float], lo: float, hi: float) -> float:
    """A root of ``f`` inside ``(lo, hi]`` where ``f`` falls through zero (the batch where arrivals and completions
    balance; the load whose batch a simulated window's arrivals reach): Newton steps on a numeric slope, kept inside
    the bracket (bisection when they leave it). A dozen evaluations where plain bisection needs sixty."""
    b = (lo + hi) / 2
    for _ in range(ROOT_ITERATIONS):
        fb = f(b)
        if abs(fb) <= ROOT_TOLERANCE * max(1.0, b):
            return b
        if fb > 0:
            lo = b
        else:
            hi = b
        h = 1e-6 * max(1.0, b)
        slope = (f(b + h) - fb) / h
        nxt = b - fb / slope if slope < 0 else (lo + hi) / 2
        b = nxt if lo < nxt < hi else (lo + hi) / 2
    return b


def drain_rates(prof: Profile, qps: float, k: Setting, p: Sequence[float]) -> tuple[float, float, float]:
    """What draining a queue at k costs while ``qps`` keeps arriving: the capacity it drains with, the
    token-milliseconds per second its tokens then cost beyond the load's usual latency (a replica draining a
    queue runs at full batch), and the token-milliseconds a queued request's tokens cost at that usual latency:
    the inputs of :func:`queue_cost_ms`."""
    cap = capacity_qps(prof, k, p)
    full = steady_state(prof, cap * FULL_BATCH_SHARE, k, p).token_latency_ms
    usual = steady_state(prof, min(qps, cap * FULL_BATCH_SHARE), k, p).token_latency_ms
    return cap, cap * prof.output_tokens * (full - usual), prof.output_tokens * usual


def queue_cost_ms(backlog: float, spare: float, excess: float, request_ms: float) -> float:
    """Token-milliseconds a queue of ``backlog`` requests still costs while ``spare`` requests/s drain it: its
    wait (a triangle of queue over time), the ``excess`` per second of running at full batch meanwhile, and its
    own tokens at the usual latency (``request_ms`` each; without them a setting fast at the usual load would
    gain by the queue it drains: its excess is larger, the tokens it leaves uncounted the same)."""
    if backlog <= 0:
        return 0.0
    return backlog / spare * (backlog / 2 * 1000 + excess) + backlog * request_ms
