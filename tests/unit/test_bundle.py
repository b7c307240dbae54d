"""The OLM bundle is generated from the install's sources and says what the install does: the same Deployment,
the same cluster and namespace permissions, the same CRD, and an example the API accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from specdeploy.api import validate_manifest
from specdeploy.api.crd import crd

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import bundle


@pytest.fixture(scope="module")
def install() -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def csv() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "bundle/manifests/specdeploy.clusterserviceversion.yaml").read_text())


def test_the_bundle_is_what_its_sources_give() -> None:
    assert bundle.stale() == [], "run python hack/bundle.py"


def test_its_permissions_are_the_cluster_role_and_the_role(install: list[dict[str, Any]], csv: dict[str, Any]) -> None:
    spec = csv["spec"]["install"]["spec"]
    assert spec["clusterPermissions"] == [
        {"serviceAccountName": "specdeploy", "rules": bundle.one(install, "ClusterRole", "specdeploy")["rules"]}
    ]
    assert spec["permissions"] == [
        {"serviceAccountName": "specdeploy", "rules": bundle.one(install, "Role", "specdeploy")["rules"]}
    ]


def test_its_deployment_is_the_manifests(install: list[dict[str, Any]], csv: dict[str, Any]) -> None:
    (dep,) = csv["spec"]["install"]["spec"]["deployments"]
    assert dep["spec"] == bundle.one(install, "Deployment", "specdeploy-operator")["spec"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "specdeploy"


def test_its_crd_example_and_descriptors_are_the_apis() -> None:
    csv_doc = yaml.safe_load((ROOT / "bundle/manifests/specdeploy.clusterserviceversion.yaml").read_text())
    assert yaml.safe_load((ROOT / "bundle/manifests/specdeploy.io_speculativedeployments.yaml").read_text()) == crd()
    for example in json.loads(csv_doc["metadata"]["annotations"]["alm-examples"]):
        validate_manifest(example)
    (owned,) = csv_doc["spec"]["customresourcedefinitions"]["owned"]
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    for section, key in (("spec", "specDescriptors"), ("status", "statusDescriptors")):
        for d in owned[key]:
            node = schema[section]
            for part in d["path"].split("."):
                assert part in node.get("properties", {}), f"{section}.{d['path']} is not in the CRD"
                node = node["properties"][part]
    modes = {m["type"]: m["supported"] for m in csv_doc["spec"]["installModes"]}
    assert modes == {"OwnNamespace": False, "SingleNamespace": False, "MultiNamespace": False, "AllNamespaces": True}
