#!/usr/bin/env python3
"""A single-node Kubernetes cluster on this machine: control plane, a real node (kubelet + containerd + runc + CNI
bridge + kube-proxy) and Prometheus discovering pods, from Debian's packages and Debian's Kubernetes source.

    hack/cluster.sh up      # idempotent; prints `export KUBECONFIG=...` and the Prometheus URL
    hack/cluster.sh down    # stops everything it started and removes its state

Everything lives in one state directory (``$SPECDEPLOY_CLUSTER_DIR``, default ``/var/tmp/specdeploy-cluster``):
etcd's data, certificates, containerd's root, state and socket, runc's state, the kubelet's root, the CNI
configuration and address leases, logs and PIDs. Addresses exist only on two bridges created here (the node's
address and the pods' network) in ranges nothing else uses; nothing is routed off the machine. The kubelet writes
container logs to /var/log/pods (fixed in v1.20) and kube-proxy its KUBE-* iptables chains; ``down`` removes both.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HACK = Path(__file__).resolve().parent
ROOT = HACK.parent
STATE = Path(os.environ.get("SPECDEPLOY_CLUSTER_DIR", "/var/tmp/specdeploy-cluster"))

NODE_NAME = "specdeploy-node"
NODE_BRIDGE, NODE_IP = "sdnode0", "10.213.0.1"  # the node's address: not loopback, as the kubelet requires
POD_BRIDGE, POD_CIDR = "sdpod0", "10.213.64.0/20"  # the CNI bridge and host-local range
SERVICE_CIDR, KUBERNETES_SERVICE_IP = "10.213.128.0/20", "10.213.128.1"  # room for the soak's thousand Services
API_PORT, ETCD_PORT, ETCD_PEER_PORT = 16443, 12379, 12380
KCM_PORT, SCHEDULER_PORT, KUBELET_PORT, KUBELET_HEALTHZ = 20257, 20259, 20250, 20248
PROXY_METRICS, PROXY_HEALTHZ, PROMETHEUS_PORT = 20249, 20256, 19090
# The PodMonitor's 15 s, shortened so a demo's windows of 30 s hold several samples (None keeps the PodMonitor's).
SCRAPE_INTERVAL = "5s"
GPUS = 8  # nvidia.com/gpu the node advertises, so GPU pods are scheduled as on a GPU node
OPERATOR_NAMESPACE, OPERATOR_DEPLOYMENT = "specdeploy-system", "specdeploy-operator"
PROMETHEUS_URL = f"http://{NODE_IP}:{PROMETHEUS_PORT}"  # the cluster's own Prometheus, the operator's default
SHIPPED_IMAGE = "ghcr.io/specdeploy/specdeploy:0.1.0"  # the operator's (and simulator's) image in the manifests
# Static tokens for the control plane's users (loopback and private-bridge only; a test cluster's credentials).
TOKENS = {
    "admin": ("specdeploy-admin-token", "admin", "system:masters"),
    "kubelet": ("specdeploy-kubelet-token", f"system:node:{NODE_NAME}", "system:nodes"),
    "proxy": ("specdeploy-proxy-token", "system:kube-proxy", "system:node-proxier"),
    "scheduler": ("specdeploy-scheduler-token", "system:kube-scheduler", "system:kube-scheduler"),
    "prometheus": ("specdeploy-prometheus-token", "specdeploy:prometheus", "specdeploy:prometheus"),
}
ADMISSION = (
    "NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,DefaultStorageClass,"
    "ResourceQuota,OwnerReferencesPermissionEnforcement,NodeRestriction,Priority,MutatingAdmissionWebhook,"
    "ValidatingAdmissionWebhook"
)
# Order matters: started in this order, stopped in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd", "kubelet",
              "kube-proxy", "pod-sd", "prometheus")  # fmt: skip


def log(msg: str) -> None:
    print(f"cluster: {msg}", file=sys.stderr, flush=True)


def run(*argv: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def wait(fn: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.3) -> Any:
    """Poll ``fn`` until it returns something truthy (exceptions count as not yet)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if result := fn():
                return result
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready within {timeout}s (last: {last!r}); logs in {STATE / 'logs'}")


@dataclass(frozen=True)
class Paths:
    """Where each piece keeps its state, under one directory."""

    root: Path = STATE

    def __getattr__(self, name: str) -> Path:
        return self.root / name.replace("_", "-")


P = Paths()


# --- processes -------------------------------------------------------------------------------------------------


def _pids() -> dict[str, int]:
    f = P.root / "pids.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _alive(pid: int) -> bool:
    """Any thread of the process still runs. Not only the leader's state: a Go program's leader thread can be a
    zombie while its other threads still exit, holding the process's files and sockets (a restarted etcd then
    found its port in use)."""
    try:
        os.kill(pid, 0)
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (ProcessLookupError, FileNotFoundError):
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread has just gone; the others decide
    return False


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Start one component in its own session, logging to logs/<name>.log, unless it already runs."""
    pids = _pids()
    if name in pids and _alive(pids[name]):
        return
    P.logs.mkdir(parents=True, exist_ok=True)
    out = open(P.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})  # fmt: skip
    pids[name] = proc.pid
    (P.root / "pids.json").write_text(json.dumps(pids))
    time.sleep(0.3)
    if proc.poll() is not None:
        tail = (P.logs / f"{name}.log").read_text()[-3000:]
        raise RuntimeError(f"{name} exited at start ({proc.returncode}):\n{tail}")


def stop_all() -> None:
    pids = _pids()
    for name in reversed(COMPONENTS):
        pid = pids.get(name)
        if pid is None or not _alive(pid):
            continue
        os.killpg(pid, signal.SIGTERM)
        try:
            wait(lambda pid=pid: not _alive(pid), f"{name} to exit", timeout=15, interval=0.1)
        except TimeoutError:
            os.killpg(pid, signal.SIGKILL)


def crash(*names: str) -> None:
    """Kill these components at once (SIGKILL, as a crash would), for the fault tests; :func:`recover` restarts
    them with the same flags and data."""
    pids = _pids()
    for name in names:
        pid = pids.get(name)
        if pid is not None and _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            wait(lambda pid=pid: not _alive(pid), f"{name} to die", timeout=15, interval=0.1)


def recover() -> None:
    """Start whatever control-plane component is not running (after :func:`crash`); returns once the API server
    is ready."""
    control_plane(binaries())


# --- pieces ------------------------------------------------------------------------------------------------------


def binaries() -> Path:
    out = run(str(HACK / "build-kube.sh"))
    return Path(out.stdout.strip().splitlines()[-1])


def control_plane_binary(bindir: Path, name: str) -> str:
    """``$KUBEBUILDER_ASSETS`` first for the control plane (what envtest users have), else the cache."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).exists():
        return str(Path(assets) / name)
    return str(bindir / name)


def network() -> None:
    """Two bridges: one holding the node's address, one the CNI bridge plugin uses for pods (created here so
    ``down`` knows what to remove). Pod traffic stays on the bridge and the host; there is no masquerading."""
    links = run("ip", "-o", "link", "show").stdout
    if f" {NODE_BRIDGE}:" not in links:
        run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
    run("ip", "link", "set", NODE_BRIDGE, "up")


def certificates() -> None:
    """A CA; the apiserver's serving certificate (names a pod uses too); the apiserver's client certificate for
    the kubelet; tokens for the other components."""
    d = P.pki
    if (d / "done").exists():
        return
    d.mkdir(parents=True, exist_ok=True)

    def ssl_(*args: str) -> None:
        run("openssl", *args, cwd=d)

    ssl_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=specdeploy-cluster-ca",
         "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    sans = (f"IP:{NODE_IP},IP:127.0.0.1,IP:{KUBERNETES_SERVICE_IP},DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")  # fmt: skip
    for name, subj, ext in (
        ("apiserver", "/CN=kube-apiserver", f"subjectAltName={sans}"),
        ("kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "extendedKeyUsage=clientAuth"),
    ):
        ssl_("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        ssl_("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.crt")  # fmt: skip
    ssl_("genrsa", "-out", "sa.key", "2048")
    ssl_("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    (d / "tokens.csv").write_text("".join(f"{t},{u},{u},{g}\n" for t, u, g in TOKENS.values()))
    (d / "done").write_text("")


def kubeconfig(who: str) -> Path:
    path = P.root / f"kubeconfig-{who}" if who != "admin" else P.root / "kubeconfig"
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "specdeploy", "cluster": {"server": f"https://{NODE_IP}:{API_PORT}",
                                                        "certificate-authority": str(P.pki / "ca.crt")}}],
        "users": [{"name": who, "user": {"token": TOKENS[who][0]}}],
        "contexts": [{"name": "specdeploy", "context": {"cluster": "specdeploy", "user": who, "namespace": "default"}}],
        "current-context": "specdeploy",
    }  # fmt: skip
    path.write_text(json.dumps(cfg, indent=1))
    return path


def api_get(path: str, who: str = "admin") -> Any:
    ctx = ssl.create_default_context(cafile=str(P.pki / "ca.crt"))
    req = urllib.request.Request(f"https://{NODE_IP}:{API_PORT}{path}",
                                 headers={"Authorization": f"Bearer {TOKENS[who][0]}"})  # fmt: skip
    with urllib.request.urlopen(req, context=ctx, timeout=3) as resp:
        body = resp.read()
        return json.loads(body) if body.startswith(b"{") else body.decode()


def kubectl(*args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", f"--kubeconfig={P.root / 'kubeconfig'}", *args], input=stdin,
                         capture_output=True, text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def control_plane(bindir: Path) -> None:
    pki = P.pki
    spawn("etcd", [control_plane_binary(bindir, "etcd"), "--data-dir", str(P.etcd), "--unsafe-no-fsync",
                   "--listen-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
                   "--advertise-client-urls", f"http://127.0.0.1:{ETCD_PORT}",
                   "--listen-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                   "--initial-advertise-peer-urls", f"http://127.0.0.1:{ETCD_PEER_PORT}",
                   "--initial-cluster", f"default=http://127.0.0.1:{ETCD_PEER_PORT}"])  # fmt: skip
    spawn("kube-apiserver", [
        control_plane_binary(bindir, "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
        f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}", f"--secure-port={API_PORT}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC", f"--enable-admission-plugins={ADMISSION}",
        "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true"])  # fmt: skip
    wait(lambda: api_get("/readyz") == "ok", "kube-apiserver")
    admin = kubeconfig("admin")
    spawn("kube-controller-manager", [
        control_plane_binary(bindir, "kube-controller-manager"), f"--kubeconfig={admin}",
        f"--authentication-kubeconfig={admin}", f"--authorization-kubeconfig={admin}", "--bind-address=127.0.0.1",
        f"--secure-port={KCM_PORT}", "--port=0", "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}", "--use-service-account-credentials=true",
        f"--root-ca-file={pki / 'ca.crt'}", "--controllers=*,-nodeipam,-attachdetach,-persistentvolume-binder",
        "--node-monitor-grace-period=20s", "--pod-eviction-timeout=30s",
        "--concurrent-deployment-syncs=10", "--concurrent-gc-syncs=20"])  # fmt: skip
    sched = kubeconfig("scheduler")
    spawn("kube-scheduler", [
        str(bindir / "kube-scheduler"), f"--kubeconfig={sched}", f"--authentication-kubeconfig={sched}",
        f"--authorization-kubeconfig={sched}", "--bind-address=127.0.0.1", f"--secure-port={SCHEDULER_PORT}",
        "--port=0", "--leader-elect=false"])  # fmt: skip


def containerd(pause_ref: str) -> Path:
    """containerd with its root, state, socket and runc's state in the state directory; the CRI plugin uses the
    CNI bridge + host-local (+ loopback) from Debian's containernetworking-plugins."""
    d = P.containerd
    sock = d / "containerd.sock"
    (P.cni / "net.d").mkdir(parents=True, exist_ok=True)
    (P.cni / "net.d" / "10-specdeploy.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "specdeploy",
        "plugins": [{"type": "bridge", "bridge": POD_BRIDGE, "isGateway": True, "isDefaultGateway": True,
                     "ipMasq": False, "hairpinMode": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                              "dataDir": str(P.cni / "networks")}}],
    }, indent=1))  # fmt: skip
    cfg = {
        "version": 2,
        "root": str(d / "root"),
        "state": str(d / "state"),
        "grpc": {"address": str(sock)},
        "ttrpc": {"address": str(d / "containerd.sock.ttrpc")},
        "plugins": {
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": pause_ref,
                # Root here lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj below its own.
                "restrict_oom_score_adj": True,
                "cni": {"bin_dir": "/usr/lib/cni", "conf_dir": str(P.cni / "net.d")},
                "containerd": {"runtimes": {"runc": {
                    "runtime_type": "io.containerd.runc.v2",
                    "options": {"Root": str(d / "runc"), "SystemdCgroup": False}}}},
            },
            "io.containerd.internal.v1.opt": {"path": str(d / "opt")},
        },
    }  # fmt: skip
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(_toml(cfg))
    spawn("containerd", ["containerd", "--config", str(d / "config.toml")])
    wait(lambda: ctr("version", check=False).returncode == 0, "containerd")
    return sock


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """containerd's own client on this cluster's socket, in the CRI's k8s.io namespace."""
    return run("ctr", "--address", str(P.containerd / "containerd.sock"), "-n", "k8s.io", *args, check=check)


def _toml(value: dict[str, Any], prefix: str = "") -> str:
    """The small TOML subset containerd's config needs (tables, strings, numbers, booleans)."""
    scalars = [f"{k} = {json.dumps(v)}" for k, v in value.items() if not isinstance(v, dict)]
    lines = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in value.items():
        if isinstance(v, dict):
            key = json.dumps(k) if "." in k else k
            lines.append(_toml(v, f"{prefix}.{key}" if prefix else key))
    return "\n".join(line for line in lines if line) + "\n"


def images(refs: dict[str, str]) -> dict[str, str]:
    """Load the images hack/images.sh built (reference -> archive) into containerd's k8s.io namespace."""
    listed = ctr("images", "ls", "-q").stdout.split()
    for ref, archive in refs.items():
        if ref not in listed:
            log(f"loading {ref} into containerd")
            ctr("images", "import", "--no-unpack", archive)
    return {kind: next(r for r in refs if f"/{kind}:" in r) for kind in ("pause", "specdeploy", "specdeploy-base")}


def node(bindir: Path, sock: Path, pause_ref: str) -> None:
    kubelet_cfg = kubeconfig("kubelet")
    spawn("kubelet", [
        str(bindir / "kubelet"), f"--kubeconfig={kubelet_cfg}", f"--hostname-override={NODE_NAME}",
        f"--node-ip={NODE_IP}", f"--address={NODE_IP}", f"--port={KUBELET_PORT}", "--read-only-port=0",
        f"--healthz-port={KUBELET_HEALTHZ}", f"--root-dir={P.kubelet}", f"--cert-dir={P.kubelet / 'pki'}",
        "--container-runtime=remote", f"--container-runtime-endpoint=unix://{sock}",
        f"--pod-infra-container-image={pause_ref}", "--cgroup-driver=cgroupfs", "--cgroups-per-qos=false",
        "--enforce-node-allocatable=", "--fail-swap-on=false", "--eviction-hard=", "--image-gc-high-threshold=100",
        f"--volume-plugin-dir={P.kubelet / 'volume-plugins'}", "--anonymous-auth=false",
        f"--client-ca-file={P.pki / 'ca.crt'}", "--authorization-mode=AlwaysAllow",
        "--register-node=true", "--node-status-update-frequency=5s", "--serialize-image-pulls=false"])  # fmt: skip
    proxy_cfg = kubeconfig("proxy")
    spawn("kube-proxy", [
        str(bindir / "kube-proxy"), f"--kubeconfig={proxy_cfg}", f"--hostname-override={NODE_NAME}",
        "--proxy-mode=iptables", f"--cluster-cidr={POD_CIDR}", f"--bind-address={NODE_IP}",
        f"--metrics-bind-address=127.0.0.1:{PROXY_METRICS}", f"--healthz-bind-address=127.0.0.1:{PROXY_HEALTHZ}",
        # Leave the machine's conntrack sysctls as they are.
        "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
        "--conntrack-tcp-timeout-close-wait=0"])  # fmt: skip

    def ready() -> bool:
        n = api_get(f"/api/v1/nodes/{NODE_NAME}")
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        return conds.get("Ready") == "True" and not n["spec"].get("taints")

    # The extended resource is advertised through the node's status, the documented way to test one.
    patch = json.dumps([{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(GPUS)}])
    wait(lambda: api_get(f"/api/v1/nodes/{NODE_NAME}"), "node registration", timeout=60)
    kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json", "-p", patch)
    wait(ready, f"node {NODE_NAME} Ready and untainted", timeout=120)


PROMETHEUS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "specdeploy:prometheus"}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "specdeploy:prometheus"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "specdeploy:prometheus"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "specdeploy:prometheus"}]
"""


def prometheus(scrape_interval: str | None) -> str:
    """Prometheus on the node's address (pods, the operator among them, query it), scraping what the PodMonitor
    selects among the pods hack/pod_sd.py discovers through the apiserver (its own least-privilege user)."""
    sys.path.insert(0, str(HACK))
    from prometheus import Prometheus, podmonitor_jobs

    kubectl("apply", "-f", "-", stdin=PROMETHEUS_RBAC)
    pods_file = P.prometheus / "pods.json"
    P.prometheus.mkdir(parents=True, exist_ok=True)
    spawn("pod-sd", [sys.executable, str(HACK / "pod_sd.py"), f"--kubeconfig={kubeconfig('prometheus')}",
                     f"--out={pods_file}"])  # fmt: skip
    prom = Prometheus(P.prometheus, scrape_interval=scrape_interval or "15s", port=PROMETHEUS_PORT, host=NODE_IP,
                      jobs=podmonitor_jobs(pods_file, scrape_interval))  # fmt: skip
    argv, pid = prom.argv(), _pids().get("prometheus")
    if pid and _alive(pid):
        os.kill(pid, signal.SIGHUP)  # already running: reload the configuration just written
    spawn("prometheus", argv)
    wait(prom.ready, "Prometheus")
    return prom.url


def metrics_endpoints(url: str) -> dict:
    """The operator's metrics-endpoint ConfigMap with ``url`` as its one endpoint, the default."""
    config = {"default": "cluster", "endpoints": {"cluster": {"url": url}}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "specdeploy-metrics", "namespace": OPERATOR_NAMESPACE},
            "data": {"endpoints.yaml": yaml.safe_dump(config)}}  # fmt: skip


def install_operator(image: str) -> None:
    """``kubectl apply -f specdeploy.yaml`` with the shipped image replaced by the local build (as an air-gapped
    user mirrors it), then the local Prometheus as the metrics endpoint."""
    text = (ROOT / "specdeploy.yaml").read_text()
    assert SHIPPED_IMAGE in text, f"{SHIPPED_IMAGE} is not the image specdeploy.yaml installs"
    kubectl("apply", "-f", "-", stdin=text.replace(SHIPPED_IMAGE, image))
    kubectl("apply", "-f", "-", stdin=json.dumps(metrics_endpoints(PROMETHEUS_URL)))
    kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR_DEPLOYMENT}", "--timeout=180s")


SYSCTLS = ("net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables")


def remember_pod_logs() -> None:
    """What of /var/log/pods and /var/log/containers (the kubelet's, fixed in v1.20) exists before ``up``."""
    marker = P.root / "pod-logs.json"
    if not marker.exists():
        created = [str(d) for d in (Path("/var/log/pods"), Path("/var/log/containers")) if not d.exists()]
        marker.write_text(json.dumps({"created": created, "since": time.time()}))


def remember_sysctls() -> None:
    """The CNI bridge (gateway) and kube-proxy set a few sysctls; ``down`` puts back what was there."""
    f = P.root / "sysctls.json"
    if not f.exists():
        values = {k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS if Path("/proc/sys", k).exists()}
        f.write_text(json.dumps(values))


def up(operator: bool = True, scrape_interval: str | None = SCRAPE_INTERVAL) -> dict[str, str]:
    if os.geteuid() != 0:
        raise SystemExit("cluster: needs root (containerd, the kubelet, bridges and iptables)")
    P.root.mkdir(parents=True, exist_ok=True)
    remember_sysctls()
    remember_pod_logs()
    network()
    certificates()
    bindir = binaries()
    control_plane(bindir)
    refs = dict(line.split(" ", 1) for line in run(str(HACK / "images.sh")).stdout.splitlines() if line.strip())
    pause = next(r for r in refs if "/pause:" in r)
    sock = containerd(pause)
    loaded = images(refs)
    node(bindir, sock, pause)
    kubectl("apply", "-k", str(ROOT / "crds"))
    url = prometheus(scrape_interval)
    if operator:
        install_operator(loaded["specdeploy"])
    (P.root / "env").write_text(f"KUBECONFIG={P.root / 'kubeconfig'}\nPROMETHEUS_URL={url}\n"
                                f"SPECDEPLOY_IMAGE={loaded['specdeploy']}\n")  # fmt: skip
    return {"kubeconfig": str(P.root / "kubeconfig"), "prometheus": url, "image": loaded["specdeploy"],
            "root_image": loaded["specdeploy-base"]}  # fmt: skip


def _remove_pods() -> None:
    """Stop every pod through the kubelet (which tears down its sandbox, network namespace and mounts): with the
    controllers stopped first nothing recreates them."""
    pids = _pids()
    for name in ("kube-scheduler", "kube-controller-manager"):
        if name in pids and _alive(pids[name]):
            os.killpg(pids[name], signal.SIGTERM)
    if not ("kubelet" in pids and _alive(pids["kubelet"])):
        return
    try:
        kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false")
        wait(lambda: not ctr("tasks", "ls", "-q").stdout.strip(), "pods to stop", timeout=60)
    except (RuntimeError, TimeoutError) as exc:
        log(f"pods did not all stop through the kubelet ({exc}); killing what is left")


def _kill_tasks() -> None:
    if not (P.containerd / "containerd.sock").exists():
        return
    for task in ctr("tasks", "ls", "-q", check=False).stdout.split():
        ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        ctr("tasks", "delete", "-f", task, check=False)


def _remove_kube_chains() -> None:
    """The kubelet's own KUBE-* chains (firewall, marks, canaries), which ``kube-proxy --cleanup`` leaves: the
    jumps into them from the built-in chains first, then the chains."""
    for table in ("filter", "nat", "mangle"):
        dump = run("iptables-save", "-t", table, check=False).stdout.splitlines()
        chains = [line[1:].split()[0] for line in dump if line.startswith(":KUBE-")]
        for line in dump:
            if line.startswith("-A ") and " -j KUBE-" in line and not line.split()[1].startswith("KUBE-"):
                run("iptables", "-t", table, "-D", *shlex.split(line[3:]), check=False)
        for chain in chains:
            run("iptables", "-t", table, "-F", chain, check=False)
        for chain in chains:
            run("iptables", "-t", table, "-X", chain, check=False)


def _remove_pod_logs() -> None:
    """The kubelet (v1.20) writes container logs under /var/log: remove what this cluster wrote there (all of it if
    ``up`` created the directories, else what appeared since ``up``)."""
    marker = P.root / "pod-logs.json"
    info = json.loads(marker.read_text()) if marker.exists() else {"created": [], "since": time.time()}
    for d in (Path("/var/log/pods"), Path("/var/log/containers")):
        if not d.exists():
            continue
        for entry in d.iterdir():
            if str(d) in info["created"] or entry.lstat().st_ctime >= info["since"]:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        if str(d) in info["created"] and not any(d.iterdir()):
            d.rmdir()


def down() -> None:
    if not P.root.exists():
        return
    _remove_pods()
    _kill_tasks()
    stop_all()
    bindir = binaries()
    run(str(bindir / "kube-proxy"), "--cleanup", check=False)  # removes its KUBE-* iptables chains
    _remove_kube_chains()
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(P.root) + "/")), key=len, reverse=True):
        run("umount", "-l", m, check=False)
    for link in (POD_BRIDGE, NODE_BRIDGE):
        run("ip", "link", "del", link, check=False)
    saved = P.root / "sysctls.json"
    for key, value in (json.loads(saved.read_text()) if saved.exists() else {}).items():
        Path("/proc/sys", key).write_text(value)
    _remove_pod_logs()
    shutil.rmtree(P.root)


def running() -> bool:
    """Every component of a cluster brought up here is alive."""
    pids = _pids()
    return set(pids) == set(COMPONENTS) and all(_alive(p) for p in pids.values())


def scale_operator(replicas: int) -> None:
    """Scale the installed operator (if any): tests run their own, never two at once. Scaled to zero, its pods
    are waited for, and the leader-election Lease is removed: a pod killed at the end of its grace period holds
    it for one lease more, which would keep the tests' own operator waiting as a standby."""
    if "deployment" in kubectl("get", "deployment", "-n", OPERATOR_NAMESPACE, "-o", "name", "--ignore-not-found"):
        kubectl("-n", OPERATOR_NAMESPACE, "scale", f"deployment/{OPERATOR_DEPLOYMENT}", f"--replicas={replicas}")
        if replicas == 0:
            pods = ("-n", OPERATOR_NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=specdeploy-operator",
                    "-o", "name")  # fmt: skip
            wait(lambda: kubectl(*pods).strip() == "", "the operator's pods gone", timeout=120, interval=1)
            kubectl("-n", OPERATOR_NAMESPACE, "delete", "lease", "specdeploy-operator", "--ignore-not-found")


def status() -> int:
    pids = _pids()
    for name in COMPONENTS:
        state = "running" if name in pids and _alive(pids[name]) else "stopped"
        print(f"{name:24} {state}")
    return 0 if running() else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start (or finish starting) the cluster; idempotent")
    p.add_argument("--no-operator", action="store_true", help="do not install the operator from manifests/")
    p.add_argument("--scrape-interval", default=SCRAPE_INTERVAL, help="the PodMonitor's interval is 15s")
    sub.add_parser("down", help="stop everything started here and remove its state")
    sub.add_parser("status", help="which components run")
    args = ap.parse_args()
    if args.cmd == "up":
        info = up(operator=not args.no_operator, scrape_interval=args.scrape_interval)
        print(f"export KUBECONFIG={info['kubeconfig']}")
        print(f"# Prometheus: {info['prometheus']}   image: {info['image']}")
        return 0
    if args.cmd == "down":
        down()
        return 0
    return status()


if __name__ == "__main__":
    sys.exit(main())
