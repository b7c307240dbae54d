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

from specdeploy.shell.kube import Clients
from specdeploy.shell.sync import reconcile

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


def test_rbac_denial_is_not_swallowed() -> None:
    with pytest.raises(ApiException):
        reconcile(_clients(403, "Forbidden", "Forbidden"), _body(), logging.getLogger("test"))


def test_server_errors_are_retried() -> None:
    with pytest.raises(kopf.TemporaryError):
        reconcile(_clients(503, "Service Unavailable", "ServiceUnavailable"), _body(), logging.getLogger("test"))
