"""The vLLM-compatible simulator (``specdeploy sim-server``): a step-level engine on the core's performance model
behind vLLM 0.33's HTTP API and metrics, for clusters without GPUs."""
