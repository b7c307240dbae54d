#!/usr/bin/env python3
"""Reconcile latency on the local cluster (hack/cluster.py; the operator runs as a process, the installed one is
scaled to zero): time from creating N SpeculativeDeployments (as fast as the API takes them) to each one's
Deployment existing, p50/p99, and the operator's peak RSS.

    .venv/bin/python hack/bench_reconcile.py [--sizes 1 50 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
import cluster  # noqa: E402
from procs import free_port, memory_mib  # noqa: E402

SPEC = {
    "target": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
    "speculator": {
        "method": "eagle3",
        "model": "RedHatAI/Llama-3.1-8B-Instruct-speculator.eagle3",
        "numSpeculativeTokens": 3,
    },
    "replicas": 0,  # the Deployment is what is timed; no pods, so the node's GPUs are not the bottleneck
}


def run(n: int, custom: kubernetes.client.CustomObjectsApi, apps: kubernetes.client.AppsV1Api) -> list[float]:
    ns = f"bench-{n}"
    kubernetes.client.CoreV1Api().create_namespace({"metadata": {"name": ns}})
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for ev in w.stream(apps.list_namespaced_deployment, ns, timeout_seconds=600):
            name = ev["object"].metadata.name
            seen.setdefault(name, time.monotonic())
            if stop.is_set() or len(seen) >= n:
                w.stop()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(0.5)
    for i in range(n):
        name = f"sd-{i}"
        body = {"apiVersion": "specdeploy.io/v1alpha1", "kind": "SpeculativeDeployment",
                "metadata": {"name": name}, "spec": SPEC}  # fmt: skip
        created[name] = time.monotonic()
        custom.create_namespaced_custom_object("specdeploy.io", "v1alpha1", ns, "speculativedeployments", body)
    t.join(timeout=600)
    stop.set()
    kubernetes.client.CoreV1Api().delete_namespace(ns)
    return [seen[k] - created[k] for k in created if k in seen]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 200])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="specdeploy-bench-"))
    started = not cluster.running()
    kubeconfig = cluster.up(operator=False)["kubeconfig"]
    cluster.scale_operator(0)
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    op = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "specdeploy.cli",
            "run",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
            "--metrics-port",
            "0",
            "--no-leader-election",
        ],
        env=env,
        stdout=open(work / "operator.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        kubernetes.config.load_kube_config(kubeconfig)
        custom, apps = kubernetes.client.CustomObjectsApi(), kubernetes.client.AppsV1Api()
        time.sleep(5)
        print(f"{'resources':>10}{'created':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'operator RSS MiB':>18}")
        for n in args.sizes:
            lat = sorted(run(n, custom, apps))
            p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
            print(
                f"{n:>10}{len(lat):>9}{statistics.median(lat) * 1000:>10.0f}{p99 * 1000:>10.0f}"
                f"{lat[-1] * 1000:>10.0f}{memory_mib(op.pid, 'VmHWM'):>18.1f}",
                flush=True,
            )
    finally:
        op.terminate()
        op.wait(timeout=20)
        if started:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
