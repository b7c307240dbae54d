"""The generated specs are judged by the local cluster's API server (the integration fixture)."""

from ..integration.conftest import cluster  # noqa: F401
