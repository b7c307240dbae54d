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

from specdeploy.sim.offline import compare, load_trace, oracle_schedule, table

TRACES = Path(__file__).resolve().parent.parent / "operator" / "specdeploy" / "traces"
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--after-minutes", type=float, default=60, help="second table: figures from this time on")
    args = ap.parse_args()
    results, later = [], []
    for path in sorted(TRACES.glob("*.yaml")):
        trace = load_trace(path)
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
    if args.json:
        args.json.write_text(json.dumps({"whole": results, "after": later}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
