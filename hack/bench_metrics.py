#!/usr/bin/env python3
"""Query cost of one evaluation for N SpeculativeDeployments through a real Prometheus: the number of queries
and the time of one batched read, for N = 1, 50, 500. One synthetic exporter serves vLLM-named series for
N deployments x 2 pods (counters growing at fixed rates), so no simulator processes are needed.

    .venv/bin/python hack/bench_metrics.py [--sizes 1 50 500] [--settle 25]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))
from procs import free_port  # noqa: E402
from prometheus import Prometheus  # noqa: E402
from specdeploy.core.observation import Observation  # noqa: E402
from specdeploy.shell.prometheus import Reader  # noqa: E402

P = [0.75, 0.55, 0.40]
T0 = time.time()


def exposition(names: list[str], namespace: str = "bench") -> bytes:
    """vLLM-named series for two k=3 pods of each named deployment, counters growing at fixed rates."""
    t = time.time() - T0
    lines = []
    for d in names:
        for pod in range(2):
            lab = f'namespace="{namespace}",deployment="{d}",pod="{d}-{pod}",specdeploy_k="3",model_name="m",engine="0"'
            drafts = 100 * t
            lines += [
                f"vllm:num_requests_running{{{lab}}} 8",
                f"vllm:num_requests_waiting{{{lab}}} 0",
                f"vllm:kv_cache_usage_perc{{{lab}}} 0.1",
                f'vllm:request_success_total{{{lab},finished_reason="length"}} {2 * t}',
                f"vllm:generation_tokens_total{{{lab}}} {270 * t}",
                f"vllm:spec_decode_num_drafts_total{{{lab}}} {drafts}",
                f"vllm:spec_decode_num_draft_tokens_total{{{lab}}} {3 * drafts}",
                f"vllm:spec_decode_num_accepted_tokens_total{{{lab}}} {sum(P) * drafts}",
                *(f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="{i}"}} {p * drafts}'
                  for i, p in enumerate(P)),
                *(f'vllm:inter_token_latency_seconds_bucket{{{lab},le="{le}"}} {c * drafts}'
                  for le, c in (("0.01", 0.2), ("0.025", 1.0), ("+Inf", 1.0))),
                f"vllm:inter_token_latency_seconds_sum{{{lab}}} {0.012 * drafts}",
                f"vllm:inter_token_latency_seconds_count{{{lab}}} {drafts}",
            ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def serve(names: list[str], namespace: str = "bench") -> tuple[ThreadingHTTPServer, int]:
    """The synthetic exporter on a free local port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = exposition(names, namespace)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 50, 500])
    ap.add_argument("--settle", type=float, default=25, help="seconds of scraping before reading")
    args = ap.parse_args()
    print(f"{'resources':>10}{'queries':>9}{'seconds':>10}{'observed':>10}")
    for n in args.sizes:
        srv, port = serve([f"d{d}" for d in range(n)])
        prom = Prometheus(Path(tempfile.mkdtemp(prefix="specdeploy-benchprom-"))).start()
        try:
            prom.targets_file.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {}}]))
            time.sleep(args.settle)
            reader = Reader(prom.url)
            wanted = [("bench", f"d{d}", "3") for d in range(n)]
            t0 = time.perf_counter()
            result = reader.read(wanted, window_seconds=20)
            took = time.perf_counter() - t0
            ok = sum(isinstance(o, Observation) and o.k_running == 3 for o in result.values())
            print(f"{n:>10}{reader.queries_sent:>9}{took:>10.3f}{ok:>10}", flush=True)
        finally:
            prom.stop()
            srv.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
