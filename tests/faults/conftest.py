"""Fault tests that need the cluster reuse the integration fixtures (the local cluster, the operator, namespaces,
the offered load) and the closed loop's Prometheus."""

from ..integration.conftest import api, cluster, load, namespace, operator  # noqa: F401
from ..loop import prometheus  # noqa: F401
