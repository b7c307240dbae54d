"""Error handling of one reconcile pass, with a stand-in client that fails the way the API server does.
(The operator's behaviour against a real API server is proven in tests/integration.)"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import kopf
import pytest
from kubernetes.client.rest import ApiException

from specdeploy.shell.kube import Applied, Clients
from specdeploy.shell.sync import TRANSIENT_REFUSAL_SECONDS, ApplyFailed, reconcile

from ..conftest import SAMPLE


def _failing(status: int, reason: str, cause: str) -> Any:
    def patch(*_: Any, **__: Any) -> None:
        exc = ApiException(status=status, reason=reason)
        details = {"causes": [{"reason": cause}]}
        exc.body = json.dumps({"kind": "Status", "code": status, "reason": reason, "details": details})
        raise exc

    class Api:
        patch_namespaced_deployment = patch_namespaced_service = patch

    return Api()


def _body() -> dict[str, Any]:
    body = json.loads(json.dumps(SAMPLE))
    body["metadata"].update(uid=str(uuid.uuid4()), generation=1)
    body["status"] = {"k": 3, "observedGeneration": 1}
    return body


def _clients(status: int, reason: str, cause: str) -> Clients:
    api = _failing(status, reason, cause)
    return Clients(api=None, apps=api, core=api, custom=None)  # type: ignore[arg-type]


def test_terminating_namespace_leaves_status_as_it_is() -> None:
    body = _body()
    clients = _clients(403, "Forbidden", "NamespaceTerminating")
    assert reconcile(clients, body, logging.getLogger("test")) == body["status"]


def degraded(exc: ApplyFailed) -> dict[str, Any]:
    return next(c for c in exc.status["conditions"] if c["type"] == "Degraded")


def test_rbac_denial_is_not_swallowed_and_status_says_so() -> None:
    with pytest.raises(ApplyFailed) as exc:
        reconcile(_clients(403, "Forbidden", "Forbidden"), _body(), logging.getLogger("test"))
    cond = degraded(exc.value)
    assert cond["status"] == "True" and cond["reason"] == "ApplyFailed"
    assert "403 Forbidden" in cond["message"] and "RBAC" in cond["message"]
    assert "observedGeneration" not in exc.value.status  # the new generation is not in effect


def test_a_brief_run_of_server_errors_is_retried_without_degraded_and_a_lasting_one_says_why() -> None:
    """A conflict or a 5xx the next pass gets through must not flap Degraded; one that lasts is reported."""
    clients, body = _clients(500, "Internal Server Error", "x"), _body()
    with pytest.raises(kopf.TemporaryError) as exc:
        reconcile(clients, body, logging.getLogger("test"))
    assert not isinstance(exc.value, ApplyFailed) and "500" in str(exc.value)
    began = clients.refusals.since(body["metadata"]["uid"], 0.0)  # the run began at the first refusal
    clients.refusals.clear(body["metadata"]["uid"])
    clients.refusals.since(body["metadata"]["uid"], began - TRANSIENT_REFUSAL_SECONDS)
    with pytest.raises(ApplyFailed) as lasting:
        reconcile(clients, body, logging.getLogger("test"))
    assert "500" in degraded(lasting.value)["message"]


def test_a_pass_that_gets_through_ends_the_run_of_refusals() -> None:
    body = _body()
    clients = _clients(409, "Conflict", "x")
    clients.refusals.since(body["metadata"]["uid"], 0.0)  # refused long ago

    class Accepting:
        def patch_namespaced_deployment(self, name: str, namespace: str, obj: dict[str, Any], **_: Any) -> Any:
            return {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}

        patch_namespaced_service = patch_namespaced_deployment

        def sanitize_for_serialization(self, obj: Any) -> Any:
            return obj

    api = Accepting()
    ok = Clients(api=api, apps=api, core=api, custom=None, refusals=clients.refusals)  # type: ignore[arg-type]
    reconcile(ok, body, logging.getLogger("test"))
    with pytest.raises(kopf.TemporaryError) as exc:
        reconcile(clients, body, logging.getLogger("test"))
    assert not isinstance(exc.value, ApplyFailed)


def test_the_refusals_of_a_resource_that_is_gone_are_forgotten() -> None:
    clients = _clients(409, "Conflict", "x")
    clients.refusals.since("gone", 0.0)
    clients.refusals.since("listed", 0.0)
    clients.refusals.retain(["listed"])
    assert clients.refusals.since("gone", 100.0) == 100.0  # a new run, not the old one
    assert clients.refusals.since("listed", 100.0) == 0.0


def test_an_object_is_current_only_while_it_is_what_was_applied_at_the_version_applied() -> None:
    applied = Applied()
    dep = {"kind": "Deployment", "metadata": {"namespace": "ns", "name": "a"}, "spec": {"replicas": 1}}
    applied.record(dep, {"metadata": {"resourceVersion": "7"}})
    live = {("Deployment", "ns", "a"): {"metadata": {"resourceVersion": "7"}, "status": {}}}
    assert applied.current(dep, live) is live["Deployment", "ns", "a"]
    assert applied.current({**dep, "spec": {"replicas": 2}}, live) is None  # rendered differently since
    assert applied.current(dep, {("Deployment", "ns", "a"): {"metadata": {"resourceVersion": "8"}}}) is None
    assert applied.current(dep, {}) is None  # deleted
    applied.retain([])
    assert applied.current(dep, live) is None  # forgotten once a listing no longer finds it
