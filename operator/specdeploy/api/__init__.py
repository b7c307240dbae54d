"""The SpeculativeDeployment API: pydantic models of spec and status, and spec validation.

The models are the single source of truth: the CRD in ``crds/`` is generated from them (``hack/gen-crd.py``),
the operator and the CLI validate with them. Two layers of checks:

* structural (types, enums, bounds): pydantic, mirrored into the CRD schema so the API server enforces them;
* semantic (cross-field rules vLLM enforces at launch): :func:`semantic_problems`, which the CRD cannot
  express on Kubernetes 1.20 (no CEL), so the operator reports them as a ``Degraded`` condition.

:func:`validate_spec` runs both and returns every problem as a :class:`Problem` naming the field path.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from . import kubetypes

GROUP = "specdeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeculativeDeployment"
PLURAL = "speculativedeployments"
SINGULAR = "speculativedeployment"
SHORT_NAMES = ["specdeploy", "sd"]

DEFAULT_IMAGE = "vllm/vllm-openai:v0.33.0"  # what `specdeploy run --vllm-image` defaults to
MAX_K = 16  # beyond this no published drafter accepts anything; vLLM itself has no cap


class Model(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields rejected (typos must not pass silently)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )


class Method(StrEnum):
    """vLLM 0.33 speculative methods (``SpeculativeConfig.method``)."""

    DRAFT_MODEL = "draft_model"
    EAGLE = "eagle"
    EAGLE3 = "eagle3"
    MTP = "mtp"
    NGRAM = "ngram"
    NGRAM_GPU = "ngram_gpu"
    SUFFIX = "suffix"
    DFLASH = "dflash"
    DSPARK = "dspark"


METHODS_NEEDING_MODEL = frozenset({Method.DRAFT_MODEL, Method.EAGLE, Method.EAGLE3, Method.DFLASH})
METHODS_WITHOUT_MODEL = frozenset({Method.NGRAM, Method.NGRAM_GPU, Method.SUFFIX})
METHODS_WITH_NGRAM_WINDOW = frozenset({Method.NGRAM, Method.NGRAM_GPU})
METHODS_WITH_SCHEDULE = frozenset({Method.EAGLE, Method.EAGLE3, Method.DFLASH})


class AdaptiveMode(StrEnum):
    OFF = "Off"
    RECOMMEND = "Recommend"
    AUTO = "Auto"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class Backend(StrEnum):
    """What runs vLLM: a Deployment the operator owns, or a KServe InferenceService (OpenShift AI lists those)."""

    DEPLOYMENT = "Deployment"
    KSERVE = "KServe"


class CacheType(StrEnum):
    EMPTY_DIR = "emptyDir"
    PVC = "persistentVolumeClaim"


IntOrString = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


def _number_as_text(value: Any) -> Any:
    """Kubernetes takes a quantity as a number too (cpu: 4): keep it as the string the pod spec gets."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    BeforeValidator(_number_as_text),
    Field(
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|E|Ei)?$",
        json_schema_extra={"x-kubernetes-int-or-string": True},
    ),
]
Free = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]
# Pod fields passed through as written, typed as the Kubernetes API types them (checked in _pod_fields).
POD_FIELDS = {
    "tolerations": "List[V1Toleration]",
    "env": "List[V1EnvVar]",
    "affinity": "V1Affinity",
    "podSecurityContext": "V1PodSecurityContext",
}


def _kube(type_name: str, nullable: bool = False) -> dict[str, Any]:
    return kubetypes.schema(type_name, nullable=nullable)


class Target(Model):
    """The model vLLM serves. Leave ``model`` out for the speculators short form."""

    model: str | None = Field(None, min_length=1, description="Hugging Face id or path of the target model.")
    revision: str | None = Field(None, description="Model revision (branch, tag or commit).")
    tensor_parallel_size: int | None = Field(
        None, ge=1, le=64, description="--tensor-parallel-size; defaults to resources.gpus (1 without GPUs)."
    )
    max_model_len: int | None = Field(None, ge=1, description="--max-model-len")
    served_model_name: str | None = Field(
        None, min_length=1, description="--served-model-name; defaults to the model id."
    )
    quantization: str | None = Field(None, description="--quantization")


class BatchSizeRule(Model):
    """One entry of vLLM's ``num_speculative_tokens_per_batch_size``: k for an inclusive batch-size range."""

    min_batch_size: int = Field(ge=1, description="Smallest batch size (running requests) of the range.")
    max_batch_size: int = Field(ge=1, description="Largest batch size of the range (inclusive).")
    num_speculative_tokens: int = Field(ge=0, le=MAX_K, description="0 turns drafting off in this range.")


class Speculator(Model):
    """The drafter and how vLLM uses it (``--speculative-config``)."""

    method: Method | None = Field(
        None, description="Speculative method; may be left out only in the speculators short form."
    )
    model: str | None = Field(
        None, min_length=1, description="Draft model, EAGLE/DFlash head or speculators checkpoint."
    )
    num_speculative_tokens: int | None = Field(
        None, ge=1, le=MAX_K, description="k, the draft length. Required except in the speculators short form."
    )
    draft_tensor_parallel_size: int | None = Field(None, ge=1, description="1 or the target's tensorParallelSize.")
    prompt_lookup_min: int | None = Field(None, ge=1, description="ngram window minimum (vLLM default 5).")
    prompt_lookup_max: int | None = Field(None, ge=1, description="ngram window maximum (vLLM default 5).")
    revision: str | None = Field(None, description="Draft model revision.")
    schedule: list[BatchSizeRule] = Field(
        default_factory=list,
        description="Per-batch-size k (vLLM num_speculative_tokens_per_batch_size); eagle, eagle3, dflash.",
    )
    extra_config: Free = Field(
        default_factory=dict,
        description="Other SpeculativeConfig keys passed through as written (snake_case, as vLLM names them).",
    )


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Secret in the resource's namespace.")
    key: str = Field(min_length=1, description="Key in the Secret's data.")


class ModelCache(Model):
    """Where weights are downloaded; a PVC keeps them across restarts, which makes restarts cheaper."""

    type: CacheType = Field(CacheType.EMPTY_DIR, description="emptyDir (per pod) or persistentVolumeClaim (kept).")
    claim_name: str | None = Field(None, description="PVC name when type is persistentVolumeClaim.")
    size_limit: Quantity | None = Field(None, description="emptyDir size limit (a quantity, e.g. 100Gi).")
    mount_path: str = Field("/model-cache", pattern=r"^/", description="Where the cache is mounted; HOME too.")


class Resources(Model):
    gpus: int = Field(1, ge=0, le=64, description="GPUs per replica (should equal tensorParallelSize).")
    gpu_resource_name: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource of a GPU.")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="cpu, memory, ...")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="cpu, memory, ...")


class ServiceSpec(Model):
    port: int = Field(8000, ge=1, le=65535, description="vLLM's port, on the pods and the Service.")
    type: ServiceType = Field(ServiceType.CLUSTER_IP, description="Service type.")


class Rollout(Model):
    """Rolling-update strategy of the vLLM Deployment; every change of k goes through it."""

    max_surge: IntOrString = Field(1, description="Extra pods during a restart (needs spare GPUs).")
    max_unavailable: IntOrString = Field(0, description="Pods that may be down during a restart.")
    progress_deadline_seconds: int = Field(
        1800, ge=10, description="A rollout not ready by then is reported Degraded (and, in Auto, rolled back)."
    )


class Simulation(Model):
    """Run the project's vLLM-compatible simulator instead of vLLM: same args, no GPU."""

    enabled: bool = Field(False, description="Serve from the simulator (no GPU) instead of vLLM.")
    image: str | None = Field(None, description="Image with the specdeploy package; defaults to the operator's.")
    profile: Free = Field(default_factory=dict, description="Simulator performance-model overrides.")


class KServeSpec(Model):
    """The KServe backend: an InferenceService in RawDeployment mode and its own ServingRuntime, both named after
    the resource, labelled for the OpenShift AI dashboard."""

    storage_uri: str | None = Field(
        None,
        pattern=r"^(hf|oci|pvc|s3|gs|https)://",
        description="Weights KServe puts at /mnt/models (hf://, oci:// modelcar, pvc://, s3://); default: vLLM "
        "downloads target.model from the Hub.",
    )
    display_name: str | None = Field(None, description="Name the OpenShift AI dashboard shows (default: the name).")


class GpuType(StrEnum):
    """GPU classes the policy's starting guess knows (bandwidth and FLOPS); others plan as H100 until measured."""

    H100 = "H100"
    H200 = "H200"
    B200 = "B200"
    A100 = "A100"
    L40S = "L40S"
    A10G = "A10G"
    L4 = "L4"
    MI300X = "MI300X"


class PriorProfile(Model):
    """Performance-model figures measured elsewhere (a benchmark of this model and drafter on this GPU); each
    replaces the estimate from the model's size and the GPU. Times in milliseconds."""

    t_mem_ms: float | None = Field(None, gt=0, description="Memory-bound decode step of the target.")
    t_kv_ms_per_ktok: float | None = Field(None, ge=0, description="KV-cache read per sequence per 1000 tokens.")
    n_knee: int | None = Field(None, ge=1, description="Tokens per step where compute starts to dominate.")
    t_tok_ms: float | None = Field(None, ge=0, description="Compute per token past the knee.")
    draft_cost: float | None = Field(None, ge=0, description="A drafted token's cost, relative to a target step.")
    max_num_seqs: int | None = Field(None, ge=1, description="vLLM's batch cap.")
    prefill_ms_per_ktok: float | None = Field(None, ge=0, description="Prompt processing per 1000 tokens.")


class PriorSpec(Model):
    """Hints for the performance model the policy starts from; measurements replace it within a few windows."""

    gpu: GpuType | None = Field(
        None,
        description="GPU class of the replicas (default: the class the nvidia.com/gpu.product or "
        "amd.com/gpu.product-name label of the pods' nodes names, else H100).",
    )
    model_params_billions: float | None = Field(
        None, gt=0, description="Parameters of the target model, when its name does not say (e.g. 70 for 70B)."
    )
    profile: PriorProfile = Field(default_factory=PriorProfile, description="Figures measured elsewhere.")


class Adaptive(Model):
    """How the operator adapts k to load. Defaults are conservative: a restart is expensive."""

    mode: AdaptiveMode = Field(AdaptiveMode.OFF, description="Off: never change; Recommend: report; Auto: act.")
    metrics_endpoint: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="Which of the operator's configured Prometheus endpoints to read (default: its default).",
    )
    prometheus: Free | None = Field(
        None,
        description="Removed: the operator reads only the endpoints its installer configured; use metricsEndpoint.",
    )
    min_tokens: int = Field(1, ge=1, le=MAX_K, description="Smallest k the operator may choose.")
    max_tokens: int = Field(8, ge=1, le=MAX_K, description="Largest k the operator may choose.")
    allow_disable: bool = Field(True, description="May the operator turn speculation off under load?")
    evaluation_interval_seconds: int = Field(60, ge=5, le=3600, description="How often the policy decides.")
    window_seconds: int = Field(300, ge=30, le=86400, description="Metrics window per evaluation.")
    min_dwell_seconds: int = Field(900, ge=0, description="Least time a setting runs before it may change.")
    cooldown_seconds: int = Field(600, ge=0, description="Quiet time after a change before the next.")
    max_restarts_per_hour: int = Field(
        2, ge=0, le=60, description="Most rolling restarts the policy may cause per hour."
    )
    hysteresis: float = Field(
        0.1, ge=0, le=1, description="Relative gain band: act only beyond this expected improvement."
    )
    horizon_seconds: int = Field(
        1800,
        ge=60,
        description="How long a new setting is expected to pay back; a load steady for longer extends it, up to 4x.",
    )
    restart_seconds: int = Field(180, ge=1, description="Expected time a replica needs to restart and warm up.")
    slo_ms: float = Field(50.0, gt=0, description="Per-token latency objective, for reporting.")
    prior: PriorSpec = Field(default_factory=PriorSpec, description="What the policy assumes before it measures.")


class SpeculativeDeploymentSpec(Model):
    target: Target = Field(default_factory=Target)
    speculator: Speculator | None = Field(None, description="Leave out to run vLLM without speculation.")
    replicas: int = Field(1, ge=0, le=1000, description="vLLM replicas (pods).")
    backend: Backend = Field(Backend.DEPLOYMENT, description="Deployment | KServe (an InferenceService).")
    kserve: KServeSpec = Field(default_factory=KServeSpec, description="The KServe backend's settings.")
    image: str | None = Field(
        None, min_length=1, description=f"vLLM image (default: the operator's, {DEFAULT_IMAGE} unless set otherwise)."
    )
    image_pull_policy: str = Field(
        "IfNotPresent", pattern=r"^(Always|IfNotPresent|Never)$", description="Always | IfNotPresent | Never."
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="Secrets to pull the image with.")
    resources: Resources = Field(default_factory=Resources, description="GPUs, CPU and memory of each replica.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Pod tolerations (core/v1 Toleration).",
        json_schema_extra=_kube(POD_FIELDS["tolerations"]),
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict, description="Pod affinity (core/v1 Affinity).", json_schema_extra=_kube("V1Affinity")
    )
    pod_security_context: dict[str, Any] = Field(
        json_schema_extra=_kube("V1PodSecurityContext", nullable=True),
        default_factory=dict,
        description="core/v1 PodSecurityContext; its fields replace the defaults (non-root UID/GID/fsGroup "
        "on Kubernetes, none on OpenShift, where the SCC assigns them); a field set to null drops its default.",
    )
    env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra container env (core/v1 EnvVar).",
        json_schema_extra=_kube(POD_FIELDS["env"]),
    )
    hf_token_secret: SecretKeyRef | None = Field(None, description="Hugging Face token, exposed as HF_TOKEN.")
    model_cache: ModelCache = Field(default_factory=ModelCache, description="Where weights are downloaded.")
    shm_size: Quantity = Field("8Gi", description="Size of /dev/shm (tensor parallelism needs it).")
    service: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service in front of the replicas.")
    rollout: Rollout = Field(default_factory=Rollout)
    pod_labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the pods.")
    pod_annotations: dict[str, str] = Field(default_factory=dict, description="Extra annotations on the pods.")
    extra_args: list[str] = Field(default_factory=list, description="Extra `vllm serve` arguments.")
    simulation: Simulation = Field(default_factory=Simulation)
    adaptive: Adaptive = Field(default_factory=Adaptive)

    @property
    def tensor_parallel_size(self) -> int:
        """target.tensorParallelSize, else the GPUs each replica gets (one vLLM process spans them all)."""
        return self.target.tensor_parallel_size or max(self.resources.gpus, 1)

    @property
    def short_form(self) -> bool:
        """Speculators short form: ``vllm serve <speculator>``; vLLM reads target and k from the checkpoint."""
        return self.target.model is None

    @property
    def served_model_name(self) -> str:
        return self.target.served_model_name or self.target.model or self.speculator.model  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- status


class ConditionType(StrEnum):
    """The conditions in status; each has one writer (``core.reconcile`` or ``core.evaluate``)."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SPECULATION_ACTIVE = "SpeculationActive"
    METRICS_AVAILABLE = "MetricsAvailable"


class Reason(StrEnum):
    """Condition reasons (CamelCase, as the API conventions ask)."""

    REPLICAS_READY = "ReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ROLLING_UPDATE = "RollingUpdate"
    ROLLOUT_FAILED = "RolloutFailed"
    APPLY_FAILED = "ApplyFailed"
    DEPLOYMENT_MISSING = "DeploymentMissing"
    AS_EXPECTED = "AsExpected"
    INVALID_SPEC = "InvalidSpec"
    SPECULATING = "Speculating"
    SPECULATION_OFF = "SpeculationOff"
    OBSERVED = "Observed"
    NO_METRICS = "NoMetrics"


class Condition(Model):
    """Kubernetes API convention condition."""

    type: str = Field(description="Ready, Progressing, Degraded, SpeculationActive or MetricsAvailable.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The spec generation this condition describes.")


class DecisionRecord(Model):
    """One policy decision, as kept in the bounded history in status."""

    time: str = Field(description="When (RFC 3339).")
    action: str = Field(
        description="keep, set-k, turn-off, turn-on, rollback, user-change (the spec's k won), or relearn (what the "
        "pods run changed: what the policy had measured of them is forgotten)."
    )
    from_k: int | None = Field(None, description="k before.")
    to_k: int | None = Field(None, description="k decided (the largest k of a schedule).")
    setting: str | None = Field(None, description="The setting decided: k, or a schedule as k@first batch size.")
    reason: str = Field("", description="Why, with the predicted latencies.")
    expected_gain: float | None = Field(
        None,
        description="Predicted relative saving of per-token latency over the horizon, restart included "
        "(1 at most; -1 at least, for a change costing twice as much or more).",
    )
    applied: bool = Field(False, description="Carried out (Auto), or only recommended.")


class MetricsSummary(Model):
    """What ``kubectl get sd`` shows: three significant figures, as text (a printer column cannot round)."""

    acceptance: str | None = Field(None, description="acceptanceRate, rounded.")
    request_rate: str | None = Field(None, description="requestRate (requests/s), rounded.")


class ObservedMetrics(Model):
    """The latest metrics window the operator read, as shown in status."""

    time: str = Field(description="End of the window (RFC 3339).")
    window_seconds: int = Field(description="Length of the window.")
    request_rate: float | None = Field(None, description="Requests served per second (finished by stop or length).")
    failed_request_rate: float | None = Field(None, description="Requests aborted or failed per second.")
    running: float | None = Field(None, description="Requests in the batch (mean, summed over pods).")
    waiting: float | None = Field(None, description="Requests queued (mean, summed over pods).")
    generation_tokens_per_second: float | None = Field(None, description="Generated tokens per second.")
    acceptance_rate: float | None = Field(None, description="Accepted draft tokens over drafted tokens.")
    mean_acceptance_length: float | None = Field(
        None, description="Tokens per verification step (1 + accepted per draft)."
    )
    per_position_acceptance: list[float] = Field(default_factory=list, description="Acceptance at each draft position.")
    itl_p50_ms: float | None = Field(None, description="Median inter-token latency (ms).")
    itl_p95_ms: float | None = Field(None, description="95th percentile inter-token latency (ms).")
    kv_cache_usage: float | None = Field(None, description="KV cache used (0..1, mean over pods).")
    pods: int = Field(0, description="Pods of the current setting in the window.")
    summary: MetricsSummary = Field(
        default_factory=MetricsSummary, description="Rounded for people; the fields above keep full precision."
    )


class SpeculativeDeploymentStatus(Model):
    observed_generation: int | None = Field(None, description="The spec generation last reconciled.")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing, Degraded, SpeculationActive, MetricsAvailable."
    )
    method: str | None = Field(None, description="Speculative decoding method running.")
    k: int | None = Field(None, description="Effective draft length; 0 = speculation off.")
    schedule: str | None = Field(
        None,
        description="The per-batch-size k the policy runs, as k@first batch size (3@1,1@24,0@120); k is its largest.",
    )
    spec_k: int | None = Field(None, description="The spec's k when last reconciled (a change resets k to it).")
    recommended_k: int | None = Field(None, description="The k the policy recommends (Recommend mode).")
    speculation_active: bool | None = Field(None, description="Whether the pods run with a draft (k > 0).")
    deployment: str | None = Field(None, description="The Deployment the operator owns.")
    replicas: int | None = Field(None, description="Pods of the Deployment.")
    ready_replicas: int | None = Field(None, description="Ready pods.")
    updated_replicas: int | None = Field(None, description="Pods of the current template.")
    rollout: str | None = Field(None, description="Progressing | Complete | Failed")
    metrics: ObservedMetrics | None = None
    policy: Free | None = Field(None, description="Policy state that survives operator restarts.")
    decisions: list[DecisionRecord] = Field(default_factory=list, description="Recent changes and recommendations.")
    last_evaluation: Free | None = Field(None, description="Time and reason of the latest policy evaluation.")
    restart_budget_remaining: int | None = Field(None, description="Restarts the policy may still cause this hour.")
    kopf: Free | None = Field(None, description="Operator bookkeeping (kopf's progress); not for users.")


# -------------------------------------------------------------------------------------------- validation


class Problem(Model):
    """One thing wrong with a spec: where (``spec.speculator.model``) and what would be accepted."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot run; carries every problem, one line each."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @classmethod
    def one(cls, path: str, message: str) -> SpecError:
        return cls([Problem(path=path, message=message)])


def _loc_to_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class a location in the spec points into, to list the fields it knows."""
    cls: type[BaseModel] = SpeculativeDeploymentSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in cls.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return cls
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            for c in candidates:
                for a in getattr(c, "__args__", ()):
                    if isinstance(a, type) and issubclass(a, BaseModel):
                        nxt = a
        if nxt is None:
            return cls
        cls = nxt
    return cls


def _describe(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        cls = _model_at(err["loc"][:-1])
        known = sorted(f.alias or n for n, f in cls.model_fields.items()) if cls else []
        name = str(err["loc"][-1])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown field; {hint}known fields: {', '.join(known)}"
    if kind == "missing":
        return "required field is missing"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    if kind == "string_pattern_mismatch" and err["loc"][-1] == "metricsEndpoint":
        return f"must name one of the operator's metrics endpoints (a DNS label such as cluster), not a URL{shown}"
    hint = ""
    if isinstance(got, bool) and kind == "enum":
        # YAML 1.1 (kubectl, PyYAML) reads an unquoted Off/On/Yes/No as a boolean.
        hint = '; YAML reads an unquoted Off as false: quote it ("Off")'
    return f"{msg.replace('Input should be', 'must be')}{shown}{hint}"


Found = Iterator[tuple[str, str]]  # (path below spec, message) of each problem a rule finds


def semantic_problems(spec: SpeculativeDeploymentSpec) -> list[Problem]:
    """Cross-field rules: what vLLM would reject at launch, and what the operator cannot manage."""
    sp = spec.speculator
    if spec.short_form and (sp is None or not sp.model):
        found: list[tuple[str, str]] = [
            ("target.model", "required field is missing (or give speculator.model alone: the speculators short form)")
        ]
    else:
        found = [*_form(spec), *_method(spec), *_speculator(spec), *_adaptive(spec), *_deployment(spec)]
        found += _pod_fields(spec)
    return [Problem(path=f"spec.{path}", message=message) for path, message in found]


def _pod_fields(spec: SpeculativeDeploymentSpec) -> Found:
    """Fields passed to the pod as written: unknown fields and wrong types, by the Kubernetes API's own types."""
    raw = spec.model_dump(by_alias=True, include={"tolerations", "env", "affinity", "pod_security_context"})
    for name, type_name in POD_FIELDS.items():
        yield from kubetypes.problems(raw[name], type_name, name)


def _form(spec: SpeculativeDeploymentSpec) -> Found:
    """Long form: method and k are required. Short form (speculators checkpoint): k and Auto are not allowed."""
    sp = spec.speculator
    if spec.short_form:
        if sp is not None and sp.num_speculative_tokens is not None:
            yield (
                "speculator.numSpeculativeTokens",
                "not allowed in the speculators short form (vLLM takes k from the checkpoint); "
                "set target.model to use the long form with an explicit k",
            )
        if spec.adaptive.mode == AdaptiveMode.AUTO:
            yield (
                "adaptive.mode",
                "Auto needs the long form (target.model, speculator.method and numSpeculativeTokens) "
                "because k is fixed by the checkpoint in the short form; use Off or Recommend",
            )
    elif sp is not None:
        if sp.method is None:
            yield "speculator.method", f"required field is missing; one of {', '.join(m.value for m in Method)}"
        if sp.num_speculative_tokens is None:
            yield "speculator.numSpeculativeTokens", "required field is missing; an integer >= 1"


def _method(spec: SpeculativeDeploymentSpec) -> Found:
    """What each vLLM method takes: a draft model or none, an n-gram window, a per-batch-size schedule."""
    sp = spec.speculator
    if sp is None or sp.method is None:
        return
    method = Method(sp.method)
    if method in METHODS_NEEDING_MODEL and not sp.model:
        yield "speculator.model", f"method {method.value} needs a draft model (a Hugging Face id or path)"
    if method in METHODS_WITHOUT_MODEL and sp.model:
        yield "speculator.model", f"method {method.value} drafts from the prompt and takes no model; remove it"
    if method not in METHODS_WITH_NGRAM_WINDOW and (
        sp.prompt_lookup_min is not None or sp.prompt_lookup_max is not None
    ):
        yield "speculator.promptLookupMin", f"only for ngram and ngram_gpu, not {method.value}"
    if sp.schedule and method not in METHODS_WITH_SCHEDULE:
        yield "speculator.schedule", f"only for eagle, eagle3 and dflash, not {method.value}"


def _speculator(spec: SpeculativeDeploymentSpec) -> Found:
    """The speculator's own ranges: n-gram window, draft TP, schedule, extraConfig keys the typed fields own."""
    sp, tp = spec.speculator, spec.tensor_parallel_size
    if sp is None:
        return
    lo, hi = sp.prompt_lookup_min, sp.prompt_lookup_max
    if lo is not None and hi is not None and lo > hi:
        yield "speculator.promptLookupMin", f"must be <= promptLookupMax ({hi}) (got {lo})"
    dtp = sp.draft_tensor_parallel_size
    if dtp is not None and dtp not in (1, tp):
        yield "speculator.draftTensorParallelSize", f"must be 1 or the target's tensor parallel size ({tp}) (got {dtp})"
    k = sp.num_speculative_tokens
    for i, rule in enumerate(sp.schedule):
        if rule.min_batch_size > rule.max_batch_size:
            yield f"speculator.schedule[{i}].minBatchSize", f"must be <= maxBatchSize ({rule.max_batch_size})"
        if k is not None and rule.num_speculative_tokens > k:
            yield (
                f"speculator.schedule[{i}].numSpeculativeTokens",
                f"must be <= speculator.numSpeculativeTokens ({k}) (got {rule.num_speculative_tokens})",
            )
    clash = sorted(set(sp.extra_config) & _MANAGED_CONFIG_KEYS)
    if clash:
        yield "speculator.extraConfig", f"keys {', '.join(clash)} are set by the typed fields; set them there instead"


REMOVED_PROMETHEUS = (
    "no longer supported: a resource cannot choose the Prometheus URL or token Secret the operator uses (anyone who "
    "may create one could have a Secret sent to a server of their choice); remove adaptive.prometheus and set "
    "adaptive.metricsEndpoint to an endpoint your cluster admin configured, or leave it unset for the default"
)


def _adaptive(spec: SpeculativeDeploymentSpec) -> Found:
    """Bounds on k, and what a mode other than Off needs: a speculator and a k within the bounds."""
    sp, ad = spec.speculator, spec.adaptive
    if ad.min_tokens > ad.max_tokens:
        yield "adaptive.minTokens", f"must be <= adaptive.maxTokens ({ad.max_tokens}) (got {ad.min_tokens})"
    if ad.prometheus is not None:
        yield "adaptive.prometheus", REMOVED_PROMETHEUS
    if ad.mode == AdaptiveMode.OFF:
        return
    if sp is None:
        yield "adaptive.mode", f"{ad.mode} needs a speculator; set adaptive.mode: Off or add spec.speculator"
    elif sp.method is not None and not spec.short_form and ad.min_tokens <= ad.max_tokens:
        k = sp.num_speculative_tokens
        if k is not None and not ad.min_tokens <= k <= ad.max_tokens:
            yield (
                "speculator.numSpeculativeTokens",
                f"must lie within adaptive.minTokens..maxTokens ({ad.min_tokens}..{ad.max_tokens}) "
                f"when adaptive.mode is {ad.mode} (got {k})",
            )


def _deployment(spec: SpeculativeDeploymentSpec) -> Found:
    """The workload: a PVC cache names its claim, GPUs match tensor parallelism, a rollout can make progress;
    KServe settings only with that backend."""
    tp = spec.tensor_parallel_size
    if spec.backend != Backend.KSERVE:
        for name, value in (("storageUri", spec.kserve.storage_uri), ("displayName", spec.kserve.display_name)):
            if value is not None:
                yield f"kserve.{name}", "only with backend: KServe"
    elif spec.kserve.storage_uri and spec.short_form:
        yield "kserve.storageUri", "the speculators short form names its checkpoint in speculator.model; drop one"
    if spec.model_cache.type == CacheType.PVC and not spec.model_cache.claim_name:
        yield "modelCache.claimName", "required when modelCache.type is persistentVolumeClaim"
    if (
        not spec.simulation.enabled
        and spec.target.tensor_parallel_size is not None
        and spec.resources.gpus not in (0, tp)
    ):
        yield "resources.gpus", f"must equal target.tensorParallelSize ({tp}) (got {spec.resources.gpus})"
    surge, unavailable = spec.rollout.max_surge, spec.rollout.max_unavailable
    if isinstance(surge, int) and isinstance(unavailable, int) and surge == 0 and unavailable == 0:
        yield "rollout.maxUnavailable", "maxSurge and maxUnavailable cannot both be 0"


_MANAGED_CONFIG_KEYS = frozenset(
    {
        "method",
        "model",
        "num_speculative_tokens",
        "draft_tensor_parallel_size",
        "prompt_lookup_min",
        "prompt_lookup_max",
        "num_speculative_tokens_per_batch_size",
        "revision",
    }
)


def validate_spec(raw: dict[str, Any] | None) -> SpeculativeDeploymentSpec:
    """Parse and check a spec; raise :class:`SpecError` listing every problem with its field path."""
    try:  # strictly, as JSON: a boolean or 2.0 is no integer, "3" no number (the API server's schema agrees)
        spec = SpeculativeDeploymentSpec.model_validate_json(json.dumps(raw or {}, default=str), strict=True)
    except ValidationError as exc:
        raise SpecError(
            [Problem(path=_loc_to_path("spec", e["loc"]), message=_describe(e)) for e in exc.errors()]
        ) from None
    problems = semantic_problems(spec)
    if problems:
        raise SpecError(problems)
    return spec


def validate_manifest(doc: Any) -> SpeculativeDeploymentSpec:
    """Check a whole manifest (apiVersion, kind, metadata.name) and its spec."""
    if not isinstance(doc, dict):
        raise SpecError([Problem(path="(document)", message="must be a mapping with apiVersion, kind, spec")])
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(Problem(path="apiVersion", message=f"must be {API_VERSION} (got {doc.get('apiVersion')!r})"))
    if doc.get("kind") != KIND:
        problems.append(Problem(path="kind", message=f"must be {KIND} (got {doc.get('kind')!r})"))
    if not (doc.get("metadata") or {}).get("name"):
        problems.append(Problem(path="metadata.name", message="required field is missing"))
    try:
        spec = validate_spec(doc.get("spec"))
    except SpecError as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    return spec


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339 with second precision, as Kubernetes writes times


def now_iso(now: datetime) -> str:
    """A time as status carries it."""
    return now.strftime(TIME_FORMAT)


def parse_time(value: str) -> datetime:
    """A time from status (UTC)."""
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
