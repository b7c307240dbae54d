"""Learning a deployment's own performance from its metrics (pure): the prior :class:`~.model.Profile` the spec
suggests, corrected by what the pods report.

What is learned, per deployment, from each evaluation window (kept in ``status.policy.samples``, newest last):

* **traffic shape**: output and prompt tokens per request (``generation_tokens / requests``,
  ``prompt_tokens / requests``), which set how many requests/s a replica serves;
* **step cost**: the engine's step time as a function of batch size, k and context. vLLM observes one
  inter-token latency per request per engine step, so the window's mean ITL is the mean step time. The model's
  step time is linear in four costs once the drafter's relative cost and the compute knee are fixed:
  ``step = t_mem (1 + kc) + t_kv (1 + kc) B ctx + t_tok (g(B(k+1)) + kc g(B)) + prefill * step * prompt_rate``
  (the last term: prompts prefilled inside decode steps stretch them). Those four are fitted by ridge
  regression on relative errors, pulled toward the prior: a window at one setting informs only the direction
  its features span, and the prior keeps the rest.

How fast data outweighs the prior: a window's mean step time counts as a measurement within :data:`WINDOW_NOISE`
and each prior cost as a guess within :data:`PRIOR_SPREAD`, so along what one window measures the fit moves
``1 / (1 + (WINDOW_NOISE / PRIOR_SPREAD)^2)`` (96%) of the way to the data at once; what no window measured stays
the prior's. Older windows count less (half after :data:`SAMPLE_HALF_LIFE_S`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .model import Profile, capacity_qps

COSTS = ("t_mem_ms", "t_kv_ms_per_ktok", "t_tok_ms", "prefill_ms_per_ktok")
WINDOW_NOISE = 0.1  # relative error of one window's mean step time: higher trusts the prior longer
PRIOR_SPREAD = 0.5  # relative uncertainty of each prior cost (the prior is a guess from the spec, not a measurement)
SAMPLE_HALF_LIFE_S = 6 * 3600.0  # an old window counts half after this long: the cost of a deployment drifts slowly
MAX_SAMPLES = 48  # windows kept in status (a few KB); older ones carry little weight anyway
MIN_COST_FACTOR, MAX_COST_FACTOR = 0.1, 10.0  # a learned cost stays within these factors of the prior's
CAPACITY_MEMORY_S = 3600.0  # windows that bound capacity must be this recent: the traffic shape moves
CAPACITY_Z = 2.0  # a window's served load bounds capacity after this many standard deviations of its noise
SHAPE_MEMORY = 0.3  # EWMA weight of the newest window for tokens per request: windows are noisy, traffic drifts


@dataclass(frozen=True)
class Sample:
    """One evaluation window at one setting, per replica."""

    time: float
    k: int  # the k the pods ran (0 = off)
    batch: float  # mean running sequences
    step_ms: float  # mean inter-token latency = mean engine step
    qps: float  # completed requests/s
    prompt_tokens: float  # per request
    output_tokens: float  # per request
    noise: float = 0.0  # relative spread of qps (a Poisson count over the window)
    queued: bool = False  # requests waited and their queue grew: qps was all this setting could serve

    def to_list(self) -> list[float]:
        return [self.time, self.k, round(self.batch, 3), round(self.step_ms, 4), round(self.qps, 4),
                round(self.prompt_tokens, 1), round(self.output_tokens, 1), round(self.noise, 4),
                int(self.queued)]  # fmt: skip

    @classmethod
    def from_list(cls, raw: Sequence[float]) -> Sample:
        t, k, b, s, q, pt, ot, noise, queued = raw
        return cls(float(t), int(k), float(b), float(s), float(q), float(pt), float(ot), float(noise), bool(queued))


def features(prior: Profile, s: Sample) -> list[float]:
    """The four cost features of one window (ms per unit of each cost in :data:`COSTS`)."""
    kc = s.k * prior.draft_cost
    ctx = s.prompt_tokens + s.output_tokens / 2

    def g(n: float) -> float:
        return n * n / (n + prior.n_knee)

    batch = max(s.batch, 1.0)
    return [
        1 + kc,
        (1 + kc) * batch * ctx / 1000,
        g(batch * (s.k + 1)) + kc * g(batch),
        s.step_ms * s.qps * s.prompt_tokens / 1e6,
    ]


def fit_costs(prior: Profile, samples: Sequence[Sample], now: float) -> dict[str, float]:
    """The four costs that best explain the windows' step times (relative errors, weighted by age), pulled
    toward the prior's (ridge on the relative change of each cost)."""
    theta0 = [getattr(prior, name) for name in COSTS]
    n = len(COSTS)
    ata = [[0.0] * n for _ in range(n)]
    atb = [0.0] * n
    for s in samples:
        if s.step_ms <= 0:
            continue
        w = 0.5 ** (max(0.0, now - s.time) / SAMPLE_HALF_LIFE_S)
        f = features(prior, s)
        a = [f[j] * theta0[j] / s.step_ms for j in range(n)]  # d(relative prediction) / d(relative change)
        r = 1 - sum(a)  # relative error of the prior on this window
        for i in range(n):
            atb[i] += w * a[i] * r
            for j in range(n):
                ata[i][j] += w * a[i] * a[j]
    ridge = (WINDOW_NOISE / PRIOR_SPREAD) ** 2
    for i in range(n):
        ata[i][i] += ridge
    delta = solve(ata, atb)
    return {name: theta0[j] * min(MAX_COST_FACTOR, max(MIN_COST_FACTOR, 1 + delta[j])) for j, name in enumerate(COSTS)}


def solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for the small, well-conditioned (ridge) normal equations."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def learned_profile(prior: Profile, samples: Sequence[Sample], now: float) -> Profile:
    """The prior with the traffic shape and costs the windows measured (the prior itself without any), its
    capacity held to what was seen: no less than a load served without a queue, no more than one that queued."""
    if not samples:
        return prior
    shape = _traffic_shape(samples)
    prof = replace(prior, prompt_tokens=max(1, round(shape[0])), output_tokens=max(1, round(shape[1])))
    fitted = replace(prof, **fit_costs(prof, samples, now))
    scale = capacity_scale(fitted, [s for s in samples if now - s.time <= CAPACITY_MEMORY_S])
    return replace(fitted, **{name: getattr(fitted, name) * scale for name in COSTS}) if scale != 1 else fitted


def capacity_scale(prof: Profile, samples: Sequence[Sample]) -> float:
    """The factor on every cost that makes the model's capacity agree with what the windows saw: a setting that
    served a load without a queue can serve that much (a window counted high by chance overstates it, until a
    queue says otherwise); one whose queue grew served all it could (plus the window's noise). A capacity falls
    as the costs grow, about in proportion."""
    at_most, at_least = math.inf, 0.0  # bounds on the factor
    for s in samples:
        cap = capacity_qps(prof, s.k, prof.acceptance[: s.k])
        if s.queued:
            at_least = max(at_least, cap / (s.qps * (1 + CAPACITY_Z * s.noise)))
        elif s.qps > 0:
            at_most = min(at_most, cap / s.qps)
    if at_least > at_most:  # the windows disagree (the traffic changed): the newest queue is the surest fact
        return at_least
    return min(max(1.0, at_least), at_most)


def _traffic_shape(samples: Sequence[Sample]) -> tuple[float, float]:
    """Prompt and output tokens per request: an EWMA over the windows, newest weighted most."""
    prompt, output = samples[0].prompt_tokens, samples[0].output_tokens
    for s in samples[1:]:
        prompt = (1 - SHAPE_MEMORY) * prompt + SHAPE_MEMORY * s.prompt_tokens
        output = (1 - SHAPE_MEMORY) * output + SHAPE_MEMORY * s.output_tokens
    return prompt, output


def sample_of(
    time: float,
    k: int,
    batch: float,
    step_ms: float | None,
    qps: float,
    prompt_tps: float,
    generation_tps: float,
    noise: float = 0.0,
    queued: bool = False,
) -> Sample | None:
    """A window worth learning from: requests completed, a step time measured, tokens counted (per replica)."""
    if not step_ms or qps <= 0 or generation_tps <= 0 or math.isnan(step_ms):
        return None
    return Sample(time, k, batch, step_ms, qps, prompt_tps / qps, generation_tps / qps, noise, queued)
