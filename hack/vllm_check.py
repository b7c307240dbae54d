#!/usr/bin/env python3
"""vLLM 0.33 judges what the project renders and what its simulator exports (the project's side; the verdicts come
from hack/vllm_judge.py, run in the vLLM venv hack/vllm-venv.sh builds).

    hack/vllm-check.sh [FILE|DIR ...]   every rendered vLLM command of these SpeculativeDeployments (default: the
                                        samples and tests/fixtures/methods) at every k the operator may render,
                                        then the simulator's metric families against vLLM's logger
    hack/vllm-check.sh --fixtures       regenerate tests/fixtures/vllm_*.json from vLLM

Exit 0 when vLLM accepts everything, 1 with one line per refusal, 2 when a file is unreadable or invalid.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from specdeploy.api import KIND, METHODS_WITH_SCHEDULE, SpecError, validate_manifest
from specdeploy.core.kserve import MODEL_DIR, served_command
from specdeploy.core.model import Setting, parse_schedule
from specdeploy.core.objects import render_all
from specdeploy.core.observation import queries
from specdeploy.core.render import Owner, spec_k
from specdeploy.sim.engine import Engine, Profile
from specdeploy.sim.server import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESOURCES = [ROOT / "manifests" / "samples", ROOT / "tests" / "fixtures" / "methods"]
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE = ROOT / "manifests" / "samples" / "llama-8b.yaml"
SIM_COMMAND = ["specdeploy", "sim-server"]  # takes vLLM's own arguments: judged as `vllm serve`
IDENTITY_LABELS = ("model_name", "engine")  # every series carries them; their values are the deployment's own


def judge(subcommand: str, payload: Any) -> Any:
    """Run hack/vllm_judge.py in the vLLM venv (built on first use) and return its JSON answer."""
    venv = subprocess.run([str(ROOT / "hack" / "vllm-venv.sh")], capture_output=True, text=True)
    if venv.returncode != 0:
        raise RuntimeError(f"hack/vllm-venv.sh could not build the vLLM venv:\n{venv.stderr[-3000:]}")
    out = subprocess.run(
        [venv.stdout.strip(), str(ROOT / "hack" / "vllm_judge.py"), subcommand],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"vllm_judge.py {subcommand} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def resources(paths: list[Path]) -> list[tuple[str, Any]]:
    """(name, validated spec) of every SpeculativeDeployment in the files and directories."""
    files = [f for p in paths for f in (sorted(p.glob("*.y*ml")) if p.is_dir() else [p])]
    out = []
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == KIND:
                name = f"{f.name}/{doc['metadata']['name']}"
                try:
                    out.append((name, validate_manifest(doc)))
                except SpecError as exc:
                    where = f"{f}: {KIND}/{doc['metadata']['name']}"
                    raise ValueError("; ".join(f"{where}: {p}" for p in exc.problems)) from None
    return out


def policy_schedule(top: int) -> Setting:
    """A schedule shaped as the policy renders them (the demo's, topped at the spec's largest k)."""
    return parse_schedule(f"{top}@1,{max(top - 1, 1)}@7,1@55,0@131")


def settings(spec: Any) -> list[Setting | None]:
    """The spec's own setting and every one the operator may render for it: each k of its adaptive range, off,
    and (where the method runs vLLM's per-batch-size k) a schedule shaped as the policy makes them."""
    own = spec_k(spec)
    if spec.speculator is None or spec.short_form:
        return [own]
    ad = spec.adaptive
    ks = range(ad.min_tokens, ad.max_tokens + 1)
    schedule = [] if spec.speculator.method not in METHODS_WITH_SCHEDULE else [policy_schedule(ad.max_tokens)]
    return [own, *ks, *([0] if ad.allow_disable else []), *schedule]


def containers(
    named_specs: list[tuple[str, Any]], settings_of: Callable[[Any], list[Setting | None]] = settings
) -> list[dict[str, Any]]:
    """The vLLM container of each rendered workload (a Deployment's, or the one KServe composes from the
    InferenceService and its ServingRuntime), at each of its settings: what the judge parses."""
    out, seen = [], set()
    for name, spec in named_specs:
        for k in settings_of(spec):
            workload, other, *_ = render_all(Owner(name.split("/")[-1], "ns", "uid"), spec, k)
            model_dirs = {}
            if workload["kind"] == "InferenceService":
                command, args = served_command(other, workload)
                if spec.kserve.storage_uri:  # KServe puts the weights there: the judge finds the model's config
                    model_dirs = {MODEL_DIR: spec.target.model}
            else:
                c = workload["spec"]["template"]["spec"]["containers"][0]
                command, args = c["command"], c["args"]
            command = ["vllm", "serve"] if command == SIM_COMMAND else command
            key = json.dumps([command, args])
            if key not in seen:
                seen.add(key)
                out.append({"name": f"{name} k={k}", "command": command, "args": args, "model_dirs": model_dirs})
    return out


def refusals(verdicts: list[dict[str, Any]]) -> list[str]:
    return [f"{v['name']}: vLLM refuses: {v['error']}" for v in verdicts if not v["ok"]]


def families(text: str) -> dict[str, Any]:
    """name -> type, label names, values of the other labels, bucket bounds (histograms), from a scrape."""
    out: dict[str, Any] = {}
    for fam in text_string_to_metric_families(text):
        # *_created: prometheus_client's per-process creation stamps, not part of vLLM's metrics interface.
        if not fam.name.startswith("vllm:") or fam.name.endswith("_created"):
            continue
        names = sorted({k for s in fam.samples for k in s.labels if k != "le"})
        values = {
            n: sorted({s.labels[n] for s in fam.samples if n in s.labels}) for n in names if n not in IDENTITY_LABELS
        }
        entry: dict[str, Any] = {"type": fam.type, "labels": names, "values": values}
        if fam.type == "histogram":
            bounds = {float(s.labels["le"]) for s in fam.samples if s.name.endswith("_bucket")}
            entry["buckets"] = sorted(b for b in bounds if b != float("inf"))
        out[fam.name] = entry
    return out


def simulator_families(k: int) -> dict[str, Any]:
    """The simulator's /metrics after a few seconds of load, parsed as Prometheus parses it."""
    engine = Engine(Profile(output_tokens=16), k, seed=1)
    engine.set_load(qps=20)
    engine.run_for(5)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Metrics(engine, "m"))  # type: ignore[arg-type]
    return families(generate_latest(registry).decode())


def read_families() -> set[str]:
    """The vllm:* families the operator's PromQL reads (counters by family name, without _total)."""
    names = re.findall(r"vllm:[a-z_:]+", " ".join(queries("30s").values()))
    return {re.sub(r"(_total|_sum|_count|_bucket)$", "", n) for n in names}


def metric_differences(vllm: dict[str, Any], sim: dict[str, Any], required: set[str]) -> list[str]:
    """Every simulator family must be vLLM's, with its type, label names, bucket bounds and label values (all of
    them from the start, as vLLM exports them); the ``required`` families (what the operator reads) must be in
    both."""
    out = []
    for name, got in sorted(sim.items()):
        want = vllm.get(name)
        if want is None:
            out.append(f"{name}: the simulator exports it, vLLM does not")
            continue
        for field in ("type", "labels", "buckets"):
            if got.get(field) != want.get(field):
                out.append(f"{name}: {field} {got.get(field)} where vLLM has {want.get(field)}")
        for label, values in got.get("values", {}).items():  # vLLM exports every value before any request
            expected = want.get("values", {}).get(label)
            if values != expected:
                out.append(f"{name}: {label} values {values} where vLLM has {expected}")
    out += [f"{n}: the operator reads it, vLLM does not export it" for n in sorted(required - set(vllm))]
    out += [f"{n}: the operator reads it, the simulator does not export it" for n in sorted(required - set(sim))]
    return out


def simulator_differences() -> list[str]:
    """The simulator against vLLM, with speculation (k=3: everything the operator reads) and without."""
    sample = sample_containers()
    on = metric_differences(vllm_metrics(sample["on"]), simulator_families(3), read_families())
    return on + metric_differences(vllm_metrics(sample["off"]), simulator_families(0), set())


@functools.cache
def _vllm_metrics(container: str) -> dict[str, Any]:
    return families(judge("metrics", json.loads(container))["text"])


def vllm_metrics(container: dict[str, Any]) -> dict[str, Any]:
    """vLLM's families for a container's configuration (one judge run per configuration per process)."""
    return _vllm_metrics(json.dumps(container, sort_keys=True))


def sample_containers() -> dict[str, dict[str, Any]]:
    """The README sample's container at its own k (3) and with speculation off."""
    on, off = containers(resources([SAMPLE]), lambda spec: [spec_k(spec), 0])
    return {"on": on, "off": off}


def fixtures() -> dict[str, Any]:
    """tests/fixtures/vllm_*.json as vLLM 0.33 makes them (speculative-config fields; metric families with and
    without speculation)."""
    sample = sample_containers()
    on, off = vllm_metrics(sample["on"]), vllm_metrics(sample["off"])
    source = "generated by hack/vllm-check.sh --fixtures from vLLM 0.33.0 (do not edit)"
    return {
        "vllm_speculative_config_fields.json": {
            "source": f"{source}: SpeculativeConfig's init fields and method literals",
            **judge("fields", {}),
        },
        "vllm_metrics.json": {
            "source": f"{source}: PrometheusStatLogger's vllm:* families for the sample, one engine",
            "metrics": on,
            "only_with_speculation": sorted(set(on) - set(off)),
        },
    }


def main(argv: list[str]) -> int:
    if argv == ["--fixtures"]:
        for name, doc in fixtures().items():
            (FIXTURES / name).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
            print(f"wrote tests/fixtures/{name}")
        return 0
    paths = [Path(a) for a in argv] or DEFAULT_RESOURCES
    try:
        items = containers(resources(paths))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        print(f"vllm-check: {exc}", file=sys.stderr)
        return 2
    problems = refusals(judge("commands", items))
    print(f"vllm-check: {len(items) - len(problems)} of {len(items)} rendered commands accepted by vLLM 0.33")
    metric_problems = simulator_differences()
    print(f"vllm-check: simulator metric families {'match' if not metric_problems else 'differ from'} vLLM's")
    for line in [*problems, *metric_problems]:
        print(f"  {line}")
    return 1 if problems or metric_problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
