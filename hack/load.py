"""Offered load for simulated pods on the local cluster: a total request rate per SpeculativeDeployment, split
evenly over its ready pods as its Service would, posted to each simulator's ``/sim/load`` on its pod IP (the
host reaches pods through the node's bridge). New pods of a rolling restart get their share as they turn Ready.
Test support and demo only; not part of the shipped package.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import kubernetes
import urllib3

POLL_SECONDS = 0.5  # how soon a newly Ready pod gets its share; each poll is one pod list per deployment


@dataclass
class PodLoad:
    core: kubernetes.client.CoreV1Api
    loads: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    posted: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod uid -> what it was last given

    def set(self, namespace: str, deployment: str, qps: float, acceptance: list[float] | None = None) -> None:
        """Offer ``qps`` requests/s in total to a deployment (and, optionally, this acceptance per position)."""
        self.loads[(namespace, deployment)] = {"qps": qps, **({"acceptance": acceptance} if acceptance else {})}

    def _share(self, namespace: str, deployment: str, load: dict[str, Any]) -> None:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"specdeploy.io/deployment={deployment}")
        ready = [p for p in pods.items if p.status.pod_ip and _ready(p) and not p.metadata.deletion_timestamp]
        for pod in ready:
            want = {**load, "qps": load["qps"] / len(ready)}
            if self.posted.get(pod.metadata.uid) == want:
                continue
            port = next(p.container_port for p in pod.spec.containers[0].ports if p.name == "http")
            req = urllib.request.Request(
                f"http://{pod.status.pod_ip}:{port}/sim/load", data=json.dumps(want).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                urllib.request.urlopen(req, timeout=2).close()
                self.posted[pod.metadata.uid] = want
            except OSError:
                pass  # not listening yet or going away: next poll

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(POLL_SECONDS):
            for (namespace, deployment), load in list(self.loads.items()):
                # A namespace going away or the API server restarting: the next poll tries again.
                with contextlib.suppress(kubernetes.client.ApiException, urllib3.exceptions.HTTPError):
                    self._share(namespace, deployment, load)

    def start(self) -> threading.Event:
        """Run in a daemon thread until the returned event is set."""
        stop = threading.Event()
        threading.Thread(target=self.run, args=(stop,), daemon=True).start()
        return stop


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
