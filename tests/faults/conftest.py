"""Fault tests that need the cluster reuse the integration fixtures: the local cluster, the operator, namespaces."""

from ..integration.conftest import api, cluster, namespace, operator  # noqa: F401
