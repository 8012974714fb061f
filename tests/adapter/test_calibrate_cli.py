"""`guard calibrate` against moto (registry table, Datadog secret) and the Datadog simulator over HTTP,
through the real datadog-api-client, as from an operator's terminal with AWS credentials only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from guard.config.loader import load_config
from guard.core.models import Cluster
from guard.datadog_query import split as split_query
from guard.services.metrics import render_queries
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from moto import mock_aws

from cli.guard import main
from sandbox.sims.datadog_sim import TIMESERIES_PATH, DatadogSimulator

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example.yaml"  # dev-1 = eks-dev-1, eks-dev-2; datadog secret guard/datadog-credentials
LEVELS = {"latency_p95": 212.0, "error_rate": 0.0004, "request_count": 5000.0, "custom_api_success_rate": 0.9995,
          "custom_cache_hit_rate": 0.91, "custom_queue_depth": 120.0}


@dataclass
class World:
    datadog: DatadogSimulator


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    config = load_config(CONFIG)
    # The simulator serves what has happened by the wall clock, which is also the command's "now".
    with mock_aws(), DatadogSimulator(api_key="k-api", app_key="k-app") as datadog:
        monkeypatch.setenv("GUARD_DATADOG_HOST", datadog.url)
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=config.aws.secrets_manager.datadog_credentials_secret,
            SecretString=json.dumps({"api_key": "k-api", "app_key": "k-app"}))
        table, _ = create_tables(boto3.resource("dynamodb", region_name="us-east-1"),
                                 registry_name=config.aws.dynamodb.table_name)
        registry = ClusterRegistry(table, "example")
        for cluster_id in ("eks-dev-1", "eks-dev-2"):
            cluster = Cluster(cluster_id=cluster_id, batch_id="dev-1", environment="dev", region="us-east-1",
                              gitlab_project="platform/istio-fleet", flux_config_path=f"clusters/{cluster_id}.yaml",
                              current_istio_version="1.19.3", datadog_tags={"env": "dev", "cluster_name": cluster_id})
            registry.put(cluster)
            # A ratio (`a / b`) reaches Datadog split into its metric queries and a formula (guard.datadog_query):
            # serve its denominator (another query's series when one defines it, else a steady volume) and a
            # numerator that reads the level over it.
            served: dict[str, Any] = {}
            ratios = []
            for name, query in render_queries(config.datadog.queries, cluster).items():
                level, parts = LEVELS[name], split_query(query)
                if len(parts.queries) == 1:
                    served[parts.queries[0]] = lambda t, level=level: level * (
                        1 + 0.05 * ((t.minute * 7) % 11 - 5) / 5)
                else:
                    ratios.append((level, parts.queries))
            for level, (numerator, denominator) in ratios:
                volume = served.setdefault(denominator, lambda t: 1000.0)
                served[numerator] = lambda t, level=level, volume=volume: level * volume(t) * (
                    1 + 0.05 * ((t.minute * 7) % 11 - 5) / 5)
            for query, fn in served.items():
                datadog.set_series(query, fn)
        yield World(datadog)


def test_calibrate_reads_the_history_in_bounded_requests_and_prints_every_rule(
        world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN two days of healthy history for dev-1's clusters in Datadog
    # WHEN an operator calibrates the batch with only the tenant config
    code = main(["calibrate", "--batch", "dev-1", "--days", "2", "--config", str(CONFIG)])
    out = capsys.readouterr().out
    # THEN it prints every rule with its false-rollback rate and a threshold that holds the target
    assert code == 0, out
    assert "batch dev-1: 2 cluster(s) (eks-dev-1, eks-dev-2)" in out
    for key in ("latency_increase_percent", "error_rate_max", "request_count_max_decrease_percent",
                "custom_api_success_rate_min", "min_request_count"):
        assert key in out
    assert "0.00% (0/" in out and "would have been rolled back in 0 of" in out
    assert "no data" not in out and "100.0%" not in out  # every pair was judged
    # AND each cluster's two days came in two requests of one day each (no response grows with --days)
    reads = world.datadog.requests_to(TIMESERIES_PATH)
    assert len(reads) == 4 and all(r.status == 200 for r in reads)
    spans = {int(r.body["data"]["attributes"]["to"]) - int(r.body["data"]["attributes"]["from"]) for r in reads}
    assert spans == {int(timedelta(days=1).total_seconds() * 1000)}


@pytest.mark.parametrize("argv, says", [
    (["--days", "0"], "--days: must be between 1 and 30, got 0"),
    (["--days", "31"], "--days: must be between 1 and 30"),
    (["--target", "0.7"], "--target: a false-rollback rate between 0 and 0.5"),
    (["--soak", "2"], "--soak: a 2-minute window holds fewer than min_data_points (5)"),
    (["--batch", "nope"], "--batch: unknown batch 'nope'"),
])
def test_bad_arguments_are_refused_naming_the_problem(world: World, capsys: pytest.CaptureFixture[str],
                                                       argv: list[str], says: str) -> None:
    # WHEN calibrate is given a bad argument THEN it exits 2 naming it, before reading Datadog
    code = main(["calibrate", "--batch", "dev-1", "--config", str(CONFIG), *argv])
    assert code == 2 and says in capsys.readouterr().err
    assert world.datadog.requests_to(TIMESERIES_PATH) == []


def test_without_a_tenant_it_says_how_to_name_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--batch", "dev-1"]) == 2
    assert "--config TENANT_YAML" in capsys.readouterr().err


def test_a_missing_datadog_secret_is_a_failure_naming_it(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the secret was deleted
    name = load_config(CONFIG).aws.secrets_manager.datadog_credentials_secret
    boto3.client("secretsmanager", region_name="us-east-1").delete_secret(SecretId=name,
                                                                          ForceDeleteWithoutRecovery=True)
    # THEN calibrate exits 1 naming the secret
    assert main(["calibrate", "--batch", "dev-1", "--days", "1", "--config", str(CONFIG)]) == 1
    assert name in capsys.readouterr().err
