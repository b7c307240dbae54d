"""Generated specs (hypothesis), judged by validation and by the real API server: the README's sample mutated
field by field (wrong types, out-of-range numbers, nulls, strings where numbers go, unknown keys), and specs made
at random from the API's field names. Validation refuses with field-named problems and nothing else; every spec
it accepts, the API server accepts too (a server-side dry run of each). That each accepted spec
renders commands vLLM 0.33 accepts, tests/integration/test_vllm_judge.py shows."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import kubernetes
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specdeploy.api import API_VERSION, GROUP, KIND, PLURAL, VERSION, SpecError, validate_spec

from ..conftest import SAMPLE
from ..integration.conftest import Cluster

pytestmark = pytest.mark.cluster


def leaf_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in leaf_paths(v, (*prefix, k))] + ([prefix] if prefix else [])
    return [prefix]


BASE = SAMPLE["spec"]
PATHS = sorted(set(leaf_paths(BASE)))
# Optional fields the sample leaves out, so mutation reaches them too.
EXTRA = [("replicas",), ("backend",), ("image",), ("env",), ("rollout", "maxSurge"), ("rollout", "maxUnavailable"),
         ("rollout", "progressDeadlineSeconds"), ("adaptive", "evaluationIntervalSeconds"),
         ("adaptive", "windowSeconds"), ("adaptive", "metricsEndpoint"), ("adaptive", "allowDisable"),
         ("speculator", "schedule"), ("speculator", "draftTensorParallelSize"), ("target", "quantization"),
         ("resources", "gpuType"), ("unknownField",)]  # fmt: skip
NAMES = sorted({p[-1] for p in PATHS + EXTRA})
values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0", "3", "Auto", "Off", "eagle3", "ngram", "50%", "-1", "x" * 300, "H100"]),
    st.lists(st.integers(-1, 8), max_size=3), st.dictionaries(st.sampled_from(NAMES), st.integers(-1, 8), max_size=2),
)  # fmt: skip


def put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set (or, for the sentinel ..., delete) ``path`` in ``doc``, making mappings on the way."""
    for key in path[:-1]:
        if not isinstance(doc.get(key), dict):
            doc[key] = {}
        doc = doc[key]
    if value is ...:
        doc.pop(path[-1], None)
    else:
        doc[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    spec = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        put(spec, draw(st.sampled_from(PATHS + EXTRA)), draw(st.one_of(values, st.just(...))))
    return spec


random_specs = st.recursive(
    st.dictionaries(st.sampled_from(NAMES), values, max_size=4),
    lambda children: st.dictionaries(st.sampled_from(NAMES), st.one_of(values, children), max_size=4),
    max_leaves=12,
)


def test_validation_names_the_field_and_whatever_it_accepts_the_api_server_accepts(
    cluster: Cluster, tmp_path: Any
) -> None:
    accepted: list[dict[str, Any]] = []
    refused = 0

    @settings(max_examples=400, deadline=None, database=None, derandomize="SPECDEPLOY_EXPLORE" not in os.environ,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(st.one_of(mutated(), random_specs))
    def check(raw: dict[str, Any]) -> None:
        nonlocal refused
        try:
            validate_spec(raw)
        except SpecError as exc:
            refused += 1
            assert exc.problems and all(str(p).startswith("spec.") and ": " in str(p) for p in exc.problems), exc
            return
        accepted.append(raw)

    check()
    assert len(accepted) >= 10 and refused >= 100, (len(accepted), refused)  # both sides are exercised
    custom = kubernetes.client.CustomObjectsApi()
    refused_by_server = []
    for i, raw in enumerate(accepted):
        body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": f"generated-{i}"}, "spec": raw}
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body, dry_run="All")
        except kubernetes.client.ApiException as exc:
            refused_by_server.append(f"{json.dumps(raw)}\n  {json.loads(exc.body).get('message')}")
    assert not refused_by_server, "\n".join(refused_by_server)
