"""Pod fields the spec passes through to the pod (tolerations, env, affinity, podSecurityContext), held to the
Kubernetes API's own types as the ``kubernetes`` client defines them (its models' ``openapi_types``): a typo or a
wrong type is named with its field path, and the same types give the CRD's schema for those fields, so kubectl's
validation refuses them too, with the client's own field descriptions. Pure: the client's model classes (type
definitions, no I/O) are read, never called; the CRD follows the pinned client version."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

import kubernetes.client.models as k8s

_SCALARS: dict[str, tuple[str, tuple[type, ...]]] = {
    "str": ("string", (str,)),
    "int": ("integer", (int,)),
    "bool": ("boolean", (bool,)),
    "float": ("number", (int, float)),
    "datetime": ("string", (str,)),
}
_LIST, _DICT = re.compile(r"List\[(.+)\]"), re.compile(r"Dict\[str, (.+)\]")
MAX_DEPTH = 12  # the core/v1 types used here nest 7 deep; deeper would mean a recursive type, kept free-form


def _fields(type_name: str) -> dict[str, str]:
    """A model's fields by their API (camelCase) name, with their client type names."""
    cls = getattr(k8s, type_name)
    return {cls.attribute_map[attr]: t for attr, t in cls.openapi_types.items()}


def _descriptions(type_name: str) -> dict[str, str]:
    """The first sentence of each field's description in the Kubernetes API (as the client carries it)."""
    cls = getattr(k8s, type_name)
    out = {}
    for attr in cls.openapi_types:
        text = " ".join((cls.model_fields[attr].description or attr).split())
        out[cls.attribute_map[attr]] = text.split(". ")[0].rstrip(".") + "."
    return out


def problems(value: Any, type_name: str, path: str) -> Iterator[tuple[str, str]]:
    """(path, message) for each place ``value`` is not a ``type_name`` (a client model name like V1Toleration)."""
    if m := _LIST.fullmatch(type_name):
        if not isinstance(value, list):
            yield path, "must be a list"
            return
        for i, item in enumerate(value):
            yield from problems(item, m[1], f"{path}[{i}]")
    elif m := _DICT.fullmatch(type_name):
        if not isinstance(value, dict):
            yield path, "must be an object"
            return
        for key, item in value.items():
            yield from problems(item, m[1], f"{path}.{key}")
    elif type_name in _SCALARS:
        name, kinds = _SCALARS[type_name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            yield path, f"must be {'an' if name[0] in 'aeiou' else 'a'} {name} (got {value!r})"
    elif type_name != "object":
        yield from _model_problems(value, type_name, path)


def _model_problems(value: Any, type_name: str, path: str) -> Iterator[tuple[str, str]]:
    if not isinstance(value, dict):
        yield path, "must be an object"
        return
    fields = _fields(type_name)
    for key, item in value.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            yield f"{path}.{key}", f"unknown field; {hint}known fields: {', '.join(sorted(fields))}"
        elif item is not None:
            yield from problems(item, fields[key], f"{path}.{key}")


def schema(type_name: str, nullable: bool = False, depth: int = 0) -> dict[str, Any]:
    """The structural OpenAPI schema of a client type; ``nullable`` on its own fields (null drops a default)."""
    if m := _LIST.fullmatch(type_name):
        return {"type": "array", "items": schema(m[1], depth=depth + 1)}
    if m := _DICT.fullmatch(type_name):
        return {"type": "object", "additionalProperties": schema(m[1], depth=depth + 1)}
    if type_name in _SCALARS:
        return {"type": _SCALARS[type_name][0]}
    if type_name == "object" or depth > MAX_DEPTH:  # int-or-string and free-form values
        return {"x-kubernetes-preserve-unknown-fields": True}
    extra = {"nullable": True} if nullable else {}
    described = _descriptions(type_name)
    props = {
        name: {**schema(t, depth=depth + 1), "description": described[name], **extra}
        for name, t in _fields(type_name).items()
    }
    return {"type": "object", "properties": props}
