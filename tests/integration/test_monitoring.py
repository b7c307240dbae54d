"""Monitoring access. Where the operator reads metrics is its installer's choice: a SpeculativeDeployment can make it
contact no address and send no Secret of its author's choosing, and the operator may read Secrets only in its own
namespace. Where the PodMonitor API exists and is wanted, each resource gets its own PodMonitor."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from specdeploy.api import parse_time

from ..conftest import ROOT
from .conftest import Operator, kubectl, kubectl_apply, wait_for
from .test_operator import cond, get_sd, sample
from .test_packaging import apply_rbac

pytestmark = pytest.mark.cluster

OPERATOR_SA = "system:serviceaccount:specdeploy-system:specdeploy"
FAST = {"mode": "Recommend", "evaluationIntervalSeconds": 5, "windowSeconds": 30}


class Listener(http.server.ThreadingHTTPServer):
    """An author's server: records every request that reaches it (path and Authorization header)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status":"success","data":{"resultType":"vector","result":[]}}')

            def log_message(self, *_: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def named(name: str, adaptive: dict[str, Any]) -> dict[str, Any]:
    doc = sample(adaptive={**FAST, **adaptive})
    doc["metadata"]["name"] = name
    return doc


def evaluations_after(api: Any, ns: str, name: str, after: float) -> bool:
    last = ((get_sd(api, ns, name).get("status") or {}).get("lastEvaluation") or {}).get("time")
    return bool(last) and parse_time(last).timestamp() > after


def test_a_resource_cannot_choose_where_metrics_are_read_or_which_secret_is_sent(
    api: Any, namespace: str, operator: Operator, listener: Listener
) -> None:
    url = f"http://127.0.0.1:{listener.server_address[1]}"
    api.core.create_namespaced_secret(namespace, {"metadata": {"name": "victim"}, "stringData": {"token": "s3cret"}})
    # The removed per-resource field, as a resource running before the upgrade carries it: the API server keeps
    # it, the operator refuses it and leaves the running workload alone.
    kubectl_apply(named("own-url", {}), namespace)
    before = wait_for(lambda: api.apps.read_namespaced_deployment("own-url", namespace), what="own-url's Deployment")
    old = {"url": url, "bearerTokenSecret": {"name": "victim", "key": "token"}}
    kubectl("patch", "-n", namespace, "sd", "own-url", "--type", "merge",
            "-p", json.dumps({"spec": {"adaptive": {"prometheus": old}}}))  # fmt: skip
    # A name the installer did not configure.
    kubectl_apply(named("unknown", {"metricsEndpoint": "attacker"}), namespace)
    # A URL where the name goes never reaches the operator: the API server refuses it.
    refused = kubectl("apply", "-n", namespace, "-f", "-", check=False,
                      stdin=json.dumps(named("as-name", {"metricsEndpoint": url})))  # fmt: skip
    assert "spec.adaptive.metricsEndpoint" in refused and "should match" in refused, refused

    own = wait_for(lambda: cond(get_sd(api, namespace, "own-url"), "Degraded"), what="own-url judged")
    assert own["reason"] == "InvalidSpec" and "adaptive.prometheus: no longer supported" in own["message"], own
    assert "adaptive.metricsEndpoint" in own["message"]
    unknown = wait_for(lambda: cond(get_sd(api, namespace, "unknown"), "MetricsAvailable"), what="unknown evaluated")
    assert unknown["status"] == "False" and "metrics endpoint 'attacker' is not configured" in unknown["message"]
    # Both resources were live through several evaluation passes of the operator (the second one evaluated twice
    # more), and nothing reached the author's server.
    start = parse_time(get_sd(api, namespace, "unknown")["status"]["lastEvaluation"]["time"]).timestamp()
    wait_for(lambda: evaluations_after(api, namespace, "unknown", start + 5), timeout=60, what="two more passes")
    assert listener.seen == []
    kept = api.apps.read_namespaced_deployment("own-url", namespace)
    assert kept.metadata.generation == before.metadata.generation  # its workload is kept as it was


@pytest.mark.parametrize(("verb", "where", "allowed"), [
    ("get", "specdeploy-system", "yes"),  # the endpoints' token Secrets
    ("get", "default", "no"),
    ("list", "specdeploy-system", "no"),
    ("watch", "default", "no"),
])  # fmt: skip
def test_the_operator_may_read_secrets_only_in_its_own_namespace(
    cluster: Any, verb: str, where: str, allowed: str
) -> None:
    apply_rbac()
    out = kubectl("auth", "can-i", verb, "secrets", "-n", where, "--as", OPERATOR_SA, check=False).strip()
    assert out == allowed, out


def test_where_the_podmonitor_api_exists_each_resource_gets_an_owned_podmonitor(
    cluster: Any, operator: Operator, api: Any, namespace: str, tmp_path: Path
) -> None:
    """`--pod-monitors always` (what auto means on OpenShift): the API server stores the operator's PodMonitor
    (its schema: tests/fixtures/crds), owned by the resource, selecting exactly its pods; the garbage collector
    removes it with the resource. What the prometheus-operator would then scrape is not run here."""
    kubectl("apply", "-f", str(ROOT / "tests/fixtures/crds/monitoring.coreos.com_podmonitors.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/podmonitors.monitoring.coreos.com", "--timeout=30s")
    operator.stop()
    with_monitors = Operator(cluster.kubeconfig, tmp_path / "op.log", cluster.image, args=("--pod-monitors", "always"))
    try:
        with_monitors.start()
        kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
        monitor = wait_for(lambda: get_podmonitor(api, namespace), timeout=60, what="PodMonitor")
        sd = get_sd(api, namespace)
        assert monitor["metadata"]["ownerReferences"][0]["uid"] == sd["metadata"]["uid"]
        pods = api.apps.read_namespaced_deployment("llama-8b", namespace).spec.template.metadata.labels
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pods.items()
        kubectl("delete", "sd", "llama-8b", "-n", namespace)
        wait_for(lambda: get_podmonitor(api, namespace) is None, timeout=60, what="PodMonitor collected")
    finally:
        with_monitors.stop()
        operator.start()
        kubectl("delete", "-f", str(ROOT / "tests/fixtures/crds/monitoring.coreos.com_podmonitors.yaml"), check=False)


def get_podmonitor(api: Any, namespace: str) -> dict[str, Any] | None:
    try:
        return api.custom.get_namespaced_custom_object("monitoring.coreos.com", "v1", namespace, "podmonitors",
                                                       "llama-8b")  # fmt: skip
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


OPERATOR_FAMILIES = {
    "specdeploy_evaluations_total", "specdeploy_decisions_total", "specdeploy_restarts_total",
    "specdeploy_rollbacks_total", "specdeploy_restart_budget_remaining", "specdeploy_effective_k",
    "specdeploy_predicted_token_latency_seconds", "specdeploy_observed_token_latency_seconds",
    "specdeploy_metrics_available", "specdeploy_metrics_age_seconds", "specdeploy_rollout_failed",
    "specdeploy_reconcile_duration_seconds", "specdeploy_reconcile_errors_total",
}  # fmt: skip


def scrape(url: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as resp:
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def test_the_operator_serves_its_own_metrics(api: Any, namespace: str, operator: Operator) -> None:
    kubectl_apply(named("watched", {"metricsEndpoint": "attacker"}), namespace)  # evaluated, without data
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    mine = {"namespace": namespace, "name": "watched"}

    def evaluated() -> dict[str, Any] | None:
        fams = scrape(url)
        ok = any(s.labels == mine for s in fams["specdeploy_metrics_available"].samples)
        return fams if ok else None

    fams = wait_for(evaluated, timeout=60, what="the resource's series")
    # (prometheus-client names a counter's family without its _total suffix)
    names = {n if fams[n].type != "counter" else f"{n}_total" for n in fams}
    assert names >= OPERATOR_FAMILIES, OPERATOR_FAMILIES - names
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    key = tuple(sorted(mine.items()))
    assert value[("specdeploy_metrics_available", key)] == 0
    assert value[("specdeploy_effective_k", key)] == 3
    assert value[("specdeploy_rollout_failed", key)] == 0
    assert value[("specdeploy_evaluations_total", (("outcome", "no_data"),))] >= 1
    assert value[("specdeploy_reconcile_duration_seconds_count", ())] >= 1
    # The resource deleted: its series go at the next pass.
    kubectl("delete", "sd", "watched", "-n", namespace)
    wait_for(lambda: not any(s.labels.get("name") == "watched" for f in scrape(url).values() for s in f.samples),
             timeout=60, what="the deleted resource's series removed")  # fmt: skip
