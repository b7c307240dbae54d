#!/usr/bin/env python3
"""A real local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager), like envtest.

Used by the test suite (``tests/conftest.py``), the demo (``hack/demo.py``) and by hand::

    python hack/controlplane.py start --dir /tmp/cp    # prints `export KUBECONFIG=...`
    python hack/controlplane.py stop --dir /tmp/cp
    python hack/controlplane.py run -- kubectl get ns  # start, run a command, stop

Binaries come from ``hack/build-kube.sh``: ``$KUBEBUILDER_ASSETS`` first, else a cached build of Debian's
Kubernetes v1.20.2 source. Everything listens on 127.0.0.1 on fresh ports, with fresh data directories,
and only the processes started here are stopped. There is no kubelet: pods stay Pending unless a test
plays the kubelet's part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from procs import free_port

HACK = Path(__file__).resolve().parent


def find_binaries() -> Path:
    """Directory with kube-apiserver, etcd and (optionally) kube-controller-manager; builds once if needed."""
    out = subprocess.run([str(HACK / "build-kube.sh")], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def _which(bindir: Path, name: str) -> str | None:
    path = bindir / name
    return str(path) if path.exists() else shutil.which(name)


@dataclass
class ControlPlane:
    """One control plane instance rooted at ``workdir`` (its data, certificates, kubeconfig and logs)."""

    workdir: Path
    token: str = "specdeploy-admin-token"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child process
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _certs(self) -> None:
        d = self.workdir
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(d / "tls.key"), "-out", str(d / "tls.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["openssl", "genrsa", "-out", str(d / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (d / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")

    def start(self, bindir: Path | None = None, timeout: float = 60) -> ControlPlane:
        bindir = bindir or find_binaries()
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        self._certs()
        etcd_port, etcd_peer, api_port, kcm_port = free_port(), free_port(), free_port(), free_port()
        self._spawn(
            "etcd",
            [_which(bindir, "etcd") or "etcd", "--data-dir", str(d / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
             "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}",
             "--unsafe-no-fsync"],
        )  # fmt: skip
        self._spawn(
            "kube-apiserver",
            [str(bindir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
             "--bind-address=127.0.0.1", f"--secure-port={api_port}", "--advertise-address=127.0.0.1",
             f"--tls-cert-file={d / 'tls.crt'}", f"--tls-private-key-file={d / 'tls.key'}",
             f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
             "--service-account-issuer=https://kubernetes.default.svc",
             f"--service-account-key-file={d / 'sa.pub'}",
             f"--service-account-signing-key-file={d / 'sa.key'}",
             "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
             "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount"],
        )  # fmt: skip
        self.url = f"https://127.0.0.1:{api_port}"
        self._write_kubeconfig()
        self._wait_ready(timeout)
        kcm = bindir / "kube-controller-manager"
        if kcm.exists():
            self._spawn(
                "kube-controller-manager",
                [str(kcm), f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
                 f"--authorization-kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1",
                 f"--secure-port={kcm_port}", "--port=0", "--leader-elect=false",
                 f"--service-account-private-key-file={d / 'sa.key'}", "--use-service-account-credentials=false",
                 f"--root-ca-file={d / 'tls.crt'}",
                 "--controllers=*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder",
                 "--concurrent-deployment-syncs=10", "--concurrent-gc-syncs=20"],
            )  # fmt: skip
            time.sleep(1)
            if self.procs["kube-controller-manager"].poll() is not None:
                log = (d / "kube-controller-manager.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"kube-controller-manager exited at start:\n{log}")
        (d / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))
        return self

    def _write_kubeconfig(self) -> None:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.workdir / "tls.crt")},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin", "namespace": "default"}}],
            "current-context": "local",
        }
        self.kubeconfig.write_text(json.dumps(cfg, indent=2))

    def _wait_ready(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text()[-2000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            req = urllib.request.Request(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready within {timeout}s; see {self.workdir}/kube-apiserver.log")

    def stop(self) -> None:
        stop_pids(self.workdir, {n: p.pid for n, p in self.procs.items()})
        for p in self.procs.values():
            p.wait(timeout=10)
        self.procs.clear()


def stop_pids(workdir: Path, pids: dict[str, int] | None = None) -> None:
    """Stop exactly the processes this script started in ``workdir`` (controller-manager first, etcd last)."""
    if pids is None:
        f = workdir / "pids.json"
        pids = json.loads(f.read_text()) if f.exists() else {}
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        pid = pids.get(name)
        if pid is None:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, type=Path)
    sub.add_parser("build", help="build or find the binaries and print their directory")
    p = sub.add_parser("run", help="start, run a command with KUBECONFIG set, stop")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    if args.cmd == "build":
        print(find_binaries())
    elif args.cmd == "start":
        cp = ControlPlane(args.dir.resolve()).start()
        print(f"export KUBECONFIG={cp.kubeconfig}")
    elif args.cmd == "stop":
        stop_pids(args.dir.resolve())
    else:
        work = Path(tempfile.mkdtemp(prefix="specdeploy-cp-"))
        cp = ControlPlane(work).start()
        try:
            argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            return subprocess.call(argv, env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)})
        finally:
            cp.stop()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
