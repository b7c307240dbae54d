"""Named points in a policy change where the operator can be made to die at once (SIGKILL), so the reliability
suite (tests/faults) can show that a change interrupted at any step happens exactly once after a restart.

Off unless ``SPECDEPLOY_FAILPOINTS`` names points, comma-separated: ``decided`` (decision made, status not yet
written), ``recorded`` (status records the new setting, the workload not yet changed), ``applied`` (the workload
changed, its rollout running, status of the rollout not yet written). ``point:action`` limits a point to one
action, e.g. ``recorded:rollback``.
"""

from __future__ import annotations

import os
import signal

ENV = "SPECDEPLOY_FAILPOINTS"
POINTS = ("decided", "recorded", "applied")
_armed = frozenset(p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip())


def reach(point: str, action: str) -> None:
    """Die here if this point (or this point for this action) is armed; nothing otherwise."""
    assert point in POINTS, point
    if point in _armed or f"{point}:{action}" in _armed:
        os.kill(os.getpid(), signal.SIGKILL)
