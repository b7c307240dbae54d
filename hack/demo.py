#!/usr/bin/env python3
"""The CPU-only demo: local control plane + operator + simulated vLLM pods + Prometheus, and a load that rises
past the point where speculation stops paying and falls again, so the operator adapts k in front of you.

    hack/demo.sh                  # runs until Ctrl-C
    hack/demo.sh --duration 120   # stops by itself

There is no kubelet: this script plays its part (it starts each pod's container command, `specdeploy
sim-server` with the rendered vLLM arguments, as a local process and marks the pod Ready), and it splits the
offered load over the ready pods as their Service would. Everything else is real.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
import procs  # noqa: E402
from controlplane import ControlPlane  # noqa: E402
from kubelet_standin import FakeKubelet  # noqa: E402
from prometheus import Prometheus  # noqa: E402

SAMPLE = ROOT / "manifests" / "samples" / "llama-8b-simulated.yaml"
# (seconds from start, total requests/s): low, past the crossover, low again
LOAD_SCHEDULE = [(0, 20.0), (150, 170.0), (330, 20.0)]


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env)
    return out.stdout + out.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    ap.add_argument("--dir", type=Path, default=ROOT / ".demo")
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    print("starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...", flush=True)
    cp = ControlPlane(args.dir / "cluster").start()
    kc = cp.kubeconfig
    prom = Prometheus(args.dir / "prometheus").start()
    print(f"Prometheus: {prom.url}   KUBECONFIG={kc}", flush=True)
    operator = None
    stop = threading.Event()
    kubelet_thread = None
    try:
        print(kubectl(kc, "apply", "-k", str(ROOT / "crds")).strip())
        time.sleep(1)
        log = open(args.dir / "operator.log", "wb")  # noqa: SIM115
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "specdeploy.cli",
                "run",
                "--liveness",
                f"http://127.0.0.1:{procs.free_port()}/healthz",
            ],
            env={**os.environ, "KUBECONFIG": str(kc), "SPECDEPLOY_RESYNC_SECONDS": "10"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        kubernetes.config.load_kube_config(str(kc))
        (args.dir / "loads").mkdir()
        kubelet = FakeKubelet(
            kubernetes.client.CoreV1Api(),
            run_servers=True,
            sd_file=prom.targets_file,
            log_dir=args.dir,
            load_dir=args.dir / "loads",
            sim_env={"SPECDEPLOY_SIM_STARTUP_SECONDS": "3"},
        )
        kubelet_thread = threading.Thread(target=kubelet.run, args=(stop,), daemon=True)
        kubelet_thread.start()
        doc = yaml.safe_load(SAMPLE.read_text())
        ns = doc["metadata"]["namespace"]
        doc = copy.deepcopy(doc)
        doc["spec"]["adaptive"]["prometheus"]["url"] = prom.url
        print(kubectl(kc, "create", "namespace", ns).strip())
        print(kubectl(kc, "apply", "-f", "-", stdin=json.dumps(doc)).strip(), flush=True)
        start = time.monotonic()
        load = None
        while not args.duration or time.monotonic() - start < args.duration:
            t = time.monotonic() - start
            qps = [q for at, q in LOAD_SCHEDULE if at <= t][-1]
            if qps != load:
                load = qps
                kubelet.set_load(ns, doc["metadata"]["name"], qps)
                print(f"\n>>> offered load now {qps} requests/s", flush=True)
            print(f"\n--- t={t:.0f}s " + "-" * 60)
            print(kubectl(kc, "get", "sd,deployment,replicaset,pods", "-n", ns).strip())
            st = json.loads(kubectl(kc, "get", "sd", "-n", ns, "-o", "json"))["items"]
            for item in st:
                s = item.get("status") or {}
                conds = {c["type"]: c["status"] for c in s.get("conditions", [])}
                print(f"conditions: {conds}")
                print(f"policy: {(s.get('lastEvaluation') or {}).get('reason', '-')}")
                for d in (s.get("decisions") or [])[-3:]:
                    print(f"decision {d['time']}: {d['action']} {d['fromK']}->{d['toK']}: {d['reason']}")
            sys.stdout.flush()
            time.sleep(10)
    except KeyboardInterrupt:
        pass
    finally:
        print("\nstopping...", flush=True)
        stop.set()
        if kubelet_thread:
            kubelet_thread.join(timeout=15)
        procs.stop(operator, timeout=15)
        prom.stop()
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
