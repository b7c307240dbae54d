#!/usr/bin/env python3
"""Write the Grafana dashboard (manifests/monitoring/dashboard.json) with grafana-foundation-sdk, Grafana's own
typed builders, rather than hand-written JSON. `python hack/dashboard.py` writes it; `--check` fails when stale.

Per SpeculativeDeployment ($namespace, $name): load, batch, queue, acceptance per position, mean acceptance length,
ITL p50/p95 (vLLM's metrics, labelled as the PodMonitor labels them), and the operator's own: k over time with its
changes as annotations, predicted vs observed per-token latency. The e2e test runs every query against the real
Prometheus scraping the simulator's pods and the operator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

OUT = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
VLLM = 'namespace="$namespace",deployment="$name"'  # the PodMonitor's labels on vLLM's series
OPERATOR = 'namespace="$namespace",name="$name"'  # the operator's per-resource labels
WINDOW = "[$__rate_interval]"

# (title, unit, [(legend, PromQL)]): one time-series panel each, two to a row of the 24-column grid.
PANELS = [
    ("Load: requests served", "reqps", [("req/s", f"sum(rate(vllm:request_success_total{{{VLLM}}}{WINDOW}))")]),
    ("Batch and queue", "short", [
        ("running", f"sum(vllm:num_requests_running{{{VLLM}}})"),
        ("waiting", f"sum(vllm:num_requests_waiting{{{VLLM}}})"),
    ]),
    ("Acceptance per draft position", "percentunit", [(
        "position {{position}}",
        f"sum by (position) (rate(vllm:spec_decode_num_accepted_tokens_per_pos_total{{{VLLM}}}{WINDOW}))"
        f" / ignoring (position) group_left sum(rate(vllm:spec_decode_num_drafts_total{{{VLLM}}}{WINDOW}))",
    )]),
    ("Mean acceptance length (tokens per step)", "short", [(
        "tokens per step",
        f"1 + sum(rate(vllm:spec_decode_num_accepted_tokens_total{{{VLLM}}}{WINDOW}))"
        f" / sum(rate(vllm:spec_decode_num_drafts_total{{{VLLM}}}{WINDOW}))",
    )]),
    ("Inter-token latency", "s", [
        (f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket{{{VLLM}}}"
                  f"{WINDOW})))")
        for q in (50, 95)
    ]),
    ("k over time (changes annotated)", "short", [("k", f"specdeploy_effective_k{{{OPERATOR}}}")]),
    ("Per-token latency: predicted vs observed", "s", [
        ("predicted", f'specdeploy_predicted_token_latency_seconds{{{OPERATOR},setting="current"}}'),
        ("predicted without speculation", f'specdeploy_predicted_token_latency_seconds{{{OPERATOR},setting="off"}}'),
        ("observed", f"specdeploy_observed_token_latency_seconds{{{OPERATOR}}}"),
    ]),
]  # fmt: skip
# A restart the policy started (a change of k or of schedule, which need not change the largest k), or a rollback.
K_CHANGES = (
    f"changes(specdeploy_restarts_total{{{OPERATOR}}}[2m]) > 0"
    f" or changes(specdeploy_rollbacks_total{{{OPERATOR}}}[2m]) > 0"
)


def build() -> dict:
    board = (
        dashboard.Dashboard("specdeploy: speculative decoding")
        .uid("specdeploy")
        .tags(["specdeploy", "vllm"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("namespace")
            .datasource(DATASOURCE)
            .query("label_values(specdeploy_effective_k, namespace)")
        )
        .with_variable(
            dashboard.QueryVariable("name")
            .label("SpeculativeDeployment")
            .datasource(DATASOURCE)
            .query('label_values(specdeploy_effective_k{namespace="$namespace"}, name)')
        )
        .annotation(
            dashboard.AnnotationQuery()
            .name("setting changes")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("orange")
            .expr(K_CHANGES)
        )
    )
    for i, (title, unit, targets) in enumerate(PANELS):
        grid = GridPos(h=8, w=12, x=12 * (i % 2), y=8 * (i // 2))
        panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).grid_pos(grid)
        for ref, (legend, expr) in zip("ABCD", targets, strict=False):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))


def text() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text():
            sys.exit(f"{OUT} is stale: run python hack/dashboard.py")
    else:
        OUT.write_text(text())
        print(f"wrote {OUT}")
