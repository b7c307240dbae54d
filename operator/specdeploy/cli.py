"""``specdeploy`` command line: run | render | validate | sim-server | simulate | recommend.

User errors print one line per problem and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .api import KIND, SpecError, validate_manifest
from .core.objects import render_all
from .core.render import Owner, Platform, Site, spec_k, wants_pod_monitors

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


class UsageError(Exception):
    """A user mistake the CLI reports in one line."""


def _load_docs(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not docs:
        raise UsageError(f"{path}: no documents")
    return docs


def _manifests(path: str) -> list[dict[str, Any]]:
    docs = [d for d in _load_docs(path) if not isinstance(d, dict) or d.get("kind") == KIND]
    if not docs:
        raise UsageError(f"{path}: no {KIND} in the file")
    return docs


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _paths(given: list[str]) -> list[str]:
    """Files as kubectl takes them: each -f a file, ``-`` (stdin) or a directory (its manifests, sorted)."""
    out = []
    for path in given:
        p = Path(path)
        if path != "-" and p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix in MANIFEST_SUFFIXES)
            if not found:
                raise UsageError(f"{path}: no {', '.join(MANIFEST_SUFFIXES)} files in the directory")
            out += found
        else:
            out.append(path)
    return out


def _checked(given: list[str]) -> list[tuple[str, dict[str, Any], Any]]:
    """Validate every SpeculativeDeployment in the files; report all problems of all documents."""
    out, lines = [], []
    for path in _paths(given):
        for doc in _manifests(path):
            try:
                out.append((path, doc, validate_manifest(doc)))
            except SpecError as exc:
                name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc, dict) else "?"
                lines += [f"{path}: {KIND}/{name}: {p}" for p in exc.problems]
    if lines:
        raise UsageError("\n".join(lines))
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    for path, doc, _ in _checked(args.file):
        print(f"{path}: {KIND}/{doc['metadata']['name']}: valid")
    return 0


def _namespace(path: str, meta: dict[str, Any], flag: str | None) -> str:
    """The manifest's namespace, else -n, else default; a manifest naming another than -n is refused, as by
    kubectl."""
    ns = meta.get("namespace")
    if ns and flag and ns != flag:
        raise UsageError(f"{path}: {KIND}/{meta['name']} is in namespace {ns}, not {flag} (-n): drop one of them")
    return ns or flag or "default"


def cmd_render(args: argparse.Namespace) -> int:
    objects: list[dict[str, Any]] = []
    for path, doc, spec in _checked(args.file):
        meta = doc["metadata"]
        ns = _namespace(path, meta, args.namespace)
        owner = Owner(meta["name"], ns, meta.get("uid", PLACEHOLDER_UID))
        k = spec_k(spec) if args.k is None else args.k
        platform = Platform(args.platform)
        site = Site(platform, args.vllm_image, args.sim_image, wants_pod_monitors(args.pod_monitors, platform))
        objects += render_all(owner, spec, k, site)
    if args.output == "json":  # a v1 List, as `kubectl get -o json` prints one: what kubectl apply -f takes
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False, width=120), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted (kopf), watching all namespaces or the ones given; with leader
    election (the default) only while this replica holds the Lease. Exit 1 when the Lease was lost."""
    import asyncio
    import threading

    import kopf

    from .shell import handlers  # noqa: F401 - registers the handlers
    from .shell.endpoints import operator_namespace
    from .shell.kube import coordination_api
    from .shell.leader import Elector, lead

    kopf.configure(verbose=args.verbose)
    memo = kopf.Memo(
        site=Site(vllm_image=args.vllm_image, sim_image=args.sim_image),
        namespaces=args.namespace,
        platform=args.platform,
        pod_monitors=args.pod_monitors,
        metrics_port=args.metrics_port,
        prometheus_url=args.prometheus_url,
        metrics_namespace=args.metrics_namespace,
    )

    def run(lost: threading.Event | None) -> None:
        async def operator() -> None:
            stop = asyncio.Event()
            if lost is not None:  # the Lease lost: kopf stops as on SIGTERM
                loop = asyncio.get_running_loop()
                threading.Thread(
                    target=lambda: lost.wait() and loop.call_soon_threadsafe(stop.set), daemon=True
                ).start()
            await kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace, standalone=True,
                                liveness_endpoint=args.liveness, memo=memo, stop_flag=stop)  # fmt: skip

        asyncio.run(operator())

    if not args.leader_election:
        run(None)
        return 0
    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}-{os.getpid()}"
    elector = Elector(coordination_api(), args.metrics_namespace or operator_namespace(), identity)
    return 1 if lead(elector, args.liveness, run) else 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Closed-loop policy vs always-off, static k, best static and the oracle, on shipped or given traces."""
    from .offline.plot import FORMATS as PLOT_FORMATS
    from .offline.plot import plot
    from .offline.simulate import compare, table
    from .offline.trace import load_trace

    paths = args.trace or sorted(str(p) for p in (Path(__file__).parent / "offline" / "traces").glob("*.yaml"))
    if args.plot and Path(args.plot).suffix not in PLOT_FORMATS:
        raise UsageError(f"--plot {args.plot}: the picture must be one of {', '.join(PLOT_FORMATS)}")
    results = []
    for path in paths:
        try:
            trace = load_trace(path)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise UsageError(f"{path}: {exc}") from None
        if args.slo_ms is not None:
            trace = dataclasses.replace(trace, adaptive=trace.adaptive.model_copy(update={"slo_ms": args.slo_ms}))
        results.append(compare(trace))
        if args.plot:
            out = Path(args.plot)
            plot(trace, results[-1], out if len(paths) == 1 else out.with_name(f"{out.stem}-{trace.name}{out.suffix}"))
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        print(table(results))
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    """What the policy would decide now on live metrics, without acting (reads the resources' status)."""
    import kubernetes
    import urllib3

    from .shell.endpoints import Connection
    from .shell.recommend import recommend

    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: cannot read: {exc.strerror}") from None
    endpoint = Connection(args.prometheus, token, not args.insecure_skip_verify)
    try:
        for line in recommend(endpoint, args.namespace, args.name):
            print(line)
    except kubernetes.config.ConfigException as exc:
        raise UsageError(f"no Kubernetes configuration ({exc}): set KUBECONFIG, or run inside a pod") from None
    except kubernetes.client.ApiException as exc:
        raise UsageError(f"the Kubernetes API refused: {exc.status} {exc.reason}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise UsageError(f"cannot reach the Kubernetes API: {exc}") from None
    return 0


def _add_files(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f", "--file", action="append", required=True, help="YAML/JSON file, directory, or - for stdin (repeatable)"
    )


def _add_pod_monitors(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pod-monitors",
        choices=["auto", "always", "never"],
        default="auto",
        help="a PodMonitor per resource: auto = on OpenShift (user-workload monitoring), where the API exists",
    )


def _add_images(p: argparse.ArgumentParser) -> None:
    from .api import DEFAULT_IMAGE
    from .core.render import DEFAULT_SIM_IMAGE

    p.add_argument("--sim-image", default=DEFAULT_SIM_IMAGE, help="image for simulated pods")
    p.add_argument("--vllm-image", default=DEFAULT_IMAGE, help="vLLM image of resources whose spec names none")


def _add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="run the operator")
    p.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf liveness endpoint URL")
    p.add_argument("--metrics-port", type=int, default=8081, help="the operator's own /metrics (0: none)")
    p.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="act only while holding the Lease specdeploy-operator in the operator's namespace (replicas > 1)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--platform",
        choices=["auto", *(p.value for p in Platform)],
        default="auto",
        help="auto: openshift when the cluster serves the security.openshift.io API group",
    )
    _add_images(p)
    _add_pod_monitors(p)
    p.add_argument(
        "--prometheus-url",
        default=None,
        help="the default metrics endpoint (no auth); more endpoints: the specdeploy-metrics ConfigMap",
    )
    p.add_argument(
        "--metrics-namespace",
        default=None,
        help="namespace of the specdeploy-metrics ConfigMap and its Secrets (default: the operator's own)",
    )
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specdeploy",
        description="Run vLLM with speculative decoding on Kubernetes, and keep its draft length worth running.",
    )
    parser.add_argument("--version", action="version", version=f"specdeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check SpeculativeDeployment manifests")
    _add_files(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="print the objects the operator would create")
    _add_files(p)
    p.add_argument("-n", "--namespace", default=None, help="namespace of manifests that name none (default: default)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml", help="json: one v1 List")
    p.add_argument("--k", type=int, default=None, help="render this draft length instead of the spec's (0 = off)")
    _add_images(p)
    _add_pod_monitors(p)
    p.add_argument(
        "--platform",
        choices=[p.value for p in Platform],
        default=Platform.KUBERNETES.value,
        help="who assigns the pods' UID: the pod spec (kubernetes) or the SCC (openshift)",
    )
    p.set_defaults(func=cmd_render)

    sub.add_parser("sim-server", help="vLLM-compatible simulator; takes `vllm serve` arguments", add_help=False)

    p = sub.add_parser("simulate", help="run the policy offline over traces, side by side with baselines")
    p.add_argument("--trace", action="append", help="trace file (YAML/JSON); default: the shipped traces")
    p.add_argument("--json", action="store_true", help="one JSON object (a list for several traces)")
    p.add_argument("--slo-ms", type=float, default=None, help="per-token latency SLO (default 50)")
    p.add_argument("--plot", default=None, help="also draw load, setting and latency over time (.png/.svg/.html)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("recommend", help="the decision the policy would take now, without acting")
    p.add_argument("--prometheus", required=True, help="Prometheus base URL")
    p.add_argument("--token-file", help="file with a bearer token for Prometheus")
    p.add_argument(
        "--insecure-skip-verify",
        action="store_true",
        help="do not verify Prometheus' TLS certificate (a CA bundle: set REQUESTS_CA_BUNDLE)",
    )
    p.add_argument("-n", "--namespace", default=None, help="namespace (default: all)")
    p.add_argument("name", nargs="?", help="a SpeculativeDeployment (default: all)")
    p.set_defaults(func=cmd_recommend)

    _add_run(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim-server"]:  # takes `vllm serve`'s command line, so it parses its own arguments
        from .sim.server import main as sim_main

        return sim_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"error: {exc}" if "\n" not in str(exc) else str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
