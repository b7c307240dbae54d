"""The functional core: pure functions of spec, status and observations (no I/O, no clock, no Kubernetes or
Prometheus client). Imports nothing from :mod:`specdeploy` but :mod:`specdeploy.api` and itself."""
