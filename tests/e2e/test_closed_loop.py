"""The whole loop for real, installed as a user installs it: `kubectl apply -k manifests` runs the operator
in-cluster from the image built from this tree, under its own ServiceAccount and ClusterRole; simulated vLLM pods
(same image) run under containerd on the node and pass their real readiness probes; Prometheus discovers and
scrapes them with the PodMonitor's configuration (1 s here); the operator reads it, changes k, and the Deployment
rolls with readiness gating. The test only offers load: split over the ready pods as their Service would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import kubernetes
import pytest

from specdeploy.core.model import k_at, vllm_schedule
from specdeploy.core.prior import GPU_PRODUCT_LABELS
from specdeploy.core.reconcile import recorded_setting
from specdeploy.core.render import LABEL_K, k_label

from ..argocd import health
from ..conftest import ROOT
from ..integration.conftest import Cluster, kubectl, kubectl_apply, wait_for
from ..loop import HIGH, LOW, MAX_RESTARTS, NAME, cond, evaluated, get_resource, resource, status, wait_k

sys.path.insert(0, str(ROOT / "hack"))
import cluster as local_cluster
from load import PodLoad
from prometheus import Prometheus

pytestmark = [pytest.mark.cluster, pytest.mark.prometheus]
NO_DRAFTS = 0.05  # drafts per generated token that count as none (a window straddling the last drafted steps)
DRAFT_SLACK = 0.5  # tokens a mean draft may exceed the k at the smallest batch scraped: steps between scrapes


@pytest.fixture(scope="module")
def installed_operator(cluster: Cluster) -> Iterator[None]:
    """The operator as `hack/cluster.sh up` installs it (manifests/, the local image); scaled to zero after."""
    local_cluster.install_operator(cluster.image)
    yield
    local_cluster.scale_operator(0)


def instant(prometheus: Prometheus, query: str) -> float:
    """One instant query's single value (0 when it has none)."""
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{urlencode({'query': query})}", timeout=5) as r:
        result = json.load(r)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def selector(ns: str, setting: Any) -> str:
    return f'{{namespace="{ns}",deployment="{NAME}",specdeploy_k="{k_label(setting)}"}}'


def drafted_as_scheduled(prometheus: Prometheus, ns: str, setting: Any) -> tuple[dict[str, float], bool]:
    """What the pods of this setting ran over the last 15 s (batches, drafts per token, draft length), and whether
    they drafted as it says at those batches: nothing while every batch seen is in a k=0 band; else drafts no longer
    than the k at the smallest batch seen (vLLM looks k up per step by batch size; a gauge scraped each second misses
    brief dips, hence DRAFT_SLACK). Not while the pods draft more than that, a pod was idle (new, not yet given its
    share), or the load has not reached the shorter bands (drafting less there than at a batch of one)."""
    sel = selector(ns, setting)
    ran = {
        "smallest batch": instant(prometheus, f"min(min_over_time(vllm:num_requests_running{sel}[15s]))"),
        "largest batch": instant(prometheus, f"max(max_over_time(vllm:num_requests_running{sel}[15s]))"),
        "drafts per token": drafts_per_token(prometheus, ns, setting),
        "draft length": instant(prometheus, f"sum(rate(vllm:spec_decode_num_draft_tokens_total{sel}[15s])) / "
                                            f"sum(rate(vllm:spec_decode_num_drafts_total{sel}[15s]))"),
    }  # fmt: skip
    k = k_at(setting, ran["smallest batch"])
    if ran["smallest batch"] < 1 or (setting != 0 and k_at(setting, ran["largest batch"]) >= k_at(setting, 1)):
        return ran, False
    return ran, ran["drafts per token"] < NO_DRAFTS if k == 0 else ran["draft length"] <= k + DRAFT_SLACK


def drafts_per_token(prometheus: Prometheus, ns: str, setting: Any) -> float:
    """Drafts per generated token over the last 15 s on the pods of this setting, read back through Prometheus:
    1 / E(k) while every step drafts, 0 while none does."""
    sel = selector(ns, setting)
    return instant(
        prometheus,
        f"sum(rate(vllm:spec_decode_num_drafts_total{sel}[15s])) / sum(rate(vllm:generation_tokens_total{sel}[15s]))",
    )


def assert_dashboard_has_data(prometheus: Prometheus, namespace: str, since: float) -> None:
    """Every query of the Grafana dashboard, for this resource, returns data from the Prometheus scraping the
    simulator's pods and the operator: the panels now, the annotations (k changes) over the test so far."""
    board = json.loads((ROOT / "manifests/monitoring/dashboard.json").read_text())

    def promql(expr: str) -> str:
        return (expr.replace("$namespace", namespace).replace("$name", NAME)
                .replace("$__rate_interval", "30s"))  # fmt: skip

    def query(path: str, **params: Any) -> list[Any]:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/{path}?{urlencode(params)}", timeout=10) as resp:
            return json.loads(resp.read())["data"]["result"]

    def empty() -> list[str]:
        return [f"{p['title']}: {t['expr']}" for p in board["panels"] for t in p["targets"]
                if not query("query", query=promql(t["expr"]))]  # fmt: skip

    try:  # the operator's series appear at its next scrape and evaluation
        wait_for(lambda: not empty(), timeout=60, interval=2, what="every panel with data")
    except AssertionError:
        raise AssertionError("panels without data:\n" + "\n".join(empty())) from None
    for a in board["annotations"]["list"]:
        if "expr" in a:
            found = query("query_range", query=promql(a["expr"]), start=since, end=time.time(), step=5)
            assert found, f"annotation {a['name']} found nothing: {a['expr']}"


def test_speculation_stops_under_load_resumes_when_it_falls_and_survives_prometheus_loss(
    api: Any, namespace: str, installed_operator: None, prometheus: Prometheus, load: PodLoad
) -> None:
    """Under a load no k serves, the policy stops drafting: speculation off, or (eagle3 can run vLLM's
    per-batch-size k) a schedule drafting nothing at the batch sizes that load runs. The Deployment carries the
    setting, and the pods' own metrics show it: at high load they draft as it says at the batches they run (nothing in
    a k=0 band; with a schedule, in the bands the batches fluctuate into, short drafts); with a schedule, drafts again
    at low load without another restart."""
    started = time.time()
    load.set(namespace, NAME, LOW)
    # Applied as Argo CD applies it (server-side, its field manager): after the operator's changes, a diff of the
    # same file must show nothing, or Argo CD would report the resource OutOfSync and undo the policy.
    argocd = ("--server-side", "--field-manager=argocd-controller", "-n", namespace, "-f", "-")
    git_file = json.dumps(resource())
    kubectl("apply", *argocd, stdin=git_file)
    # Pods turn Ready one by one through their probes: acceptance is measured once both serve their share.
    st = wait_for(
        lambda: (s := status(api, namespace)) and cond(s, "MetricsAvailable").get("status") == "True"
        and s["metrics"].get("perPositionAcceptance") and s["metrics"].get("pods") == 2 and s,
        timeout=120, what="acceptance in status",
    )  # fmt: skip
    assert st["metrics"]["perPositionAcceptance"][0] == pytest.approx(0.75, abs=0.1)  # first, short window
    assert st["k"] >= 1, json.dumps(st["metrics"])

    load.set(namespace, NAME, HIGH)

    def stops_drafting(k: int, s: dict[str, Any]) -> bool:
        """A setting the policy chose that drafts nothing at large batches: speculation off, or a schedule (taken
        under the high load, or already at low load for the headroom it buys) whose last band is k=0."""
        setting = recorded_setting(s)
        chosen = bool(s.get("decisions"))
        return chosen and (setting == 0 or (not isinstance(setting, int) and setting[-1][1] == 0))

    st = wait_k(api, namespace, stops_drafting, "drafting stops under high load")
    diff = subprocess.run(["kubectl", "diff", *argocd], input=git_file, capture_output=True, text=True)
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout + diff.stderr
    assert health(get_resource(api, namespace))["status"] in ("Healthy", "Progressing")
    last = st["decisions"][-1]
    assert last["applied"] is True and last["setting"] == (st.get("schedule") or "0")
    args = api.apps.read_namespaced_deployment(NAME, namespace).spec.template.spec.containers[0].args
    setting = recorded_setting(st)
    if setting == 0:
        assert "--speculative-config" not in args
    else:
        cfg = json.loads(args[args.index("--speculative-config") + 1])
        assert cfg["num_speculative_tokens"] == st["k"]
        assert cfg["num_speculative_tokens_per_batch_size"] == vllm_schedule(setting)
        assert setting[-1][1] == 0  # no drafts at the largest batches
    try:
        wait_for(lambda: drafted_as_scheduled(prometheus, namespace, setting)[1], timeout=60, interval=1,
                 what="pods drafting as the setting says at the batches high load runs")  # fmt: skip
    except AssertionError as exc:
        ran = drafted_as_scheduled(prometheus, namespace, setting)[0]
        raise AssertionError(f"{exc}: {k_label(setting)} ran {ran}, decided {st['decisions'][-1]}") from None

    load.set(namespace, NAME, LOW)
    if setting == 0:
        st = wait_k(api, namespace, lambda k, _: k >= 1, "speculation back on when load falls", timeout=180)
        assert st["decisions"][-1]["action"] == "turn-on"

    # The pods draft again at low load: a schedule does at its small batches without a restart, unless the policy
    # finds a better one for the low load (a higher k at small batches); speculation off must be turned back on.
    def drafting() -> dict[str, Any] | None:
        s = status(api, namespace)
        ok = s.get("rollout") == "Complete" and drafts_per_token(prometheus, namespace, recorded_setting(s)) > 0.2
        return s if ok else None

    st = wait_for(drafting, timeout=180, interval=1, what="pods draft again at low load")
    assert_dashboard_has_data(prometheus, namespace, since=started)
    shown = health(get_resource(api, namespace))
    assert shown["status"] == ("Healthy" if cond(st, "Ready")["status"] == "True" else "Progressing"), shown
    applied = sum(1 for d in st["decisions"] if d["applied"])
    assert applied <= MAX_RESTARTS and st["restartBudgetRemaining"] == MAX_RESTARTS - applied

    # Prometheus goes away: the operator keeps running, says so, and changes nothing.
    generation = api.apps.read_namespaced_deployment(NAME, namespace).metadata.generation
    k = st["k"]
    prometheus.stop()
    st = wait_for(
        lambda: (s := status(api, namespace)) and "unavailable" in cond(s, "MetricsAvailable").get("message", "") and s,
        timeout=60,
        what="MetricsAvailable=False because Prometheus is down",
    )
    assert cond(st, "MetricsAvailable")["status"] == "False"
    load.set(namespace, NAME, HIGH)  # even if load changes, no decision on missing data
    st = evaluated(api, namespace, 3, after=time.time())
    assert "no decision without fresh metrics" in st["lastEvaluation"]["reason"]
    pod = api.core.list_namespaced_pod(local_cluster.OPERATOR_NAMESPACE).items[0]
    assert pod.status.container_statuses[0].ready
    assert status(api, namespace)["k"] == k
    assert api.apps.read_namespaced_deployment(NAME, namespace).metadata.generation == generation


def test_a_new_drafter_is_measured_afresh(
    api: Any, namespace: str, installed_operator: None, prometheus: Prometheus, load: PodLoad
) -> None:
    """The user replaces the drafter (a new spec.speculator.model): the pods roll, what the policy measured with
    the old drafter is forgotten, the history says so, and the new drafter's acceptance is measured on its pods."""
    load.set(namespace, NAME, LOW)
    kubectl_apply(resource(), namespace)

    def learned() -> dict[str, Any] | None:
        policy = status(api, namespace).get("policy") or {}
        return policy if policy.get("acceptance") and policy.get("basis") else None

    old = wait_for(learned, timeout=120, interval=1, what="the first drafter's acceptance learned")
    assert old["acceptance"][0] == pytest.approx(0.75, abs=0.1)
    kubectl("patch", "sd", NAME, "-n", namespace, "--type=merge",
            "-p", '{"spec":{"speculator":{"model":"example/another-drafter"}}}')  # fmt: skip
    load.set(namespace, NAME, LOW, acceptance=[0.45, 0.3, 0.2, 0.13, 0.09, 0.06, 0.04, 0.03])

    def recorded() -> dict[str, Any] | None:
        s = status(api, namespace)
        return s if any(d["action"] == "relearn" for d in s.get("decisions", [])) else None

    st = wait_for(recorded, timeout=60, interval=1, what="the relearn in the history")
    assert st["policy"]["basis"] != old["basis"]
    assert [d["reason"].split(":")[0] for d in st["decisions"] if d["action"] == "relearn"] == [
        "the pods' vLLM arguments changed"  # the drafter is a vLLM argument; nothing else of the pods changed
    ]

    def relearned() -> dict[str, Any] | None:
        s = status(api, namespace)
        policy = s.get("policy") or {}
        return policy if s.get("rollout") == "Complete" and (policy.get("acceptance") or [1])[0] < 0.6 else None

    new = wait_for(relearned, timeout=120, interval=1, what="the new drafter's acceptance learned")
    assert new["acceptance"][0] == pytest.approx(0.45, abs=0.1) and new["basis"] == st["policy"]["basis"]


@pytest.fixture
def gpu_label(api: Any) -> Iterator[Callable[[str], None]]:
    """Sets the GPU feature discovery label on every node (as on a GPU node of the NVIDIA GPU operator); removed
    after, so other tests see nodes without it."""

    def put(product: str | None) -> None:
        for node in api.core.list_node().items:
            api.core.patch_node(node.metadata.name, {"metadata": {"labels": {GPU_PRODUCT_LABELS[0]: product}}})

    yield put
    put(None)


def test_pods_moved_to_other_gpus_are_measured_afresh(
    api: Any, namespace: str, installed_operator: None, prometheus: Prometheus, load: PodLoad, gpu_label: Any
) -> None:
    """The operator reads the GPU its pods run on from their nodes' labels (under its own ClusterRole); when it
    changes (here the node relabelled, as when a node pool is replaced), what was measured on the old GPU is
    forgotten and the history names both."""
    gpu_label("NVIDIA-H100-80GB-HBM3")
    load.set(namespace, NAME, LOW)
    kubectl_apply(resource(), namespace)

    def learned_on(gpu: str) -> Callable[[], dict[str, Any] | None]:
        def seen() -> dict[str, Any] | None:
            policy = status(api, namespace).get("policy") or {}
            return policy if policy.get("acceptance") and policy.get("gpu") == gpu else None

        return seen

    wait_for(learned_on("H100"), timeout=120, interval=1, what="the acceptance learned on H100s")
    gpu_label("NVIDIA-L4")
    wait_for(learned_on("L4"), timeout=60, interval=1, what="the pods seen on L4s")
    relearns = [d for d in status(api, namespace)["decisions"] if d["action"] == "relearn"]
    assert len(relearns) == 1 and "now run on L4 GPUs (were H100)" in relearns[0]["reason"]
    events = api.core.list_namespaced_event(namespace, field_selector="reason=Relearn").items
    assert [e.message for e in events] == [relearns[0]["reason"]]
    # `specdeploy recommend` reads the same pods and nodes, as the user running it.
    cli = [sys.executable, "-m", "specdeploy.cli", "recommend", "--prometheus", prometheus.url, "-n", namespace, NAME]
    line = subprocess.run(cli, capture_output=True, text=True, check=True).stdout.strip()
    assert line.startswith(f"{namespace}/{NAME}: k=") and " -> k=" in line, line


def test_acceptance_drift_lowers_k_and_flapping_load_respects_the_budget(
    api: Any, namespace: str, installed_operator: None, prometheus: Prometheus, load: PodLoad
) -> None:
    base = [0.75, 0.55, 0.40, 0.29, 0.21, 0.15, 0.11, 0.08]
    load.set(namespace, NAME, LOW)
    doc = resource(maxRestartsPerHour=2, hysteresis=0.05)
    doc["spec"]["speculator"]["numSpeculativeTokens"] = 5
    kubectl_apply(doc, namespace)
    wait_for(
        lambda: cond(status(api, namespace), "MetricsAvailable").get("status") == "True", timeout=90, what="metrics"
    )
    load.set(namespace, NAME, LOW, acceptance=[round(x * 0.3, 4) for x in base])
    st = wait_k(api, namespace, lambda k, _: k < 5, "k lowered after acceptance drifted down")
    assert st["decisions"][-1]["fromK"] == 5

    # Load flapping around the crossover for two minutes, a flip every two evaluations: never more restarts
    # than the hourly budget.
    deadline = time.monotonic() + 120
    high = True
    while time.monotonic() < deadline:
        load.set(namespace, NAME, HIGH if high else LOW, acceptance=base)
        high = not high
        st = evaluated(api, namespace, 2, after=time.time())
    applied = [d for d in st.get("decisions", []) if d["applied"]]
    assert len(applied) <= 2, applied
    assert st["restartBudgetRemaining"] == 2 - len(applied)
    rs = kubernetes.client.AppsV1Api().list_namespaced_replica_set(namespace).items
    assert len(rs) <= 1 + 2


def test_a_setting_whose_pods_crash_is_rolled_back_and_deleting_collects_everything(
    api: Any, namespace: str, installed_operator: None, prometheus: Prometheus, load: PodLoad
) -> None:
    """Every setting but the starting k=3 crashes at start (as a k too large for GPU memory would): the policy's
    change never becomes Ready, the Deployment passes its progress deadline, the operator says so in Degraded and
    rolls back to k=3, which keeps serving throughout (maxUnavailable 0). Deleting the resource then leaves
    nothing behind."""
    load.set(namespace, NAME, HIGH)
    doc = resource(maxRestartsPerHour=2)  # the change and its rollback: then the setting holds
    doc["spec"]["env"] = [{"name": "SPECDEPLOY_SIM_FAIL_SETTINGS", "value": "!3"}]
    doc["spec"]["rollout"] = {"progressDeadlineSeconds": 30}
    kubectl_apply(doc, namespace)

    # Degraded=RolloutFailed lasts only until the next evaluation rolls back (seconds): the decision records it.
    def rolled_back(k: int, s: dict[str, Any]) -> bool:
        last = (s.get("decisions") or [{}])[-1]
        return recorded_setting(s) == 3 and last.get("action") == "rollback" and cond(s, "Ready")["status"] == "True"

    st = wait_k(api, namespace, rolled_back, "the change rolled back to k=3", timeout=360)
    change, back = st["decisions"][-2:]
    assert change["applied"] and change["setting"] != "3", st["decisions"]
    assert "rollout failed (new pods did not become ready before the progress deadline)" in back["reason"]
    assert cond(st, "Degraded")["status"] == "False"
    # The failed setting's pods never served: its ReplicaSet never had a ready pod, and is scaled away.
    others = [rs for rs in api.apps.list_namespaced_replica_set(namespace).items
              if rs.spec.template.metadata.labels[LABEL_K] != "3"]  # fmt: skip
    assert others and all(not rs.status.ready_replicas and not rs.spec.replicas for rs in others)

    kubectl("delete", "sd", NAME, "-n", namespace)
    wait_for(
        lambda: not api.apps.list_namespaced_deployment(namespace).items
        and not api.core.list_namespaced_service(namespace).items
        and not api.core.list_namespaced_pod(namespace).items,
        timeout=120, interval=1, what="the Deployment, Service and pods garbage-collected",
    )  # fmt: skip
