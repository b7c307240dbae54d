"""Prometheus misbehaving, as the metrics reader meets it over HTTP: slow past the timeout, refusing, answering
500, an error status, malformed JSON, or going away. Each gives every deployment a NoData whose reason says what
happened (the policy then changes nothing: tests/e2e shows it on the cluster), never an exception."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from specdeploy.core.observation import NoData
from specdeploy.shell.prometheus import Reader

pytestmark = pytest.mark.faults

WANTED = [("ns", "llm", "3"), ("ns", "other", "1")]


def serving(respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
