#!/usr/bin/env python3
"""vLLM 0.33 itself judges what the project renders and simulates. Runs inside the venv hack/vllm-venv.sh builds
(vLLM and a CPU torch), never imports the project: the project hands it JSON and reads JSON back.

  commands   stdin: [{"name", "command", "args"}, ...] (rendered containers). Each goes through `vllm serve`'s
             own parser and checks, then AsyncEngineArgs.create_engine_config (model and speculator configs
             loaded, the speculative config validated). stdout: [{"name", "ok", "error"}, ...]
  metrics    stdin: one such container. stdout: {"text": what vLLM's PrometheusStatLogger exports for that
             configuration, in Prometheus text format}
  fields     stdout: the --speculative-config keys and methods vLLM accepts (tests/fixtures/...fields.json)

Models are never downloaded: a config-only Hugging Face cache is written from hack/vllm/hf-configs.json and read
offline, as vLLM reads a cached model (a speculators checkpoint must be a Hub id: vLLM refuses a local verifier).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HF_CONFIGS = Path(__file__).resolve().parent / "vllm" / "hf-configs.json"
REVISION = "0" * 40  # the cache's one snapshot per repo


def write_hf_cache(home: Path) -> None:
    """A Hugging Face cache holding only config.json for every model the project's samples and tests name."""
    for repo, config in json.loads(HF_CONFIGS.read_text())["models"].items():
        root = home / "hub" / ("models--" + repo.replace("/", "--"))
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(REVISION)
        snapshot = root / "snapshots" / REVISION
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "config.json").write_text(json.dumps(config))


def serve_namespace(command: list[str], args: list[str]) -> Any:
    """`vllm serve ARGS` parsed and checked exactly as the vllm CLI does before it starts the server."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if command != ["vllm", "serve"]:
        raise ValueError(f"command must be ['vllm', 'serve'], got {command}")
    top = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(top.add_subparsers(dest="subparser", required=True))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = top.parse_args(["serve", *args])
    except SystemExit:
        raise ValueError(err.getvalue().strip().splitlines()[-1]) from None
    serve.validate(ns)
    if getattr(ns, "model_tag", None) is not None:  # ServeSubcommand.cmd: the positional model wins
        ns.model = ns.model_tag
    return ns


def engine_config(command: list[str], args: list[str]) -> Any:
    import vllm.config.vllm
    from vllm.engine.arg_utils import AsyncEngineArgs

    # A GPU host has Triton, and vLLM then picks its model runner by the features asked for (V2 for dspark); on
    # this CPU host it would fall back to V1 and refuse what a GPU serves. Decide as the GPU host does.
    vllm.config.vllm.HAS_TRITON = True

    return AsyncEngineArgs.from_cli_args(serve_namespace(command, args)).create_engine_config()


def with_model_dirs(item: dict[str, Any], home: Path) -> list[str]:
    """The item's args with each ``model_dirs`` path (where KServe puts a storageUri's weights) replaced by a
    directory holding that Hub model's config.json, as the pod would find it there."""
    configs = json.loads(HF_CONFIGS.read_text())["models"]
    args = list(item["args"])
    for path, repo in (item.get("model_dirs") or {}).items():
        local = home / "model-dirs" / repo.replace("/", "--")
        local.mkdir(parents=True, exist_ok=True)
        (local / "config.json").write_text(json.dumps(configs[repo]))
        args = [str(local) if a == path else a for a in args]
    return args


def judge_commands(items: list[dict[str, Any]], home: Path) -> list[dict[str, Any]]:
    out = []
    for item in items:
        try:
            engine_config(item["command"], with_model_dirs(item, home))
            out.append({"name": item["name"], "ok": True, "error": ""})
        except Exception as exc:  # vLLM's verdict, whatever its type
            out.append({"name": item["name"], "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]})
    return out


def metrics_text(item: dict[str, Any]) -> dict[str, str]:
    """What vLLM's Prometheus logger exports for this configuration (one engine), before any request."""
    import prometheus_client
    from vllm.v1.metrics.loggers import PrometheusStatLogger

    PrometheusStatLogger(engine_config(item["command"], item["args"]), engine_indexes=[0])
    return {"text": prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()}


def speculative_fields() -> dict[str, Any]:
    """The keys --speculative-config accepts (SpeculativeConfig's init fields) and its methods."""
    import dataclasses
    import typing

    from vllm.config.speculative import SpeculativeConfig

    fields = sorted(f.name for f in dataclasses.fields(SpeculativeConfig) if f.init)
    method = typing.get_type_hints(SpeculativeConfig, include_extras=False)["method"]

    def literals(t: Any) -> list[str]:
        args = typing.get_args(t)
        if typing.get_origin(t) is typing.Literal:
            return [a for a in args if isinstance(a, str)]
        return [v for a in args for v in literals(a)]

    return {"user_fields": fields, "methods": sorted(set(literals(method)))}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("commands", "metrics", "fields"):
        print(__doc__, file=sys.stderr)
        return 2
    answer = os.dup(1)
    os.dup2(2, 1)  # vLLM logs to stdout: everything but the answer goes to stderr
    with tempfile.TemporaryDirectory(prefix="vllm-judge-hf-") as home:
        write_hf_cache(Path(home))
        # Before vLLM and huggingface_hub are imported: both read these once.
        os.environ.update(HF_HOME=home, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_TARGET_DEVICE="cpu")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        if argv[0] == "commands":
            result: Any = judge_commands(json.load(sys.stdin), Path(home))
        elif argv[0] == "metrics":
            result = metrics_text(json.load(sys.stdin))
        else:
            result = speculative_fields()
    sys.stdout.flush()
    with os.fdopen(answer, "w") as out:
        json.dump(result, out, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
