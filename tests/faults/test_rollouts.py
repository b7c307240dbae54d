"""Rollouts that go wrong, with the operator as a process and the closed loop's stimulus (simulated pods under a
load no drafting setting serves): a new setting whose pods never become Ready, the user changing k in the middle
of the policy's rollout, and another client writing the same status and Deployment many times a second."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from specdeploy.api import parse_time
from specdeploy.core.reconcile import recorded_setting
from specdeploy.core.render import LABEL_K

from ..integration.conftest import Operator, kubectl, kubectl_apply, wait_for
from ..loop import GROUP, HIGH, NAME, PLURAL, VERSION, cond, resource, status, wait_k
from .test_operator_killed import report

pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.prometheus]


def failing(doc: dict[str, Any], spared: str, mode: str, deadline: int) -> dict[str, Any]:
    """Pods of every setting but ``spared`` (space-separated) fail at start in ``mode``."""
    doc["spec"]["env"] = [{"name": "SPECDEPLOY_SIM_FAIL_SETTINGS", "value": " ".join(f"!{s}" for s in spared.split())},
                          {"name": "SPECDEPLOY_SIM_FAIL_MODE", "value": mode}]  # fmt: skip
    doc["spec"]["rollout"] = {"progressDeadlineSeconds": deadline}
    return doc


def generation(api: Any, ns: str) -> int:
    return api.apps.read_namespaced_deployment(NAME, ns).metadata.generation


def events(ns: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("get", "events", "-n", ns, "-o", "json"))["items"]


def test_a_setting_whose_pods_never_become_ready_is_rolled_back_and_not_tried_again(
    api: Any, namespace: str, operator: Operator, prometheus: Any, load: Any
) -> None:
    load.set(namespace, NAME, HIGH)
    kubectl_apply(failing(resource(maxRestartsPerHour=4, cooldownSeconds=0), "3", "hang", deadline=30), namespace)

    def rolled_back(k: int, s: dict[str, Any]) -> bool:
        return (s.get("decisions") or [{}])[-1].get("action") == "rollback" and cond(s, "Ready")["status"] == "True"

    st = wait_k(api, namespace, rolled_back, "the change rolled back", timeout=300)
    change, back = [d for d in st["decisions"] if d["applied"]][-2:]
    took = (parse_time(back["time"]) - parse_time(change["time"])).total_seconds()
    assert recorded_setting(st) == 3 and took < 30 + 3 * 5 + 30  # the deadline, an evaluation, a pass or two
    failed = [e for e in events(namespace) if e["reason"] == "RolloutFailed"]
    assert len(failed) == 1 and failed[0]["type"] == "Warning", failed  # once, though several passes saw it
    assert "timed out progressing" in failed[0]["message"]  # the Deployment controller's words
    # Evaluations go on at k=3 under the same load: the failed setting is not tried again.
    since = time.time()
    wait_for(lambda: parse_time(status(api, namespace)["lastEvaluation"]["time"]).timestamp() > since + 30,
             timeout=90, interval=1, what="30 s more of evaluations")  # fmt: skip
    st = status(api, namespace)
    tried = [d["setting"] for d in st["decisions"] if d["applied"] and d["action"] != "rollback"]
    assert len(tried) == len(set(tried)), st["decisions"]
    assert change["setting"] in st["policy"]["failed"]
    report("new setting never Ready", took, rollbacks=1, repeated_attempts=len(tried) - len(set(tried)))


def test_the_users_k_set_in_the_middle_of_the_policys_rollout_wins(
    api: Any, namespace: str, operator: Operator, prometheus: Any, load: Any
) -> None:
    """The policy's new setting is slow to start (its pods never become Ready within the test); the user sets
    k=2 meanwhile. The user's k runs, the policy does not roll it back or repeat its own change, and its history
    says the user's setting replaced its change."""
    load.set(namespace, NAME, HIGH)
    doc = failing(resource(minDwellSeconds=3600, maxRestartsPerHour=4), "3 2", "hang", deadline=600)
    kubectl_apply(doc, namespace)
    wait_for(lambda: any(d["applied"] for d in status(api, namespace).get("decisions", [])), timeout=240,
             interval=1, what="the policy's change")  # fmt: skip
    assert status(api, namespace)["rollout"] == "Progressing"
    kubectl("patch", "sd", NAME, "-n", namespace, "--type=merge",
            "-p", '{"spec":{"speculator":{"numSpeculativeTokens":2}}}')  # fmt: skip
    edited = time.monotonic()
    st = wait_k(api, namespace, lambda k, s: recorded_setting(s) == 2 and cond(s, "Ready")["status"] == "True",
                "the user's k=2 rolled out", timeout=180)  # fmt: skip
    settled = time.monotonic() - edited
    user = wait_for(lambda: [d for d in status(api, namespace).get("decisions", []) if d["action"] == "user-change"],
                    timeout=30, interval=1, what="the user's change in the history")  # fmt: skip
    st = status(api, namespace)
    assert len(user) == 1 and user[0]["toK"] == 2 and "still rolling out" in user[0]["reason"]
    assert st["policy"]["k"] == 2 and st["policy"].get("pending_from") is None  # (null: deleted by the patch)
    assert [d["action"] for d in st["decisions"]].count("rollback") == 0
    assert generation(api, namespace) == 3  # created, the policy's change, the user's
    pods = api.core.list_namespaced_pod(namespace, label_selector=f"specdeploy.io/deployment={NAME}").items
    assert {p.metadata.labels[LABEL_K] for p in pods if not p.metadata.deletion_timestamp} == {"2"}
    report("user edits k mid-rollout", settled, user_wins=True, rollbacks=0)


@pytest.fixture
def storm(api: Any, namespace: str) -> Iterator[dict[str, int]]:
    """Another client writing the resource's status (a field of its own) and the Deployment's annotations, every 50
    and 200 ms, until the test ends. Counts its writes. (Each annotation write bumps the Deployment's generation:
    before core.reconcile.rendered_unchanged, every one read as a rollout, and the policy never acted.)"""
    done, count = threading.Event(), {"status": 0, "deployment": 0}

    def run() -> None:
        i = 0
        while not done.wait(0.05):
            i += 1
            try:
                api.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, PLURAL, NAME, {"status": {"kopf": {"storm": i}}}
                )
                count["status"] += 1
                if i % 4 == 0:
                    api.apps.patch_namespaced_deployment(
                        NAME, namespace, {"metadata": {"annotations": {"example.com/storm": str(i)}}}
                    )
                    count["deployment"] += 1
            except kubernetes.client.ApiException:  # not created yet, or going away
                pass

    threading.Thread(target=run, daemon=True).start()
    yield count
    done.set()


def test_a_409_storm_never_duplicates_or_loses_a_change(
    api: Any, namespace: str, operator: Operator, prometheus: Any, load: Any, storm: dict[str, int]
) -> None:
    def conflicts() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as r:
            line = next(x for x in r.read().decode().splitlines() if x.startswith("specdeploy_status_conflicts_total"))
        return float(line.split()[-1])

    before = wait_for(lambda: (conflicts(),), timeout=30, what="the operator's metrics")[0]  # (once it serves them)
    load.set(namespace, NAME, HIGH)
    kubectl_apply(resource(maxRestartsPerHour=2, cooldownSeconds=3600), namespace)
    started = time.monotonic()
    st = wait_k(api, namespace, lambda k, s: recorded_setting(s) != 3 and bool(s.get("decisions")),
                "the change made through the storm", timeout=240)  # fmt: skip
    took = time.monotonic() - started
    applied = [d for d in st["decisions"] if d["applied"]]
    assert len(applied) == 1, st["decisions"]
    assert len(api.apps.list_namespaced_replica_set(namespace).items) == 2  # one template change: two ReplicaSets
    assert st["kopf"]["storm"] > 0 and storm["status"] > 100  # the other writer's field survives our writes
    assert storm["deployment"] > 50  # its Deployment writes landed (each one bumping the generation)
    met = conflicts() - before
    assert met > 0  # the storm did meet the operator's guarded writes
    report("409 storm (status every 50 ms, Deployment every 200 ms)", took, conflicts=met, changes=len(applied))
