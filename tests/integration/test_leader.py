"""Two operator replicas against the real API server: only the Lease holder acts; killed (SIGKILL, no release), the
other takes over within the lease, and the takeover changes nothing that runs."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from specdeploy.shell.leader import LEASE_NAME, LEASE_SECONDS, RETRY_SECONDS

from .conftest import Operator, kubectl_apply, wait_for
from .test_operator import get_sd, sample

pytestmark = pytest.mark.cluster

NAMESPACE = "specdeploy-system"


def holder(api: Any) -> str | None:
    import kubernetes

    try:
        lease = kubernetes.client.CoordinationV1Api().read_namespaced_lease(LEASE_NAME, NAMESPACE)
    except kubernetes.client.ApiException:
        return None
    return lease.spec.holder_identity


def named(name: str) -> dict[str, Any]:
    doc = sample(adaptive={"mode": "Off"})
    doc["metadata"]["name"] = name
    return doc


def test_one_replica_acts_and_the_other_takes_over_when_it_dies(
    cluster: Any, operator: Operator, api: Any, namespace: str, tmp_path: Path
) -> None:
    operator.stop()  # releases the Lease: the two below contend for it
    replicas = {
        name: Operator(cluster.kubeconfig, tmp_path / f"{name}.log", cluster.image, env={"POD_ID": name})
        for name in ("replica-a", "replica-b")
    }
    try:
        for op in replicas.values():
            op.start()
        leader = wait_for(lambda: holder(api) in replicas and holder(api), timeout=30, what="a leader")
        standby = next(n for n in replicas if n != leader)
        kubectl_apply(named("first"), namespace)
        first = wait_for(lambda: api.apps.read_namespaced_deployment("first", namespace), what="first's Deployment")
        wait_for(lambda: (get_sd(api, namespace, "first").get("status") or {}).get("k") == 3, what="first's status")
        assert "reconciled" in (tmp_path / f"{leader}.log").read_text()
        assert "reconciled" not in (tmp_path / f"{standby}.log").read_text()
        assert "standby" in (tmp_path / f"{standby}.log").read_text()

        os.kill(replicas[leader].proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        killed = time.monotonic()
        kubectl_apply(named("second"), namespace)
        wait_for(lambda: api.apps.read_namespaced_deployment("second", namespace), timeout=LEASE_SECONDS + 30,
                 interval=0.5, what="the standby acting")  # fmt: skip
        takeover = time.monotonic() - killed
        assert holder(api) == standby
        assert takeover <= LEASE_SECONDS + 2 * RETRY_SECONDS + 5, takeover
        assert "reconciled" in (tmp_path / f"{standby}.log").read_text()
        # The takeover re-applies what runs unchanged: the first Deployment is the one the first leader made.
        after = api.apps.read_namespaced_deployment("first", namespace)
        assert after.metadata.generation == first.metadata.generation and after.metadata.uid == first.metadata.uid
        print(f"takeover after SIGKILL of the leader: {takeover:.1f} s (lease {LEASE_SECONDS} s)")
    finally:
        for op in replicas.values():
            op.stop()
        operator.start()
