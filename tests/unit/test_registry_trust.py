"""The registry cannot redirect credentials or commits: field shapes, the tenant's allowlists, and Plan's refusal."""

from __future__ import annotations

from typing import Any

import pytest
from guard.config.models import TenantConfig
from guard.config.registry_policy import host_allowed, registry_problems
from guard.core.models import Cluster
from guard.errors import ConfigError
from guard.services.metrics import render_queries
from guard.services.plan import BatchPlanner, parse_input
from guard.stores.registry import ClusterRegistry, registry_key
from pydantic import ValidationError

from tests.support.clock import FakeClock
from tests.unit.test_cluster_accounts import NOW, config, items, role, seed, tables  # noqa: F401


def victim(**overrides: Any) -> Cluster:
    fields: dict[str, Any] = {
        "cluster_id": "eks-dev-2", "batch_id": "dev-1", "environment": "dev", "region": "us-east-1",
        "gitlab_project": "platform/istio-fleet", "flux_config_path": "clusters/eks-dev-2/istio/helmrelease.yaml",
        "current_istio_version": "1.19.3", "aws_role_arn": role("111122223333", "eks-dev-2")}
    return Cluster(**(fields | overrides))


@pytest.mark.parametrize(("field", "value"), [
    ("api_endpoint", "https://user@attacker.example"),       # userinfo hides the real host
    ("api_endpoint", "https://proxy.internal/api?x=https://a"),
    ("api_endpoint", "ftp://proxy.internal"),
    ("datadog_tags", {"env": "*"}),                           # widens the query to every environment
    ("datadog_tags", {"env": "prod,cluster_name:x"}),
    ("datadog_tags", {"cluster_name": "a b"}),
    ("environment", "prod}"),
    ("flux_config_path", "../other/helmrelease.yaml"),
    ("flux_config_path", "/etc/passwd.yaml"),
    ("flux_config_path", "clusters/x/../../y.yaml"),
    ("gitlab_project", "platform/../other"),
    ("eks_cluster_name", "victim cluster"),
    ("region", "us-east-1.attacker"),
    ("helm_release_namespace", "Istio_System"),
])
def test_a_registry_field_of_the_wrong_shape_is_refused_naming_it(field: str, value: Any) -> None:
    # GIVEN a registry document with one field that would change the meaning of what it goes into
    # WHEN it is validated THEN it is refused, naming the field
    with pytest.raises(ValidationError) as caught:
        victim(**{field: value})
    assert field in str(caught.value)


def test_a_stored_item_of_the_wrong_shape_refuses_the_read_naming_the_item(tables: Any) -> None:  # noqa: F811
    # GIVEN an item written to the table by someone else, with a `*` Datadog tag
    registry_table, _ = tables
    doc = victim().model_dump(mode="json") | {"datadog_tags": {"env": "*"}}
    import json
    registry_table.put_item(Item={"cluster_id": registry_key("example", "eks-dev-2"), "doc": json.dumps(doc)})
    # WHEN GUARD reads it THEN a ConfigError names the item and the field
    with pytest.raises(ConfigError, match=r"registry item 'eks-dev-2' is refused: datadog_tags\.env"):
        ClusterRegistry(registry_table, "example").get("eks-dev-2")


def tenant(**gitlab: Any) -> TenantConfig:
    base = config(["111122223333"])
    return base.model_copy(update={"gitlab": base.gitlab.model_copy(update=gitlab)})


def test_an_unlisted_endpoint_a_foreign_project_and_a_path_outside_the_prefix_are_each_named() -> None:
    # GIVEN a tenant that allows one project, paths under clusters/ and no endpoint overrides
    cfg = tenant(projects=["platform/istio-fleet"])
    bad = victim(api_endpoint="https://attacker.example", gitlab_project="attacker/repo",
                 flux_config_path="apps/helmrelease.yaml")
    # WHEN the registry item is checked THEN each field is named with the key that would allow it
    problems = "\n".join(registry_problems([bad], cfg))
    assert "api_endpoint host 'attacker.example' is not in aws.allowed_api_endpoints" in problems
    assert "gitlab_project 'attacker/repo' is not in gitlab.projects" in problems
    assert "flux_config_path 'apps/helmrelease.yaml' is not under gitlab.allowed_path_prefixes" in problems
    # AND the same item pointing at an allowed host, the allowed project and path is accepted
    cfg.aws.allowed_api_endpoints = ["*.proxy.internal"]
    assert registry_problems([victim(api_endpoint="https://eu.proxy.internal:6443")], cfg) == []


@pytest.mark.parametrize(("host", "allowed"), [
    ("k8s.proxy.internal", True), ("K8S.Proxy.Internal.", True), ("proxy.internal", False),
    ("k8s.proxy.internal.attacker.example", False), ("evilproxy.internal", False)])
def test_host_patterns_match_whole_labels(host: str, allowed: bool) -> None:
    # GIVEN the pattern *.proxy.internal WHEN a host is checked THEN only names under that domain match
    assert host_allowed(host, ["*.proxy.internal"]) is allowed


def test_plan_refuses_an_unlisted_endpoint_before_anything_changes(tables: Any) -> None:  # noqa: F811
    # GIVEN eks-dev-2 redirected to an attacker's host, and a tenant with no allowed endpoints
    registry, state, state_table = seed(tables, role("111122223333", "eks-dev-2"))
    registry.put(victim(api_endpoint="https://attacker.example", eks_cluster_name="eks-dev-2"))
    planner = BatchPlanner(tenant(), registry, state, FakeClock(NOW))
    before = items(state_table)
    # WHEN dev-1 is planned THEN it is refused naming the cluster and the field, and nothing was written
    with pytest.raises(ConfigError, match=r"cluster eks-dev-2: api_endpoint host 'attacker\.example'"):
        planner.plan(parse_input({"batch": "dev-1", "target_version": "1.20.0"}), "run-1", "arn:exec:run-1")
    assert items(state_table) == before


def test_datadog_values_outside_the_safe_charset_never_reach_a_query() -> None:
    # GIVEN a cluster built around the model's checks (e.g. an old item read without validation)
    cluster = Cluster.model_construct(**(victim().model_dump() | {"datadog_tags": {"env": "*"}}))
    # WHEN its queries are rendered THEN the value is refused, naming where it came from
    with pytest.raises(ConfigError, match=r"clusters\.eks-dev-2\.datadog_tags\.env: '\*'"):
        render_queries({"errors": "sum:errors{env:{environment}}"}, cluster)
    # AND safe values are filled in as they are
    assert render_queries({"errors": "sum:errors{env:{environment},cluster_name:{cluster_name}}"}, victim()) == {
        "errors": "sum:errors{env:dev,cluster_name:eks-dev-2}"}
