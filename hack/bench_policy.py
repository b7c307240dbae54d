#!/usr/bin/env python3
"""The policy benchmark: every shipped trace from every starting setting (off, k=1, the user's k, the largest k)
through `specdeploy simulate`, side by side with holding the start, the best fixed setting in hindsight and the
oracle, and the adaptive-policy issue's criteria checked one by one (printed; exit 0 either way: it is a report).
Beside them, the oracle that must keep the start for the first window (``oracle_schedule(trace, hold=1)``): the best
any controller that observes before it acts can do, which tells a criterion no such controller can meet.

    .venv/bin/python hack/bench_policy.py [--json FILE] [--jobs 2] [--trace NAME ...] [--dir DIR]
                                          [--window-noise arrivals|counts]

``--dir`` runs the traces in DIR instead, e.g. worlds drawn at random (`hack/gen-traces.py DIR --unseen N`).
``--window-noise`` runs every trace with that noise model (``simulate.observe``) instead of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from specdeploy.offline.oracle import oracle_schedule
from specdeploy.offline.simulate import compare, simulate
from specdeploy.offline.trace import WINDOW_NOISES, Trace, WindowNoise, load_trace, with_start

TRACES = Path(__file__).resolve().parent.parent / "operator" / "specdeploy" / "offline" / "traces"
HOLD_BOUND = 1.02  # never worse than holding the start by more than this
BEST_BOUND = 1.05  # within this of the best fixed setting chosen with hindsight
MEAN_SCORE = 0.95  # mean of oracle / policy latency over traces and starts


def starts(trace: Trace) -> list[int]:
    return sorted({0, 1, trace.start_k, trace.adaptive.max_tokens})


Job = tuple[str, int, WindowNoise | None]  # a trace's path, the start, the noise model (None: the trace's own)


def job_trace(job: Job) -> Trace:
    path, k, noise = job
    trace = with_start(load_trace(path), k)
    return replace(trace, window_noise=noise) if noise else trace


def run(job: Job) -> dict[str, Any]:
    return compare(job_trace(job))


def run_observing(job: Job) -> dict[str, Any]:
    """:func:`run`, and the oracle that keeps the start for the first window (the report's alone: no test reads it)."""
    trace = job_trace(job)
    observing = oracle_schedule(trace, hold=1)
    return {**compare(trace), "oracle_observing": simulate(trace, lambda i, *_: observing[i])}


def beyond_best(r: dict[str, Any], name: str = "policy") -> bool:
    """Whether the controller ``name`` is beyond :data:`BEST_BOUND` of the best fixed setting in hindsight."""
    return ms(r, name) > BEST_BOUND * r["best_schedule"]["mean_token_latency_ms"]


def ms(r: dict[str, Any], name: str) -> float:
    return r[name]["mean_token_latency_ms"]


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'trace':<20}{'start':>6}{'policy':>9}{'hold':>9}{'best fixed':>12}{'oracle':>9}{'observing':>10}"
            f"{'p/hold':>8}{'p/best':>8}{'score':>7}{'restarts':>9}{'goodput p/off':>14}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in results:
        best = r["best_schedule"]
        lines.append(
            f"{r['trace']:<20}{r['start_k']:>6}{ms(r, 'policy'):>9.2f}{ms(r, 'hold'):>9.2f}"
            f"{best['mean_token_latency_ms']:>9.2f}@{best['k']:<2}{ms(r, 'oracle'):>9.2f}"
            f"{ms(r, 'oracle_observing'):>10.2f}"
            f"{ms(r, 'policy') / ms(r, 'hold'):>8.3f}{ms(r, 'policy') / best['mean_token_latency_ms']:>8.3f}"
            f"{ms(r, 'oracle') / ms(r, 'policy'):>7.3f}{r['policy']['restarts']:>9}"
            f"{r['policy']['goodput'] / r['always_off']['goodput']:>14.4f}"
        )
    return "\n".join(lines)


def criteria(results: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Each criterion with the (trace, start) rows that fail it."""

    def failing(test: Any) -> list[str]:
        return [f"{r['trace']}@{r['start_k']}" for r in results if not test(r)]

    mean = statistics.mean(ms(r, "oracle") / ms(r, "policy") for r in results)
    return [
        (f"never worse than holding the start by more than {HOLD_BOUND - 1:.0%}",
         failing(lambda r: ms(r, "policy") <= HOLD_BOUND * ms(r, "hold"))),
        ("never less goodput than always-off",
         failing(lambda r: r["policy"]["goodput"] >= r["always_off"]["goodput"] - 1e-6)),
        (f"within {BEST_BOUND:.2f}x of the best fixed setting in hindsight",
         failing(lambda r: not beyond_best(r))),
        (f"mean oracle/policy {mean:.3f} >= {MEAN_SCORE}", [] if mean >= MEAN_SCORE else ["all"]),
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--jobs", type=int, default=2, help="processes (one trace and start each)")
    ap.add_argument("--trace", action="append", help="only these traces (file stems)")
    ap.add_argument("--dir", type=Path, default=TRACES, help="the traces' directory (default: the shipped ones)")
    ap.add_argument("--window-noise", choices=WINDOW_NOISES, help="every trace with this noise model")
    args = ap.parse_args()
    paths = [p for p in sorted(args.dir.glob("*.yaml")) if not args.trace or p.stem in args.trace]
    jobs = [(str(p), k, args.window_noise) for p in paths for k in starts(load_trace(p))]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_observing, jobs))
    print(table(results))
    print()
    for text, failed in criteria(results):
        print(f"{'PASS' if not failed else 'FAIL'}  {text}" + (f": {len(failed)} of {len(results)} fail: "
              f"{', '.join(failed)}" if failed else ""))  # fmt: skip
    unreachable = [f"{r['trace']}@{r['start_k']}" for r in results if beyond_best(r, "oracle_observing")]
    print(f"      beyond {BEST_BOUND:.2f}x of the best fixed setting also for the oracle that observes the first "
          f"window: {', '.join(unreachable) or 'none'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
