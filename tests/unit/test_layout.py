"""The package's layout is its architecture: what may import what, function size, and what ships."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..conftest import ROOT

PACKAGE = ROOT / "operator" / "specdeploy"
# Which parts of the package each part may import (besides itself); cli.py is the entry point and may import all.
ALLOWED = {
    "api": set(),
    "core": {"api"},
    "shell": {"api", "core"},
    "sim": {"api", "core"},
    "offline": {"api", "core"},
}
# Libraries that do I/O: the core and the API must not need them.
IO_LIBRARIES = {"kopf", "kubernetes", "prometheus_api_client", "requests", "aiohttp", "urllib3", "socket", "subprocess"}
# ...except the Kubernetes client's type definitions, which the API validates pod fields against (no I/O in them).
TYPE_DEFINITIONS = {"kubernetes.client.models"}
MAX_FUNCTION_LINES = 60
IMAGE_SOURCES = ("pyproject.toml", "README.md", "operator")  # what the Dockerfile copies into its build stage


def _module(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path) -> set[str]:
    """Absolute names of the modules a file imports (relative imports resolved against its package)."""
    module = _module(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def part_of(module: str) -> str | None:
    """The part of the package a module belongs to (``core``, ``shell``...), or None outside it."""
    parts = module.split(".")
    return parts[1] if parts[0] == "specdeploy" and len(parts) > 1 else None


def violations(root: Path) -> list[str]:
    out = []
    for path in sorted((root / "specdeploy").rglob("*.py")):
        mine = part_of(_module(path, root))
        if mine not in ALLOWED:
            continue
        for name in sorted(imports(path, root)):
            theirs = part_of(name)
            if theirs is not None and theirs in ALLOWED and theirs != mine and theirs not in ALLOWED[mine]:
                out.append(f"{path.relative_to(root)} ({mine}) imports {name} ({theirs})")
            if mine in ("api", "core") and name.split(".")[0] in IO_LIBRARIES and name not in TYPE_DEFINITIONS:
                out.append(f"{path.relative_to(root)} ({mine}) imports the I/O library {name}")
    return out


def test_each_part_imports_only_what_the_architecture_allows() -> None:
    assert violations(PACKAGE.parent) == []


def test_the_import_check_catches_a_core_module_importing_the_shell(tmp_path: Path) -> None:
    core = tmp_path / "specdeploy" / "core"
    core.mkdir(parents=True)
    (core / "policy.py").write_text("from ..shell.kube import Clients\nimport kubernetes\n")
    assert violations(tmp_path) == [
        "specdeploy/core/policy.py (core) imports the I/O library kubernetes",
        "specdeploy/core/policy.py (core) imports specdeploy.shell.kube (shell)",
        "specdeploy/core/policy.py (core) imports specdeploy.shell.kube.Clients (shell)",
    ]


def long_functions(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} has {lines} lines")
    return out


def test_no_function_is_longer_than_sixty_lines() -> None:
    assert long_functions(PACKAGE) == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built as the Dockerfile builds it: from pyproject.toml, README.md and operator/ alone."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in IMAGE_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("specdeploy-*.whl"))


def test_the_wheel_ships_the_package_and_no_test_support(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path)
    modules = {_module(tmp_path / n, tmp_path) for n in names if n.endswith(".py")}
    assert {"specdeploy.core.policy", "specdeploy.shell.handlers", "specdeploy.sim.server"} <= modules
    assert any(n.startswith("specdeploy/offline/traces/") and n.endswith(".yaml") for n in names)
    assert not [n for n in names if "kubelet" in n or n.startswith(("tests/", "hack/"))]
    # Every import of the package's own modules resolves inside the wheel: nothing reaches for test support.
    unresolved = {
        name
        for n in names
        if n.endswith(".py")
        for name in imports(tmp_path / n, tmp_path)
        if name.startswith("specdeploy.") and name not in modules and name.rpartition(".")[0] not in modules
    }
    assert unresolved == set()


def test_the_image_holds_only_the_installed_package() -> None:
    """The build stage sees the package's sources alone; the final stage gets only the virtual environment."""
    copies = [line.split()[1:-1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    sources = {src for srcs in copies for src in srcs if not src.startswith("--from")}
    assert sources == {*IMAGE_SOURCES, "/opt/specdeploy"}
