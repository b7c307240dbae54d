#!/usr/bin/env python3
"""Debian's Prometheus, scraping either the pods of the local cluster (the scrape configuration derived from
``manifests/monitoring/podmonitor.yaml`` as the prometheus-operator derives it, so the PodMonitor is what gets
tested; pods discovered by hack/pod_sd.py, since Debian builds Prometheus without the Kubernetes discovery) or
simulator processes listed in a file_sd JSON file (tests of the simulator alone).

    python hack/prometheus.py --dir /tmp/prom   # file_sd; runs until interrupted, prints its URL
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import free_port, stop

PODMONITOR = Path(__file__).resolve().parent.parent / "manifests" / "monitoring" / "podmonitor.yaml"


def meta_label(label: str) -> str:
    """A Kubernetes label name as Prometheus's service discovery spells it (non-alphanumerics become _)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def podmonitor_jobs(pods_file: Path, interval: str | None = None) -> list[dict[str, Any]]:
    """The scrape jobs the prometheus-operator generates for our PodMonitor: keep pods matching its selector and
    port name, drop finished pods, then the PodMonitor's own relabelings. ``pods_file`` is hack/pod_sd.py's
    target list (what kubernetes_sd_configs' pod role would discover); ``interval`` overrides the endpoint's
    (tests scrape faster). Namespace selection is the one part of the PodMonitor applied by relabeling here."""
    pm = yaml.safe_load(PODMONITOR.read_text())
    spec, jobs = pm["spec"], []
    selector = spec["selector"]["matchLabels"]
    names = spec.get("namespaceSelector", {}).get("matchNames") or [pm["metadata"].get("namespace", "default")]
    namespaces = (
        []
        if spec.get("namespaceSelector", {}).get("any")
        else [{"action": "keep", "source_labels": ["__meta_kubernetes_namespace"], "regex": "|".join(names)}]
    )
    for i, ep in enumerate(spec["podMetricsEndpoints"]):
        relabel: list[dict[str, Any]] = namespaces + [
            {"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{meta_label(k)}"], "regex": v}
            for k, v in selector.items()
        ]
        relabel += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": ep["port"]},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        ]
        relabel += [
            {"source_labels": r["sourceLabels"], "target_label": r["targetLabel"]} for r in ep.get("relabelings", [])
        ]
        jobs.append({
            "job_name": f"podMonitor/{pm['metadata']['name']}/{i}",
            "scrape_interval": interval or ep.get("interval", "30s"),
            "scrape_timeout": interval or ep.get("interval", "30s"),
            "metrics_path": ep.get("path", "/metrics"),
            "file_sd_configs": [{"files": [str(pods_file)], "refresh_interval": "1s"}],
            "relabel_configs": relabel,
        })  # fmt: skip
    return jobs


def servicemonitor_jobs(pods_file: Path, interval: str | None = None) -> list[dict[str, Any]]:
    """The operator's ServiceMonitor (manifests/monitoring/operator-metrics.yaml) as a scrape job: its Service's
    pods and port, labelled job=<the Service> as the prometheus-operator labels them. (The prometheus-operator
    discovers a Service's endpoints; the pods the Service selects, discovered by hack/pod_sd.py, are the same.)"""
    docs = list(yaml.safe_load_all((PODMONITOR.parent / "operator-metrics.yaml").read_text()))
    svc = next(d for d in docs if d["kind"] == "Service")
    sm = next(d for d in docs if d["kind"] == "ServiceMonitor")
    port = next(p for p in svc["spec"]["ports"] if p["name"] == sm["spec"]["endpoints"][0]["port"])
    relabel: list[dict[str, Any]] = [
        {"action": "keep", "source_labels": ["__meta_kubernetes_namespace"], "regex": svc["metadata"]["namespace"]},
        *({"action": "keep", "source_labels": [f"__meta_kubernetes_pod_label_{meta_label(k)}"], "regex": v}
          for k, v in svc["spec"]["selector"].items()),
        {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": port["targetPort"]},
        {"target_label": "job", "replacement": svc["metadata"]["name"]},
    ]  # fmt: skip
    every = interval or sm["spec"]["endpoints"][0].get("interval", "30s")
    return [{"job_name": f"serviceMonitor/{sm['metadata']['name']}/0", "scrape_interval": every,
             "scrape_timeout": every, "file_sd_configs": [{"files": [str(pods_file)], "refresh_interval": "1s"}],
             "relabel_configs": relabel}]  # fmt: skip


@dataclass
class Prometheus:
    workdir: Path
    scrape_interval: str = "1s"
    port: int = 0
    host: str = "127.0.0.1"
    jobs: list[dict[str, Any]] | None = None  # scrape jobs; None: the file_sd job over targets_file
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    def argv(self) -> list[str]:
        """Write the configuration and return Prometheus's command line (the cluster spawns it as a daemon)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: apt-get install prometheus (hack/setup.sh does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        config = self.workdir / "prometheus.yml"
        jobs = self.jobs or [
            {"job_name": "vllm", "scrape_timeout": self.scrape_interval,
             "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}]}
        ]  # fmt: skip
        interval = {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval}
        config.write_text(yaml.safe_dump({"global": interval, "scrape_configs": jobs}, sort_keys=False))
        self.port = self.port or free_port()
        return [binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--storage.tsdb.retention.time=2h",
                "--query.lookback-delta=30s", "--log.level=warn"]  # fmt: skip

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 30) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "prometheus.log").read_text()[-2000:])
            if self.ready():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"Prometheus not ready in {timeout}s")

    def stop(self) -> None:
        stop(self.proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    prom = Prometheus(args.dir.resolve(), port=args.port).start()
    print(prom.url, flush=True)
    try:
        prom.proc.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
