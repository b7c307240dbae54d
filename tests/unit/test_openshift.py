"""The OpenShift overlay: it builds, its pods and every vLLM pod the operator renders there pass restricted-v2, and
it reads metrics through the Thanos querier with the operator's token and the service CA."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from specdeploy.api import validate_manifest
from specdeploy.api.endpoints import CONFIGMAP, CONFIGMAP_KEY, EndpointAuth, parse_endpoints
from specdeploy.cli import build_parser
from specdeploy.core.objects import render_all
from specdeploy.core.render import Owner, Platform, Site, render_deployment, render_pod_monitor, spec_k

from ..conftest import ROOT, SAMPLE, SAMPLES
from ..scc import restricted_v2_violations

OVERLAY = ROOT / "manifests/overlays/openshift"
RESOURCES = sorted([*SAMPLES, *(ROOT / "tests/fixtures/methods").glob("*.yaml")])


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_overlays_pods_pass_restricted_v2(overlay: list[dict[str, Any]]) -> None:
    pods = [d["spec"]["template"]["spec"] for d in overlay if d["kind"] == "Deployment"]
    assert pods and all(restricted_v2_violations(p) == [] for p in pods), [restricted_v2_violations(p) for p in pods]


@pytest.mark.parametrize("path", RESOURCES, ids=[p.name for p in RESOURCES])
def test_every_rendered_vllm_pod_passes_restricted_v2_on_openshift_and_only_there(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    spec = validate_manifest(doc)
    owner = Owner(doc["metadata"]["name"], "ns", "uid")
    pod = render_deployment(owner, spec, spec_k(spec), Site(Platform.OPENSHIFT))["spec"]["template"]["spec"]
    assert restricted_v2_violations(pod) == []
    # On plain Kubernetes the pod fixes its UID and fsGroup, which the SCC would refuse: the check can fail.
    kube = render_deployment(owner, spec, spec_k(spec), Site(Platform.KUBERNETES))["spec"]["template"]["spec"]
    assert any("runAsUser is fixed" in v for v in restricted_v2_violations(kube))


def test_metrics_come_from_the_thanos_querier_with_the_service_ca(overlay: list[dict[str, Any]]) -> None:
    config = parse_endpoints(one(overlay, "ConfigMap", CONFIGMAP)["data"][CONFIGMAP_KEY])
    thanos = config.pick(None)
    assert thanos.url == "https://thanos-querier.openshift-monitoring.svc:9091"
    assert thanos.auth == EndpointAuth.SERVICE_ACCOUNT_TOKEN and not thanos.insecure_skip_verify
    pod = one(overlay, "Deployment", "specdeploy-operator")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if thanos.ca_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    ca = one(overlay, "ConfigMap", volume["configMap"]["name"])
    assert ca["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"] == "true"
    assert Path(thanos.ca_file).name == "service-ca.crt"  # the key the service CA operator writes
    binding = one(overlay, "ClusterRoleBinding", "specdeploy-cluster-monitoring-view")
    assert binding["roleRef"]["name"] == "cluster-monitoring-view"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "specdeploy", "namespace": "specdeploy-system"}]


def test_the_operator_runs_the_inference_server_image_on_openshift(overlay: list[dict[str, Any]]) -> None:
    pod = one(overlay, "Deployment", "specdeploy-operator")["spec"]["template"]["spec"]
    args = build_parser().parse_args(pod["containers"][0]["args"])
    assert args.vllm_image.startswith("registry.redhat.io/rhaiis/") and args.platform == "openshift"


def test_namespace_users_get_speculative_deployments_through_edit_and_view(overlay: list[dict[str, Any]]) -> None:
    edit, view = one(overlay, "ClusterRole", "specdeploy-edit"), one(overlay, "ClusterRole", "specdeploy-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "create" in edit["rules"][0]["verbs"] and "create" not in view["rules"][0]["verbs"]


def test_on_openshift_each_resource_gets_a_podmonitor_selecting_its_own_pods() -> None:
    spec = validate_manifest(SAMPLE)
    owner = Owner("llama-8b", "team-a", "uid")
    dep, _, monitor = render_all(owner, spec, 3, Site(Platform.OPENSHIFT, pod_monitors=True))
    assert monitor["kind"] == "PodMonitor" and monitor["metadata"]["namespace"] == "team-a"
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == "uid"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert (
        monitor["spec"]["podMetricsEndpoints"][0]["port"]
        == dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]
    )
    assert [o["kind"] for o in render_all(owner, spec, 3, Site(Platform.KUBERNETES))] == ["Deployment", "Service"]


def test_the_cluster_wide_podmonitor_scrapes_as_the_per_resource_one_does() -> None:
    """One scrape configuration: the same relabelings give the same labels, whichever PodMonitor scrapes."""
    shipped = yaml.safe_load((ROOT / "manifests/monitoring/podmonitor.yaml").read_text())
    assert shipped["spec"]["podMetricsEndpoints"] == [
        render_pod_monitor(Owner("a", "b", "c"))["spec"]["podMetricsEndpoints"][0]
    ]
