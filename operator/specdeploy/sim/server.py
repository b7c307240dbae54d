"""``specdeploy sim-server``: a vLLM-compatible server backed by the simulated engine (no GPU, no weights).

It takes the command line the operator renders for ``vllm serve`` (model, ``--speculative-config`` JSON, port,
TP, ...; other vLLM flags are accepted and ignored), so a simulated pod is the rendered pod with the image and
command swapped. Endpoints: ``/health``, ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions``
(streaming too), ``/metrics`` with vLLM 0.33's names, types and labels, and ``/sim/load`` to read or change
the built-in load generator. The engine runs on its own clock, paced against the wall clock.

Load and acceptance can also come from a JSON file (``--sim-load-file`` or ``$SPECDEPLOY_SIM_LOAD_FILE``:
``{"qps": 4.0, "acceptance": [0.8, 0.6, ...]}``), re-read when it changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..core.model import Profile, Setting, from_vllm_schedule, schedule_label
from .engine import Engine, Histogram, Request

log = logging.getLogger("specdeploy.sim")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="specdeploy sim-server", description="vLLM-compatible simulator")
    p.add_argument("model")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--speculative-config", "-sc", default=None)
    p.add_argument("--revision", default=None)
    p.add_argument("--quantization", default=None)
    p.add_argument("--max-num-seqs", type=int, default=None, help="the batch cap, over the profile's (as vLLM's)")
    p.add_argument("--sim-profile", default=os.environ.get("SPECDEPLOY_SIM_PROFILE"), help="JSON or a file path")
    p.add_argument("--sim-qps", type=float, default=0.0, help="built-in Poisson load, requests/s")
    p.add_argument("--sim-load-file", default=os.environ.get("SPECDEPLOY_SIM_LOAD_FILE"))
    p.add_argument("--sim-seed", type=int, default=None)
    p.add_argument(
        "--sim-startup-seconds",
        type=float,
        default=float(os.environ.get("SPECDEPLOY_SIM_STARTUP_SECONDS", "0")),
        help="model-load time before the server listens",
    )
    p.add_argument("--sim-drift-per-hour", type=float, default=0.0, help="relative acceptance change per hour")
    p.add_argument(
        "--sim-fail-settings",
        default=os.environ.get("SPECDEPLOY_SIM_FAIL_SETTINGS", ""),
        help="space-separated settings (k or schedule labels, as in status) that fail at start, as a draft "
        "length that does not fit in GPU memory would; !S: every setting but S",
    )
    p.add_argument(
        "--sim-fail-mode",
        choices=("crash", "hang"),
        default=os.environ.get("SPECDEPLOY_SIM_FAIL_MODE", "crash"),
        help="how a failing setting fails: crash (exit 1: the pod crash-loops) or hang (never listens, as a model "
        "load that never finishes: the pod runs, never Ready)",
    )
    return p.parse_known_args(argv)


def draft_length(model: str, spec_config: str | None) -> tuple[Setting, str]:
    """k (or the per-batch-size schedule, clamped to k as vLLM does) and method from ``--speculative-config``; a
    speculators checkpoint alone runs its default k (3)."""
    if spec_config:
        cfg = json.loads(spec_config)
        k, method = int(cfg["num_speculative_tokens"]), str(cfg.get("method", "draft_model"))
        bands = cfg.get("num_speculative_tokens_per_batch_size")
        if bands:
            return tuple((first, min(band_k, k)) for first, band_k in from_vllm_schedule(bands)), method
        return k, method
    if "speculator" in model.lower():
        return 3, "speculators"
    return 0, "none"


def load_profile(raw: str | None, max_num_seqs: int | None = None) -> Profile:
    """The simulated deployment's profile; a ``--max-num-seqs`` the pod is started with caps its batch, as it
    caps vLLM's."""
    text = raw or "{}"
    if not text.lstrip().startswith("{"):  # a file path
        text = Path(text).read_text()
    prof = Profile.from_dict(json.loads(text))
    return prof if max_num_seqs is None else replace(prof, max_num_seqs=max_num_seqs)


class Metrics:
    """Exposes the engine's counters exactly as vLLM 0.33 names and labels them."""

    def __init__(self, engine: Engine, model_name: str):
        self.engine, self.labels = engine, [model_name, "0"]

    def collect(self) -> Any:
        e, c, names = self.engine, self.engine.c, ["model_name", "engine"]
        yield from self._scalars(
            GaugeMetricFamily,
            ("vllm:num_requests_running", "Number of requests in model execution batches.", len(e.running)),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", len(e.waiting)),
            ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage()),
        )
        yield from self._scalars(
            CounterMetricFamily,
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", c.prompt_tokens),
            ("vllm:generation_tokens", "Number of generation tokens processed.", c.generation_tokens),
        )
        m = CounterMetricFamily(
            "vllm:request_success", "Count of successfully processed requests.", labels=[*names, "finished_reason"]
        )
        for reason, value in c.success.items():
            m.add_metric([*self.labels, reason], value)
        yield m
        if e.k:
            yield from self._scalars(
                CounterMetricFamily,
                ("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.", c.drafts),
                ("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.", c.draft_tokens),
                ("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.", c.accepted),
            )
            m = CounterMetricFamily(
                "vllm:spec_decode_num_accepted_tokens_per_pos",
                "Accepted tokens per draft position.",
                labels=[*names, "position"],
            )
            for pos, value in enumerate(c.per_pos):
                m.add_metric([*self.labels, str(pos)], value)
            yield m
        for name, doc, hist in (
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", c.itl),
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", c.ttft),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", c.e2e),
            ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", c.queue),
        ):
            yield self._histogram(name, doc, hist)

    def _scalars(self, family: Any, *metrics: tuple[str, str, float]) -> Any:
        """One family per (name, doc, value), labelled model_name and engine."""
        for name, doc, value in metrics:
            m = family(name, doc, labels=["model_name", "engine"])
            m.add_metric(self.labels, value)
            yield m

    def _histogram(self, name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
        h = HistogramMetricFamily(name, doc, labels=["model_name", "engine"])
        h.add_metric(self.labels, buckets=hist.cumulative(), sum_value=hist.total)
        return h


class SimServer:
    """The HTTP face of one simulated engine."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.k, self.method = draft_length(args.model, args.speculative_config)
        self.profile = load_profile(args.sim_profile, args.max_num_seqs)
        seed = args.sim_seed if args.sim_seed is not None else int.from_bytes(os.urandom(4), "little")
        self.engine = Engine(self.profile, self.k, seed=seed, drift_per_hour=args.sim_drift_per_hour)
        self.engine.set_load(qps=args.sim_qps)
        self.model_name = args.served_model_name or args.model
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Metrics(self.engine, self.model_name))  # type: ignore[arg-type]
        self.wake = asyncio.Event()
        self._load_mtime = 0.0

    # ------------------------------------------------------------------ engine pacing
    async def run_engine(self) -> None:
        loop = asyncio.get_running_loop()
        wall0, sim0 = loop.time(), self.engine.now
        next_reload = 0.0
        while True:
            now_wall = loop.time()
            if now_wall >= next_reload:
                self._reload_load_file()
                next_reload = now_wall + 1.0
            wall_sim = sim0 + (now_wall - wall0)
            if self.engine.step() > 0:
                lag = self.engine.now - (sim0 + loop.time() - wall0)
                if lag < -2.0:  # fell far behind (CPU starved): rebase rather than burst
                    wall0, sim0 = loop.time(), self.engine.now
                await asyncio.sleep(max(0.0, lag))
                continue
            self.engine.idle_until(min(wall_sim, self.engine.next_event()))
            wait = min(0.05, max(0.0, self.engine.next_event() - wall_sim))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=wait)

    def _reload_load_file(self) -> None:
        path = self.args.sim_load_file
        if not path:
            return
        try:
            st = os.stat(path)
            if st.st_mtime == self._load_mtime:
                return
            self._load_mtime = st.st_mtime
            self.apply_load(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            log.warning("load file %s: %s", path, exc)

    def apply_load(self, raw: dict[str, Any]) -> None:
        acc = raw.get("acceptance")
        self.engine.set_load(qps=raw.get("qps"), acceptance=tuple(acc) if acc is not None else None)

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/sim/load", self.get_load)
        app.router.add_post("/sim/load", self.post_load)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain", charset="utf-8")

    async def models(self, _: web.Request) -> web.Response:
        card = {
            "id": self.model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "vllm",
            "root": self.args.model,
            "parent": None,
            "max_model_len": self.args.max_model_len or 8192,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def get_load(self, _: web.Request) -> web.Response:
        e = self.engine
        setting = schedule_label(e.setting)
        return web.json_response(
            {"qps": e.qps, "acceptance": e.acceptance(), "k": e.k, "setting": setting, "method": self.method}
        )

    async def post_load(self, request: web.Request) -> web.Response:
        try:
            self.apply_load(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": {"message": str(exc), "type": "BadRequestError"}}, status=400)
        self.wake.set()
        return await self.get_load(request)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body.get("prompt", "")
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        return await self._generate(request, body, text, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
        return await self._generate(request, body, text, chat=True)

    async def _generate(self, request: web.Request, body: dict[str, Any], text: str, chat: bool) -> web.StreamResponse:
        if body.get("model") not in (None, self.model_name):
            msg = f"The model `{body.get('model')}` does not exist."
            return web.json_response({"error": {"message": msg, "type": "NotFoundError", "code": 404}}, status=404)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        queue: asyncio.Queue[int] = asyncio.Queue()
        req = Request(max(1, len(text.split())), max_tokens, self.engine.now, on_tokens=queue.put_nowait)
        self.engine.submit(req)
        self.wake.set()
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        obj = "chat.completion" if chat else "text_completion"
        usage = {"prompt_tokens": req.prompt_tokens}
        if not body.get("stream"):
            while await queue.get():
                pass
            usage.update(completion_tokens=req.generated, total_tokens=req.prompt_tokens + req.generated)
            content = _words(req.generated)
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": content, "finish_reason": "length"}
            )
            return web.json_response(
                {"id": rid, "object": obj, "created": int(time.time()), "model": self.model_name, "choices": [choice],
                 "usage": usage}
            )  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        while n := await queue.get():
            delta = {"delta": {"content": _words(n) + " "}} if chat else {"text": _words(n) + " "}
            chunk = {"id": rid, "object": f"{obj}.chunk" if chat else obj, "model": self.model_name,
                     "choices": [{"index": 0, **delta, "finish_reason": None}]}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {"delta": {}} if chat else {"text": ""}
        final = {"id": rid, "object": f"{obj}.chunk" if chat else obj, "model": self.model_name,
                 "choices": [{"index": 0, **end, "finish_reason": "length"}]}  # fmt: skip
        await resp.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp


def _words(n: int) -> str:
    return " ".join(["token"] * n)


def fails_at_start(setting: str, rules: list[str]) -> bool:
    """Whether ``--sim-fail-settings`` makes this setting crash: it is listed, or a ``!S`` rule spares only S."""
    spared = [r[1:] for r in rules if r.startswith("!")]
    return setting in rules or (bool(spared) and setting not in spared)


async def serve(args: argparse.Namespace) -> None:
    server = SimServer(args)
    setting = schedule_label(server.k)
    # As PID 1 of a container a process gets no default SIGTERM handling: without this, every pod deletion would
    # wait out its whole termination grace period (vLLM shuts down on SIGTERM).
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    if fails_at_start(setting, args.sim_fail_settings.split()):
        if args.sim_fail_mode == "crash":
            raise SystemExit(f"simulated start failure for setting {setting} (--sim-fail-settings)")
        log.info("simulated start that never finishes for setting %s (--sim-fail-mode hang)", setting)
        await stopping.wait()
        return
    if args.sim_startup_seconds:
        await asyncio.sleep(args.sim_startup_seconds)  # model load: nothing listens yet, as with vLLM
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    log.info("simulating %s with k=%s (%s) on %s:%d", server.model_name, setting, server.method, args.host, args.port)
    engine = asyncio.create_task(server.run_engine())
    await stopping.wait()
    log.info("SIGTERM: shutting down")
    engine.cancel()
    await runner.cleanup()


def main(argv: list[str]) -> int:
    args, unknown = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if unknown:
        log.info("vLLM flags the simulator ignores: %s", " ".join(unknown))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0
