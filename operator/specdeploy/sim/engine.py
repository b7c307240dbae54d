"""A step-level simulation of one vLLM engine with speculative decoding, and the metrics vLLM 0.33 exports.

Each :meth:`Engine.step` is one engine iteration: waiting requests are admitted up to ``max_num_seqs`` (their
prefill adds to this step), every running request drafts k tokens and keeps the accepted prefix plus one token
of the target, drawn from the per-position acceptance ``P(first i accepted) = p_i``; the step lasts as long as
the performance model says. Counters move exactly as vLLM's do (one draft per request per step, k draft tokens,
``position`` i counted when the first i+1 tokens were accepted), ITL is observed once per request per step,
as vLLM V1 does. The engine keeps its own clock, so it is deterministic for a seed; the server paces it
against the wall clock.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.model import Profile, Setting, check_acceptance, extend_acceptance, k_at, step_time_ms, top_k

# vLLM 0.33 histogram buckets (vllm/v1/metrics/loggers.py).
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += times
        self.total += value * times
        self.n += times

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, c in zip([*map(str, self.buckets), "+Inf"], self.counts, strict=True):
            acc += c
            out.append((bound, acc))
        return out


@dataclass
class Request:
    prompt_tokens: int
    max_tokens: int
    arrival: float
    generated: int = 0
    admitted: float | None = None
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str = "length"
    on_tokens: Callable[[int], None] | None = None  # HTTP streaming hook


# vLLM 0.33's finish reasons: it exports vllm:request_success for each from the start, so a rate() over a window
# never misses a reason's first increments.
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")


@dataclass
class Counters:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    drafts: int = 0
    draft_tokens: int = 0
    accepted: int = 0
    per_pos: list[int] = field(default_factory=list)
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(REQUEST_LATENCY_BUCKETS))


class Engine:
    """One simulated engine at draft length k (0 = no speculation), or a per-batch-size schedule: each step drafts
    the k of its batch size, as vLLM's dynamic speculative decoding does (``k`` is then the largest)."""

    def __init__(self, profile: Profile, k: Setting, seed: int = 0, drift_per_hour: float = 0.0):
        self.profile, self.setting, self.k = profile, k, top_k(k)
        self.rng = random.Random(seed)
        self.now = 0.0
        self.running: list[Request] = []
        self.waiting: deque[Request] = deque()
        self.c = Counters(per_pos=[0] * self.k)
        self.qps = 0.0
        self.drift_per_hour = drift_per_hour
        self._base_acceptance = profile.acceptance
        self._next_arrival = math.inf

    # ------------------------------------------------------------------ load
    def set_load(self, qps: float | None = None, acceptance: tuple[float, ...] | None = None) -> None:
        """Change the built-in Poisson load and/or the acceptance profile (drift) from now on."""
        if acceptance is not None:
            check_acceptance(acceptance)
            self._base_acceptance = tuple(acceptance)
        if qps is not None and qps != self.qps:
            self.qps = max(0.0, qps)
            self._next_arrival = self.now + self.rng.expovariate(self.qps) if self.qps > 0 else math.inf

    def acceptance(self) -> list[float]:
        """Current p_1..p_k, after drift (a relative change per hour, clamped to [0, 1])."""
        factor = max(0.0, 1.0 + self.drift_per_hour * self.now / 3600)
        return [min(1.0, x * factor) for x in extend_acceptance(self._base_acceptance, self.k)]

    def submit(self, req: Request) -> None:
        self.waiting.append(req)

    def _generate_arrivals(self, until: float) -> None:
        prof = self.profile
        while self._next_arrival <= until:
            self.submit(Request(prof.prompt_tokens, prof.output_tokens, self._next_arrival))
            self._next_arrival += self.rng.expovariate(self.qps)

    # ------------------------------------------------------------------ stepping
    def next_event(self) -> float:
        """When something next happens if the engine is idle (the next arrival), else now."""
        return self.now if self.running or self.waiting else self._next_arrival

    def idle_until(self, t: float) -> None:
        """Advance the clock over an idle stretch (no step runs)."""
        self._generate_arrivals(t)
        self.now = max(self.now, t) if not (self.running or self.waiting) else self.now

    def step(self) -> float:
        """Run one engine iteration; return its duration in seconds (0 when there is nothing to do)."""
        self._generate_arrivals(self.now)
        prof = self.profile
        prefill = 0
        while self.waiting and len(self.running) < prof.max_num_seqs:
            req = self.waiting.popleft()
            req.admitted = self.now
            self.c.queue.observe(self.now - req.arrival)
            prefill += req.prompt_tokens
            self.c.prompt_tokens += req.prompt_tokens
            self.running.append(req)
        if not self.running:
            return 0.0
        b = len(self.running)
        k = k_at(self.setting, b)
        ctx = sum(r.prompt_tokens + r.generated for r in self.running) / b
        dt = (step_time_ms(prof, b, k, ctx) + prof.prefill_ms_per_ktok * prefill / 1000) / 1000
        self.now += dt
        p = self.acceptance() if k else []
        done = []
        for req in self.running:
            accepted = 0
            if k:
                u = self.rng.random()
                while accepted < k and u < p[accepted]:
                    accepted += 1
                self.c.drafts += 1
                self.c.draft_tokens += k
                self.c.accepted += accepted
                for i in range(accepted):
                    self.c.per_pos[i] += 1
            new = min(accepted + 1, req.max_tokens - req.generated)
            if req.first_token is None:
                req.first_token = self.now
                self.c.ttft.observe(self.now - req.arrival)
            else:
                self.c.itl.observe(dt)
            req.generated += new
            self.c.generation_tokens += new
            if req.on_tokens:
                req.on_tokens(new)
            if req.generated >= req.max_tokens:
                done.append(req)
        for req in done:
            self.running.remove(req)
            req.finished = self.now
            self.c.success[req.finish_reason] += 1
            self.c.e2e.observe(self.now - req.arrival)
            if req.on_tokens:
                req.on_tokens(0)
        return dt

    def kv_usage(self) -> float:
        used = sum(r.prompt_tokens + r.generated for r in self.running)
        return min(1.0, used / self.profile.kv_capacity_tokens)

    def run_for(self, seconds: float) -> None:
        """Advance the simulation by ``seconds`` of its own clock (offline use and tests)."""
        end = self.now + seconds
        while self.now < end:
            if self.step() == 0.0:
                self.idle_until(min(end, self.next_event()))
