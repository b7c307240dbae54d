"""What the operator observes of a deployment: the PromQL it asks and the typed observation it makes of the answer
(pure; :mod:`specdeploy.shell.prometheus` sends the queries).

One evaluation runs one fixed set of PromQL queries (:func:`queries`), each aggregated ``by (namespace,
deployment, specdeploy_k)``, whatever the number of resources: the cost is flat in the number of resources. The
labels come from the scrape configuration (the PodMonitor in ``manifests/monitoring`` or the demo's file_sd):
``deployment`` is the pod's ``specdeploy.io/deployment`` label and ``specdeploy_k`` its ``specdeploy.io/k``, so
during a rolling restart only pods of the current template (the k in status) count.

``rate()`` handles counter resets (pods restarting). Missing series and NaN give :class:`NoData` with the reason,
never an exception.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..api import GpuType

GROUP = "namespace, deployment, specdeploy_k"
SELECTOR = '{deployment!=""}'
# vLLM's finished_reason values: a request that stopped or reached its length was served (the load the policy
# plans for); abort (client gone, or preempted away) and error were not, and count as failures.
SERVED_REASONS = "stop|length"
DRAFT_LENGTH_SLACK = 0.05  # a mean draft length this short of a whole k still counts as all drafts reaching k:
# vLLM leaves invalid draft tokens uncounted (structured output); more slack reads more of a schedule's low bias


def queries(window: str) -> dict[str, str]:
    """The whole batch for one evaluation (``window`` like ``300s``)."""
    r = f"[{window}]"

    def rate(metric: str, extra: str = "") -> str:
        return f"sum by ({GROUP}{extra}) (rate({metric}{SELECTOR}{r}))"

    def avg(metric: str) -> str:
        return f"sum by ({GROUP}) (avg_over_time({metric}{SELECTOR}{r}))"

    itl = "vllm:inter_token_latency_seconds"
    finished = "vllm:request_success_total"
    return {
        "request_rate": f'sum by ({GROUP}) (rate({finished}{{deployment!="",finished_reason=~"{SERVED_REASONS}"}}{r}))',
        "failed_rate": f'sum by ({GROUP}) (rate({finished}{{deployment!="",finished_reason!~"{SERVED_REASONS}"}}{r}))',
        "running": avg("vllm:num_requests_running"),
        "waiting": avg("vllm:num_requests_waiting"),
        "generation_tps": rate("vllm:generation_tokens_total"),
        "prompt_tps": rate("vllm:prompt_tokens_total"),
        "drafts": rate("vllm:spec_decode_num_drafts_total"),
        "draft_tokens": rate("vllm:spec_decode_num_draft_tokens_total"),
        "accepted": rate("vllm:spec_decode_num_accepted_tokens_total"),
        "per_pos": rate("vllm:spec_decode_num_accepted_tokens_per_pos_total", ", position"),
        "itl_sum": rate(f"{itl}_sum"),
        "itl_count": rate(f"{itl}_count"),
        "itl_p50": f"histogram_quantile(0.5, {rate(f'{itl}_bucket', ', le')})",
        "itl_p95": f"histogram_quantile(0.95, {rate(f'{itl}_bucket', ', le')})",
        "kv_usage": f"avg by ({GROUP}) (avg_over_time(vllm:kv_cache_usage_perc{SELECTOR}{r}))",
        "pods": f"count by ({GROUP}) (count_over_time(vllm:num_requests_running{SELECTOR}{r}))",
    }


@dataclass(frozen=True)
class Observation:
    """One window of one SpeculativeDeployment's current-template pods. Rates per second, totals over pods."""

    namespace: str
    deployment: str
    k_label: str
    pods: int
    request_rate: float  # requests served (finished by stop or length) per second
    running: float
    waiting: float
    generation_tps: float
    prompt_tps: float = 0.0
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    per_position: tuple[float, ...] = ()
    itl_mean_s: float | None = None
    itl_rate: float | None = None  # ITL observations per second: one per running request per engine step
    draft_rate: float | None = None  # drafts per second: one per request per step that drafted (vLLM's num_drafts)
    draft_token_rate: float | None = None  # tokens drafted per second (vLLM's num_draft_tokens)
    itl_p50_s: float | None = None
    itl_p95_s: float | None = None
    kv_usage: float | None = None
    failed_rate: float = 0.0  # requests aborted or failed per second
    gpu: GpuType | None = None  # the class of GPU the pods run on, from their nodes (prior.gpu_of_products); not PromQL

    @property
    def token_latency_s(self) -> float | None:
        """Mean time per generated token after the first: the time the window's steps took over the tokens they
        yielded (ITL is observed once per request per step; a request's first token comes from its prefill).
        Counted, not derived from the acceptance: under a per-batch-size schedule a step drafts the k of its batch
        size, or none. Without the ITL count, a step's latency over the tokens a full draft yields."""
        decoded = self.generation_tps - self.request_rate
        if self.itl_mean_s and self.itl_rate and decoded > 0:
            return self.itl_mean_s * self.itl_rate / decoded
        return self.itl_mean_s / (1 + sum(self.per_position)) if self.itl_mean_s else None

    @property
    def drafted_per_step(self) -> float | None:
        """Tokens drafted per sequence per step (vLLM's draft tokens over its ITL count): under a schedule, the k
        of the bands the window's steps ran, averaged over them. None without both counters."""
        if self.draft_token_rate is None or not self.itl_rate:
            return None
        return self.draft_token_rate / self.itl_rate

    @property
    def positions_measured(self) -> int:
        """How many leading positions of ``per_position`` every draft reached. vLLM counts a position's acceptances
        over all drafts, so a position only some drafts reached (the bands of a schedule drafting more) reads low.
        The positions below the mean draft length are exact where the drafts were of one k or two adjacent ones
        (a schedule's bands at one batch size); none where nothing was drafted; every one without the counters."""
        if self.draft_rate == 0:
            return 0
        if self.draft_rate and self.draft_token_rate is not None:
            reached = math.floor(self.draft_token_rate / self.draft_rate + DRAFT_LENGTH_SLACK)
            return min(len(self.per_position), reached)
        return len(self.per_position)

    @property
    def k_running(self) -> int:
        """The k the pods run, read from the positions vLLM reports (0 when they do not speculate)."""
        return len(self.per_position)


@dataclass(frozen=True)
class NoData:
    """Why there is no usable observation (the operator then keeps everything as it is)."""

    reason: str


def _num(sample: dict[str, Any]) -> float | None:
    try:
        v = float(sample["value"][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


def assemble(
    raw: dict[str, list[dict[str, Any]]], wanted: list[tuple[str, str, str]]
) -> dict[tuple[str, str], Observation | NoData]:
    """Pure: query results -> one Observation (or NoData) per wanted deployment."""
    by_key: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(dict)
    positions: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    gaps: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # queries answered NaN (not: without a series)
    for name, samples in raw.items():
        for s in samples:
            m = s.get("metric", {})
            key = (m.get("namespace", ""), m.get("deployment", ""), m.get("specdeploy_k", ""))
            v = _num(s)
            if v is None:
                gaps[key].add(name)
                continue
            if name == "per_pos":
                position = _position(m)
                if position is None:  # not vLLM's label: a malformed answer, ignored as a gap
                    gaps[key].add(name)
                    continue
                positions[key][position] = v
            else:
                by_key[key][name] = v
    out: dict[tuple[str, str], Observation | NoData] = {}
    for ns, dep, k_label in wanted:
        key = (ns, dep, k_label)
        vals = by_key.get(key)
        if not vals or not vals.get("pods"):
            others = sorted(k for (n, d, k) in by_key if (n, d) == (ns, dep))
            hint = f" (series only for k={', '.join(others)}: old pods)" if others else ""
            out[(ns, dep)] = NoData(f"no series for pods with specdeploy_k={k_label} in the window{hint}")
            continue
        if "failed_rate" in vals and "request_rate" not in gaps[key]:  # no request was ever served: none now
            vals.setdefault("request_rate", 0.0)
        if "request_rate" not in vals or "running" not in vals:
            out[(ns, dep)] = NoData("incomplete series (request rate or batch size missing)")
            continue
        out[(ns, dep)] = _observation(ns, dep, k_label, vals, positions.get(key, {}))
    return out


def _position(metric: dict[str, Any]) -> int | None:
    """vLLM's ``position`` label: a draft position, 0 first."""
    text = str(metric.get("position", "0"))
    return int(text) if text.isdigit() else None


def _observation(ns: str, dep: str, k_label: str, vals: dict[str, float], pos: dict[int, float]) -> Observation:
    """One deployment's answers (rates summed over its pods) as an Observation."""
    drafts, accepted = vals.get("drafts"), vals.get("accepted")
    per_position: tuple[float, ...] = ()
    if pos:  # vLLM keeps a series per position it may draft: a window that drafted nothing reads 0 at each
        per_position = tuple(pos.get(i, 0.0) / drafts if drafts else 0.0 for i in range(max(pos) + 1))
    itl_mean = vals["itl_sum"] / vals["itl_count"] if vals.get("itl_count") else None
    return Observation(
        namespace=ns,
        deployment=dep,
        k_label=k_label,
        pods=int(vals["pods"]),
        request_rate=vals["request_rate"],
        running=vals["running"],
        waiting=vals.get("waiting", 0.0),
        generation_tps=vals.get("generation_tps", 0.0),
        prompt_tps=vals.get("prompt_tps", 0.0),
        acceptance_rate=accepted / vals["draft_tokens"] if accepted is not None and vals.get("draft_tokens") else None,
        mean_acceptance_length=1 + accepted / drafts if accepted is not None and drafts else None,
        per_position=per_position,
        itl_mean_s=itl_mean,
        itl_rate=vals.get("itl_count"),
        draft_rate=drafts,
        draft_token_rate=vals.get("draft_tokens"),
        itl_p50_s=vals.get("itl_p50"),
        itl_p95_s=vals.get("itl_p95"),
        kv_usage=vals.get("kv_usage"),
        failed_rate=vals.get("failed_rate", 0.0),
    )
