"""The committed CRD is what the models generate; the CLI reports user errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from specdeploy.api.crd import crd, crd_yaml
from specdeploy.cli import main

from ..conftest import ROOT, SAMPLE_PATH

CRD_FILE = ROOT / "crds" / "specdeploy.io_speculativedeployments.yaml"


def test_committed_crd_is_not_stale() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/ is stale: run python hack/gen-crd.py"


def _walk(node: dict, path: str = ""):  # type: ignore[type-arg]
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "$defs", "title"} & set(node), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_crd_carries_enums_bounds_defaults_and_columns() -> None:
    version = crd()["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    k = spec["speculator"]["properties"]["numSpeculativeTokens"]
    assert (k["minimum"], k["maximum"]) == (1, 16)
    assert "eagle3" in spec["speculator"]["properties"]["method"]["enum"]
    assert spec["adaptive"]["properties"]["mode"]["default"] == "Off"
    assert spec["adaptive"]["properties"]["mode"]["enum"] == ["Off", "Recommend", "Auto"]
    assert spec["rollout"]["properties"]["maxSurge"]["x-kubernetes-int-or-string"] is True
    # Pod fields carry the Kubernetes API's types: the API server (kubectl's validation) knows their fields.
    assert spec["tolerations"]["items"]["properties"]["operator"]["type"] == "string"
    assert spec["env"]["items"]["properties"]["valueFrom"]["type"] == "object"
    assert spec["podSecurityContext"]["properties"]["runAsUser"] == {
        "type": "integer",
        "description": spec["podSecurityContext"]["properties"]["runAsUser"]["description"],
        "nullable": True,  # null drops the operator's default, and must reach the operator
    }
    assert version["subresources"] == {"status": {}}
    cols = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["Method", "K", "Acceptance", "QPS", "Mode", "Ready", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert wide == ["Schedule"]  # kubectl get sd -o wide


def test_gen_crd_check_mode_passes() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "hack/gen-crd.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_cli_render_json_is_a_list_kubectl_applies(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["render", "-f", str(SAMPLE_PATH), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["apiVersion"], out["kind"]) == ("v1", "List")
    assert [o["kind"] for o in out["items"]] == ["Deployment", "Service"]


def test_cli_render_takes_a_directory_several_files_and_a_namespace(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(SAMPLE_PATH.read_text())
    del doc["metadata"]["namespace"]
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**doc, "metadata": {"name": "other"}}))
    assert main(["render", "-f", str(tmp_path), "-n", "team-a", "-o", "json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert [(o["metadata"]["name"], o["metadata"]["namespace"]) for o in items if o["kind"] == "Deployment"] == [
        ("llama-8b", "team-a"),
        ("other", "team-a"),
    ]
    assert main(["render", "-f", str(tmp_path / "a.yaml"), "-f", str(SAMPLE_PATH)]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 4
    assert main(["render", "-f", str(SAMPLE_PATH), "-n", "elsewhere"]) == 2
    assert "in namespace inference, not elsewhere (-n)" in capsys.readouterr().err


def test_cli_render_yaml_with_k_override(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["render", "-f", str(SAMPLE_PATH), "--k", "0"]) == 0
    dep = next(yaml.safe_load_all(capsys.readouterr().out))
    assert "--speculative-config" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_cli_validate_reports_each_problem_on_its_own_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: specdeploy.io/v1alpha1\nkind: SpeculativeDeployment\nmetadata: {name: bad}\n"
        "spec: {target: {model: t}, replicas: -1, speculator: {method: eagle3, numSpeculativeTokens: 0}}\n"
    )
    assert main(["validate", "-f", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{bad}: SpeculativeDeployment/bad: spec.speculator.numSpeculativeTokens: "
        "must be greater than or equal to 1 (got 0)",
        f"{bad}: SpeculativeDeployment/bad: spec.replicas: must be greater than or equal to 0 (got -1)",
    ]


def test_cli_user_errors_never_trace(tmp_path: Path) -> None:
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("a: [\n")
    for args in (["validate", "-f", str(tmp_path / "missing.yaml")], ["render", "-f", str(notyaml)]):
        out = subprocess.run([sys.executable, "-m", "specdeploy.cli", *args], capture_output=True, text=True)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr and out.stderr.startswith("error: ")


def test_cli_version_and_plain_help(capsys) -> None:  # type: ignore[no-untyped-def]
    from specdeploy import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"specdeploy {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_recommend_without_a_kubeconfig_says_so_without_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    out = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "recommend", "--prometheus", "http://127.0.0.1:1"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: no Kubernetes configuration") and "set KUBECONFIG" in out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "specdeploy.cli", "recommend", "--prometheus", "http://p", "--token-file", "/nope"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 2 and "--token-file /nope: cannot read" in missing.stderr


def test_every_field_of_the_crd_has_a_description() -> None:
    """What `kubectl explain speculativedeployment.spec...` prints for each field comes from the models."""
    missing = []

    def walk(node: dict, path: str) -> None:  # type: ignore[type-arg]
        for name, sub in (node.get("properties") or {}).items():
            if not sub.get("description"):
                missing.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
            if "items" in sub:
                walk(sub["items"], f"{path}.{name}[]")

    walk(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    assert missing == [".metadata"]  # the API server refuses anything but the type there
