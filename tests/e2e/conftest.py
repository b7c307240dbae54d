"""End-to-end tests reuse the integration fixtures (the local cluster, namespaces, the offered load) and the closed
loop's Prometheus."""

from ..integration.conftest import api, cluster, load, namespace  # noqa: F401
from ..loop import prometheus  # noqa: F401
