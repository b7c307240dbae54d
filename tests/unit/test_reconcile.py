"""The rollout as the operator reads it from a Deployment's status (core/reconcile.py)."""

from __future__ import annotations

from typing import Any

from specdeploy.core.reconcile import Phase, rendered_unchanged, rollout_of


def deployment(generation: int, observed: int, updated: int = 2, ready: int = 2) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"generation": generation}, "spec": {"replicas": 2},
            "status": {"observedGeneration": observed, "replicas": updated, "updatedReplicas": updated,
                       "readyReplicas": ready, "availableReplicas": ready}}  # fmt: skip


COMPLETE = {"rollout": "Complete", "observedGeneration": 4, "k": 3}


def test_a_trailing_generation_is_a_rollout_unless_nothing_rendered_changed() -> None:
    lagging = deployment(generation=9, observed=8)
    assert rollout_of(lagging).phase == Phase.PROGRESSING  # a template change the controller has not seen yet
    # Another client wrote the Deployment's annotations (its generation moved); the spec and the setting did not.
    assert rendered_unchanged(COMPLETE, 4, 3)
    assert rollout_of(lagging, unchanged=True).phase == Phase.COMPLETE
    # Pods still missing are a rollout whatever the generation says.
    assert rollout_of(deployment(9, 8, updated=1, ready=1), unchanged=True).phase == Phase.PROGRESSING


def test_a_new_spec_a_new_setting_or_a_rollout_under_way_is_a_change() -> None:
    assert not rendered_unchanged(COMPLETE, 5, 3)  # the user changed the spec
    assert not rendered_unchanged(COMPLETE, 4, 2)  # a new k
    assert not rendered_unchanged({**COMPLETE, "rollout": "Progressing"}, 4, 3)  # the policy's change recorded
