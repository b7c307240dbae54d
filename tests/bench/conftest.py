"""The soak smoke runs on the session's local cluster (the integration fixture), so it neither starts nor stops one."""

from ..integration.conftest import cluster  # noqa: F401
