"""Fixtures for tests against the local single-node cluster (hack/cluster.py: control plane, kubelet, containerd,
kube-proxy, Prometheus) and the operator, as a process or installed in-cluster from manifests/."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "hack"))
import cluster as local_cluster
from load import PodLoad
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


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    image: str  # the project image built from this tree, loaded into the node's containerd
    root_image: str  # its base: no USER, so it runs as root (as vllm/vllm-openai does)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local cluster: reused when already up (hack/cluster.sh up), else brought up and down for the session.
    The tests run their own operator, so an installed one is scaled to zero."""
    started = not local_cluster.running()
    try:
        info = local_cluster.up(operator=False)
    except BaseException:
        if started:  # leave nothing half-started behind
            local_cluster.down()
        raise
    os.environ["KUBECONFIG"] = info["kubeconfig"]
    kubernetes.config.load_kube_config(info["kubeconfig"])
    local_cluster.scale_operator(0)
    yield Cluster(Path(info["kubeconfig"]), info["image"], info["root_image"])
    if started and not os.environ.get("SPECDEPLOY_KEEP_CLUSTER"):
        local_cluster.down()


class Operator:
    """The operator as users run it: `specdeploy run` in its own process."""

    def __init__(
        self, kubeconfig: Path, log: Path, image: str, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ):
        self.kubeconfig, self.log, self.image, self.env, self.args = kubeconfig, log, image, env or {}, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The leader-election Lease lives in the operator's namespace, which the install creates.
        kubectl("create", "namespace", "specdeploy-system", check=False)
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "SPECDEPLOY_RESYNC_SECONDS": "3", **self.env}
        port, self.metrics_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "specdeploy.cli",
                "run",
                "--liveness",
                f"http://127.0.0.1:{port}/healthz",
                "--sim-image",
                self.image,
                "--metrics-port",
                str(self.metrics_port),
                *self.args,
            ],
            env=env,
            stdout=open(self.log, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        self.liveness = f"http://127.0.0.1:{port}/healthz"

    def stop(self) -> None:
        stop(self.proc, timeout=15)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


OPERATOR_LOG_TAIL = 200  # lines of the operator's log a failed test's report carries: pytest prunes old tmp dirs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran the operator reports the end of its log (CI's tmp dirs are gone by the time anyone
    reads the failure)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    op = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(op, Operator) and op.log.exists():
        lines = op.log.read_text(errors="replace").splitlines()[-OPERATOR_LOG_TAIL:]
        report.sections.append(("operator log (last lines)", "\n".join(lines)))


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator as a process on this machine (admin credentials), for one test module at a time: never
    alongside the in-cluster one (tests/e2e)."""
    op = Operator(cluster.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", cluster.image)
    op.start()
    yield op
    op.stop()


@pytest.fixture
def api(cluster: Cluster) -> Any:
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


@pytest.fixture
def load(api: Any) -> Iterator[PodLoad]:
    """Offered load for this test's simulated pods (posted to each ready pod's /sim/load)."""
    pl = PodLoad(api.core)
    stop_event = pl.start()
    yield pl
    stop_event.set()


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out.stdout + out.stderr


def kubectl_apply(doc: dict[str, Any], namespace: str) -> str:
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc))
