"""``specdeploy simulate --plot FILE``: offered load, the setting running and per-token latency over one trace, for
the policy beside speculation always off, the best fixed setting (a k or a schedule, chosen with hindsight) and the
oracle. A ``.png`` or ``.svg`` is a picture; an ``.html`` page holds the SVG. Needs matplotlib (``pip install
specdeploy[plot]``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..core.model import Setting, parse_schedule
from .oracle import oracle_schedule
from .simulate import Moment, policy_controller, simulate
from .trace import Trace

FORMATS = (".png", ".svg", ".html")


def _fixed(label: str) -> Setting:
    """A fixed setting as ``compare`` names it: a k ("3") or a schedule label ("3@1,0@40")."""
    return int(label) if label.isdigit() else parse_schedule(label)


def runs(trace: Trace, result: dict[str, Any]) -> dict[str, list[Moment]]:
    """Every step of each controller ``compare`` scored, with its mean per-token latency in the name."""
    schedule, best = oracle_schedule(trace), _fixed(str(result["best_schedule"]["k"]))
    controllers = {
        "policy": (policy_controller(trace), result["policy"]),
        "always off": (lambda *_: 0, result["always_off"]),
        f"best fixed ({result['best_schedule']['k']})": (lambda *_: best, result["best_schedule"]),
        "oracle": (lambda i, *_: schedule[i], result["oracle"]),
    }
    out = {}
    for name, (choose, figures) in controllers.items():
        moments: list[Moment] = []
        simulate(trace, choose, record=moments)
        out[f"{name}: {figures['mean_token_latency_ms']:.2f} ms"] = moments
    return out


def plot(trace: Trace, result: dict[str, Any], path: Path) -> None:
    """Draw the trace's runs into ``path`` (.png, .svg or .html)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if path.suffix not in FORMATS:
        raise ValueError(f"{path}: the picture must be one of {', '.join(FORMATS)}")
    series = runs(trace, result)
    fig, (load, setting, latency) = plt.subplots(3, 1, sharex=True, figsize=(10, 8), height_ratios=(1, 1, 2))
    first = next(iter(series.values()))
    hours = [m.t / 3600 for m in first]
    load.plot(hours, [m.qps for m in first], color="black")
    load.set_ylabel("offered load\n(req/s)")
    for name, moments in series.items():
        setting.step(hours, [m.k_drafted for m in moments], where="post", label=name)
        latency.plot(hours, [m.token_ms for m in moments], label=name)
    setting.set_ylabel("k drafted\n(at the batch running)")
    latency.set_ylabel("per-token latency (ms)")
    latency.set_yscale("log")
    latency.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    latency.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    latency.set_xlabel("hours")
    latency.legend(loc="upper left", fontsize="small")
    fig.suptitle(f"{trace.name}, starting at k={result['start_k']}")
    fig.tight_layout()
    if path.suffix == ".html":
        svg = io.StringIO()
        fig.savefig(svg, format="svg")
        path.write_text(f"<!doctype html><title>{trace.name}</title>\n{svg.getvalue()}\n")
    else:
        fig.savefig(path, dpi=100)
    plt.close(fig)
