"""Status as the typed API models build it (pure): conditions that keep their transition time, and the patch a
model makes. Each status field has one writer: :func:`.reconcile.status_patch` (what runs) or
:func:`.evaluate.evaluate` (what was observed and decided); conditions are merged by type, each type having one
writer too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..api import Condition, ConditionType, Reason, SpeculativeDeploymentStatus, now_iso, parse_time


def condition(
    old: Sequence[dict[str, Any]],
    type_: ConditionType,
    status: bool,
    reason: Reason | str,
    message: str,
    now: datetime,
    generation: int,
) -> Condition:
    """A condition that keeps its lastTransitionTime unless its status flips."""
    value = "True" if status else "False"
    prev = find(old, type_)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now_iso(now)
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def find(conditions: Sequence[dict[str, Any]], type_: ConditionType) -> dict[str, Any] | None:
    """The condition of this type in status, if any."""
    return next((c for c in conditions if c.get("type") == type_), None)


def merge(old: Sequence[dict[str, Any]], new: Sequence[Condition]) -> list[Condition]:
    """Replace conditions by type, keep the others (those the other writer owns)."""
    types = {c.type for c in new}
    return [*new, *(Condition.model_validate(c) for c in old if c.get("type") not in types)]


def transition_time(conditions: Sequence[dict[str, Any]], type_: ConditionType, status: str) -> float | None:
    """When the condition last became ``status`` (epoch seconds), or None when it is not in that status."""
    cond = find(conditions, type_)
    if not cond or cond.get("status") != status:
        return None
    return parse_time(cond["lastTransitionTime"]).timestamp()


def as_patch(status: SpeculativeDeploymentStatus) -> dict[str, Any]:
    """The fields a writer set, by their API names: a JSON merge patch of status. A field set to None is written
    as null, which deletes a stale value."""
    return status.model_dump(by_alias=True, exclude_unset=True, mode="json")
