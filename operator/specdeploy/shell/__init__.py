"""The thin shell: everything that talks to Kubernetes or Prometheus, moving data in and out of the core."""
