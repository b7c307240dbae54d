"""The install manifests render with kustomize, pass the real API server's dry run, and their RBAC suffices."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import ROOT, SAMPLES
from .conftest import Operator, kubectl, kubectl_apply, wait_for
from .test_operator import get_sd, sample

pytestmark = pytest.mark.cluster


def rendered() -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_renders_the_install() -> None:
    kinds = sorted(d["kind"] for d in rendered())
    assert kinds == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    dep = next(d for d in rendered() if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["resources"]["requests"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_manifests_pass_server_side_dry_run(cluster: Any) -> None:
    kubectl("create", "namespace", "specdeploy-system", check=False)
    out = kubectl("apply", "--dry-run=server", "-k", str(ROOT / "manifests"))
    # (created, or unchanged when `hack/cluster.sh up` installed it before these tests)
    assert re.search(r"deployment.apps/specdeploy-operator (created|configured|unchanged) \(server dry run\)", out)
    for sample_file in SAMPLES:
        doc = yaml.safe_load(sample_file.read_text())
        kubectl("create", "namespace", doc["metadata"]["namespace"], check=False)
        assert "(server dry run)" in kubectl("apply", "--dry-run=server", "-f", str(sample_file))


def apply_rbac() -> None:
    """The install's ServiceAccount and RBAC, as they are in manifests/."""
    kubectl("create", "namespace", "specdeploy-system", check=False)
    for doc in rendered():
        if doc["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            kubectl("apply", "-f", "-", stdin=json.dumps(doc))


def test_operator_works_with_exactly_its_rbac(
    cluster: Any, operator: Operator, api: Any, namespace: str, tmp_path: Path
) -> None:
    """Run the operator with the ServiceAccount's own token: every call it makes must be allowed by rbac.yaml
    (a Recommend resource makes it read its metrics-endpoint ConfigMap too)."""
    apply_rbac()
    secret_name = wait_for(
        lambda: (api.core.read_namespaced_service_account("specdeploy", "specdeploy-system").secrets or [None])[0],
        what="ServiceAccount token",
    ).name
    secret = api.core.read_namespaced_secret(secret_name, "specdeploy-system")
    token = base64.b64decode(secret.data["token"]).decode()
    admin = json.loads(cluster.kubeconfig.read_text())
    admin["users"] = [{"name": "admin", "user": {"token": token}}]
    kubeconfig = tmp_path / "sa-kubeconfig"
    kubeconfig.write_text(json.dumps(admin))
    operator.stop()  # the admin-credentialed operator must not do the work for it
    limited = Operator(kubeconfig, tmp_path / "limited.log", cluster.image)
    try:
        limited.start()
        kubectl_apply(sample(adaptive={"mode": "Recommend", "evaluationIntervalSeconds": 5}), namespace)
        wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), timeout=30, what="Deployment")
        wait_for(lambda: (get_sd(api, namespace).get("status") or {}).get("k") == 3, timeout=30, what="status")
        wait_for(lambda: (get_sd(api, namespace).get("status") or {}).get("lastEvaluation"), timeout=30,
                 what="an evaluation")  # fmt: skip
        kubectl("delete", "deployment", "llama-8b", "-n", namespace)
        wait_for(lambda: api.apps.read_namespaced_deployment("llama-8b", namespace), timeout=30, what="restored")
        log = (tmp_path / "limited.log").read_text()
        # An RBAC denial reads 'is forbidden: User "system:serviceaccount:..." cannot <verb> resource ...'.
        # (A 403 for a namespace that an earlier test is still deleting is not one, and the operator ignores it.)
        assert 'forbidden: User "system:serviceaccount:' not in log, log[-3000:]
    finally:
        limited.stop()
        operator.start()


@pytest.mark.parametrize("output", ["yaml", "json"])
def test_cli_render_output_is_accepted_by_the_api_server(cluster: Any, namespace: str, output: str) -> None:
    """Both outputs go straight to kubectl: YAML documents, or one JSON v1 List."""
    sample = yaml.safe_load((ROOT / "manifests/samples/llama-8b.yaml").read_text())
    del sample["metadata"]["namespace"]
    out = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "render", "-f", "-", "-n", namespace, "-o", output],
        input=yaml.safe_dump(sample), capture_output=True, text=True, check=True,
    )  # fmt: skip
    # The placeholder owner does not exist: its references go; the rest is applied in the format printed.
    if output == "json":
        doc = json.loads(out.stdout)
        for item in doc["items"]:
            del item["metadata"]["ownerReferences"]
        text = json.dumps(doc)
    else:
        docs = list(yaml.safe_load_all(out.stdout))
        for d in docs:
            del d["metadata"]["ownerReferences"]
        text = yaml.safe_dump_all(docs)
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=text)
    assert result.count("(server dry run)") == 2, result


def test_api_server_itself_rejects_a_bad_enum_and_k_zero(cluster: Any, namespace: str) -> None:
    bad = {
        "apiVersion": "specdeploy.io/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"target": {"model": "t"}, "speculator": {"method": "eagle4", "numSpeculativeTokens": 0}},
    }
    out = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(bad), capture_output=True, text=True)
    assert out.returncode != 0
    assert 'spec.speculator.method: Unsupported value: "eagle4"' in out.stderr
    assert "spec.speculator.numSpeculativeTokens in body should be greater than or equal to 1" in out.stderr


def test_kubectl_refuses_a_typo_in_a_pod_field(cluster: Any, namespace: str) -> None:
    """The CRD carries the Kubernetes types of the pod fields: a typo is refused before it reaches the operator."""
    bad = {
        "apiVersion": "specdeploy.io/v1alpha1",
        "kind": "SpeculativeDeployment",
        "metadata": {"name": "typo", "namespace": namespace},
        "spec": {"target": {"model": "t"}, "tolerations": [{"operatr": "Exists"}]},
    }
    out = subprocess.run(["kubectl", "apply", "-f", "-"], input=json.dumps(bad), capture_output=True, text=True)
    assert out.returncode != 0 and 'unknown field "operatr"' in out.stderr, out.stdout + out.stderr
