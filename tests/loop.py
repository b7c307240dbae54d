"""The closed loop's shared pieces (tests/e2e, tests/faults): a small simulated engine, its resource, a Prometheus
of the test's own scraping the cluster's pods every second, and waits on the resource's status."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.alias_generators import to_camel

from specdeploy.api import parse_time
from specdeploy.core.render import LABEL_K

from .conftest import ROOT
from .integration.conftest import Cluster, kubectl, wait_for

sys.path.insert(0, str(ROOT / "hack"))
import cluster as local_cluster
from prometheus import Prometheus, podmonitor_jobs, servicemonitor_jobs

GROUP, VERSION, PLURAL = "specdeploy.io", "v1alpha1", "speculativedeployments"
NAME = "llama-8b"
# A small, compute-heavy engine (batches of at most 32) keeps the simulators cheap on a 2-core machine. One replica
# serves 20 req/s without speculation, 17.4 at k=1, 13.2 at k=3.
PROFILE = {"t_mem_ms": 15, "n_knee": 16, "t_tok_ms": 1.5, "max_num_seqs": 32, "output_tokens": 32,
           "prompt_tokens": 128, "prefill_ms_per_ktok": 20, "t_kv_ms_per_ktok": 0.1}  # fmt: skip
MAX_RESTARTS = yaml.safe_load((ROOT / "manifests/samples/llama-8b-simulated.yaml").read_text())["spec"]["adaptive"][
    "maxRestartsPerHour"
]
LOW, HIGH = 8.0, 37.0  # total req/s over 2 replicas: HIGH is past what any k > 0 serves


@pytest.fixture
def prometheus(tmp_path: Path, cluster: Cluster) -> Iterator[Prometheus]:
    """A Prometheus of this test's own (it is stopped mid-test), on the node's address so the operator's pod
    reaches it, scraping the cluster's pods with the PodMonitor's configuration every second."""
    pods = local_cluster.P.prometheus / "pods.json"
    jobs = podmonitor_jobs(pods, "1s") + servicemonitor_jobs(pods, "1s")  # vLLM's pods, and the operator
    prom = Prometheus(tmp_path / "prom", host=local_cluster.NODE_IP, jobs=jobs).start()
    # The operator reads where its installer points it: this Prometheus becomes its default endpoint (in the
    # operator's namespace, which a cluster started without the operator lacks).
    kubectl("create", "namespace", local_cluster.OPERATOR_NAMESPACE, check=False)
    kubectl("apply", "-f", "-", stdin=json.dumps(local_cluster.metrics_endpoints(prom.url)))
    yield prom
    prom.stop()
    kubectl("apply", "-f", "-", stdin=json.dumps(local_cluster.metrics_endpoints(local_cluster.PROMETHEUS_URL)))


def resource(**adaptive: Any) -> dict[str, Any]:
    doc = copy.deepcopy(yaml.safe_load((ROOT / "manifests/samples/llama-8b-simulated.yaml").read_text()))
    del doc["metadata"]["namespace"]
    doc["spec"]["simulation"]["profile"] = PROFILE
    # The simulated engine is small and compute-bound, nothing like the 8B-on-H100 estimate the operator would
    # start from; tell the policy what a benchmark of it measured, as a user would (adaptive.prior.profile).
    measured = {k: v for k, v in PROFILE.items() if k not in ("output_tokens", "prompt_tokens")}
    doc["spec"]["adaptive"]["prior"] = {"profile": {to_camel(k): v for k, v in measured.items()}}
    doc["spec"]["adaptive"].update(
        {"evaluationIntervalSeconds": 5, "windowSeconds": 30,
         "minDwellSeconds": 20, "cooldownSeconds": 10, "restartSeconds": 5, "horizonSeconds": 60, **adaptive}
    )  # fmt: skip
    return doc


def get_resource(api: Any, ns: str) -> dict[str, Any]:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME)


def status(api: Any, ns: str) -> dict[str, Any]:
    return api.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME).get("status") or {}


def cond(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


def wait_k(api: Any, ns: str, pred: Any, what: str, timeout: float = 150) -> dict[str, Any]:
    """Wait for a status (one read) whose k satisfies ``pred(k, status)`` with its rollout complete."""

    def done() -> dict[str, Any] | None:
        s = status(api, ns)
        ok = s.get("k") is not None and pred(s["k"], s) and s.get("rollout") == "Complete"
        return s if ok else None

    try:
        return wait_for(done, timeout=timeout, interval=1, what=what)
    except AssertionError as exc:
        st = {
            k: v
            for k, v in status(api, ns).items()
            if k in ("k", "schedule", "rollout", "lastEvaluation", "decisions", "metrics")
        }
        raise AssertionError(f"{exc}\nstatus: {json.dumps(st, indent=1)}\n{workloads(api, ns)}") from None


def workloads(api: Any, ns: str) -> str:
    """What the cluster shows of the namespace's Deployment and pods, for a failure message."""
    lines = []
    for d in api.apps.list_namespaced_deployment(ns).items:
        conds = [(c.type, c.status, c.reason, str(c.last_update_time)) for c in d.status.conditions or []]
        lines.append(f"deployment {d.metadata.name} gen {d.metadata.generation}/{d.status.observed_generation} {conds}")
    for p in api.core.list_namespaced_pod(ns).items:
        states = [(c.name, c.ready, c.restart_count, str(c.state)) for c in p.status.container_statuses or []]
        lines.append(f"pod {p.metadata.name} {p.status.phase} {p.metadata.labels.get(LABEL_K)} {states}")
    logs = kubectl("-n", local_cluster.OPERATOR_NAMESPACE, "logs", f"deployment/{local_cluster.OPERATOR_DEPLOYMENT}",
                   "--tail=60", check=False)  # fmt: skip
    return "\n".join([*lines, "operator log:", logs])


def evaluated(api: Any, ns: str, times: int, after: float) -> dict[str, Any]:
    """Wait until the operator has evaluated the resource ``times`` times (every 5 s here) after ``after``
    (epoch seconds); returns the status then."""
    at = after + times * 5

    def done() -> dict[str, Any] | None:
        s = status(api, ns)
        last = (s.get("lastEvaluation") or {}).get("time")
        return s if last and parse_time(last).timestamp() >= at else None

    return wait_for(done, timeout=times * 5 + 60, interval=1, what=f"{times} evaluations")
