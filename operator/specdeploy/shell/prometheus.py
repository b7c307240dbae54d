"""Reads one Prometheus: one batch of PromQL (:func:`~specdeploy.core.observation.queries`) for every resource.

An unreachable or slow Prometheus gives :class:`~specdeploy.core.observation.NoData` with the reason, never an
exception: the operator never decides on stale data.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.exceptions import RequestException

from ..core.observation import NoData, Observation, assemble, queries


@dataclass
class Reader:
    """Reads one Prometheus; one :meth:`read` = one batch of queries for all the given deployments."""

    url: str
    token: str | None = None
    timeout: float = 10.0
    verify: bool | str = True  # as requests takes it: the system's CAs, none, or a PEM bundle's path
    queries_sent: int = field(default=0, init=False)

    def _client(self) -> PrometheusConnect:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        session = requests.Session()
        session.verify = self.verify
        return PrometheusConnect(url=self.url, headers=headers, session=session, timeout=self.timeout)

    def read(
        self, wanted: Iterable[tuple[str, str, str]], window_seconds: int
    ) -> dict[tuple[str, str], Observation | NoData]:
        """Observations for (namespace, deployment, k_label) triples; k_label selects the current template."""
        wanted = list(wanted)
        if not wanted:
            return {}
        # One evaluation instant for the whole batch: queries sent one after another would otherwise see
        # different scrapes, and a ratio of two (accepted per position / drafts) could mix pod sets.
        client, raw, at = self._client(), {}, {"time": f"{time.time():.3f}"}
        try:
            for name, query in queries(f"{window_seconds}s").items():
                self.queries_sent += 1
                raw[name] = client.custom_query(query, params=at)
        except (PrometheusApiClientException, RequestException, ValueError) as exc:
            reason = f"Prometheus at {self.url} unavailable: {type(exc).__name__}: {str(exc)[:200]}"
            return {(ns, dep): NoData(reason) for ns, dep, _ in wanted}
        return assemble(raw, wanted)
