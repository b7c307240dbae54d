#!/usr/bin/env python3
"""Write the shipped traces (operator/specdeploy/offline/traces/*.yaml) used by `specdeploy simulate` and the benchmark.

Loads are totals over 2 replicas of the default profile (8B + EAGLE-3 on one H100-class GPU each): one replica
serves ~28 req/s without speculation and ~21 at k=3; speculation stops paying near 18-22 req/s per replica.
"""

import math
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parent.parent / "operator" / "specdeploy" / "offline" / "traces"
BASE = [0.75, 0.55, 0.40, 0.29, 0.21, 0.15, 0.11, 0.08]
HEADER = {"step_seconds": 30, "replicas": 2, "restart_seconds": 120}


def scaled(f: float) -> list[float]:
    return [round(min(1.0, x * f), 4) for x in BASE]


def write(name: str, doc: str, qps: list[float], acceptance: list[list[float]] | None = None) -> None:
    points = []
    for i, q in enumerate(qps):
        p = {"qps": round(q, 3)}
        if acceptance is not None:
            p["acceptance"] = acceptance[i]
        elif i == 0:
            p["acceptance"] = BASE
        points.append(p)
    text = f"# {doc}\n" + yaml.safe_dump({**HEADER, "points": points}, sort_keys=False, default_flow_style=None)
    (OUT / f"{name}.yaml").write_text(text)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    n = 240  # 2 hours at 30 s
    write("steady_low", "Steady low load: speculation should stay on at a high k.", [4.0] * n)
    write(
        "steady_high",
        "Steady high load: k=3 cannot serve it; speculation off can, and k=1 serves it faster with little headroom.",
        [50.0] * n,
    )
    write(
        "diurnal",
        "Diurnal cycle compressed to 4 hours: low at night, peak past the crossover at noon.",
        [26 - 22 * math.cos(2 * math.pi * i / 480) for i in range(480)],
    )
    write(
        "bursty",
        "Low base load with 10-minute bursts past the crossover every 40 minutes.",
        [46.0 if (i % 80) in range(40, 60) else 8.0 for i in range(n)],
    )
    write(
        "acceptance_drift",
        "Moderate load while acceptance drifts down to half (the traffic changes): the best k falls.",
        [12.0] * n,
        [scaled(1.0 - 0.5 * i / (n - 1)) for i in range(n)],
    )
    write(
        "load_ramp",
        "Load ramps from 2 to 52 req/s over 2 hours, then holds for 30 minutes.",
        [2 + 50 * min(1.0, i / 240) for i in range(300)],
    )


if __name__ == "__main__":
    main()
