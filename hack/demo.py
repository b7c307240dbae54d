#!/usr/bin/env python3
"""The CPU-only demo on the local single-node cluster (hack/cluster.py): the operator installed from manifests/
and running in-cluster, the simulated sample's vLLM pods under containerd, Prometheus scraping them, and a load
that rises past the point where speculation stops paying and falls again, so the operator adapts k in front of you.

    hack/demo.sh                  # runs until Ctrl-C
    hack/demo.sh --duration 120   # stops by itself
    hack/demo.sh --keep           # leave the cluster up afterwards (hack/cluster.sh down stops it)

The script only offers load: split over the ready pods as their Service would (hack/load.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
import cluster  # noqa: E402
from load import PodLoad  # noqa: E402

SAMPLE = ROOT / "manifests" / "samples" / "llama-8b-simulated.yaml"
# (seconds from start, total requests/s): low, past the crossover, low again
LOAD_SCHEDULE = [(0, 20.0), (150, 170.0), (330, 20.0)]


def kubectl(*args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", f"--kubeconfig={cluster.P.root / 'kubeconfig'}", *args], input=stdin,
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout + out.stderr


def show(ns: str, t: float) -> None:
    print(f"\n--- t={t:.0f}s " + "-" * 60)
    print(kubectl("get", "sd,deployment,replicaset,pods", "-n", ns).strip())
    for item in json.loads(kubectl("get", "sd", "-n", ns, "-o", "json"))["items"]:
        s = item.get("status") or {}
        print(f"conditions: { {c['type']: c['status'] for c in s.get('conditions', [])} }")
        print(f"policy: {(s.get('lastEvaluation') or {}).get('reason', '-')}")
        for d in (s.get("decisions") or [])[-3:]:
            print(f"decision {d['time']}: {d['action']} {d['fromK']}->{d['toK']}: {d['reason']}")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running")
    args = ap.parse_args()
    started = not cluster.running()
    print("bringing up the local cluster (hack/cluster.sh up; the first time builds Kubernetes and images)...")
    info = cluster.up()
    print(f"export KUBECONFIG={info['kubeconfig']}   # Prometheus: {info['prometheus']}", flush=True)
    kubernetes.config.load_kube_config(info["kubeconfig"])
    doc = yaml.safe_load(SAMPLE.read_text())
    ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
    print(kubectl("create", "namespace", ns).strip())
    print(kubectl("apply", "-f", "-", stdin=json.dumps(doc)).strip(), flush=True)
    load = PodLoad(kubernetes.client.CoreV1Api())
    stop = load.start()
    start, offered = time.monotonic(), None
    try:
        while not args.duration or time.monotonic() - start < args.duration:
            t = time.monotonic() - start
            qps = [q for at, q in LOAD_SCHEDULE if at <= t][-1]
            if qps != offered:
                offered = qps
                load.set(ns, name, qps)
                print(f"\n>>> offered load now {qps} requests/s", flush=True)
            show(ns, t)
            time.sleep(10)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping...", flush=True)
        stop.set()
        kubectl("delete", "namespace", ns, "--wait=false")
        if started and not args.keep:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
