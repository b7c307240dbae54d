"""The one-file install is generated, and installs what `kubectl apply -k manifests` installs; Argo CD's settings
are generated from the health check."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from ..conftest import ROOT, SAMPLES

sys.path.insert(0, str(ROOT / "hack"))
import install


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}


def test_specdeploy_yaml_and_argocd_cm_are_what_their_sources_give() -> None:
    for path, make in install.OUTPUTS.items():
        assert path.read_text() == make(), f"{path.name} is stale: run python hack/install.py"


def test_it_holds_exactly_the_kustomize_install() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True)
    kustomized = by_key([d for d in yaml.safe_load_all(out.stdout) if d])
    one_file = by_key([d for d in yaml.safe_load_all((ROOT / "specdeploy.yaml").read_text()) if d])
    assert one_file == kustomized


def test_the_samples_are_a_kustomization_of_every_sample() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests/samples/kustomization.yaml").read_text())
    files = [p.name for p in SAMPLES]
    assert sorted(kustomization["resources"]) == files
