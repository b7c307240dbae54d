"""The oracle: the best schedule of settings for a whole trace, known in advance (dynamic programming)."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

from ..core.model import Schedule, Setting, best_schedule, drain_rates, queue_cost_ms, top_k
from ..core.policy import rollout_seconds
from .trace import Trace
from .world import run_step


def hindsight_schedule(trace: Trace) -> Schedule:
    """The per-batch-size schedule for the trace's world and its mean acceptance: the best schedule one could set
    with hindsight (vLLM's dynamic speculative decoding, fixed for the whole trace)."""
    n = len(trace.points)
    p = [sum(pt.acceptance[i] for pt in trace.points) / n for i in range(len(trace.points[0].acceptance))]
    return best_schedule(trace.profile, p, trace.candidates)


# state (k, steps since the change started) -> (rank, cost, backlog, previous state, k the rollout came from)
State = tuple[Setting, int]
Value = tuple[float, float, float, State | None, Setting]


def oracle_schedule(trace: Trace, hold: int = 0) -> list[Setting]:
    """Dynamic programming over (step, k, rollout progress) knowing the whole trace, restart costs included.
    With ``hold``, the starting setting is kept for that many steps: the best a controller can do that has no
    reason to change before then.

    A change starts a rolling restart lasting ``rollout_seconds`` (no further change until it ends), as the
    operator does. Each state carries the queue backlog and the setting the rollout came from of its best path,
    so saturating a setting costs what it costs in the simulation (an approximation of the full problem; its
    schedule is scored like any other). Paths meeting in a state are ranked by their cost plus what the queue
    they leave must still cost at their setting and the load (:func:`~specdeploy.core.model.queue_cost_ms`), so a
    path that is cheap so far but leaves a queue its setting drains slowly does not win over one that ends
    cheaper.
    """
    dp = _Search(trace, hold)
    history = [dp.first()]
    for i in range(1, len(trace.points)):
        history.append(dp.advance(history[-1], i))
    last, end = history[-1], len(dp.points) - 1
    state: State | None = min(last, key=lambda st: last[st][1] + dp.queue_cost(st[0], end, last[st][2]))
    schedule = []
    for layer in reversed(history):
        assert state is not None
        schedule.append(state[0])
        state = layer[state][3]
    return schedule[::-1]


class _Search:
    """One oracle search: the trace, the settings it may choose and what a queue costs at each step."""

    def __init__(self, trace: Trace, hold: int):
        self.trace, self.hold = trace, hold
        # Every static setting, and the schedule fitted with hindsight where the deployment can run one.
        self.ks: list[Setting] = [*trace.candidates, *([hindsight_schedule(trace)] if trace.schedules else [])]
        self.dt = trace.step_seconds
        self.rollout_s = rollout_seconds(trace.rollout)
        self.settled = math.ceil(self.rollout_s / self.dt)
        # After the trace no request arrives: what is left then drains at the full capacity of the setting.
        self.points = (*trace.points, replace(trace.points[-1], qps=0.0))
        self.drains = functools.cache(self._drains)

    def _drains(self, k: Setting, i: int) -> tuple[float, float, float]:
        """Per replica: how k drains a queue at point i (``drain_rates``), with a floor on the spare capacity."""
        point, n = self.points[i], self.trace.rollout.replicas
        prof = replace(self.trace.profile, output_tokens=point.output_tokens, prompt_tokens=point.prompt_tokens)
        cap, excess, request_ms = drain_rates(prof, point.qps / n, k, point.acceptance[: top_k(k)])
        return max(cap - point.qps / n, 0.01 * cap), excess, request_ms

    def queue_cost(self, k: Setting, i: int, backlog: float) -> float:
        """What the queue a path leaves still costs, its replicas sharing it evenly: n times the cost of b / n."""
        n = self.trace.rollout.replicas
        return n * queue_cost_ms(backlog / n, *self.drains(k, i))

    def first(self) -> dict[State, Value]:
        """Step 0 from the running setting: anything else starts with a restart."""
        trace, k0, layer = self.trace, self.trace.start_k, {}
        for k in self.ks if self.hold <= 0 else [k0]:
            out = run_step(trace, trace.points[0], k, 0.0, 0.0 if k == k0 else self.rollout_s, self.dt, k0)
            cost = out.tokens * out.token_ms
            layer[(k, self.settled if k == k0 else 1)] = (cost + self.queue_cost(k, 0, out.backlog), cost,
                                                          out.backlog, None, k0)  # fmt: skip
        return layer

    def advance(self, layer: dict[State, Value], i: int) -> dict[State, Value]:
        """Step i from every state of step i - 1: keep the setting (a rollout goes on), or, once settled and past
        the hold, start a change to any other; keep the best-ranked path into each state."""
        point, nxt = self.trace.points[i], {}
        for (j, s), (_, c, b, _, j_from) in layer.items():
            moves = [(j, min(s + 1, self.settled), max(0.0, self.rollout_s - s * self.dt), j_from)]
            if s >= self.settled and i >= self.hold:
                moves += [(k, 1, self.rollout_s, j) for k in self.ks if k != j]
            for k, s2, restarting, k_from in moves:
                out = run_step(self.trace, point, k, b, restarting, self.dt, k_from)
                cost = c + out.tokens * out.token_ms
                rank = cost + self.queue_cost(k, i, out.backlog)
                if (k, s2) not in nxt or rank < nxt[(k, s2)][0]:
                    nxt[(k, s2)] = (rank, cost, out.backlog, (j, s), k_from)
        return nxt
