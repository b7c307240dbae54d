"""Fixtures for tests against the real local control plane (hack/controlplane.py) and the real operator process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
from controlplane import ControlPlane
from kubelet_standin import FakeKubelet
from procs import free_port, stop

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 20, interval: float = 0.2, what: str = "condition") -> T:
    """Poll until fn returns something truthy (API and connection errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (kubernetes.client.ApiException, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    work = Path(tempfile.mkdtemp(prefix="specdeploy-test-cp-"))
    cp = ControlPlane(work).start()
    os.environ["KUBECONFIG"] = str(cp.kubeconfig)
    subprocess.run(["kubectl", "apply", "-k", str(ROOT / "crds")], check=True, capture_output=True)
    subprocess.run(
        ["kubectl", "wait", "--for=condition=Established", "crd/speculativedeployments.specdeploy.io"],
        check=True,
        capture_output=True,
    )
    kubernetes.config.load_kube_config(str(cp.kubeconfig))
    yield cp
    cp.stop()
    shutil.rmtree(work, ignore_errors=True)


class Operator:
    """The operator as users run it: `specdeploy run` in its own process."""

    def __init__(self, kubeconfig: Path, log: Path, env: dict[str, str] | None = None):
        self.kubeconfig, self.log, self.env = kubeconfig, log, env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "SPECDEPLOY_RESYNC_SECONDS": "3", **self.env}
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "specdeploy.cli", "run", "--liveness", f"http://127.0.0.1:{port}/healthz"],
            env=env,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        self.liveness = f"http://127.0.0.1:{port}/healthz"

    def stop(self) -> None:
        stop(self.proc, timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def operator(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    yield op
    op.stop()


@pytest.fixture
def api(cluster: ControlPlane) -> Any:
    class Api:
        core = kubernetes.client.CoreV1Api()
        apps = kubernetes.client.AppsV1Api()
        custom = kubernetes.client.CustomObjectsApi()

    return Api


@pytest.fixture
def namespace(api: Any) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    api.core.create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(kubernetes.client.ApiException):
        api.core.delete_namespace(name)


@contextlib.contextmanager
def running(kl: FakeKubelet) -> Iterator[FakeKubelet]:
    """Run a stand-in kubelet in a thread for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=kl.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield kl
    finally:
        stop.set()
        thread.join(timeout=20)


@pytest.fixture
def kubelet(api: Any, namespace: str) -> Iterator[FakeKubelet]:
    """Plays the kubelet's part for this test's namespace: marks pods Ready (no real node exists)."""
    with running(FakeKubelet(api.core, namespace=namespace)) as kl:
        yield kl


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout + out.stderr


def kubectl_apply(doc: dict[str, Any], namespace: str) -> str:
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))
