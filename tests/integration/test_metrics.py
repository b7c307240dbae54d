"""The metrics pipeline for real: simulator processes -> Debian's Prometheus (1 s scrape) -> the reader."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from specdeploy.core.model import Profile, steady_state
from specdeploy.core.observation import NoData, Observation
from specdeploy.shell.prometheus import Reader

from .conftest import wait_for
from .sim_helpers import FAST_PROFILE, Prometheus, SimProcess, write_targets

pytestmark = pytest.mark.prometheus
ACCEPTANCE = Profile().acceptance


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path / "prom").start()
    yield prom
    prom.stop()


def scraped_for(prometheus: Prometheus, seconds: int, pods: int, **labels: str) -> Callable[[], bool]:
    """True once Prometheus holds ``seconds`` of 1 s scrapes for each of ``pods`` pods with these labels."""
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    query = f"count_over_time(vllm:num_requests_running{{{selector}}}[{seconds}s]) >= {seconds - 2}"

    def done() -> bool:
        with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{urlencode({'query': query})}", timeout=5) as r:
            return len(json.load(r)["data"]["result"]) >= pods

    return done


def test_reader_matches_what_the_simulators_were_configured_with(prometheus: Prometheus) -> None:
    qps = 40.0  # x 2 pods x 50 s: ~4000 Poisson arrivals, so the 5% bound is ~3 standard deviations
    sims = [SimProcess(f"llm-a-{i}", 3, qps, seed=i + 1) for i in range(2)]
    try:
        write_targets(prometheus.targets_file, sims)
        wait_for(scraped_for(prometheus, 52, 2, specdeploy_k="3"), timeout=120, interval=1, what="52 s of scrapes")
        obs = Reader(prometheus.url).read([("ns", "llm", "3")], window_seconds=50)[("ns", "llm")]
    finally:
        for s in sims:
            s.stop()
    assert isinstance(obs, Observation), obs
    assert obs.pods == 2 and obs.k_running == 3
    p = ACCEPTANCE[:3]
    assert obs.per_position == pytest.approx(p, rel=0.03)
    expected_rate = sum(p) / 3  # accepted / drafted tokens
    assert obs.acceptance_rate == pytest.approx(expected_rate, rel=0.03)
    assert obs.mean_acceptance_length == pytest.approx(1 + sum(p), rel=0.03)
    assert obs.request_rate == pytest.approx(2 * qps, rel=0.05)
    model = steady_state(Profile.from_dict(FAST_PROFILE), qps, 3)
    assert obs.itl_mean_s == pytest.approx(model.step_ms / 1000, rel=0.2)
    assert obs.running == pytest.approx(2 * model.batch, rel=0.35)
    assert obs.itl_p50_s is not None and obs.itl_p95_s is not None and obs.itl_p50_s <= obs.itl_p95_s


def test_rolling_restart_counter_reset_and_two_pod_generations(prometheus: Prometheus) -> None:
    """Old pods run k=3; one of them restarts (counters reset); then new pods with k=2 replace them."""
    qps = 20.0
    old = [SimProcess(f"llm-old-{i}", 3, qps, seed=10 + i) for i in range(2)]
    try:
        write_targets(prometheus.targets_file, old)
        wait_for(scraped_for(prometheus, 10, 2, specdeploy_k="3"), timeout=60, interval=1, what="old pods scraped")
        old[0].stop()  # a restart: same pod, counters from zero
        restarted = SimProcess("llm-old-0", 3, qps, seed=20)
        old[0] = restarted
        write_targets(prometheus.targets_file, old)
        # The restarted pod's counters have been scraped from zero for a while (its first scrapes see the reset).
        wait_for(
            scraped_for(prometheus, 6, 1, pod="llm-old-0", instance=f"127.0.0.1:{restarted.port}"),
            timeout=60,
            interval=1,
            what="restarted pod scraped",
        )
        new = [SimProcess(f"llm-new-{i}", 2, qps, seed=30 + i) for i in range(2)]
        write_targets(prometheus.targets_file, old + new)  # the rollout: both generations scraped at once
        wait_for(scraped_for(prometheus, 22, 2, specdeploy_k="2"), timeout=90, interval=1, what="new pods scraped")
        reader = Reader(prometheus.url)
        during = reader.read([("ns", "llm", "2")], window_seconds=20)[("ns", "llm")]
        old_view = reader.read([("ns", "llm", "3")], window_seconds=20)[("ns", "llm")]
    finally:
        for s in old + new:
            s.stop()
    assert isinstance(during, Observation) and isinstance(old_view, Observation)
    assert during.k_running == 2 and during.pods == 2
    assert during.per_position == pytest.approx(ACCEPTANCE[:2], rel=0.03)
    assert during.request_rate == pytest.approx(2 * qps, rel=0.1)
    assert old_view.k_running == 3
    assert old_view.per_position == pytest.approx(ACCEPTANCE[:3], rel=0.04)  # the reset did not distort it
    # (The simulators pace their engine against the wall clock; on 2 busy cores one that fell behind catches up in
    # a burst, which a 20 s rate window shows: 0.15 allows that, not the stale instance counted twice, +50%.)
    assert old_view.request_rate == pytest.approx(2 * qps, rel=0.15)


def test_missing_series_and_prometheus_down_are_typed_no_data(prometheus: Prometheus) -> None:
    res = Reader(prometheus.url).read([("ns", "absent", "3")], window_seconds=30)
    assert isinstance(res[("ns", "absent")], NoData)
    prometheus.stop()
    down = Reader(prometheus.url, timeout=2).read([("ns", "llm", "3")], window_seconds=30)[("ns", "llm")]
    assert isinstance(down, NoData) and "unavailable" in down.reason
