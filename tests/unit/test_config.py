"""Tenant config: the example loads, the seed's snippets are valid, and every mistake names its key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from guard.config import load_config, parse_config
from guard.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example.yaml"

# The tenant-config YAML snippets of the seed ("Advanced Usage Scenarios"), as written there.
SEED_SNIPPETS = {
    "multi-region batches": """
batches:
  - name: us-east-prod-wave-1
    description: Production US East - Critical
    clusters:
      - eks-prod-us-east-1-api
      - eks-prod-us-east-1-web
  - name: us-west-prod-wave-1
    description: Production US West - Critical
    clusters:
      - eks-prod-us-west-2-api
      - eks-prod-us-west-2-web
  - name: eu-prod-wave-1
    description: Production EU - Critical
    clusters:
      - eks-prod-eu-west-1-api
      - eks-prod-eu-west-1-web
batch_order:
  us-west-prod-wave-1:
    - us-east-prod-wave-1  # US West requires US East first
  eu-prod-wave-1:
    - us-east-prod-wave-1  # EU requires US East first
    - us-west-prod-wave-1  # EU requires US West first
""",
    "canary": """
batches:
  - name: prod-canary
    description: Production canary (5% of traffic)
    clusters:
      - eks-prod-us-east-1-canary
  - name: prod-main
    description: Production main clusters
    clusters:
      - eks-prod-us-east-1-api-1
      - eks-prod-us-east-1-api-2
      - eks-prod-us-east-1-api-3
""",
    "llm": """
llm:
  enabled: true
  provider: openai  # or anthropic
  model: gpt-4
  api_key_secret: guard/llm-api-key
""",
    "custom checks": """
custom_checks:
  - module: custom_checks
    class: CustomDatabaseCheck
""",
    "custom datadog queries": """
datadog:
  queries:
    error_rate: "sum:trace.http.request.errors{env:{environment}}.as_count() / sum:trace.http.request.hits{env:{environment}}.as_count()"
    latency_p95: "avg:trace.http.request.duration.by.service.95p{env:{environment}}"
    custom_api_success_rate: "sum:custom.api.success{cluster:{cluster_name}}.as_count() / sum:custom.api.total{cluster:{cluster_name}}.as_count()"
    custom_cache_hit_rate: "sum:custom.cache.hits{cluster:{cluster_name}}.as_count() / sum:custom.cache.requests{cluster:{cluster_name}}.as_count()"
    custom_queue_depth: "avg:custom.queue.depth{cluster:{cluster_name}}"
validation:
  thresholds:
    latency_increase_percent: 10
    error_rate_max: 0.001
    custom_api_success_rate_min: 0.999  # Min 99.9% success rate
    custom_cache_hit_rate_min: 0.80     # Min 80% cache hit rate
    custom_queue_depth_max: 1000        # Max queue depth of 1000
""",  # noqa: E501 (the seed's queries, as written)
    "batch dependencies": """
batches:
  - {name: test, description: Test cluster, clusters: [eks-test]}
  - {name: dev-1, description: Dev wave 1, clusters: [eks-dev-1, eks-dev-2]}
  - {name: dev-2, description: Dev wave 2, clusters: [eks-dev-3, eks-dev-4]}
  - {name: staging-us, description: Staging US, clusters: [eks-staging-us-east-1, eks-staging-us-west-2]}
  - {name: staging-eu, description: Staging EU, clusters: [eks-staging-eu-west-1]}
  - {name: prod-canary, description: Production canary, clusters: [eks-prod-canary]}
  - {name: prod-us-1, description: Production US - Critical, clusters: [eks-prod-us-api, eks-prod-us-web]}
  - {name: prod-us-2, description: Production US - Remaining, clusters: [eks-prod-us-app1, eks-prod-us-app2]}
  - {name: prod-eu, description: Production EU, clusters: [eks-prod-eu-api, eks-prod-eu-web]}
batch_order:
  dev-1: [test]
  dev-2: [dev-1]
  staging-us: [dev-1, dev-2]
  staging-eu: [dev-1, dev-2]
  prod-canary: [staging-us, staging-eu]
  prod-us-1: [prod-canary]
  prod-us-2: [prod-us-1]
  prod-eu: [prod-us-1]
""",
    "zero downtime": """
execution:
  enable_rollout_sequencing: true
  pod_disruption_budget_required: true
  min_ready_replicas_percent: 80  # Always keep 80% of pods ready
""",
    "multi-tenancy": """
aws:
  region: us-east-1
  dynamodb:
    table_name: guard-cluster-registry
  secrets_manager:
    gitlab_token_secret: guard/team-a/gitlab-token
    datadog_credentials_secret: guard/team-a/datadog-credentials
batches:
  - name: team-a-prod
    description: Team A production clusters
    clusters:
      - eks-team-a-prod-1
      - eks-team-a-prod-2
""",
}

# Snippets that show a different fleet: the example shows the "Batch Dependencies" fleet instead.
ALTERNATIVE_FLEETS = {"multi-region batches", "canary", "multi-tenancy"}


def example_data() -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(data, dict)
    return data


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "tenant.yaml")
    return str(caught.value)


def key_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every mapping key (lists are leaves)."""
    if not isinstance(node, dict):
        return set()
    paths = set()
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        paths.add(path)
        paths |= key_paths(value, path)
    return paths


# ---------------------------------------------------------------- the good configs
def test_example_config_loads_with_the_seed_fleet():
    # GIVEN the shipped example config
    # WHEN it is loaded from disk
    config = load_config(EXAMPLE)

    # THEN the seed's dependency fleet, its canary soak and custom thresholds are all there
    assert config.tenant == "example"
    assert [b.name for b in config.batches][:3] == ["test", "dev-1", "dev-2"]
    assert config.batch_order["prod-canary"] == ["staging-us", "staging-eu"]
    assert config.batch("prod-canary").soak_period_minutes == 240
    assert config.validation.thresholds["custom_queue_depth_max"] == 1000
    assert config.custom_checks[0].class_ == "CustomDatabaseCheck"
    assert config.execution.pod_disruption_budget_required is True


@pytest.mark.parametrize("name", sorted(SEED_SNIPPETS))
def test_each_seed_snippet_is_a_valid_config(name):
    # GIVEN one of the seed's config snippets (those without batches get one, batches are required)
    data = yaml.safe_load(SEED_SNIPPETS[name])
    data.setdefault("batches", [{"name": "only", "clusters": ["eks-only"]}])

    # WHEN it is validated
    config = parse_config(data, name)

    # THEN it is accepted as written
    assert config.batches


def test_all_seed_snippets_merged_are_valid():
    # GIVEN every non-fleet snippet merged over the "Batch Dependencies" fleet
    merged: dict[str, Any] = {}
    for name, text in SEED_SNIPPETS.items():
        if name not in ALTERNATIVE_FLEETS:
            merged.update(yaml.safe_load(text))

    # WHEN the merged config is validated
    config = parse_config(merged, "merged")

    # THEN it is one valid tenant
    assert config.llm.enabled is True
    assert "custom_queue_depth" in config.datadog.queries
    assert len(config.batches) == 9


@pytest.mark.parametrize("name", sorted(set(SEED_SNIPPETS) - ALTERNATIVE_FLEETS))
def test_the_example_covers_every_seed_snippet(name):
    # GIVEN a seed snippet and the example config
    snippet = yaml.safe_load(SEED_SNIPPETS[name])
    example = example_data()

    # WHEN their key paths are compared
    missing = key_paths(snippet) - key_paths(example)

    # THEN every key the seed sets is shown in the example
    assert not missing, f"example.yaml lacks {sorted(missing)} from the seed's '{name}' snippet"


# ---------------------------------------------------------------- mistakes name their key path
def test_misspelt_key_names_its_key_path():
    # GIVEN the example with `clusters` misspelt in the second batch
    data = example_data()
    data["batches"][1]["clustrs"] = data["batches"][1].pop("clusters")

    # WHEN it is validated
    message = config_error(data)

    # THEN the error points at the exact key
    assert "batches[1].clustrs: unknown key" in message
    assert message.startswith("tenant.yaml: invalid config")


def test_misspelt_nested_key_names_its_key_path():
    # GIVEN a typo two levels down
    data = example_data()
    data["aws"]["dynamodb"]["tabel_name"] = "x"

    # THEN the path to it is given
    assert "aws.dynamodb.tabel_name: unknown key" in config_error(data)


@pytest.mark.parametrize("minutes", [0, 1441, 2.5])
def test_reconcile_minutes_is_a_whole_number_of_minutes_up_to_a_day(minutes):
    # GIVEN a reconciler period of no time, more than a day, or a fraction of a minute
    data = example_data()
    data.setdefault("gitlab", {})["reconcile_minutes"] = minutes

    # THEN the key is named in the error
    assert "gitlab.reconcile_minutes" in config_error(data)


def test_reconcile_minutes_defaults_to_five():
    data = example_data()
    data.get("gitlab", {}).pop("reconcile_minutes", None)
    assert parse_config(data, "tenant.yaml").gitlab.reconcile_minutes == 5


def test_unknown_placeholder_in_datadog_query():
    # GIVEN a query using {cluster} instead of {cluster_name}
    data = example_data()
    data["datadog"]["queries"]["custom_queue_depth"] = "avg:custom.queue.depth{cluster:{cluster}}"

    # WHEN validated
    message = config_error(data)

    # THEN the query, the bad placeholder and the known ones are named
    assert "datadog.queries" in message
    assert "custom_queue_depth" in message
    assert "{cluster}" in message
    assert "cluster_name" in message


def test_threshold_for_an_unknown_query():
    # GIVEN a threshold for a query that datadog.queries does not define
    data = example_data()
    data["validation"]["thresholds"]["custom_disk_usage_max"] = 0.9

    # THEN the threshold's path is named
    assert "validation.thresholds.custom_disk_usage_max: not a known threshold" in config_error(data)


def test_batch_threshold_for_an_unknown_query_names_the_batch_index():
    # GIVEN a batch-level threshold with a typo in the query name
    data = example_data()
    data["batches"][5]["thresholds"] = {"latncy_p95_increase_percent": 5}

    # THEN the batch's index is in the path
    assert "batches[5].thresholds.latncy_p95_increase_percent" in config_error(data)


def test_batch_order_cycle():
    # GIVEN test -> prod-eu closing a loop over the whole graph
    data = example_data()
    data["batch_order"]["test"] = ["prod-eu"]

    # WHEN validated
    message = config_error(data)

    # THEN the cycle is reported as a path
    assert "batch_order: dependency cycle" in message
    assert "test" in message and "prod-eu" in message


def test_batch_order_self_dependency():
    data = example_data()
    data["batch_order"]["test"] = ["test"]
    assert "batch_order.test: a batch cannot depend on itself" in config_error(data)


def test_batch_order_unknown_batch():
    # GIVEN an ordering rule for a batch nobody defined
    data = example_data()
    data["batch_order"]["prod-apac"] = ["prod-us-1"]

    # THEN the unknown batch and the defined ones are named
    message = config_error(data)
    assert "batch_order.prod-apac: unknown batch" in message
    assert "prod-canary" in message


def test_batch_order_unknown_prerequisite():
    data = example_data()
    data["batch_order"]["prod-eu"] = ["prod-us-3"]
    assert "batch_order.prod-eu: unknown prerequisite batch 'prod-us-3'" in config_error(data)


def test_cluster_in_two_batches():
    # GIVEN eks-test also listed in dev-1
    data = example_data()
    data["batches"][1]["clusters"].append("eks-test")

    # THEN both batches and the cluster are named
    message = config_error(data)
    assert "eks-test" in message
    assert "test" in message and "dev-1" in message


def test_cluster_twice_in_one_batch():
    data = example_data()
    data["batches"][1]["clusters"].append("eks-dev-1")
    assert "batches[1].clusters: cluster listed twice: eks-dev-1" in config_error(data)


def test_batch_name_used_twice():
    data = example_data()
    twin = copy.deepcopy(data["batches"][0])
    twin["clusters"] = ["eks-other"]
    data["batches"].append(twin)
    assert "batch name used twice: test" in config_error(data)


def test_schedule_for_unknown_batch():
    data = example_data()
    data["schedules"] = [{"name": "weekly", "cron": "cron(0 2 ? * MON *)", "batch": "tset",
                          "target_version": "1.20.0"}]
    assert "schedules.weekly: unknown batch 'tset'" in config_error(data)


# ---------------------------------------------------------------- aws.cluster_accounts
def test_cluster_accounts_left_out_means_the_account_guard_runs_in():
    # GIVEN a config without aws.cluster_accounts (every seed config but the example's)
    data = example_data()
    del data["aws"]["cluster_accounts"]
    # WHEN it is validated THEN it is valid and the key stays unset (the stack's own account applies)
    assert parse_config(data).aws.cluster_accounts is None


def test_cluster_accounts_of_the_example_are_its_registry_accounts():
    # GIVEN the example config WHEN loaded THEN it lists the accounts of config/registry.example.yaml
    assert load_config(EXAMPLE).aws.cluster_accounts == ["111122223333", "444455556666"]


@pytest.mark.parametrize(("accounts", "message"), [
    (["11112222333"], "account id '11112222333' is not 12 digits"),
    (["1111222233334"], "account id '1111222233334' is not 12 digits"),
    (["11112222333x"], "account id '11112222333x' is not 12 digits"),
    (["*"], "account id '*' is not 12 digits"),
    ([" 111122223333"], "is not 12 digits"),
    ([111122223333], "must be a quoted string of 12 digits"),
    (["111122223333", "444455556666", "111122223333"], "account listed twice: 111122223333"),
    ([], "list at least one account"),
    ("111122223333", "aws.cluster_accounts: Input should be a valid list"),
])
def test_bad_cluster_accounts_are_refused_naming_the_key(accounts, message):
    # GIVEN aws.cluster_accounts with a bad id, a duplicate, nothing, or not a list
    data = example_data()
    data["aws"]["cluster_accounts"] = accounts
    # WHEN validated THEN the error names the key and the problem
    error = config_error(data)
    assert "aws.cluster_accounts" in error
    assert message in error


def test_misspelt_cluster_accounts_is_an_unknown_key():
    data = example_data()
    data["aws"]["cluster_account"] = data["aws"].pop("cluster_accounts")
    assert "aws.cluster_account: unknown key (misspelt?)" in config_error(data)


def test_wrong_type_names_its_key_path():
    data = example_data()
    data["execution"]["max_concurrent_clusters"] = "five"
    assert "execution.max_concurrent_clusters" in config_error(data)


def test_no_batches():
    data = example_data()
    del data["batches"]
    assert "batches: Field required" in config_error(data)


def test_top_level_not_a_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["batches"], "tenant.yaml")


def test_all_problems_are_reported_at_once():
    # GIVEN two unrelated typos
    data = example_data()
    data["gitlab"]["urll"] = "x"
    data["batches"][0]["descripton"] = "x"

    # THEN both appear, so one edit fixes both
    message = config_error(data)
    assert "gitlab.urll: unknown key" in message
    assert "batches[0].descripton: unknown key" in message


# ---------------------------------------------------------------- files
def test_bad_yaml(tmp_path):
    # GIVEN a file that is not YAML
    path = tmp_path / "tenant.yaml"
    path.write_text("batches:\n  - name: test\n   clusters: [a\n")

    # THEN ConfigError names the file and says so
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "not valid YAML" in str(caught.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "cannot read config" in str(caught.value)


def test_misspelt_key_in_a_file_names_the_file_and_the_path(tmp_path):
    path = tmp_path / "team-a.yaml"
    path.write_text("batches:\n  - name: a\n    clusters: [eks-a]\nvalidation:\n  soak_period_minuts: 5\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert "validation.soak_period_minuts: unknown key" in str(caught.value)


# ---------------------------------------------------------------- Judge v2 threshold rules
def test_direction_aware_rules_are_accepted_for_standard_and_custom_queries():
    # GIVEN increase, decrease, min and max rules for built-in and custom queries
    data = example_data()
    data["validation"]["thresholds"].update({"latency_p95_max_increase_percent": 10,
                                             "request_count_max_decrease_percent": 40,
                                             "custom_queue_depth_max_increase_percent": 50,
                                             "custom_cache_hit_rate_max_decrease_percent": 5})
    data["validation"]["thresholds"].pop("latency_increase_percent")
    # THEN the config is accepted as written
    config = parse_config(data, "tenant.yaml")
    assert config.validation.thresholds["request_count_max_decrease_percent"] == 40


def test_the_example_gives_throughput_a_decrease_rule():
    assert load_config(EXAMPLE).validation.thresholds["request_count_max_decrease_percent"] > 0


def test_a_standard_rule_whose_query_is_missing_is_refused():
    # GIVEN latency_increase_percent while datadog.queries has no latency_p95
    data = example_data()
    del data["datadog"]["queries"]["latency_p95"]
    # THEN the key path and the missing query are named, not silently skipped
    message = config_error(data)
    assert "validation.thresholds.latency_increase_percent" in message
    assert "latency_p95" in message


def test_min_request_count_needs_a_request_count_query():
    data = example_data()
    del data["datadog"]["queries"]["request_count"]
    data["validation"]["thresholds"].pop("request_count_max_decrease_percent")
    assert "validation.thresholds.min_request_count" in config_error(data)


def test_an_unknown_threshold_names_the_accepted_forms():
    data = example_data()
    data["validation"]["thresholds"]["latency_p95_maximum"] = 3
    message = config_error(data)
    assert "validation.thresholds.latency_p95_maximum: not a known threshold" in message
    assert "<query>_max_decrease_percent" in message


def test_two_spellings_of_one_rule_are_refused():
    data = example_data()
    data["validation"]["thresholds"]["latency_p95_max_increase_percent"] = 20
    assert "the same rule as" in config_error(data)


def test_a_decrease_of_100_percent_or_more_is_refused():
    data = example_data()
    data["validation"]["thresholds"]["request_count_max_decrease_percent"] = 100
    assert "between 0 and 100" in config_error(data)


def test_a_batch_rule_replaces_the_tenant_rule_it_overrides():
    # GIVEN the tenant's latency rule in the new spelling and a canary's in the seed's
    data = example_data()
    data["validation"]["thresholds"].pop("latency_increase_percent")
    data["validation"]["thresholds"]["latency_p95_max_increase_percent"] = 10
    data["batches"][5]["thresholds"] = {"latency_increase_percent": 5}
    config = parse_config(data, "tenant.yaml")
    # THEN the canary has one latency rule, its own
    merged = config.thresholds_for(data["batches"][5]["name"])
    assert merged["latency_increase_percent"] == 5
    assert "latency_p95_max_increase_percent" not in merged


def test_default_thresholds_keep_only_rules_for_configured_queries():
    # GIVEN a tenant with only custom queries and no thresholds of its own
    data = example_data()
    data["datadog"]["queries"] = {"custom_queue_depth": "avg:custom.queue.depth{cluster:{cluster_name}}"}
    del data["validation"]["thresholds"]
    # THEN it loads; the default latency/error rules, whose queries it lacks, do not apply
    assert parse_config(data, "tenant.yaml").validation.thresholds == {}
