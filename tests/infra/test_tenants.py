"""Tenants as the seed writes them: the seed's team-a config verbatim and a team-b config written the same
way (neither with `tenant:`, both naming the registry table guard-cluster-registry) synthesize side by
side. They share the registry table, created once by a shared stack, and no other physical name; each
tenant's functions may touch only their own registry items (IAM dynamodb:LeadingKeys)."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Template
from guard.errors import ConfigError
from guard.stores.schema import REGISTRY, REGISTRY_TENANT_INDEX

from infra.application import BUILD_DIR_CONTEXT, build_app
from infra.lambda_functions import REGISTRY_WRITES

pytestmark = pytest.mark.infra

# The seed's "Multi-Tenancy" config, verbatim (one copy: tests/fixtures/seed/team-a-config.yaml).
SEED_TEAM_A = (Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "team-a-config.yaml").read_text()
TEAM_B = SEED_TEAM_A.replace("team-a", "team-b").replace("Team A", "Team B")
SHARED = "Guard-registry-guard-cluster-registry"
NAMED = ("TableName", "StateMachineName", "TopicName", "LogGroupName", "Name", "FunctionName", "RoleName",
         "QueueName", "ApiName")


@dataclass
class Seeded:
    templates: dict[str, Template]
    synth_error: Exception | None


def _context(tmp: Path, files: list[Path]) -> dict[str, Any]:
    return {"tenants": [str(f) for f in files], "aws:cdk:bundling-stacks": [], BUILD_DIR_CONTEXT: str(tmp / "build")}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    home = tmp_path_factory.mktemp("dot-guard")
    (home / "team-a-config.yaml").write_text(SEED_TEAM_A)
    (home / "team-b-config.yaml").write_text(TEAM_B)
    app = build_app(_context(home, [home / "team-a-config.yaml", home / "team-b-config.yaml"]),
                    outdir=str(tmp_path_factory.mktemp("cdk.out")))
    try:
        assembly = app.synth()
    except RuntimeError as e:  # cdk-nag findings fail the synth
        return Seeded({}, e)
    return Seeded({s.stack_name: Template.from_json(s.template) for s in assembly.stacks}, None)


def _templates(seeded: Seeded) -> dict[str, Template]:
    if seeded.synth_error is not None:
        pytest.fail(f"the seed's tenants did not synthesize: {str(seeded.synth_error)[:2000]}")
    return seeded.templates


def _physical_names(template: Template) -> set[str]:
    names: set[str] = set()
    for resource in template.to_json()["Resources"].values():
        for key in NAMED:
            value = resource.get("Properties", {}).get(key)
            if isinstance(value, str):
                names.add(value)
    return names


def test_the_seed_s_two_tenants_synthesize_side_by_side(seeded: Seeded) -> None:
    # GIVEN team-a (the seed's config verbatim) and team-b, neither with `tenant:`
    templates = _templates(seeded)
    # THEN the tenants come from the file names, and the registry table they both name has its own stack
    assert set(templates) == {"Guard-team-a", "Guard-team-b", SHARED}


def test_they_share_the_registry_table_and_no_other_physical_name(seeded: Seeded) -> None:
    templates = _templates(seeded)
    a, b, shared = (_physical_names(templates[s]) for s in ("Guard-team-a", "Guard-team-b", SHARED))
    # THEN the registry table is created once, by the shared stack, with the tenant index
    assert shared == {"guard-cluster-registry"}
    templates[SHARED].has_resource("AWS::DynamoDB::Table", {
        "Properties": {"TableName": "guard-cluster-registry", "KeySchema": REGISTRY.key_schema(),
                       "GlobalSecondaryIndexes": [{"IndexName": REGISTRY_TENANT_INDEX,
                                                   "KeySchema": [{"AttributeName": "tenant", "KeyType": "HASH"}],
                                                   "Projection": {"ProjectionType": "ALL"}}]},
        "DeletionPolicy": "Retain"})
    # AND neither tenant creates it, nor shares any other name with the other
    assert "guard-cluster-registry" not in a | b
    assert len(a) >= 5 and len(b) >= 5
    assert not a & b, a & b
    assert {"guard-team-a-state", "guard-team-a-upgrade-batch"} <= a
    # AND both tenants' functions are told the shared table's name
    for stack, tenant in (("Guard-team-a", "team-a"), ("Guard-team-b", "team-b")):
        functions = templates[stack].find_resources("AWS::Lambda::Function")
        envs = [f["Properties"]["Environment"]["Variables"] for f in functions.values()
                if "Environment" in f["Properties"]]
        assert envs and all(e["GUARD_REGISTRY_TABLE"] == "guard-cluster-registry" for e in envs)
        assert all(e["GUARD_TENANT"] == tenant for e in envs)


def _registry_statements(template: Template) -> list[dict[str, Any]]:
    """Every IAM statement of the stack whose resource is the registry table (any form of its ARN)."""
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            on_registry = "table/guard-cluster-registry" in json.dumps(statement["Resource"])
            # A wildcard resource with DynamoDB actions would reach the registry too.
            on_anything = statement["Resource"] == "*" and any(
                str(a).startswith("dynamodb:") for a in _list(statement["Action"]))
            if on_registry or on_anything:
                found.append(statement)
    return found


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("stack, own, other", [("Guard-team-a", "team-a", "team-b"),
                                               ("Guard-team-b", "team-b", "team-a")])
def test_neither_tenant_can_touch_the_other_s_registry_items(seeded: Seeded, stack: str, own: str,
                                                             other: str) -> None:
    # GIVEN a tenant's synthesized policies
    statements = _registry_statements(_templates(seeded)[stack])
    # THEN some functions may write the registry, and every grant on it is confined to the tenant's own
    # partition keys (<tenant>#...), never reaching the other tenant's
    assert any(set(REGISTRY_WRITES) & set(_list(s["Action"])) for s in statements)
    on_index = [s for s in statements if "/index/" in json.dumps(s["Resource"])]
    # AND the only grant on an index is a Query of the tenant index, confined to the tenant's own partition
    assert on_index
    for statement in on_index:
        assert _list(statement["Action"]) == ["dynamodb:Query"], statement
        assert f"/index/{REGISTRY_TENANT_INDEX}" in json.dumps(statement["Resource"])
        assert statement["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [own]},
                                          "Null": {"dynamodb:LeadingKeys": "false"}}, statement
    for statement in (s for s in statements if s not in on_index):
        assert statement["Effect"] == "Allow"
        condition = statement["Condition"]
        assert condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"] == [f"{own}#*"], statement
        assert condition["Null"] == {"dynamodb:LeadingKeys": "false"}
        assert other not in json.dumps(condition)
        # AND no action that reads many items regardless of key (Scan) or reads the table by Query
        assert not {"dynamodb:Scan", "dynamodb:Query", "dynamodb:*"} & set(_list(statement["Action"])), statement
        assert "index" not in json.dumps(statement["Resource"])


def test_two_tenants_naming_the_same_state_table_are_refused(tmp_path: Path) -> None:
    # GIVEN two tenants that also name the same state table
    for team in ("team-a", "team-b"):
        (tmp_path / f"{team}-config.yaml").write_text(
            SEED_TEAM_A.replace("team-a", team).replace("    table_name: guard-cluster-registry\n",
                                                         "    table_name: guard-cluster-registry\n"
                                                         "    state_table_name: guard-state\n"))
    # WHEN synthesized THEN ConfigError names the file and the key: only the registry may be shared
    with pytest.raises(ConfigError, match=r"team-b-config\.yaml: aws\.dynamodb\.state_table_name 'guard-state' "
                                          r"is also named by .*team-a-config\.yaml"):
        build_app(_context(tmp_path, [tmp_path / "team-a-config.yaml", tmp_path / "team-b-config.yaml"]))


def test_a_misspelt_custom_check_fails_the_synth_naming_the_file_and_key(tmp_path: Path) -> None:
    # GIVEN the seed's custom check, with its class misspelt in the config
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "custom_checks.py").write_text(
        (Path(__file__).resolve().parents[2] / "config" / "checks" / "custom_checks.py").read_text())
    config = tmp_path / "config.yaml"
    config.write_text(SEED_TEAM_A + "custom_checks:\n  - module: custom_checks\n    class: CustomDatabseCheck\n")
    # WHEN synthesized THEN the synth refuses it before building anything
    with pytest.raises(ConfigError) as caught:
        build_app(_context(tmp_path, [config]))
    message = str(caught.value)
    assert str(config) in message and "custom_checks[0]" in message and "CustomDatabseCheck" in message


# --- docs/deploy.md says what the template holds ----------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_deploy_doc_counts_the_functions_the_template_holds(alpha: Template) -> None:
    # GIVEN docs/deploy.md's table of what a stack holds
    found = re.search(r"\| (\d+) Lambda functions", (DOCS / "deploy.md").read_text())
    assert found, "docs/deploy.md names no function count"
    # THEN it is the number of functions in a synthesized tenant stack
    assert int(found.group(1)) == len(alpha.find_resources("AWS::Lambda::Function"))


def _cluster_role(doc: str) -> Any:
    block = re.search(r"```yaml\n(\s*apiVersion: rbac.authorization.k8s.io/v1\n\s*kind: ClusterRole\n.*?)```",
                      (DOCS / doc).read_text(), re.S)
    assert block, f"docs/{doc} has no ClusterRole"
    return list(yaml.safe_load_all(textwrap.dedent(block.group(1))))


def test_deploy_doc_grants_the_cluster_permissions_the_vendor_doc_lists() -> None:
    # The RBAC in docs/deploy.md#cluster-access is the one docs/vendors.md#permissions derives from the adapters.
    assert _cluster_role("deploy.md") == _cluster_role("vendors.md")


# CloudFormation's pattern for a WAFv2 Description (AWS::WAFv2::WebACL / IPSet): no parentheses, no quotes.
WAF_DESCRIPTION = re.compile(r"^[a-zA-Z0-9=:#@/\-,.][a-zA-Z0-9+=:#@/\-,.\s]+[a-zA-Z0-9+=:#@/\-,.]{1,256}$")


def test_waf_descriptions_are_ones_cloudformation_accepts(alpha: Template, beta: Template) -> None:
    # GIVEN the WAF resources of both fixture tenants (beta limits sources to GitLab's ranges)
    found = [r["Properties"]["Description"] for t in (alpha, beta)
             for kind in ("AWS::WAFv2::WebACL", "AWS::WAFv2::IPSet")
             for r in t.find_resources(kind).values() if "Description" in r["Properties"]]
    # THEN each matches the pattern, or the deploy would fail (the synth only warns: F3031)
    assert found and all(WAF_DESCRIPTION.match(d) for d in found), found
