"""Simulator processes and a real Prometheus for the metrics tests (hack/prometheus.py starts Debian's binary)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
from procs import free_port, stop
from prometheus import Prometheus

__all__ = ["Prometheus", "SimProcess", "write_targets"]

FAST_PROFILE = {"output_tokens": 32, "prompt_tokens": 128}


class SimProcess:
    """`specdeploy sim-server` as a pod would run it, with the pod's labels for the scrape targets."""

    def __init__(self, pod: str, k: int, qps: float, namespace: str = "ns", deployment: str = "llm", **extra: Any):
        self.pod, self.k, self.port = pod, k, free_port()
        self.labels = {"namespace": namespace, "pod": pod, "deployment": deployment, "specdeploy_k": str(k)}
        spec = ["--speculative-config", json.dumps({"method": "eagle3", "model": "d", "num_speculative_tokens": k})]
        profile = {**FAST_PROFILE, **extra.pop("profile", {})}
        seed = str(extra.pop("seed", 1))
        argv = [sys.executable, "-m", "specdeploy.cli", "sim-server", "meta-llama/Llama-3.1-8B-Instruct",
                "--host", "127.0.0.1", "--port", str(self.port), *(spec if k else []),
                "--sim-qps", str(qps), "--sim-profile", json.dumps(profile), "--sim-seed", seed]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"simulator {pod} did not start")

    def target(self) -> dict[str, Any]:
        return {"targets": [f"127.0.0.1:{self.port}"], "labels": self.labels}

    def stop(self) -> None:
        stop(self.proc)


def write_targets(path: Path, sims: list[SimProcess]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([s.target() for s in sims]))
    tmp.replace(path)
