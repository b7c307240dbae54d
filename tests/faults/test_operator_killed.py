"""The operator killed (SIGKILL, no chance to clean up) at each step of a policy change, then started again, as
a Deployment's controller would restart its pod: the change happens exactly once, status keeps the policy's
memory, and the restart budget holds. The steps are the fail points of specdeploy.shell.failpoints; the stimulus
is the closed loop's (simulated pods under a load no drafting setting serves, read back through Prometheus).

The restarted operator waits for the dead one's Lease to expire (15 s) before it acts: that is most of the
recovery time each case prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from specdeploy.core.reconcile import recorded_setting
from specdeploy.core.render import LABEL_K, k_label
from specdeploy.shell.failpoints import ENV, POINTS

from ..integration.conftest import Cluster, Operator, kubectl_apply, wait_for
from ..loop import HIGH, NAME, cond, resource, status, wait_k, workloads

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.prometheus]
BUDGET = 2
RESULTS = Path("/tmp/specdeploy-reliability.jsonl")  # recovery times, for the README's reliability table


def start(cluster: Cluster, log: Path, **env: str) -> Operator:
    op = Operator(cluster.kubeconfig, log, cluster.image, env=env)
    op.start()
    return op


def killed_at(op: Operator, point: str, api: Any, ns: str) -> float:
    """Wait for the operator to die at ``point``; the time it died."""
    try:
        wait_for(lambda: not op.alive(), timeout=300, interval=0.5, what=f"the operator killed at {point}")
    except AssertionError as exc:
        op.stop()
        raise AssertionError(f"{exc}\n{json.dumps(status(api, ns).get('decisions'))}\n{workloads(api, ns)}") from None
    assert op.proc is not None and op.proc.returncode == -9  # SIGKILL, by the fail point
    return time.monotonic()


def template_setting(api: Any, ns: str) -> str:
    return api.apps.read_namespaced_deployment(NAME, ns).spec.template.metadata.labels[LABEL_K]


def report(case: str, seconds: float, **facts: Any) -> None:
    print(f"{case}: recovered in {seconds:.1f}s {facts}")
    with RESULTS.open("a") as f:
        f.write(json.dumps({"case": case, "recovery_s": round(seconds, 1), **facts}) + "\n")


@pytest.mark.parametrize("point", POINTS)
def test_a_change_interrupted_by_sigkill_happens_exactly_once(
    point: str, api: Any, namespace: str, cluster: Cluster, prometheus: Any, load: Any, tmp_path: Path
) -> None:
    load.set(namespace, NAME, HIGH)  # no drafting setting serves it: the policy acts at its first settled window
    kubectl_apply(resource(maxRestartsPerHour=BUDGET, cooldownSeconds=3600), namespace)
    dying = start(cluster, tmp_path / "dying.log", **{ENV: point})
    died = killed_at(dying, point, api, namespace)

    st = status(api, namespace)
    applied = [d for d in st.get("decisions", []) if d["applied"]]
    if point == "decided":  # nothing of the decision was written
        assert not applied and st["k"] == 3 and template_setting(api, namespace) == "3"
    else:  # recorded before it was applied
        assert len(applied) == 1 and recorded_setting(st) != 3
        assert (template_setting(api, namespace) == "3") == (point == "recorded")

    again = start(cluster, tmp_path / "again.log")
    try:
        st = wait_k(api, namespace, lambda k, s: recorded_setting(s) != 3 and bool(s.get("decisions")),
                    "the change carried out after the restart", timeout=240)  # fmt: skip
        recovered = time.monotonic() - died
        assert template_setting(api, namespace) == k_label(recorded_setting(st))
        applied = [d for d in st["decisions"] if d["applied"]]
        assert len(applied) == 1, st["decisions"]  # exactly once
        assert st["restartBudgetRemaining"] == BUDGET - 1 and len(st["policy"]["changes"]) == 1
        dep = api.apps.read_namespaced_deployment(NAME, namespace)
        assert dep.metadata.generation == 2  # created, then changed once
        assert len(api.apps.list_namespaced_replica_set(namespace).items) == 2
        assert cond(st, "Ready")["status"] == "True"
    finally:
        again.stop()
    report(f"SIGKILL at {point}", recovered, changes=len(applied), generation=dep.metadata.generation)


def test_a_rollback_interrupted_by_sigkill_happens_exactly_once(
    api: Any, namespace: str, cluster: Cluster, prometheus: Any, load: Any, tmp_path: Path
) -> None:
    """Every setting but k=3 crashes at start: the policy's change fails its progress deadline and is rolled back;
    the operator dies after recording the rollback, before applying it. Restarted, it applies it once, and does
    not try the failed setting again (the budget is spent, and the setting is held out for hours)."""
    load.set(namespace, NAME, HIGH)
    doc = resource(maxRestartsPerHour=BUDGET, cooldownSeconds=0)
    doc["spec"]["env"] = [{"name": "SPECDEPLOY_SIM_FAIL_SETTINGS", "value": "!3"}]
    doc["spec"]["rollout"] = {"progressDeadlineSeconds": 30}
    kubectl_apply(doc, namespace)
    dying = start(cluster, tmp_path / "dying.log", **{ENV: "recorded:rollback"})
    died = killed_at(dying, "recorded:rollback", api, namespace)
    st = status(api, namespace)
    assert [d["action"] for d in st["decisions"] if d["applied"]][-1] == "rollback" and recorded_setting(st) == 3
    assert template_setting(api, namespace) != "3"  # recorded, not applied

    again = start(cluster, tmp_path / "again.log")
    try:
        st = wait_k(api, namespace, lambda k, s: recorded_setting(s) == 3 and cond(s, "Ready")["status"] == "True",
                    "the rollback carried out after the restart", timeout=240)  # fmt: skip
        recovered = time.monotonic() - died
        assert template_setting(api, namespace) == "3"
        actions = [d["action"] for d in st["decisions"] if d["applied"]]
        assert len(actions) == 2 and actions[-1] == "rollback", st["decisions"]
        assert st["restartBudgetRemaining"] == 0
        change = next(d for d in st["decisions"] if d["applied"] and d["action"] != "rollback")
        assert change["setting"] in st["policy"]["failed"]  # held out: not tried again for hours
        generation = api.apps.read_namespaced_deployment(NAME, namespace).metadata.generation
        assert generation == 3  # created, changed, rolled back
    finally:
        again.stop()
    report("SIGKILL during a rollback", recovered, changes=len(actions), generation=generation)
