"""A stand-in kubelet for the local control plane, which has no nodes (tests and the CPU-only demo only).

It plays the kubelet's part, as KWOK does, for pods of SpeculativeDeployments: for each Pending pod it can
start the pod's own container command (``specdeploy sim-server`` + the rendered vLLM args) as a local process
on a free loopback port, waits for ``/health``, then marks the pod Running and Ready so the Deployment
controller's rolling update proceeds. Deleted pods get their process stopped. It optionally writes a
Prometheus ``file_sd`` target list carrying the labels a PodMonitor would add (namespace, pod, deployment, k).
This is never used in a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from procs import free_port, stop
from specdeploy.core.render import LABEL_DEPLOYMENT, LABEL_K, MANAGER

SELECTOR = f"app.kubernetes.io/managed-by={MANAGER}"


@dataclass
class PodProcess:
    proc: subprocess.Popen[bytes] | None
    port: int
    labels: dict[str, str]


@dataclass
class FakeKubelet:
    """Marks managed pods Ready (``run_servers=False``) or runs their simulator first (``run_servers=True``)."""

    core: kubernetes.client.CoreV1Api
    namespace: str | None = None
    run_servers: bool = False
    sd_file: Path | None = None
    log_dir: Path | None = None
    sim_env: dict[str, str] = field(default_factory=dict)
    load_dir: Path | None = None
    pods: dict[str, PodProcess] = field(default_factory=dict)
    loads: dict[str, dict[str, Any]] = field(default_factory=dict)  # "namespace/deployment" -> total load

    def set_load(self, namespace: str, deployment: str, qps: float, acceptance: list[float] | None = None) -> None:
        """Offer ``qps`` requests/s to a deployment; like its Service, split evenly over its ready pods."""
        self.loads[f"{namespace}/{deployment}"] = {"qps": qps, **({"acceptance": acceptance} if acceptance else {})}

    def _list(self) -> list[Any]:
        if self.namespace:
            return self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR).items
        return self.core.list_pod_for_all_namespaces(label_selector=SELECTOR).items

    def _start(self, pod: Any) -> PodProcess:
        c = pod.spec.containers[0]
        if not self.run_servers:
            return PodProcess(None, 0, dict(pod.metadata.labels))
        port = free_port()
        args = list(c.args)
        args[args.index("--port") + 1] = str(port)  # every local "pod" needs its own port
        argv = [sys.executable, "-m", "specdeploy.cli", *c.command[1:], *args, "--host", "127.0.0.1"]
        env = {**os.environ, **self.sim_env, **{e.name: e.value for e in c.env or [] if e.value is not None}}
        env["SPECDEPLOY_SIM_POD"] = pod.metadata.name
        if self.load_dir:
            env["SPECDEPLOY_SIM_LOAD_FILE"] = str(self.load_dir / f"{pod.metadata.namespace}.{pod.metadata.name}.json")
        log = open(self.log_dir / f"{pod.metadata.name}.log", "wb") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return PodProcess(proc, port, dict(pod.metadata.labels))

    @staticmethod
    def _healthy(pp: PodProcess) -> bool:
        if pp.proc is None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{pp.port}/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _mark_ready(self, pod: Any, port: int) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cond = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        c = pod.spec.containers[0]
        body = {
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "startTime": now,
                "conditions": cond,
                "containerStatuses": [
                    {
                        "name": c.name,
                        "image": c.image,
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                ],
            }
        }
        if port:
            body["metadata"] = {"annotations": {"specdeploy.io/local-port": str(port)}}
            self.core.patch_namespaced_pod(pod.metadata.name, pod.metadata.namespace, {"metadata": body["metadata"]})
        self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": body["status"]})

    def sync_once(self) -> None:
        """One pass: start what is new, mark Ready what is healthy, stop what is gone."""
        seen, ready_keys = set(), set()
        for pod in self._list():
            key = f"{pod.metadata.namespace}/{pod.metadata.name}"
            if pod.metadata.deletion_timestamp:
                continue
            seen.add(key)
            if key not in self.pods:
                self.pods[key] = self._start(pod)
            pp = self.pods[key]
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            if not ready and self._healthy(pp):
                self._mark_ready(pod, pp.port)
                ready = True
            if ready:
                ready_keys.add(key)
        for key in set(self.pods) - seen:
            stop(self.pods.pop(key).proc, timeout=5)
        self._write_sd()
        self._write_loads({key for key in seen if key in ready_keys})

    def _write_loads(self, ready: set[str]) -> None:
        if self.load_dir is None:
            return
        for dep_key, load in self.loads.items():
            ns = dep_key.split("/")[0]
            members = [
                k
                for k in ready
                if k.startswith(f"{ns}/") and self.pods[k].labels.get(LABEL_DEPLOYMENT) == dep_key.split("/")[1]
            ]
            for key in members:
                share = {**load, "qps": load["qps"] / len(members)}
                path = self.load_dir / f"{key.replace('/', '.')}.json"
                if not path.exists() or json.loads(path.read_text()) != share:
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(share))
                    tmp.replace(path)

    def _write_sd(self) -> None:
        if self.sd_file is None:
            return
        targets = [
            {
                "targets": [f"127.0.0.1:{pp.port}"],
                "labels": {
                    "namespace": key.split("/")[0],
                    "pod": key.split("/")[1],
                    "deployment": pp.labels.get(LABEL_DEPLOYMENT, ""),
                    "specdeploy_k": pp.labels.get(LABEL_K, ""),
                },
            }
            for key, pp in sorted(self.pods.items())
            if pp.proc is not None
        ]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets, indent=1))
        tmp.replace(self.sd_file)  # atomic: Prometheus never reads half a file

    def run(self, stop: Any, period: float = 0.5) -> None:
        """Loop until ``stop`` (a threading.Event) is set; API errors are retried on the next pass."""
        while not stop.is_set():
            with contextlib.suppress(kubernetes.client.ApiException, OSError):
                self.sync_once()
            stop.wait(period)
        self.close()

    def close(self) -> None:
        for pp in self.pods.values():
            stop(pp.proc, timeout=5)
        self.pods.clear()
        self._write_sd()
