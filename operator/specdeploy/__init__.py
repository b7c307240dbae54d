"""specdeploy: a Kubernetes operator that runs vLLM with speculative decoding and adapts it to load.

The folders say the architecture (data flows one way; see docs/architecture.md):

* :mod:`~specdeploy.api`: the SpeculativeDeployment API, its validation and the CRD generated from it;
* :mod:`~specdeploy.core`: pure functions: rendering, reconcile state, observations, the performance model, the
  policy and one evaluation. No I/O, no clock; imports only the API;
* :mod:`~specdeploy.shell`: the Kubernetes and Prometheus I/O around the core (kopf handlers, the control loop);
* :mod:`~specdeploy.sim`: the vLLM-compatible simulator users run (``specdeploy sim-server``);
* :mod:`~specdeploy.offline`: ``specdeploy simulate``: the policy in closed loop over traces, and the oracle.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("specdeploy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
