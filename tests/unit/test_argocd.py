"""The Argo CD health check passes its own test data (health_test.yaml, Argo CD's layout for contributing it)."""

from __future__ import annotations

import pytest
import yaml

from ..argocd import HEALTH, health

CASES = yaml.safe_load((HEALTH.parent / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_health_of_each_testdata_status(case: dict) -> None:
    obj = yaml.safe_load((HEALTH.parent / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_every_argo_cd_health_status_the_check_gives_has_test_data() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}
