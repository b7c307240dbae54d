#!/usr/bin/env python3
"""Write the OLM bundle (bundle/) from the sources `kubectl apply -k manifests` installs, so the two cannot drift:
the CRD (crds/), the operator's Deployment, ServiceAccount, ClusterRole and Role (manifests/base/), the metrics
endpoints and the aggregated user roles. `python hack/bundle.py` writes it; `--check` fails when it is stale.

The CSV supports the AllNamespaces install mode only: the operator watches every namespace (OLM's target-namespace
annotation is not read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from install import base_objects, dump
from specdeploy import __version__
from specdeploy.api import GROUP, KIND, PLURAL, VERSION
from specdeploy.api.crd import crd_yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bundle"
PACKAGE = "specdeploy"
CHANNEL = "alpha"
# Objects OLM installs beside the CSV, from manifests/base (OLM creates namespaced ones in the install namespace).
EXTRA = {"ConfigMap", "ClusterRole"}  # the metrics endpoints; the aggregated edit/view roles
# What a SpeculativeDeployment owns (core/objects.py renders them): the OpenShift console lists them as its children.
OWNED_KINDS = [("Deployment", "v1"), ("Service", "v1"), ("InferenceService", "v1beta1"),
               ("ServingRuntime", "v1alpha1"), ("PodMonitor", "v1")]  # fmt: skip
SPEC_DESCRIPTORS = [  # (path, display name, x-descriptors)
    ("target.model", "Target model", []),
    ("speculator.method", "Speculative method", []),
    ("speculator.numSpeculativeTokens", "Draft length (k)", ["urn:alm:descriptor:com.tectonic.ui:number"]),
    ("replicas", "Replicas", ["urn:alm:descriptor:com.tectonic.ui:podCount"]),
    ("backend", "Backend", ["urn:alm:descriptor:com.tectonic.ui:select:Deployment",
                            "urn:alm:descriptor:com.tectonic.ui:select:KServe"]),
    ("adaptive.mode", "Adaptive mode", ["urn:alm:descriptor:com.tectonic.ui:select:Off",
                                        "urn:alm:descriptor:com.tectonic.ui:select:Recommend",
                                        "urn:alm:descriptor:com.tectonic.ui:select:Auto"]),
    ("adaptive.metricsEndpoint", "Metrics endpoint", ["urn:alm:descriptor:com.tectonic.ui:text"]),
]  # fmt: skip
STATUS_DESCRIPTORS = [
    ("conditions", "Conditions", ["urn:alm:descriptor:io.kubernetes.conditions"]),
    ("k", "Running k", []),
    ("schedule", "Running schedule", []),
    ("recommendedK", "Recommended k", []),
    ("rollout", "Rollout", []),
    ("readyReplicas", "Ready replicas", ["urn:alm:descriptor:com.tectonic.ui:podCount"]),
]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def descriptors(rows: list[tuple[str, str, list[str]]]) -> list[dict[str, Any]]:
    return [{"path": p, "displayName": n, **({"x-descriptors": x} if x else {})} for p, n, x in rows]


def csv(docs: list[dict[str, Any]], example: dict[str, Any]) -> dict[str, Any]:
    """The ClusterServiceVersion: the operator's Deployment and RBAC exactly as manifests/base has them."""
    dep = one(docs, "Deployment", "specdeploy-operator")
    sa = one(docs, "ServiceAccount", "specdeploy")["metadata"]["name"]
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    owned = {
        "name": f"{PLURAL}.{GROUP}", "version": VERSION, "kind": KIND, "displayName": "Speculative Deployment",
        "description": "vLLM with speculative decoding, its draft length adapted to the measured load.",
        "resources": [{"kind": kind, "version": version} for kind, version in OWNED_KINDS],
        "specDescriptors": descriptors(SPEC_DESCRIPTORS), "statusDescriptors": descriptors(STATUS_DESCRIPTORS),
    }  # fmt: skip
    return {
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": f"{PACKAGE}.v{__version__}",
            "annotations": {
                "alm-examples": json.dumps([example], indent=2),
                "capabilities": "Auto Pilot",
                "categories": "AI/Machine Learning",
                "containerImage": image,
                "description": owned["description"],
                "operatorframework.io/suggested-namespace": "specdeploy-system",
            },
        },
        "spec": {
            "displayName": "specdeploy",
            "description": (ROOT / "docs" / "olm-description.md").read_text(),
            "version": __version__,
            "maturity": CHANNEL,
            "minKubeVersion": "1.20.0",
            "keywords": ["vllm", "speculative decoding", "llm", "inference", "kserve"],
            "provider": {"name": "specdeploy"},
            "links": [{"name": "Source", "url": "https://github.com/specdeploy/specdeploy"}],
            "installModes": [
                {"type": "OwnNamespace", "supported": False},
                {"type": "SingleNamespace", "supported": False},
                {"type": "MultiNamespace", "supported": False},
                {"type": "AllNamespaces", "supported": True},
            ],
            "customresourcedefinitions": {"owned": [owned]},
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": [
                        {"serviceAccountName": sa, "rules": one(docs, "ClusterRole", "specdeploy")["rules"]}
                    ],
                    "permissions": [{"serviceAccountName": sa, "rules": one(docs, "Role", "specdeploy")["rules"]}],
                    "deployments": [
                        {
                            "name": dep["metadata"]["name"],
                            "label": dep["metadata"].get("labels", {}),
                            "spec": dep["spec"],
                        }
                    ],
                },
            },
        },
    }


def files() -> dict[str, str]:
    """Bundle path -> content."""
    docs = base_objects()
    example = yaml.safe_load((ROOT / "manifests" / "samples" / "llama-8b.yaml").read_text())
    example["metadata"].pop("namespace", None)
    out = {
        f"manifests/{PACKAGE}.clusterserviceversion.yaml": dump(csv(docs, example)),
        f"manifests/{GROUP}_{PLURAL}.yaml": crd_yaml(),
    }
    for d in docs:
        if d["kind"] in EXTRA and d["metadata"]["name"] != "specdeploy":
            name = f"manifests/{d['metadata']['name']}_{d['apiVersion'].split('/')[-1]}_{d['kind'].lower()}.yaml"
            out[name] = dump(d)
    out["metadata/annotations.yaml"] = dump({"annotations": {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": CHANNEL,
        "operators.operatorframework.io.bundle.channel.default.v1": CHANNEL,
    }})  # fmt: skip
    header = "# Generated by hack/bundle.py from crds/ and manifests/base: do not edit.\n"
    return {path: header + text for path, text in out.items()}


def stale() -> list[str]:
    """Bundle files that differ from what the sources give, or that the sources no longer give."""
    want = files()
    have = {str(p.relative_to(OUT)) for p in OUT.rglob("*.yaml")} if OUT.exists() else set()
    return sorted(
        {p for p, t in want.items() if not (OUT / p).exists() or (OUT / p).read_text() != t} | (have - set(want))
    )


def main() -> int:
    if "--check" in sys.argv:
        if stale():
            print(f"bundle/ is stale ({', '.join(stale())}): run python hack/bundle.py", file=sys.stderr)
            return 1
        return 0
    for p in OUT.rglob("*.yaml") if OUT.exists() else []:
        p.unlink()
    for path, text in files().items():
        (OUT / path).parent.mkdir(parents=True, exist_ok=True)
        (OUT / path).write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
