"""End-to-end tests reuse the integration fixtures: the local cluster, namespaces and the offered load."""

from ..integration.conftest import api, cluster, load, namespace  # noqa: F401
