"""OpenShift's ``restricted-v2`` SecurityContextConstraints, as the admission check it performs on a pod spec.

No OpenShift cluster runs here, so the rules are written out from the SCC (OpenShift 4.11+): no host namespaces,
ports or paths; not privileged; ``allowPrivilegeEscalation`` false; every capability dropped (only
NET_BIND_SERVICE may be added); the UID and fsGroup come from the namespace's range, so a pod that fixes one is
rejected (any fixed value outside the range is, and the range is unknown until the namespace exists); RuntimeDefault
seccomp; volumes of the allowed types only.
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}  # fmt: skip
ALLOWED_ADD = {"NET_BIND_SERVICE"}


def restricted_v2_violations(pod: dict[str, Any]) -> list[str]:
    """What restricted-v2 would refuse in this pod spec (empty: admitted)."""
    out = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{flag} is not allowed")
    psc = pod.get("securityContext") or {}
    for fixed in ("runAsUser", "fsGroup"):
        if fixed in psc:
            out.append(f"securityContext.{fixed} is fixed ({psc[fixed]}); the SCC assigns it from the namespace")
    for vol in pod.get("volumes") or []:
        kind = next(k for k in vol if k != "name")
        if kind not in ALLOWED_VOLUMES:
            out.append(f"volume {vol['name']}: type {kind} is not allowed")
    for c in [*(pod.get("initContainers") or []), *pod.get("containers", [])]:
        out += [f"container {c['name']}: {v}" for v in _container(c, psc)]
    return out


def _container(c: dict[str, Any], psc: dict[str, Any]) -> list[str]:
    sc = c.get("securityContext") or {}
    out = []
    if sc.get("privileged"):
        out.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation must be false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append("capabilities must drop ALL")
    if set(caps.get("add") or []) - ALLOWED_ADD:
        out.append(f"capabilities added: {sorted(set(caps['add']) - ALLOWED_ADD)}")
    if "runAsUser" in sc:
        out.append(f"runAsUser is fixed ({sc['runAsUser']})")
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        out.append("runAsNonRoot must be true")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(f"seccompProfile must be RuntimeDefault (got {seccomp})")
    for port in c.get("ports") or []:
        if port.get("hostPort"):
            out.append(f"hostPort {port['hostPort']}")
    return out
