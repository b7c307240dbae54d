#!/usr/bin/env python3
"""The policy benchmark: every shipped trace through `specdeploy simulate`, the side-by-side table, and the
issue's acceptance criteria checked one by one (printed, pass or fail; exit 0 either way: it is a report).

    .venv/bin/python hack/bench_policy.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from specdeploy.offline.oracle import oracle_schedule
from specdeploy.offline.simulate import compare, simulate, table
from specdeploy.offline.trace import Trace, load_trace

TRACES = Path(__file__).resolve().parent.parent / "operator" / "specdeploy" / "offline" / "traces"
MIXED = ("diurnal", "bursty", "load_ramp")


def criteria(results: list[dict]) -> list[tuple[str, bool]]:
    lat = {r["trace"]: r for r in results}
    score = {t: r["oracle"]["mean_token_latency_ms"] / r["policy"]["mean_token_latency_ms"] for t, r in lat.items()}
    out = [(f"mean score (oracle/policy latency) {statistics.mean(score.values()):.3f} >= 0.95",
            statistics.mean(score.values()) >= 0.95)]  # fmt: skip
    for t in MIXED:
        if t in lat:
            pol, best = lat[t]["policy"]["mean_token_latency_ms"], lat[t]["best_static"]["mean_token_latency_ms"]
            out.append((f"{t}: policy {pol:.2f} ms <= best static {best:.2f} ms", pol <= best))
    for t, r in lat.items():
        pol = r["policy"]["mean_token_latency_ms"]
        bound = 1.02 * min(r["always_off"]["mean_token_latency_ms"], r["best_static"]["mean_token_latency_ms"])
        out.append((f"{t}: policy {pol:.2f} ms <= 1.02 x min(always-off, best static) = {bound:.2f} ms", pol <= bound))
        gp, off = r["policy"]["goodput"], r["always_off"]["goodput"]
        out.append((f"{t}: goodput {gp:.0f} >= always-off {off:.0f} tokens/s", gp >= off))
    return out


def first_surprise(trace: Trace) -> int:
    """The first step a controller has no hint of: the start (nothing is observed before it), or, if the load
    first holds within half of where it started, the step where it leaves that band."""
    q0 = trace.points[0].qps
    return next((i for i, p in enumerate(trace.points) if abs(p.qps - q0) > 0.5 * max(q0, 1e-9)), 0)


def held_oracle(trace: Trace) -> float:
    """The oracle kept at the starting setting through the first surprise (a controller sees a step once it is
    over): the best any controller can do without foreknowledge of it."""
    schedule = oracle_schedule(trace, hold=first_surprise(trace) + 1)
    return simulate(trace, lambda i, *_: schedule[i])["mean_token_latency_ms"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--after-minutes", type=float, default=60, help="second table: figures from this time on")
    args = ap.parse_args()
    traces = [load_trace(path) for path in sorted(TRACES.glob("*.yaml"))]
    results, later = [], []
    for trace in traces:
        schedule = oracle_schedule(trace)
        results.append(compare(trace, schedule))
        later.append(compare(trace, schedule, score_from=int(args.after_minutes * 60 / trace.step_seconds)))
    print(table(results))
    print()
    for text, ok in criteria(results):
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    # The cost of meeting a trace cold (no history at its start) against how the same run does once past it.
    print(f"\nThe same runs scored from minute {args.after_minutes:g} on (every controller still starts at 0):")
    print(table(later))
    # What no controller can know: the oracle may not change before it could have seen the first surprise.
    print("\nThe oracle held at the starting k until it could have seen the first surprise (the start, or the load")
    print("first moving by half): score = held oracle / policy.")
    print(f"{'trace':<18}{'minute':>9}{'held ms':>10}{'policy':>9}{'score':>8}")
    scores = []
    for trace, r in zip(traces, results, strict=True):
        held, pol = held_oracle(trace), r["policy"]["mean_token_latency_ms"]
        scores.append(held / pol)
        minute = first_surprise(trace) * trace.step_seconds / 60
        print(f"{trace.name:<18}{minute:>9.1f}{held:>10.2f}{pol:>9.2f}{held / pol:>8.3f}")
    print(f"{'mean':<46}{statistics.mean(scores):>8.3f}")
    if args.json:
        args.json.write_text(json.dumps({"whole": results, "after": later}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
