"""The rollout state machine, the schedules and tenant isolation in the synthesized stacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from guard.config.schedules import schedule_expression
from guard.errors import ConfigError

from infra.application import BUILD_DIR_CONTEXT, build_app

from .conftest import FIXTURES, Synthesized

pytestmark = pytest.mark.infra


def _machine_id(template: Template, name: str) -> str:
    found = template.find_resources("AWS::StepFunctions::StateMachine", {"Properties": {"StateMachineName": name}})
    assert len(found) == 1, f"one state machine named {name}"
    return next(iter(found))


def _statements_of_role(template: Template, role_id: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


# --- the rollout state machine ---------------------------------------------------------------------

def test_rollout_machine_is_standard_and_bound_to_the_batch_machine(alpha: Template) -> None:
    # GIVEN tenant alpha WHEN synthesized
    batch = _machine_id(alpha, "guard-alpha-upgrade-batch")
    rollout = alpha.find_resources("AWS::StepFunctions::StateMachine")[_machine_id(alpha, "guard-alpha-rollout")]
    props = rollout["Properties"]
    # THEN the rollout machine is STANDARD, traced, and its children are this tenant's batch machine
    assert props["StateMachineType"] == "STANDARD"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["DefinitionSubstitutions"]["UpgradeBatchStateMachineArn"] == {"Ref": batch}
    definition = json.loads(props["DefinitionString"]) if isinstance(props["DefinitionString"], str) else None
    text = json.dumps(props["DefinitionString"]) if definition is None else json.dumps(definition)
    assert "states:startExecution.sync:2" in text


def test_rollout_role_starts_and_watches_only_its_batch_machine(alpha: Template) -> None:
    # GIVEN the rollout machine's role
    rollout = alpha.find_resources("AWS::StepFunctions::StateMachine")[_machine_id(alpha, "guard-alpha-rollout")]
    role_id = rollout["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    batch = _machine_id(alpha, "guard-alpha-upgrade-batch")
    statements = _statements_of_role(alpha, role_id)
    # WHEN its Step Functions grants are read
    start = [s for s in statements if "states:StartExecution" in _actions(s)]
    watch = [s for s in statements if "states:DescribeExecution" in _actions(s)]
    invoke = [s for s in statements if "lambda:InvokeFunction" in _actions(s)]
    # THEN it may start executions of exactly the batch machine, and watch/stop only its executions
    assert [s["Resource"] for s in start] == [{"Ref": batch}]
    assert len(watch) == 1 and "execution" in json.dumps(watch[0]["Resource"])
    assert batch in json.dumps(watch[0]["Resource"])
    assert set(_actions(watch[0])) == {"states:DescribeExecution", "states:StopExecution"}
    # AND it invokes exactly one function (the Rollout tasks)
    assert len(invoke) == 1 and not isinstance(invoke[0]["Resource"], list)


def test_outputs_include_the_rollout_machine(alpha: Template) -> None:
    assert "RolloutStateMachineArn" in alpha.to_json()["Outputs"]


# --- schedules -------------------------------------------------------------------------------------

def test_a_batch_schedule_becomes_an_eventbridge_schedule_with_a_fixed_input(alpha: Template) -> None:
    # GIVEN alpha's `weekly-canary` schedule (Mondays 02:00 Berlin, 30-minute flexible window)
    batch = _machine_id(alpha, "guard-alpha-upgrade-batch")
    # WHEN synthesized THEN it is an enabled Scheduler schedule starting the batch machine
    alpha.has_resource_properties("AWS::Scheduler::Schedule", {
        "Name": "guard-alpha-weekly-canary",
        "ScheduleExpression": "cron(0 2 ? * MON *)",
        "ScheduleExpressionTimezone": "Europe/Berlin",
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 30},
        "State": "ENABLED",
        "Target": {
            "Arn": {"Ref": batch},
            "RoleArn": Match.any_value(),
            "Input": json.dumps({"batch": "canary", "target_version": "1.20.0",
                                 "requested_by": "schedule:weekly-canary"}),
        },
    })


def test_a_disabled_rollout_schedule_targets_the_rollout_machine(alpha: Template) -> None:
    # GIVEN alpha's `monthly-fleet` schedule (Unix cron, disabled, a rollout of canary + prod)
    rollout = _machine_id(alpha, "guard-alpha-rollout")
    # THEN the cron is translated for EventBridge, the schedule is DISABLED, and it starts a rollout
    alpha.has_resource_properties("AWS::Scheduler::Schedule", {
        "Name": "guard-alpha-monthly-fleet",
        "ScheduleExpression": "cron(0 3 1 * ? *)",
        "ScheduleExpressionTimezone": "UTC",
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "State": "DISABLED",
        "Target": Match.object_like({
            "Arn": {"Ref": rollout},
            "Input": json.dumps({"batches": ["canary", "prod"], "target_version": "1.20.0",
                                 "requested_by": "schedule:monthly-fleet"}),
        }),
    })


def test_each_schedule_role_may_only_start_executions_of_its_target(alpha: Template) -> None:
    # GIVEN the roles the schedules use
    schedules = {k: v for k, v in alpha.find_resources("AWS::Scheduler::Schedule").items()
                 if not v["Properties"]["Name"].endswith("-reconcile")}  # the reconciler's: tests/infra/test_stack.py
    assert len(schedules) == 2
    roles = alpha.find_resources("AWS::IAM::Role")
    for schedule in schedules.values():
        target = schedule["Properties"]["Target"]
        role_id = target["RoleArn"]["Fn::GetAtt"][0]
        # THEN EventBridge Scheduler (of this account only) assumes it
        trust = roles[role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
        assert all("aws:SourceAccount" in json.dumps(s.get("Condition")) for s in trust)
        # AND its only permission is StartExecution on the schedule's target
        statements = _statements_of_role(alpha, role_id)
        assert [(_actions(s), s["Resource"]) for s in statements] == [(["states:StartExecution"], target["Arn"])]


def test_a_tenant_without_schedules_gets_only_the_reconciler_s(beta: Template) -> None:
    beta.resource_count_is("AWS::Scheduler::Schedule", 1)
    beta.has_resource_properties("AWS::Scheduler::Schedule", {"Name": "guard-beta-reconcile"})


@pytest.mark.parametrize("cron, expected", [
    ("cron(0 2 ? * MON *)", "cron(0 2 ? * MON *)"),
    ("rate(7 days)", "rate(7 days)"),
    ("0 2 * * 1", "cron(0 2 ? * 2 *)"),   # Unix Monday = 1, EventBridge Monday = 2
    ("0 2 * * 0", "cron(0 2 ? * 1 *)"),   # Sunday
    ("30 4 1 * *", "cron(30 4 1 * ? *)"),
    ("0 2 * * MON-FRI", "cron(0 2 ? * 2-6 *)"),  # names become EventBridge's numbers (tests/unit/test_cron.py)
])
def test_schedule_expressions(cron: str, expected: str) -> None:
    assert schedule_expression(cron, "schedules.x.cron") == expected


@pytest.mark.parametrize("cron", ["every monday", "0 2 1 * 1", "* * *"])
def test_bad_schedule_expressions_name_the_schedule(cron: str) -> None:
    with pytest.raises(ConfigError, match=r"schedules\.x\.cron"):
        schedule_expression(cron, "schedules.x.cron")


# --- batch_order errors fail the synth -----------------------------------------------------------

@pytest.mark.parametrize("order, message", [
    ({"canary": ["prod"], "prod": ["canary"]}, "batch_order: dependency cycle"),
    ({"prod": ["canaryy"]}, "batch_order.prod: unknown prerequisite batch 'canaryy'"),
    ({"prodd": ["canary"]}, "batch_order.prodd: unknown batch"),
    ({"prod": ["prod"]}, "a batch cannot depend on itself"),
])
def test_a_bad_batch_order_fails_the_synth_with_a_clear_error(tmp_path: Path, order: dict[str, list[str]],
                                                              message: str) -> None:
    # GIVEN tenant alpha's config with a broken batch_order
    import yaml

    data = yaml.safe_load((FIXTURES / "alpha.yaml").read_text())
    data["batch_order"] = order
    bad = tmp_path / "alpha.yaml"
    bad.write_text(yaml.safe_dump(data))
    (tmp_path / "checks").mkdir()
    # WHEN the app is built THEN it refuses, naming the file and the problem
    with pytest.raises(ConfigError) as error:
        build_app({"tenants": [str(bad)], "aws:cdk:bundling-stacks": [], BUILD_DIR_CONTEXT: str(tmp_path)})
    assert str(bad) in str(error.value)
    assert message in str(error.value)


# --- tenant isolation ----------------------------------------------------------------------------

def test_a_tenants_webhook_can_resume_only_its_own_executions(synthesized: Synthesized) -> None:
    # GIVEN two tenants in one app (one account)
    for mine, other in (("alpha", "beta"), ("beta", "alpha")):
        template = synthesized.templates[f"Guard-{mine}"]
        batch = _machine_id(template, f"guard-{mine}-upgrade-batch")
        functions = template.find_resources("AWS::Lambda::Function")
        webhook_id = next(fid for fid, fn in functions.items()
                          if fn["Properties"]["Handler"] == "handlers.gitlab_webhook.handler")
        role_id = functions[webhook_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = _statements_of_role(template, role_id)
        # WHEN the webhook's Step Functions grants are read
        task = [s for s in statements if any(a.startswith("states:SendTask") for a in _actions(s))]
        # THEN it may answer task tokens of its own batch machine only
        assert task and all(s["Resource"] == {"Ref": batch} for s in task)
        # AND nothing in the stack's policies names the other tenant's tables, secrets or machines
        policies = json.dumps([p["Properties"]["PolicyDocument"]
                               for p in template.find_resources("AWS::IAM::Policy").values()])
        assert f"guard-{other}" not in policies and f"{other}/" not in policies
