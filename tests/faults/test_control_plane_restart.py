"""etcd and the API server killed (SIGKILL) and started again with the same data while the operator runs: the
operator rides it out (its Lease renewal tolerates a gap shorter than a lease less one renewal, 10 s; a longer one
makes it stop, and its pod is restarted, as a standby that takes the Lease back), its watches reconnect (a spec
change is acted on without the periodic resync, which is set to 10 minutes here), and nothing is re-applied."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import ROOT
from ..integration.conftest import Cluster, Operator, kubectl, kubectl_apply, wait_for
from ..integration.test_operator import args_of, get_sd, sample
from .test_operator_killed import report

sys.path.insert(0, str(ROOT / "hack"))
import cluster as local_cluster

pytestmark = [pytest.mark.faults, pytest.mark.cluster]


def ours(dep: Any) -> str:
    """When the operator last changed the Deployment (its managed-fields entry): an apply that changes nothing
    leaves it as it was."""
    return next(str(m.time) for m in dep.metadata.managed_fields if m.manager == "specdeploy")


def test_after_etcd_and_the_api_server_restart_watches_resume_and_nothing_is_reapplied(
    api: Any, namespace: str, cluster: Cluster, tmp_path: Path
) -> None:
    op = Operator(cluster.kubeconfig, tmp_path / "operator.log", cluster.image,
                  env={"SPECDEPLOY_RESYNC_SECONDS": "600"})  # fmt: skip
    op.start()
    try:
        kubectl_apply(sample(adaptive={"mode": "Off"}), namespace)
        wait_for(lambda: get_sd(api, namespace).get("status", {}).get("k") == 3, timeout=30, what="status")
        before = api.apps.read_namespaced_deployment("llama-8b", namespace)

        local_cluster.crash("kube-apiserver", "etcd")
        down = time.monotonic()
        local_cluster.recover()
        outage = time.monotonic() - down
        assert local_cluster.running(), "a cluster helper (pod discovery, Prometheus) did not outlive the outage"
        restarted = not op.alive()
        if restarted:  # the outage outlasted the lease: it stopped, and is restarted as its pod would be
            assert op.proc is not None and op.proc.returncode != 0
            op.start()

        after = api.apps.read_namespaced_deployment("llama-8b", namespace)
        assert after.metadata.generation == before.metadata.generation and ours(after) == ours(before)
        back = time.monotonic()
        kubectl("patch", "sd", "llama-8b", "-n", namespace, "--type=merge",
                "-p", '{"spec":{"speculator":{"numSpeculativeTokens":4}}}')  # fmt: skip
        wait_for(lambda: '"num_speculative_tokens":4' in " ".join(args_of(
                 api.apps.read_namespaced_deployment("llama-8b", namespace))),
                 timeout=60, what="the spec change acted on")  # fmt: skip
        reacted = time.monotonic() - back
        # status follows the Deployment's apply in the same handler: a moment later, not at once
        wait_for(lambda: get_sd(api, namespace)["status"]["k"] == 4, timeout=10, what="status.k after the change")
        assert op.alive()
        log = op.log.read_text()
        assert "Traceback" not in log, log[-3000:]
    finally:
        op.stop()
    report("etcd and API server restarted", outage + reacted, outage_s=round(outage, 1),
           spec_change_acted_on_s=round(reacted, 1), operator_restarted=restarted, reapplied=0)  # fmt: skip
