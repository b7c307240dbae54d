"""Prometheus misbehaving, as the metrics reader meets it over HTTP: slow past the timeout, refusing, answering
500, an error status, malformed JSON, or going away. Each gives every deployment a NoData whose reason says what
happened (the policy then changes nothing: tests/e2e shows it on the cluster), never an exception."""

from __future__ import annotations

import http.server
import json
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from specdeploy.core.observation import NoData, Observation
from specdeploy.shell.prometheus import Reader

from ..integration.conftest import wait_for
from ..integration.sim_helpers import Prometheus, SimProcess, write_targets

pytestmark = pytest.mark.faults

WANTED = [("ns", "llm", "3"), ("ns", "other", "1")]


def serving(respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        def log_message(self, *_: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            """The slow Prometheus answers a reader that timed out and hung up: expected, not worth a traceback."""
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def answer(status: int, body: bytes) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    def respond(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        h.wfile.write(body)

    return respond


ANSWER_NOW = threading.Event()  # the slow Prometheus answers once the test has its verdict


def slow(h: http.server.BaseHTTPRequestHandler) -> None:
    ANSWER_NOW.wait(timeout=60)
    answer(200, b'{"status":"success","data":{"resultType":"vector","result":[]}}')(h)


FAULTS = {
    "slow past the timeout": (slow, "no answer within the 1s timeout"),
    "500": (answer(500, b"internal error"), "it answered HTTP 500 (2 tries)"),
    "error status": (answer(422, b'{"status":"error","errorType":"bad_data","error":"parse error"}'),
                     'it answered HTTP 422: b\'{"status":"error","errorType":"bad_data","error":"parse error"}\''),
    "malformed JSON": (answer(200, b'{"status":"success","data":{"result":[{"metric":'),
                       "its answer is not the JSON the query API gives"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_misbehaving_prometheus_gives_no_data_with_the_reason(fault: str) -> None:
    respond, says = FAULTS[fault]
    ANSWER_NOW.clear()
    for url in serving(respond):
        started = time.monotonic()
        out = Reader(url, timeout=1).read(WANTED, window_seconds=60)
        assert time.monotonic() - started < 8  # the batch gives up at its first failing query
        ANSWER_NOW.set()  # (lets the server stop)
        assert set(out) == {("ns", "llm"), ("ns", "other")}
        for obs in out.values():
            assert isinstance(obs, NoData) and obs.reason.startswith(f"Prometheus at {url} unavailable: {says}"), obs


def test_a_prometheus_that_is_gone_gives_no_data() -> None:
    for served in serving(answer(200, b"{}")):
        url = served  # the server is stopped after this: nothing listens on its port now
    out = Reader(url, timeout=1).read(WANTED, window_seconds=60)
    assert all(isinstance(o, NoData) and o.reason.endswith("connection failed (nothing listening, or the address "
                                                           "unreachable)") for o in out.values()), out  # fmt: skip


def scrapes(url: str) -> int:
    """How many scrapes of the simulator Prometheus holds in the last 10 s."""
    query = urlencode({"query": "count_over_time(vllm:num_requests_running[10s])"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as r:
        result = json.load(r)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


@pytest.mark.prometheus
def test_a_prometheus_restarted_with_empty_storage_gives_no_data_until_the_window_fills(tmp_path: Path) -> None:
    """Debian's Prometheus scraping a simulator: restarted without its storage, it holds a few scrapes, whose rates
    would be extrapolated to a whole window; the reader says so instead, and recovers once the window is full."""
    window, key = 10, ("ns", "llm")
    sim = SimProcess("llm-0", 3, 10.0)
    prom = Prometheus(tmp_path / "prom").start()
    try:
        write_targets(prom.targets_file, [sim])
        observed = lambda: isinstance(Reader(prom.url).read([("ns", "llm", "3")], window)[key], Observation)  # noqa: E731
        wait_for(observed, timeout=60, interval=1, what="a full window")
        prom.stop()
        shutil.rmtree(prom.workdir / "data")
        prom.start()
        wait_for(lambda: scrapes(prom.url) >= 3, timeout=30, what="a few scrapes: enough for a rate, not a window")
        out = Reader(prom.url).read([("ns", "llm", "3")], window)[key]
        assert isinstance(out, NoData) and "holds only" in out.reason and "window is not yet full" in out.reason, out
        wait_for(observed, timeout=60, interval=1, what="the window full again")
    finally:
        prom.stop()
        sim.stop()
