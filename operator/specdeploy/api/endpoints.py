"""Where the operator reads metrics: named Prometheus endpoints, configured by whoever installs the operator.

A SpeculativeDeployment picks one by name (``spec.adaptive.metricsEndpoint``) or gets the default. It can name
neither an address nor a credential: an author allowed to create resources but not to read Secrets must not be able
to make the operator send a Secret, or any request, to a server of their choosing. The configuration is a YAML
document (the ``endpoints.yaml`` key of the ConfigMap ``specdeploy-metrics`` in the operator's namespace)::

    default: cluster
    endpoints:
      cluster:
        url: https://thanos-querier.openshift-monitoring.svc:9091
        auth: ServiceAccountToken      # None | ServiceAccountToken | Secret
        caFile: /etc/specdeploy/service-ca/service-ca.crt
      team-a:
        url: http://prometheus.team-a.svc:9090
        auth: Secret
        secret: {name: team-a-prometheus, key: token}   # in the operator's own namespace
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from . import Model, Problem, SpecError

CONFIGMAP = "specdeploy-metrics"
CONFIGMAP_KEY = "endpoints.yaml"
DEFAULT_NAME = "default"  # the endpoint --prometheus-url defines
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class EndpointAuth(StrEnum):
    """What the operator sends as a bearer token."""

    NONE = "None"
    SERVICE_ACCOUNT_TOKEN = "ServiceAccountToken"  # the operator's own (OpenShift's Thanos querier wants it)
    SECRET = "Secret"  # a Secret in the operator's namespace


class OperatorSecretRef(Model):
    name: str = Field(min_length=1, description="Secret in the operator's namespace.")
    key: str = Field(min_length=1, description="Key in the Secret's data.")


class PrometheusEndpoint(Model):
    """One Prometheus (or Thanos querier) the operator may query."""

    url: str = Field(pattern=r"^https?://", description="Base URL.")
    auth: EndpointAuth = Field(EndpointAuth.NONE, description="Bearer token to send.")
    secret: OperatorSecretRef | None = Field(None, description="The token's Secret, when auth is Secret.")
    ca_file: str | None = Field(None, pattern=r"^/", description="PEM bundle that signs the server's certificate.")
    insecure_skip_verify: bool = Field(False, description="Do not verify the server's certificate.")

    @model_validator(mode="after")
    def _secret_iff_secret_auth(self) -> PrometheusEndpoint:
        if (self.auth == EndpointAuth.SECRET) != (self.secret is not None):
            raise ValueError("secret is required when auth is Secret, and allowed only then")
        if self.ca_file and self.insecure_skip_verify:
            raise ValueError("caFile and insecureSkipVerify exclude each other")
        return self


class Endpoints(Model):
    """The operator's metrics endpoints by name, and which one a resource naming none gets."""

    default: str | None = Field(None, description="The endpoint of resources that name none.")
    endpoints: dict[str, PrometheusEndpoint] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_is_defined(self) -> Endpoints:
        if self.default is not None and self.default not in self.endpoints:
            raise ValueError(f"default {self.default!r} is not among the endpoints ({', '.join(self.endpoints)})")
        return self

    def pick(self, name: str | None) -> PrometheusEndpoint:
        """The endpoint a resource asks for by name (None: the default); a KeyError says what exists."""
        chosen = name or self.default
        if chosen is None or chosen not in self.endpoints:
            known = ", ".join(sorted(self.endpoints)) or "none"
            what = f"metrics endpoint {chosen!r} is not configured" if chosen else "no default metrics endpoint"
            raise KeyError(f"{what} (the operator knows: {known}; see the {CONFIGMAP} ConfigMap)")
        return self.endpoints[chosen]

    def with_default_url(self, url: str) -> Endpoints:
        """This configuration with ``--prometheus-url`` as the endpoint ``default``, which becomes the default."""
        return Endpoints(default=DEFAULT_NAME, endpoints={**self.endpoints, DEFAULT_NAME: PrometheusEndpoint(url=url)})


def parse_endpoints(text: str | None) -> Endpoints:
    """The configuration in ``text`` (YAML; empty: no endpoints); :class:`SpecError` names each bad field."""
    try:
        raw: Any = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as exc:
        raise SpecError([Problem(path=CONFIGMAP_KEY, message=f"not YAML: {exc}")]) from None
    try:
        config = Endpoints.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(
            [Problem(path=".".join(str(p) for p in (CONFIGMAP_KEY, *e["loc"])), message=e["msg"]) for e in exc.errors()]
        ) from None
    bad = [n for n in config.endpoints if re.fullmatch(NAME_PATTERN, n) is None]
    if bad:
        raise SpecError([Problem(path=f"{CONFIGMAP_KEY}.endpoints.{n}", message="must be a DNS label") for n in bad])
    return config
