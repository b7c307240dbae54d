"""Argo CD's part, played for tests: its Lua health checks run as Argo CD runs them (Lua 5.1, the resource as the
global ``obj``, the returned table's ``status`` and ``message``), with lupa's embedded Lua 5.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

from .conftest import ROOT

HEALTH = ROOT / "manifests/argocd/resource_customizations/specdeploy.io/SpeculativeDeployment/health.lua"


def health(obj: dict[str, Any], script: Path = HEALTH) -> dict[str, str]:
    """Argo CD's health of ``obj``: {"status": ..., "message": ...}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script.read_text())
    return {"status": result["status"], "message": result["message"] or ""}
