"""Generate the CustomResourceDefinition from the pydantic models (pure).

Pydantic's JSON Schema is turned into a *structural* OpenAPI v3 schema, as Kubernetes requires: every
``$ref`` inlined, ``Optional[X]`` collapsed to X (absent rather than null), enums typed, free-form maps marked
``x-kubernetes-preserve-unknown-fields``. ``hack/gen-crd.py`` writes the result to ``crds/``; a unit test fails
when the committed file differs.
"""

from __future__ import annotations

from typing import Any

from . import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    SpeculativeDeploymentSpec,
    SpeculativeDeploymentStatus,
)

_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "format",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "nullable",
}


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if node.get("x-kubernetes-int-or-string"):
        out = {k: node[k] for k in ("description", "default") if k in node}
        return {**out, "x-kubernetes-int-or-string": True}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        extra = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            return _structural({**options[0], **extra}, defs)
        raise ValueError(f"cannot express union in a structural schema: {node}")
    out: dict[str, Any] = {k: v for k, v in node.items() if k in _KEEP}
    if "default" in out and (out["default"] in (None, "") or isinstance(out["default"], dict | list)):
        del out["default"]  # only scalar defaults: nested objects are defaulted by the operator
    if "exclusiveMinimum" in node:
        out["minimum"] = node["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "enum" in node and "type" not in out:
        out["type"] = "string"
    kind = out.get("type")
    if kind == "object":
        if "properties" in node:
            out["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        elif isinstance(node.get("additionalProperties"), dict) and node["additionalProperties"]:
            out["additionalProperties"] = _structural(node["additionalProperties"], defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}), defs)
    return out


def openapi_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)  # type: ignore[attr-defined]
    return _structural(schema, schema.get("$defs", {}))


PRINTER_COLUMNS = [
    {"name": "Method", "type": "string", "jsonPath": ".status.method"},
    {"name": "K", "type": "integer", "jsonPath": ".status.k"},
    {"name": "Schedule", "type": "string", "jsonPath": ".status.schedule", "priority": 1},  # kubectl get -o wide
    {"name": "Acceptance", "type": "string", "jsonPath": ".status.metrics.summary.acceptance"},
    {"name": "QPS", "type": "string", "jsonPath": ".status.metrics.summary.requestRate"},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.adaptive.mode"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crd() -> dict[str, Any]:
    """The SpeculativeDeployment CRD (apiextensions.k8s.io/v1)."""
    spec_schema = openapi_schema(SpeculativeDeploymentSpec)
    spec_schema["description"] = "What the user wants run; never written by the operator."
    status_schema = openapi_schema(SpeculativeDeploymentStatus)
    status_schema["description"] = "What the operator observed and decided."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "specdeploy"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "vLLM with speculative decoding, its draft length adapted to load.",
                            "properties": {
                                "apiVersion": {"type": "string", "description": "specdeploy.io/v1alpha1"},
                                "kind": {"type": "string", "description": "SpeculativeDeployment"},
                                "metadata": {"type": "object"},  # the API server allows nothing more here
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    header = "# Generated by hack/gen-crd.py from operator/specdeploy/api.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)
