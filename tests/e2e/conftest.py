"""End-to-end tests reuse the integration fixtures: the real control plane and the operator process."""

from ..integration.conftest import api, cluster, namespace, operator  # noqa: F401
