"""Learning a deployment's own performance from its metrics (pure): the prior :class:`~.model.Profile` the spec
suggests, corrected by what the pods report.

What is learned, per deployment, from each evaluation window (kept in ``status.policy.samples``, newest last):

* **traffic shape**: output and prompt tokens per request (``generation_tokens / requests``,
  ``prompt_tokens / requests``), which set how many requests/s a replica serves;
* **step cost**: the engine's step time as a function of batch size, k and context. vLLM observes one
  inter-token latency per request per engine step, so the window's mean ITL is the mean step time. The model's
  step time is linear in four costs once the drafter's relative cost and the compute knee are fixed:
  ``step = t_mem (1 + kc) + t_kv (1 + kc) B ctx + t_tok (g(B(k+1)) + kc g(B)) + prefill * B E prompt / output``
  (the last term: prompts prefilled inside decode steps stretch them, as many per step as Little's law says finish,
  ``B E / output``; the model's ``pure / (1 - prefill share)`` in steady state). Those four are fitted by ridge
  regression on relative errors, pulled toward the prior: a window at one setting informs only the direction
  its features span, and the prior keeps the rest.

How fast data outweighs the prior: a window's mean step time counts as a measurement within :data:`WINDOW_NOISE`
and each prior cost as a log-normal guess, within a factor ``1 + PRIOR_SPREAD`` either way (:data:`PRIOR_SPREAD`),
so along what one window measures the fit moves ``1 / (1 + (WINDOW_NOISE / log(1 + PRIOR_SPREAD))^2)`` (99.2%) of
the way to the data at once, near the prior; what no window measured stays the prior's. Older windows count less
(half after :data:`SAMPLE_HALF_LIFE_S`), and so do windows of few requests (:meth:`Sample.weight`: the mean ITL of
a handful of requests is far noisier than :data:`WINDOW_NOISE`). The compute past the knee, which at light load is
a few percent of a step and grows with the load as prefill and KV reads do, is not learned cheaper than the prior's
until a window measured it (:func:`compute_measured`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from .model import Profile, capacity_qps, tokens_per_step

COSTS = ("t_mem_ms", "t_kv_ms_per_ktok", "t_tok_ms", "prefill_ms_per_ktok")
COMPUTE = COSTS.index("t_tok_ms")
BATCH_COSTS = ("t_kv_ms_per_ktok", "t_tok_ms", "prefill_ms_per_ktok")  # the costs that grow with the load
KNEES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # compute knees tried (tokens per step)
DRAFT_COST_FACTORS = (0.5, 2.0, 4.0, 8.0)  # drafter costs tried, times the prior's (a draft model costs far more
# than an EAGLE head): more values place it finer, and each costs a fit
KNEE_PRIOR_WEIGHT = 1e-3  # squared relative error a knee pays per doubling away from the prior's
DRAFTER_PRIOR_WEIGHT = 3e-3  # ... and a drafter cost: windows at a few k and loads confound it with the target's
# costs, so a fit could flip between a cheap and a dear drafter window to window; lower learns a draft model sooner
WINDOW_NOISE = 0.1  # relative error of one window's mean step time: higher trusts the prior longer
REQUEST_SPREAD = 0.5  # relative spread of one request's mean inter-token latency about the window's: a window of
# few requests measures its step within this over sqrt(requests) too; higher trusts thin windows less
PRIOR_SPREAD = 2.0  # relative uncertainty of each prior cost: a guess from the spec can be off several times (one
# standard deviation of a log-normal: a factor 1 + this either way, so a cost a tenth of the prior's is as unlikely as
# one ten times it; measured linearly, the fit traded a cost it could not tell from another down to the floor)
UNKNOWN_COMPUTE_SPREAD = 10.0  # ... of the compute past the knee where the prior cannot price it (an MoE, whose
# step past a few tokens reads the experts its tokens route to): lower keeps the roofline's guess longer
COMPUTE_MEASURED_SHARE = 0.15  # the compute past the knee counts as measured once it is this share of some window's
# step; until then it stays the prior's or dearer (knee no later, slope no less): higher holds the prior's longer
# (0.3 measured alike)
LOG_PRIOR_ITERATIONS = 4  # reweighted solves for the log-normal prior: it converges in 2-3; more costs fit time
HELD_RIDGE = 1e9  # the ridge that holds a cost at the prior's
SAMPLE_HALF_LIFE_S = 6 * 3600.0  # an old window counts half after this long: the cost of a deployment drifts slowly
MAX_SAMPLES = 48  # newest windows kept in status (a few KB); older ones carry little weight anyway
SAMPLES_PER_K = 12  # ... and the newest of every other k, however old: windows at several k tell the drafter's cost
# from the target's (at one k they are one feature); more remembers more, in a larger status
MIN_COST_FACTOR, MAX_COST_FACTOR = 0.1, 10.0  # a learned cost stays within these factors of the prior's
CAPACITY_MEMORY_S = 6 * 3600.0  # a capacity seen this long ago no longer binds: the traffic shape moves
CAPACITY_Z = 2.0  # a window's served load bounds capacity after this many standard deviations of its noise
ENVELOPE_GROWTH = 1.5  # where the prior does not know the compute, a setting may verify this many times the most
# tokens per step measured: more learns it faster, and risks drafting where its cost was never seen
ENVELOPE_STEP = 1  # ... or this many tokens more than what runs at the batch, unless requests queue: how the compute
# past the envelope gets measured (off at batch B measures B tokens, k=1 there verifies 2B); 0 never measures it
SHAPE_MEMORY = 0.3  # EWMA weight of the newest window for tokens per request: windows are noisy, traffic drifts


@dataclass(frozen=True)
class Sample:
    """One evaluation window at one setting, per replica."""

    time: float
    k: float  # the k the steps drafted (0 = off); where they drafted several (a schedule at a band edge), the mean
    batch: float  # mean running sequences
    step_ms: float  # mean inter-token latency = mean engine step
    qps: float  # completed requests/s
    prompt_tokens: float  # per request
    output_tokens: float  # per request
    requests: float = math.inf  # completed in the window, every replica's (a window kept before it was counted: inf)

    def to_list(self) -> list[float]:
        counted = [round(self.requests, 1)] if math.isfinite(self.requests) else []
        return [self.time, self.k, round(self.batch, 3), round(self.step_ms, 4), round(self.qps, 4),
                round(self.prompt_tokens, 1), round(self.output_tokens, 1), *counted]  # fmt: skip

    @classmethod
    def from_list(cls, raw: Sequence[float]) -> Sample:
        t, k, b, s, q, pt, ot = raw[:7]
        requests = float(raw[7]) if len(raw) > 7 else math.inf
        return cls(float(t), float(k), float(b), float(s), float(q), float(pt), float(ot), requests)

    def weight(self, now: float) -> float:
        """How much the window counts in a fit: less as it ages, and less the fewer requests it counted (a window
        of ``n`` measures its mean step within ``REQUEST_SPREAD / sqrt(n)`` besides :data:`WINDOW_NOISE`)."""
        age = 0.5 ** (max(0.0, now - self.time) / SAMPLE_HALF_LIFE_S)
        return age / (1 + (REQUEST_SPREAD / WINDOW_NOISE) ** 2 / max(1.0, self.requests))


def keep_samples(samples: Sequence[Sequence[float]]) -> list[list[float]]:
    """The windows worth keeping, oldest first: the newest :data:`MAX_SAMPLES`, and the newest
    :data:`SAMPLES_PER_K` of each k."""
    seen: dict[int, int] = {}
    kept = []
    for i, raw in enumerate(reversed(samples)):
        k = round(raw[1])
        seen[k] = seen.get(k, 0) + 1
        if i < MAX_SAMPLES or seen[k] <= SAMPLES_PER_K:
            kept.append(list(raw))
    return kept[::-1]


def features(prior: Profile, s: Sample) -> list[float]:
    """The four cost features of one window (ms per unit of each cost in :data:`COSTS`). The prefill's is the prompt
    tokens (thousands) the window's steps prefilled each, as Little's law gives them from its mean batch (not held
    to one, as the model's steady state takes it): ``B E / output`` requests finish per step, each with its prompt.
    The measured step is only what the features explain: as a factor of the prefill feature (``step * prompt
    rate``), its noise divided the other features and not that one, and the fit bought a smaller error with prefill
    (1.6-2.2x the world's under a cluster's ITL noise)."""
    kc = s.k * prior.draft_cost
    ctx = s.prompt_tokens + s.output_tokens / 2

    def g(n: float) -> float:
        return n * n / (n + prior.n_knee)

    batch = max(s.batch, 1.0)
    return [
        1 + kc,
        (1 + kc) * batch * ctx / 1000,
        g(batch * (s.k + 1)) + kc * g(batch),
        s.batch * _tokens_per_step(prior.acceptance, s.k) * s.prompt_tokens / s.output_tokens / 1000,
    ]


def _tokens_per_step(p: Sequence[float], k: float) -> float:
    """E(k), between the two k's for a window whose steps drafted several (a schedule at a band edge)."""
    lo = math.floor(k)
    e_lo, e_hi = tokens_per_step(p, lo), tokens_per_step(p, lo + 1)
    return e_lo + (k - lo) * (e_hi - e_lo)


def fit(prior: Profile, samples: Sequence[Sample], now: float) -> Profile:
    """The compute knee, the drafter's cost and the four costs that best explain the windows' step times: for each
    knee in :data:`KNEES` (and the prior's), the ridge fit of the costs, and the knee whose fit leaves the least
    error wins; then, at that knee and where windows ran at several k, each drafter cost of
    :data:`DRAFT_COST_FACTORS` likewise. A value far from the prior's pays a little (the prior is the guess to fall
    back on when the windows cannot tell). While no window measured the compute past the knee
    (:func:`compute_measured`), it is no cheaper than the prior's at any batch: the knee no later, the slope no less."""

    hold = not compute_measured(prior, samples)

    def fitted(candidate: Profile, straying: float) -> tuple[float, Profile]:
        """The candidate with its fitted costs, and the error they leave plus what straying from the prior costs."""
        costs, error = fit_costs(candidate, samples, now, hold)
        return error + straying, replace(candidate, **costs)

    def away(knee: int) -> float:
        return KNEE_PRIOR_WEIGHT * math.log2(knee / prior.n_knee) ** 2

    def first(fit: tuple[float, Profile]) -> float:
        return fit[0]  # the error; min keeps the first of equals, so the knee's own fit wins a tie below

    knees = [n for n in sorted({prior.n_knee, *KNEES}) if not hold or n <= prior.n_knee]
    best = min((fitted(replace(prior, n_knee=n), away(n)) for n in knees), key=first)
    # Then the drafter's cost, with the knee found: windows at several k tell it apart from the target's step.
    # At one k they cannot: there the drafter's share and the target's step are one feature, and the fit took the
    # drafter that let the target's costs stay nearest their prior (an MoE prior's step, which reads every expert,
    # 5x the world's, made the drafter look a third as dear as it was), so the prior's drafter stands until then.
    knee = best[1].n_knee
    several_k = len({round(s.k) for s in samples}) > 1
    drafters = [fitted(replace(prior, n_knee=knee, draft_cost=prior.draft_cost * f),
                       away(knee) + DRAFTER_PRIOR_WEIGHT * math.log2(f) ** 2)
                for f in DRAFT_COST_FACTORS] if prior.draft_cost > 0 and several_k else []  # fmt: skip
    return min([best, *drafters], key=first)[1]


def fit_costs(
    prior: Profile, samples: Sequence[Sample], now: float, hold_compute: bool = False
) -> tuple[dict[str, float], float]:
    """The four costs that best explain the windows' step times (relative errors, weighted by age), pulled
    toward the prior's (a log-normal prior on each cost, by reweighted ridge solves: a cost a tenth of the prior's
    pays as much as one ten times it), and the weighted squared error left. With
    ``hold_compute``, the compute past the knee no cheaper than the prior's (:func:`compute_measured`)."""
    theta0 = [getattr(prior, name) for name in COSTS]
    n = len(COSTS)
    ata = [[0.0] * n for _ in range(n)]
    atb = [0.0] * n
    for s in samples:
        if s.step_ms <= 0:
            continue
        w = s.weight(now)
        f = features(prior, s)
        a = [f[j] * theta0[j] / s.step_ms for j in range(n)]  # d(relative prediction) / d(relative change)
        r = 1 - sum(a)  # relative error of the prior on this window
        for i in range(n):
            atb[i] += w * a[i] * r
            for j in range(n):
                ata[i][j] += w * a[i] * a[j]
    base = [(WINDOW_NOISE / math.log1p(spread)) ** 2 for spread in _spreads(prior)]
    delta, held = [0.0] * n, [False] * n
    for _ in range(LOG_PRIOR_ITERATIONS):  # the prior's pull on each cost as a factor, both ways alike
        ridge = [HELD_RIDGE if h else r * _log_weight(d) for r, d, h in zip(base, delta, held, strict=True)]
        delta = solve(_with_ridge(ata, ridge), atb)
        if hold_compute and not held[COMPUTE] and delta[COMPUTE] < 0:  # the other costs explain the windows
            held[COMPUTE] = True
            ridge[COMPUTE] = HELD_RIDGE
            delta = solve(_with_ridge(ata, ridge), atb)
        delta = [min(MAX_COST_FACTOR, max(MIN_COST_FACTOR, 1 + d)) - 1 for d in delta]
    error = sum(_residuals(prior, samples, now, theta0, delta)) + sum(
        r * math.log1p(d) ** 2 for r, d, h in zip(base, delta, held, strict=True) if not h
    )
    return {name: theta0[j] * (1 + delta[j]) for j, name in enumerate(COSTS)}, error


def compute_measured(prior: Profile, samples: Sequence[Sample]) -> bool:
    """Whether some window's step was :data:`COMPUTE_MEASURED_SHARE` compute past the knee, as the prior prices it.
    Short of that, the windows cannot tell the compute from the costs that grow with the load beside it (prefill,
    KV reads): a fit free to trade them lowered it (a 70B's to half the prior's, where the world's is 1.2 times),
    and planned drafting at batches the world could not afford."""
    theta = getattr(prior, COSTS[COMPUTE])
    return any(s.step_ms > 0 and features(prior, s)[COMPUTE] * theta / s.step_ms >= COMPUTE_MEASURED_SHARE
               for s in samples)  # fmt: skip


def step_share(prior: Profile, samples: Sequence[Sample]) -> float | None:
    """The windows' step times as a share of what ``prior`` predicts for them (their mean; None without any): how
    much cheaper, or dearer, the deployment runs than the prior says."""
    shares = [s.step_ms / sum(f * getattr(prior, name) for f, name in zip(features(prior, s), COSTS, strict=True))
              for s in samples if s.step_ms > 0]  # fmt: skip
    return sum(shares) / len(shares) if shares else None


def _log_weight(delta: float) -> float:
    """The ridge's factor that makes ``r * delta^2`` the log-normal prior's ``r * log(1 + delta)^2`` at ``delta``."""
    return (math.log1p(delta) / delta) ** 2 if abs(delta) > 1e-9 else 1.0


def _with_ridge(ata: list[list[float]], ridge: list[float]) -> list[list[float]]:
    """The normal equations with each cost's ridge on the diagonal."""
    return [[x + (ridge[i] if i == j else 0.0) for j, x in enumerate(row)] for i, row in enumerate(ata)]


def _spreads(prior: Profile) -> list[float]:
    """How far each prior cost (in :data:`COSTS` order) may be off, relative."""
    unknown = math.isfinite(prior.known_tokens_per_step)
    return [UNKNOWN_COMPUTE_SPREAD if name == "t_tok_ms" and unknown else PRIOR_SPREAD for name in COSTS]


def _residuals(
    prior: Profile, samples: Sequence[Sample], now: float, theta0: list[float], delta: list[float]
) -> Iterator[float]:
    """Each window's weighted squared relative error under the fitted costs."""
    for s in samples:
        if s.step_ms > 0:
            w = s.weight(now)
            f = features(prior, s)
            predicted = sum(f[j] * theta0[j] * (1 + delta[j]) for j in range(len(f)))
            yield w * (predicted / s.step_ms - 1) ** 2


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


@dataclass(frozen=True)
class Capacity:
    """What the windows said of each setting's capacity (requests/s per replica, with when): ``floors``, the most
    a setting served without a queue; ``ceilings``, what it served while requests waited (all it could)."""

    floors: dict[int, tuple[float, float]]
    ceilings: dict[int, tuple[float, float]]

    @classmethod
    def from_state(cls, floors: dict[str, list[float]], ceilings: dict[str, list[float]]) -> Capacity:
        def parse(raw: dict[str, list[float]]) -> dict[int, tuple[float, float]]:
            return {int(k): (float(v[0]), float(v[1])) for k, v in raw.items()}

        return cls(parse(floors), parse(ceilings))


def remember_capacity(
    floors: dict[str, list[float]],
    ceilings: dict[str, list[float]],
    k: int,
    qps: float,
    noise: float,
    at_capacity: bool,
    now: float,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Add one window at k: while requests wait, what it served is its capacity (the newest such window counts,
    plus its noise); otherwise it could serve at least what the window surely served, its count less its noise
    (the highest recent window counts: the highest of many noisy counts, taken as it is, overstates the load)."""
    key = str(k)
    if at_capacity:
        return floors, {**ceilings, key: [round(qps * (1 + CAPACITY_Z * noise), 4), now]}
    surely = qps * max(0.0, 1 - CAPACITY_Z * noise)
    return {**floors, key: held_max(floors.get(key), surely, now, 4)}, ceilings


def remember_envelope(old: list[float] | None, batch: float, k: float, now: float) -> list[float]:
    """The most tokens per step (``batch * (k + 1)``) a recent window measured, with when (:func:`held_max`)."""
    return held_max(old, batch * (k + 1), now, 3)


def held_max(old: list[float] | None, value: float, now: float, digits: int) -> list[float]:
    """``[the largest value seen, when]`` (kept to ``digits``): the new value when it is larger, or when the old one
    is older than :data:`CAPACITY_MEMORY_S` (what a deployment measured that long ago no longer binds)."""
    if old is None or value > old[0] or now - old[1] > CAPACITY_MEMORY_S:
        return [round(value, digits), now]
    return old


def envelope_limit(measured: list[float] | None, known: float, growth: float = ENVELOPE_GROWTH) -> float:
    """The tokens per step a setting may verify before the model's word on its cost is a guess: what the prior
    knows (``Profile.known_tokens_per_step``), or ``growth`` times what a window measured."""
    return max(known, growth * (measured[0] if measured else 0.0))


def learned_profile(prior: Profile, samples: Sequence[Sample], capacity: Capacity, now: float) -> Profile:
    """The prior with the traffic shape and costs the windows measured (the prior itself without any), its
    capacity held to what was seen: no less than a load served without a queue, no more than one that queued."""
    if not samples:
        return prior
    shape = _traffic_shape(samples)
    prof = replace(prior, prompt_tokens=max(1, round(shape[0])), output_tokens=max(1, round(shape[1])))
    fitted = fit(prof, samples, now)
    scale = capacity_scale(fitted, capacity, now)
    return replace(fitted, **{name: getattr(fitted, name) * scale for name in BATCH_COSTS}) if scale != 1 else fitted


def capacity_scale(prof: Profile, capacity: Capacity, now: float) -> float:
    """The factor on the costs that grow with the batch (:data:`BATCH_COSTS`: they set the capacity, and leave
    the latency at light load, which the windows measure best, as fitted) that makes the model's capacity agree
    with what the windows saw: no more than a setting served while requests waited (its ceiling), no less than it
    served without a queue (its floor; a window counted high by chance overstates it, until a queue says
    otherwise). When the two disagree (the traffic changed), the ceilings win: a queue is the surest fact."""
    recent = CAPACITY_MEMORY_S

    def scaled(factor: float, k: int) -> float:
        model = replace(prof, **{name: getattr(prof, name) * factor for name in BATCH_COSTS})
        return capacity_qps(model, k, prof.acceptance[:k])

    ceilings = [(k, q) for k, (q, t) in capacity.ceilings.items() if now - t <= recent and q > 0]
    floors = [(k, q) for k, (q, t) in capacity.floors.items() if now - t <= recent and q > 0]
    # Capacity falls as the factor grows: the least factor every ceiling allows, the most every floor allows.
    at_least = _bisect(lambda f: all(scaled(f, k) <= q for k, q in ceilings), want=True) if ceilings else 0.0
    at_most = _bisect(lambda f: all(scaled(f, k) >= q for k, q in floors), want=False) if floors else math.inf
    if at_least > at_most:
        return at_least
    return min(max(1.0, at_least), at_most)


def _bisect(holds: Callable[[float], bool], want: bool) -> float:
    """The boundary factor in [1/100, 100] where ``holds`` turns true as the factor grows (``want=True``: the
    least factor it holds for) or stops holding (``want=False``: the most); the end of the range if none."""
    lo, hi = math.log(MIN_COST_FACTOR / 10), math.log(MAX_COST_FACTOR * 10)
    if not holds(math.exp(hi if want else lo)):  # never satisfiable within the range
        return math.exp(hi if want else lo)
    if holds(math.exp(lo if want else hi)):
        return math.exp(lo if want else hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        if holds(math.exp(mid)) == want:
            hi = mid
        else:
            lo = mid
    return math.exp(hi if want else lo)


def _traffic_shape(samples: Sequence[Sample]) -> tuple[float, float]:
    """Prompt and output tokens per request: an EWMA over the windows, newest weighted most."""
    prompt, output = samples[0].prompt_tokens, samples[0].output_tokens
    for s in samples[1:]:
        prompt = (1 - SHAPE_MEMORY) * prompt + SHAPE_MEMORY * s.prompt_tokens
        output = (1 - SHAPE_MEMORY) * output + SHAPE_MEMORY * s.output_tokens
    return prompt, output


def sample_of(
    time: float,
    k: float,
    batch: float,
    step_ms: float | None,
    qps: float,
    prompt_tps: float,
    generation_tps: float,
    requests: float,
) -> Sample | None:
    """A window worth learning from: requests completed, a step time measured, tokens counted (rates per replica;
    ``requests`` every replica's in the window)."""
    if not step_ms or qps <= 0 or generation_tps <= 0 or math.isnan(step_ms):
        return None
    return Sample(time, k, batch, step_ms, qps, prompt_tps / qps, generation_tps / qps, requests)
