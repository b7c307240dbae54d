#!/usr/bin/env python3
"""Pod discovery for Debian's Prometheus, which is built without ``kubernetes_sd_configs`` (loading one fails with
"field kubernetes_sd_configs not found in type config.ScrapeConfig"): lists the cluster's pods every second and
writes a file_sd target list carrying the same ``__meta_kubernetes_pod_*`` labels Prometheus's own pod role
would (one target per container port), so the PodMonitor's relabelings (hack/prometheus.py) apply unchanged.

    python hack/pod_sd.py --kubeconfig KC --out targets.json   # runs until stopped
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prometheus import meta_label

POLL_SECONDS = 1.0  # how soon a new pod is scraped; one pod list per poll


def pod_targets(pod: Any) -> list[dict[str, Any]]:
    """The targets Prometheus's pod role makes of one pod: one per declared container port."""
    if not pod.status.pod_ip:
        return []
    meta = pod.metadata
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    owner = next((o for o in meta.owner_references or [] if o.controller), None)
    labels = {
        "__meta_kubernetes_namespace": meta.namespace,
        "__meta_kubernetes_pod_name": meta.name,
        "__meta_kubernetes_pod_ip": pod.status.pod_ip,
        "__meta_kubernetes_pod_uid": meta.uid,
        "__meta_kubernetes_pod_node_name": pod.spec.node_name or "",
        "__meta_kubernetes_pod_host_ip": pod.status.host_ip or "",
        "__meta_kubernetes_pod_phase": pod.status.phase or "",
        "__meta_kubernetes_pod_ready": str(ready).lower(),
        "__meta_kubernetes_pod_controller_kind": owner.kind if owner else "",
        "__meta_kubernetes_pod_controller_name": owner.name if owner else "",
    }
    for k, v in (meta.labels or {}).items():
        labels[f"__meta_kubernetes_pod_label_{meta_label(k)}"] = v
        labels[f"__meta_kubernetes_pod_labelpresent_{meta_label(k)}"] = "true"
    for k, v in (meta.annotations or {}).items():
        labels[f"__meta_kubernetes_pod_annotation_{meta_label(k)}"] = v
        labels[f"__meta_kubernetes_pod_annotationpresent_{meta_label(k)}"] = "true"
    out = []
    for c in pod.spec.containers:
        for p in c.ports or []:
            out.append({
                "targets": [f"{pod.status.pod_ip}:{p.container_port}"],
                "labels": {**labels, "__meta_kubernetes_pod_container_name": c.name,
                           "__meta_kubernetes_pod_container_image": c.image,
                           "__meta_kubernetes_pod_container_init": "false",
                           "__meta_kubernetes_pod_container_port_name": p.name or "",
                           "__meta_kubernetes_pod_container_port_number": str(p.container_port),
                           "__meta_kubernetes_pod_container_port_protocol": p.protocol or "TCP"},
            })  # fmt: skip
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    kubernetes.config.load_kube_config(args.kubeconfig)
    core = kubernetes.client.CoreV1Api()
    last = None
    while True:
        try:
            targets = [t for pod in core.list_pod_for_all_namespaces().items for t in pod_targets(pod)]
        except (kubernetes.client.ApiException, OSError, urllib3.exceptions.HTTPError) as exc:
            # An API server restart surfaces as urllib3's MaxRetryError (not an OSError): keep polling, keep the
            # last target list, as Prometheus's own discovery does while the API server is away.
            print(f"pod-sd: {exc}", file=sys.stderr, flush=True)
        else:
            body = json.dumps(targets, sort_keys=True)
            if body != last:
                tmp = args.out.with_suffix(".partial")
                tmp.write_text(body)
                os.replace(tmp, args.out)  # Prometheus never reads a half-written file
                last = body
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
