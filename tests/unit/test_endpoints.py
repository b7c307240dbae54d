"""The operator's metrics endpoints: parsed with every bad field named; a resource can only pick one by name."""

from __future__ import annotations

import pytest

from specdeploy.api import SpecError
from specdeploy.api.endpoints import EndpointAuth, parse_endpoints

CONFIG = """
default: cluster
endpoints:
  cluster: {url: "https://thanos-querier.openshift-monitoring.svc:9091", auth: ServiceAccountToken,
            caFile: /etc/specdeploy/service-ca/service-ca.crt}
  team-a: {url: "http://prometheus.team-a.svc:9090", auth: Secret, secret: {name: team-a, key: token}}
"""


def test_a_resource_gets_the_endpoint_it_names_or_the_default() -> None:
    config = parse_endpoints(CONFIG)
    assert config.pick(None).auth == EndpointAuth.SERVICE_ACCOUNT_TOKEN
    assert config.pick("team-a").url == "http://prometheus.team-a.svc:9090"
    with pytest.raises(KeyError, match=r"'elsewhere' is not configured \(the operator knows: cluster, team-a"):
        config.pick("elsewhere")


def test_no_configuration_means_no_endpoint_until_the_flag_gives_one() -> None:
    with pytest.raises(KeyError, match="no default metrics endpoint"):
        parse_endpoints(None).pick(None)
    flagged = parse_endpoints(CONFIG).with_default_url("http://10.0.0.1:9090")
    assert flagged.pick(None).url == "http://10.0.0.1:9090" and flagged.pick("team-a").auth == EndpointAuth.SECRET


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("endpoints: {a: {url: p:9090}}", "endpoints.yaml.endpoints.a.url: String should match pattern '^https?://'"),
        ("endpoints: {a: {url: 'http://p', auth: Secret}}", "secret is required when auth is Secret"),
        ("endpoints: {a: {url: 'http://p', secret: {name: s, key: k}}}", "allowed only then"),
        ("default: b\nendpoints: {a: {url: 'http://p'}}", "default 'b' is not among the endpoints (a)"),
        ("endpoints: {A_B: {url: 'http://p'}}", "endpoints.yaml.endpoints.A_B: must be a DNS label"),
        ("endpoints: {a: {url: 'http://p', tokenFile: /x}}", "endpoints.yaml.endpoints.a.tokenFile: Extra inputs"),
        ("endpoints: [", "endpoints.yaml: not YAML"),
    ],
)
def test_a_bad_configuration_names_the_field(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_endpoints(text)
    assert problem in str(info.value)
