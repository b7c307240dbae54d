"""The operator's metrics endpoints (:mod:`specdeploy.api.endpoints`) as connections: the ConfigMap and any token
Secret are read from the operator's own namespace, never a resource's, and re-read every pass so an admin's edit
applies without a restart."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes.client.rest import ApiException

from ..api import SpecError
from ..api.endpoints import CONFIGMAP, CONFIGMAP_KEY, EndpointAuth, Endpoints, PrometheusEndpoint, parse_endpoints
from .kube import Clients

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_OPERATOR_NAMESPACE = "specdeploy-system"


@dataclass(frozen=True)
class Connection:
    """What one batch of queries needs: where, the bearer token, and how to check the server's certificate
    (True: the system's CAs; False: not at all; a path: that PEM bundle)."""

    url: str
    token: str | None = None
    verify: bool | str = True


def operator_namespace() -> str:
    """The namespace the operator runs in (the downward API's POD_NAMESPACE, its ServiceAccount's, or the default)."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return (SERVICE_ACCOUNT / "namespace").read_text().strip()
    except OSError:
        return DEFAULT_OPERATOR_NAMESPACE


@dataclass(frozen=True)
class EndpointSource:
    """Where the configuration lives: the ConfigMap in ``namespace``, plus ``--prometheus-url`` as the default."""

    namespace: str
    default_url: str | None = None

    def load(self, clients: Clients) -> Endpoints:
        """The configuration now; :class:`SpecError` when the ConfigMap is malformed (no endpoint is then used)."""
        try:
            cm = clients.core.read_namespaced_config_map(CONFIGMAP, self.namespace)
            text = (cm.data or {}).get(CONFIGMAP_KEY)
        except ApiException as exc:
            if exc.status != 404:
                raise
            text = None
        config = parse_endpoints(text)
        return config.with_default_url(self.default_url) if self.default_url else config

    def connect(self, clients: Clients, endpoint: PrometheusEndpoint) -> Connection:
        """The connection for one endpoint, with its token read now (bound ServiceAccount tokens rotate).
        Raises :class:`SpecError` naming what is missing."""
        verify: bool | str = endpoint.ca_file or not endpoint.insecure_skip_verify
        if endpoint.auth == EndpointAuth.NONE:
            return Connection(endpoint.url, None, verify)
        if endpoint.auth == EndpointAuth.SERVICE_ACCOUNT_TOKEN:
            try:
                return Connection(endpoint.url, (SERVICE_ACCOUNT / "token").read_text().strip(), verify)
            except OSError as exc:
                raise SpecError.one("auth", f"ServiceAccountToken: no token at {SERVICE_ACCOUNT}: {exc}") from None
        ref = endpoint.secret
        assert ref is not None  # the model requires it with auth Secret
        try:
            secret = clients.core.read_namespaced_secret(ref.name, self.namespace)
            return Connection(endpoint.url, base64.b64decode((secret.data or {})[ref.key]).decode().strip(), verify)
        except (ApiException, KeyError) as exc:
            what = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else f"no key {ref.key}"
            raise SpecError.one("secret", f"Secret {self.namespace}/{ref.name}: {what}") from None
