"""Every object the operator owns for one SpeculativeDeployment, by backend (pure)."""

from __future__ import annotations

from typing import Any

from ..api import Backend, SpeculativeDeploymentSpec
from .kserve import render_inference_service, render_serving_runtime
from .model import Setting
from .render import DEFAULT_SITE, Owner, Site, render_deployment, render_pod_monitor, render_service


def render_all(
    owner: Owner, spec: SpeculativeDeploymentSpec, k: Setting | None, site: Site = DEFAULT_SITE
) -> list[dict[str, Any]]:
    """The objects running draft length k, the workload first (what the rollout is read from): a Deployment and
    its Service, or an InferenceService and its ServingRuntime; a PodMonitor where the site wants one."""
    if spec.backend == Backend.KSERVE:
        objects = [render_inference_service(owner, spec, k, site), render_serving_runtime(owner, spec, site)]
    else:
        objects = [render_deployment(owner, spec, k, site), render_service(owner, spec)]
    return [*objects, *([render_pod_monitor(owner)] if site.pod_monitors else [])]
