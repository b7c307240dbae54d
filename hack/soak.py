#!/usr/bin/env python3
"""Scale and soak on the local cluster: N SpeculativeDeployments (mode Recommend: every evaluation reads metrics,
runs the policy and writes status; nothing restarts) with simulated metrics (one synthetic exporter serving vLLM's
series for every deployment, scraped by Prometheus), for M minutes of evaluation cycles, the operator running as a
process with the shipped defaults (60 s evaluation interval, 30 s resync).

Reports the operator's peak and final memory (RSS, sampled), the evaluation lag (how long since each resource's
last evaluation, over all resources, sampled each interval; and the operator's own lag gauge), the evaluation
interval achieved, and throughput: the operator's mean resync and evaluation pass against a bare client making the
same API calls (the same lists, status patches and batch of PromQL) with the operator stopped, as a ratio.

    .venv/bin/python hack/soak.py [--resources 1000] [--minutes 30] [--interval 60] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
import cluster  # noqa: E402
from bench_metrics import serve  # noqa: E402
from procs import free_port, memory_mib, stop  # noqa: E402
from prometheus import Prometheus  # noqa: E402
from specdeploy.api import GROUP, PLURAL, VERSION, now_iso, parse_time  # noqa: E402
from specdeploy.shell.kube import Clients, gpu_products, list_owned, write_status  # noqa: E402
from specdeploy.shell.prometheus import Reader  # noqa: E402

NAMESPACE = f"soak-{os.getpid()}"  # its own per run: a namespace of a thousand resources takes a while to go
SAMPLE_SECONDS = 15  # how often memory and the operator's metrics are read: finer than a pass, cheap


def spec(interval: int) -> dict[str, Any]:
    return {
        "target": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
        "speculator": {"method": "eagle3", "model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
                       "numSpeculativeTokens": 3},
        "replicas": 0,  # no pods: the node's GPUs are not what is measured; the metrics are synthetic
        "adaptive": {"mode": "Recommend", "evaluationIntervalSeconds": interval, "windowSeconds": 60},
    }  # fmt: skip


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's pass histograms (sum, count), its lag gauge and its evaluations by outcome."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith(("_duration_seconds_sum", "_duration_seconds_count", "_lag_seconds")):
                out[s.name] = s.value
            elif s.name == "specdeploy_evaluations_total":
                out[f"evaluations_{s.labels['outcome']}"] = s.value
    return out


def ages(custom: Any, now: float) -> list[float]:
    """Seconds since each resource's last evaluation (inf: never evaluated)."""
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    out = []
    for cr in items:
        last = ((cr.get("status") or {}).get("lastEvaluation") or {}).get("time")
        out.append(now - parse_time(last).timestamp() if last else float("inf"))
    return out


def bare_resync(clients: Clients) -> float:
    """What one steady resync pass asks of the API server, made by a bare client: list the resources, then the
    Deployments and Services they own (nothing has changed since it was applied, so nothing is applied; status is
    written only when it changed: in a steady resync, never)."""
    t0 = time.perf_counter()
    clients.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
    list_owned(clients, [NAMESPACE])
    return time.perf_counter() - t0


def bare_evaluation(clients: Clients, prom_url: str, items: list[dict[str, Any]]) -> float:
    """What one evaluation pass asks: list, the pods and the labelled nodes, one batch of PromQL for all, then per
    resource a guarded status patch of an evaluation's size."""
    t0 = time.perf_counter()
    fresh = clients.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    gpu_products(clients, [])  # the operator watches every namespace
    Reader(prom_url).read([(NAMESPACE, cr["metadata"]["name"], "3") for cr in fresh], window_seconds=60)
    for cr in fresh:
        st = cr.get("status") or {}
        body = {k: st[k] for k in ("metrics", "policy", "conditions") if k in st}
        body["lastEvaluation"] = {
            **st.get("lastEvaluation", {}),
            "time": now_iso(datetime.now(UTC)),
        }  # a write, as the operator's is
        write_status(clients, cr, body, guarded=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--interval", type=int, default=60, help="spec.adaptive.evaluationIntervalSeconds")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="specdeploy-soak-"))
    started = not cluster.running()
    kubeconfig = cluster.up(operator=False)["kubeconfig"]
    cluster.scale_operator(0)
    kubernetes.config.load_kube_config(kubeconfig)
    api = kubernetes.client.ApiClient()
    clients = Clients(api, kubernetes.client.AppsV1Api(api), kubernetes.client.CoreV1Api(api),
                      kubernetes.client.CustomObjectsApi(api))  # fmt: skip
    names = [f"sd-{i}" for i in range(args.resources)]
    exporter, port = serve(names, NAMESPACE)
    prom = Prometheus(work / "prom", scrape_interval="15s").start()
    prom.targets_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {}}]))
    # The operator reads its endpoints from its own namespace, which a cluster started without it lacks.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cluster.OPERATOR_NAMESPACE}}
    endpoints = {"apiVersion": "v1", "kind": "List", "items": [namespace, cluster.metrics_endpoints(prom.url)]}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(endpoints))
    clients.core.create_namespace({"metadata": {"name": NAMESPACE}})
    metrics_port = free_port()
    op = subprocess.Popen(
        [sys.executable, "-m", "specdeploy.cli", "run", "--no-leader-election", "--metrics-port", str(metrics_port),
         "--liveness", f"http://127.0.0.1:{free_port()}/healthz"],
        env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=open(work / "operator.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    summary: dict[str, Any] = {"resources": args.resources, "minutes": args.minutes, "interval_s": args.interval}
    try:
        t0 = time.monotonic()
        for name in names:
            body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SpeculativeDeployment",
                    "metadata": {"name": name}, "spec": spec(args.interval)}  # fmt: skip
            clients.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        summary["create_s"] = round(time.monotonic() - t0, 1)
        print(f"created {args.resources} resources in {summary['create_s']}s; soaking {args.minutes} min", flush=True)
        # Warm-up: every resource evaluated once (the first pass meets them all at once).
        deadline = time.monotonic() + max(600, 3 * args.interval)
        while max(ages(clients.custom, time.time())) == float("inf"):
            if time.monotonic() > deadline:
                raise SystemExit("not every resource was evaluated within the warm-up")
            time.sleep(5)
        summary["warmup_s"] = round(time.monotonic() - t0, 1)
        rss, worst_age, missed, lags = [], [], 0, []
        at_start, soak_start = operator_metrics(metrics_port), time.monotonic()
        end = soak_start + args.minutes * 60
        next_age = time.monotonic() + args.interval
        while time.monotonic() < end:
            time.sleep(SAMPLE_SECONDS)
            if op.poll() is not None:
                raise SystemExit(f"the operator exited ({op.returncode}); log in {work / 'operator.log'}")
            rss.append(memory_mib(op.pid))
            lags.append(operator_metrics(metrics_port).get("specdeploy_evaluation_lag_seconds", 0.0))
            if time.monotonic() >= next_age:
                next_age += args.interval
                a = ages(clients.custom, time.time())
                worst_age.append(max(a))
                missed += sum(1 for x in a if x > 2 * args.interval)
                print(f"  {(time.monotonic() - t0) / 60:5.1f} min: RSS {rss[-1]:.0f} MiB, oldest evaluation "
                      f"{worst_age[-1]:.0f}s, lag {lags[-1]:.1f}s", flush=True)  # fmt: skip
        m = operator_metrics(metrics_port)
        third = max(1, len(rss) // 3)
        outcomes = ("observed", "no_data", "error")
        during = sum(m.get(f"evaluations_{o}", 0) - at_start.get(f"evaluations_{o}", 0) for o in outcomes)
        summary |= {
            "rss_peak_mib": round(max(rss), 1), "rss_first_third_mib": round(statistics.mean(rss[:third]), 1),
            "rss_last_third_mib": round(statistics.mean(rss[-third:]), 1),
            "oldest_evaluation_s": round(max(worst_age), 1) if worst_age else None,
            "evaluations_missed": missed, "lag_max_s": round(max(lags), 1),
            **{f"evaluations_{o}": m.get(f"evaluations_{o}", 0) for o in outcomes},
            # (resources x seconds soaked / evaluations in them: the interval achieved, against the one asked)
            "evaluation_interval_achieved_s": round(args.resources * (time.monotonic() - soak_start) / during, 1)
            if during else None,
            "resync_pass_s": round(m["specdeploy_resync_duration_seconds_sum"]
                                   / m["specdeploy_resync_duration_seconds_count"], 2),
            "evaluation_pass_s": round(m["specdeploy_evaluation_pass_duration_seconds_sum"]
                                       / m["specdeploy_evaluation_pass_duration_seconds_count"], 2),
        }  # fmt: skip
    finally:
        stop(op, timeout=30)
    try:
        items = clients.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
        resync = min(bare_resync(clients) for _ in range(2))
        evaluation = min(bare_evaluation(clients, prom.url, items) for _ in range(2))
        summary |= {
            "bare_resync_s": round(resync, 2), "bare_evaluation_s": round(evaluation, 2),
            "resync_throughput_ratio": round(resync / summary["resync_pass_s"], 2),
            "evaluation_throughput_ratio": round(evaluation / summary["evaluation_pass_s"], 2),
        }  # fmt: skip
    finally:
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(cluster.metrics_endpoints(cluster.PROMETHEUS_URL)))
        clients.core.delete_namespace(NAMESPACE)
        prom.stop()
        exporter.shutdown()
        if started:
            cluster.down()
    summary["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
