"""Reads one Prometheus: one batch of PromQL (:func:`~specdeploy.core.observation.queries`) for every resource.

An unreachable or slow Prometheus gives :class:`~specdeploy.core.observation.NoData` with the reason, never an
exception: the operator never decides on stale data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.exceptions import RequestException
from urllib3.util.retry import Retry

from ..core.observation import NoData, Observation, assemble, queries

# One more try for a blip, soon after: the next evaluation is the real retry, and a pass waits for a Prometheus
# that does not answer at most (1 + RETRIES) timeouts (the library's own default, 3 tries with backoff, ~47 s).
RETRIES = 1
RETRY_BACKOFF_S = 0.5
WINDOW_COVERAGE = 0.9  # share of a window Prometheus must hold: a window's first scrape lands up to one interval
# after its start, so a full one holds a little less than its length; a few scrapes after a restart hold far less
HEAD_SPAN_S = 3600.0  # Prometheus's in-memory head keeps at least its last hour (a 2 h block is cut once it spans
# 3 h); older samples are in blocks its minTime does not show, so a window is checked against this much at most


@dataclass
class Reader:
    """Reads one Prometheus; one :meth:`read` = one batch of queries for all the given deployments."""

    url: str
    token: str | None = None
    timeout: float = 10.0
    verify: bool | str = True  # as requests takes it: the system's CAs, none, or a PEM bundle's path
    retries: int = RETRIES
    queries_sent: int = field(default=0, init=False)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _client(self) -> PrometheusConnect:
        headers = self._headers() or None
        session = requests.Session()
        session.verify = self.verify
        retry = Retry(total=self.retries, backoff_factor=RETRY_BACKOFF_S, status_forcelist=(429, 500, 502, 503, 504))
        return PrometheusConnect(url=self.url, headers=headers, session=session, timeout=self.timeout, retry=retry)

    def _held_since(self) -> float | None:
        """When the oldest sample Prometheus holds in memory was taken (its TSDB head's minTime): a Prometheus that
        lost its storage holds less than a window, and rates over it would be a few scrapes extrapolated. None
        when the server does not say (Thanos Query has no TSDB status): then the window is taken as it comes."""
        resp = requests.get(f"{self.url}/api/v1/status/tsdb", headers=self._headers(), timeout=self.timeout,
                            verify=self.verify)  # fmt: skip
        if resp.status_code != 200:
            return None
        try:
            return float(resp.json()["data"]["headStats"]["minTime"]) / 1000
        except (ValueError, KeyError, TypeError):
            return None

    def read(
        self, wanted: Iterable[tuple[str, str, str]], window_seconds: int
    ) -> dict[tuple[str, str], Observation | NoData]:
        """Observations for (namespace, deployment, k_label) triples; k_label selects the current template."""
        wanted = list(wanted)
        if not wanted:
            return {}
        # One evaluation instant for the whole batch: queries sent one after another would otherwise see
        # different scrapes, and a ratio of two (accepted per position / drafts) could mix pod sets.
        now = time.time()
        client, raw, at = self._client(), {}, {"time": f"{now:.3f}"}
        try:
            held = self._held_since()
            if held is not None and now - held < WINDOW_COVERAGE * min(window_seconds, HEAD_SPAN_S):
                reason = (f"Prometheus at {self.url} holds only {max(0.0, now - held):.0f}s of data (restarted with "
                          f"empty storage?): the {window_seconds}s window is not yet full")  # fmt: skip
                return {(ns, dep): NoData(reason) for ns, dep, _ in wanted}
            for name, query in queries(f"{window_seconds}s").items():
                self.queries_sent += 1
                raw[name] = client.custom_query(query, params=at)
        except (PrometheusApiClientException, RequestException, ValueError) as exc:
            reason = f"Prometheus at {self.url} unavailable: {self._why(exc)}"
            return {(ns, dep): NoData(reason) for ns, dep, _ in wanted}
        return assemble(raw, wanted)

    def _why(self, exc: Exception) -> str:
        """What went wrong, in a line a user reads in the MetricsAvailable condition (the library's messages
        carry the whole URL-encoded query)."""
        text = str(exc)
        if "timed out" in text or isinstance(exc, requests.exceptions.Timeout):
            return f"no answer within the {self.timeout:g}s timeout"
        if status := re.search(r"too many (\d{3}) error responses", text):
            return f"it answered HTTP {status.group(1)} ({1 + self.retries} tries)"
        if status := re.search(r"HTTP Status Code (\d{3}) \((.*)\)", text, re.S):
            return f"it answered HTTP {status.group(1)}: {status.group(2)[:160]}"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return "connection failed (nothing listening, or the address unreachable)"
        if isinstance(exc, ValueError):
            return f"its answer is not the JSON the query API gives ({type(exc).__name__})"
        return f"{type(exc).__name__}: {text[:160]}"
