"""`python -m cli registry import|export` against a moto DynamoDB registry table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
import yaml
from guard.config.loader import load_config
from guard.core.models import Cluster, UpgradeRecord
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from moto import mock_aws

from cli.__main__ import main
from cli.registry import import_clusters, load_registry_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "registry.example.yaml"
CONFIG = ROOT / "config" / "example.yaml"
TABLE = "guard-cluster-registry"
TARGET = ["--table", TABLE, "--region", "us-east-1", "--tenant", "example"]
# The example tenant: the same table and region, and the example fleet's accounts in aws.cluster_accounts.
TENANT = ["--config", str(CONFIG)]
HISTORY = UpgradeRecord(run_id="run-7", from_version="1.18.5", to_version="1.19.3", outcome="succeeded",
                        at=datetime(2024, 5, 6, 9, 0, tzinfo=UTC),
                        merge_request_url="https://gitlab.example.com/platform/istio-fleet/-/merge_requests/7")


@pytest.fixture
def registry(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        table, _ = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), registry_name=TABLE)
        yield ClusterRegistry(table, "example")


def cluster(cluster_id: str = "eks-dev-1", **changes) -> dict:
    doc = {"cluster_id": cluster_id, "batch_id": "dev-1", "environment": "dev", "region": "us-east-1",
           "gitlab_project": "platform/istio-fleet",
           "flux_config_path": f"clusters/{cluster_id}/istio/helmrelease.yaml", "current_istio_version": "1.19.3"}
    return {**doc, **changes}


def write(path: Path, clusters: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"clusters": clusters}, sort_keys=False))
    return path


def dumps(clusters: list[Cluster]) -> list[dict]:
    return [c.model_dump(mode="json") for c in clusters]


# ---------------------------------------------------------------- import / export
def test_import_example_then_export_gives_the_same_clusters(registry, tmp_path, capsys):
    # GIVEN an empty registry table
    # WHEN the example registry is imported and the table exported
    assert main(["registry", "import", str(EXAMPLE), *TENANT]) == 0
    assert "15 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    assert main(["registry", "export", str(tmp_path / "out.yaml"), *TARGET]) == 0
    # THEN the export holds exactly the example's clusters, sorted by cluster_id
    expected = sorted(load_registry_file(str(EXAMPLE)), key=lambda c: c.cluster_id)
    exported = load_registry_file(str(tmp_path / "out.yaml"))
    assert dumps(exported) == dumps(expected)
    assert [c.cluster_id for c in exported] == sorted(c.cluster_id for c in expected)


@pytest.mark.parametrize("ext", ["yaml", "json"])
def test_export_import_export_round_trip_is_identical(registry, tmp_path, ext):
    # GIVEN a registry with the example fleet, one cluster carrying upgrade history
    assert main(["registry", "import", str(EXAMPLE), *TENANT]) == 0
    registry.record_upgrade("eks-test", HISTORY, new_version="1.19.3")
    first, second = tmp_path / f"first.{ext}", tmp_path / f"second.{ext}"
    # WHEN it is exported, the export imported back, and exported again
    assert main(["registry", "export", str(first), *TARGET]) == 0
    assert main(["registry", "import", str(first), *TENANT]) == 0
    assert main(["registry", "export", str(second), *TARGET]) == 0
    # THEN both exports are byte-for-byte the same and keep the history
    assert first.read_bytes() == second.read_bytes()
    assert registry.get("eks-test").upgrade_history == [HISTORY]
    if ext == "json":
        assert json.loads(first.read_text())["clusters"][0]["cluster_id"] == "eks-dev-1"


def test_export_to_stdout(registry, capsys):
    # GIVEN one cluster in the registry
    registry.put(Cluster.model_validate(cluster()))
    # WHEN exporting to `-`
    assert main(["registry", "export", "-", *TARGET]) == 0
    # THEN stdout is the YAML file and the summary goes to stderr
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["clusters"][0]["cluster_id"] == "eks-dev-1"
    assert "exported 1 clusters" in out.err


def test_config_gives_table_and_region(registry, tmp_path, capsys):
    # GIVEN the example tenant config (aws.dynamodb.table_name guard-cluster-registry, region us-east-1)
    # WHEN importing with --config instead of --table
    assert main(["registry", "import", str(EXAMPLE), "--config", str(CONFIG)]) == 0
    # THEN the clusters land in the config's table, with no batch warnings (the example matches the config)
    assert len(registry.all()) == 15
    assert "warning" not in capsys.readouterr().err


def test_example_registry_matches_the_example_config_batches():
    # GIVEN the example tenant config and the example registry
    config = load_config(CONFIG)
    clusters = {c.cluster_id: c for c in load_registry_file(str(EXAMPLE))}
    # THEN every batch cluster is in the registry with that batch's id, and nothing more
    batch_of = {cid: b.name for b in config.batches for cid in b.clusters}
    assert {cid: c.batch_id for cid, c in clusters.items()} == batch_of
    for c in clusters.values():
        assert c.flux_config_path == f"clusters/{c.cluster_id}/istio/helmrelease.yaml"
        assert c.datadog_tags == {"env": c.environment, "cluster_name": c.cluster_id}
        account = "444455556666" if c.environment == "prod" else "111122223333"
        assert c.aws_role_arn == f"arn:aws:iam::{account}:role/guard-{c.cluster_id}"


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(("bad", "message"), [
    ({"current_istio_version": "1.19"}, "clusters[2].current_istio_version: '1.19' is not a version of the form"),
    ({"current_istio_version": 1.2}, "clusters[2].current_istio_version: must be a string"),
    ({"clustr_id": "x"}, "clusters[2].clustr_id: unknown key"),
    ({"region": ""}, "clusters[2].region: String should match pattern"),
])
def test_bad_entry_is_refused_with_its_key_path_and_nothing_is_written(registry, tmp_path, capsys, bad, message):
    # GIVEN a file whose third entry is wrong (the first two are fine)
    path = write(tmp_path / "bad.yaml", [cluster("eks-a"), cluster("eks-b"), cluster("eks-c", **bad)])
    # WHEN importing it
    code = main(["registry", "import", str(path), *TARGET])
    # THEN exit 2, the error names the key path, and the table is still empty
    assert code == 2
    assert message in capsys.readouterr().err
    assert registry.all() == []


def test_every_problem_is_reported_at_once(registry, tmp_path, capsys):
    # GIVEN two bad entries and a misspelt top-level key
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"clusters": [cluster("eks-a", clustr_id="x"), cluster("eks-b", region=None)],
                                    "extra": 1}))
    # WHEN importing it
    assert main(["registry", "import", str(path), *TARGET]) == 2
    # THEN each problem has its own line
    err = capsys.readouterr().err
    for line in ("clusters[0].clustr_id: unknown key", "clusters[1].region:", "extra: unknown key"):
        assert line in err


def test_duplicate_cluster_ids_are_refused_naming_both_indexes(registry, tmp_path, capsys):
    # GIVEN eks-a at index 0 and again at index 2
    path = write(tmp_path / "dupes.yaml", [cluster("eks-a"), cluster("eks-b"), cluster("eks-a")])
    # WHEN importing it
    assert main(["registry", "import", str(path), *TARGET]) == 2
    # THEN the error names both entries and nothing is written
    assert "clusters[2].cluster_id: duplicate 'eks-a' (also clusters[0])" in capsys.readouterr().err
    assert registry.all() == []


@pytest.mark.parametrize(("name", "text", "message"), [
    ("r.yaml", "- cluster_id: a\n", "top level must be a mapping"),
    ("r.yaml", "clusters: [\n", "not valid YAML"),
    ("r.json", "{", "not valid JSON"),
    ("r.txt", "clusters: []\n", "use .yaml, .yml or .json"),
    ("r.yaml", "{}\n", "clusters: Field required"),
])
def test_malformed_files_exit_2(registry, tmp_path, capsys, name, text, message):
    # GIVEN a file that is not a registry file
    path = tmp_path / name
    path.write_text(text)
    # WHEN importing it THEN exit 2 with the reason
    assert main(["registry", "import", str(path), *TARGET]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------- updates
def test_reimport_reports_unchanged_and_changes_report_updated(registry, tmp_path, capsys):
    # GIVEN the example fleet already imported
    assert main(["registry", "import", str(EXAMPLE), *TENANT]) == 0
    capsys.readouterr()
    # WHEN the same file is imported again
    assert main(["registry", "import", str(EXAMPLE), *TENANT]) == 0
    # THEN nothing changes
    assert "0 created, 0 updated, 15 unchanged" in capsys.readouterr().out
    # WHEN one cluster's owner changes
    text = EXAMPLE.read_text().replace("owner_team: web-team", "owner_team: edge-team", 1)
    changed = tmp_path / "changed.yaml"
    changed.write_text(text)
    assert main(["registry", "import", str(changed), *TENANT]) == 0
    # THEN only that one is updated
    out = capsys.readouterr().out
    assert "0 created, 1 updated, 14 unchanged" in out
    assert "updated: eks-prod-us-web" in out
    assert registry.get("eks-prod-us-web").owner_team == "edge-team"


def test_import_keeps_upgrade_history_unless_the_file_gives_one(registry, tmp_path):
    # GIVEN eks-dev-1 in the registry with one upgrade recorded
    registry.put(Cluster.model_validate(cluster(current_istio_version="1.18.5")))
    registry.record_upgrade("eks-dev-1", HISTORY, new_version="1.19.3")
    # WHEN a file without upgrade_history changes the cluster
    path = write(tmp_path / "r.yaml", [cluster(owner_team="platform-team")])
    assert main(["registry", "import", str(path), *TARGET]) == 0
    # THEN the change is applied and the history kept
    stored = registry.get("eks-dev-1")
    assert stored.owner_team == "platform-team"
    assert stored.upgrade_history == [HISTORY]
    # WHEN the file gives `upgrade_history: []`
    write(path, [cluster(owner_team="platform-team", upgrade_history=[])])
    assert main(["registry", "import", str(path), *TARGET]) == 0
    # THEN the history is replaced
    assert registry.get("eks-dev-1").upgrade_history == []


def test_dry_run_writes_nothing(registry, tmp_path, capsys):
    # GIVEN an empty table
    # WHEN importing the example with --dry-run
    assert main(["registry", "import", str(EXAMPLE), *TENANT, "--dry-run"]) == 0
    # THEN it says what it would do and the table stays empty
    out = capsys.readouterr().out
    assert "would import 15 clusters" in out and "15 created" in out and "nothing written" in out
    assert registry.all() == []


def test_service_import_result(registry):
    # GIVEN one existing cluster
    registry.put(Cluster.model_validate(cluster("eks-a")))
    # WHEN importing it unchanged, it changed, and a new one
    clusters = [Cluster.model_validate(cluster("eks-a")), Cluster.model_validate(cluster("eks-b"))]
    result = import_clusters(registry, clusters)
    # THEN the result sorts them by what happened
    assert (result.created, result.updated, result.unchanged) == (["eks-b"], [], ["eks-a"])
    result = import_clusters(registry, [Cluster.model_validate(cluster("eks-a", region="eu-west-1"))])
    assert result.updated == ["eks-a"]


def test_missing_table_exits_1(registry, capsys):
    # GIVEN a table name that does not exist
    # WHEN exporting from it THEN exit 1 naming the DynamoDB error
    assert main(["registry", "export", "-", "--table", "nope", "--region", "us-east-1"]) == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    # GIVEN no --table or --config WHEN importing THEN argparse's usage error, exit 2
    assert main(["registry", "import", str(EXAMPLE)]) == 2
    assert "one of the arguments --table --config is required" in capsys.readouterr().err
    # AND --help mentions that history is kept
    assert main(["registry", "import", "--help"]) == 0
    assert "upgrade_history" in capsys.readouterr().out


# ---------------------------------------------------------------- accounts GUARD may reach (aws.cluster_accounts)
def role(account: str, cluster_id: str = "eks-dev-1") -> str:
    return f"arn:aws:iam::{account}:role/guard-{cluster_id}"


def tenant_config(tmp_path: Path, accounts: list[str] | None) -> Path:
    aws: dict = {"region": "us-east-1", "dynamodb": {"table_name": TABLE}}
    if accounts is not None:
        aws["cluster_accounts"] = accounts
    path = tmp_path / "tenant.yaml"
    path.write_text(yaml.safe_dump({"tenant": "example", "aws": aws,
                                    "batches": [{"name": "dev-1", "clusters": ["eks-dev-1", "eks-dev-2"]}]}))
    return path


def test_cluster_in_an_unlisted_account_is_refused_naming_cluster_account_and_key(registry, tmp_path, capsys):
    # GIVEN a tenant that lists one account, and a file with a second cluster in another account
    config = tenant_config(tmp_path, ["111122223333"])
    path = write(tmp_path / "r.yaml", [cluster("eks-dev-1", aws_role_arn=role("111122223333")),
                                       cluster("eks-dev-2", aws_role_arn=role("999988887777", "eks-dev-2"))])
    # WHEN importing it with the tenant's config
    code = main(["registry", "import", str(path), "--config", str(config)])
    # THEN exit 2, the error names the cluster, its account and the config key, and nothing is written
    err = capsys.readouterr().err
    assert code == 2
    assert "cluster eks-dev-2" in err and "account 999988887777" in err and "aws.cluster_accounts" in err
    assert "eks-dev-1:" not in err
    assert registry.all() == []


def test_without_cluster_accounts_only_the_credentials_account_is_allowed(registry, tmp_path, capsys):
    # GIVEN a tenant that leaves aws.cluster_accounts out (moto's credentials are in 123456789012)
    config = tenant_config(tmp_path, None)
    own = write(tmp_path / "own.yaml", [cluster("eks-dev-1", aws_role_arn=role("123456789012"))])
    other = write(tmp_path / "other.yaml", [cluster("eks-dev-2", aws_role_arn=role("111122223333", "eks-dev-2"))])
    # WHEN a cluster in the own account is imported THEN it is accepted
    assert main(["registry", "import", str(own), "--config", str(config)]) == 0
    # WHEN one in another account is imported, with the config or with --table alone
    for target in (["--config", str(config)], TARGET):
        capsys.readouterr()
        assert main(["registry", "import", str(other), *target]) == 2
        # THEN it is refused, saying that only GUARD's own account is allowed
        err = capsys.readouterr().err
        assert "cluster eks-dev-2" in err and "account 111122223333" in err
        assert "only the account GUARD runs in (123456789012)" in err
    assert [c.cluster_id for c in registry.all()] == ["eks-dev-1"]


@pytest.mark.parametrize("bad", ["arn:aws:iam::1234:role/guard-x", "guard-eks-dev-1",
                                 "arn:aws:iam::111122223333:user/guard-x",
                                 "arn:aws:iam::111122223333:role/eks-admin",
                                 "arn:aws:iam::111122223333:role/team/guard-x"])
def test_role_arn_that_guard_may_not_assume_is_refused(registry, tmp_path, capsys, bad):
    # GIVEN a tenant listing the account, and a cluster whose aws_role_arn is malformed or not a guard-* role
    config = tenant_config(tmp_path, ["111122223333"])
    path = write(tmp_path / "r.yaml", [cluster("eks-dev-1", aws_role_arn=bad)])
    # WHEN importing it THEN exit 2 naming the cluster and the ARN, and nothing is written
    assert main(["registry", "import", str(path), "--config", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cluster eks-dev-1: aws_role_arn" in err and bad in err
    assert registry.all() == []


def test_multi_region_registry_imports_into_the_deployed_table_with_its_accounts(tmp_path, monkeypatch, capsys):
    # GIVEN the multi-region tenant, whose registry table is left at its default name and whose clusters
    # live in the two accounts it lists; its deployed table is guard-multi-region-cluster-registry
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        table, _ = create_tables(boto3.resource("dynamodb", region_name="us-east-1"),
                                 registry_name="guard-multi-region-cluster-registry")
        # WHEN its registry is imported with --config, as docs/scenarios/multi-region.md says
        code = main(["registry", "import", str(ROOT / "config" / "registry.multi-region.yaml"),
                     "--config", str(ROOT / "config" / "multi-region.yaml")])
        # THEN every cluster lands in the deployed table
        assert code == 0, capsys.readouterr().err
        assert len(ClusterRegistry(table, "multi-region").all()) == 6
