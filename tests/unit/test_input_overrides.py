"""An execution input may only make a run stricter than the tenant config, unless the config allows the field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from guard.config import load_config
from guard.config.models import TenantConfig
from guard.config.overrides import batch_overrides, refuse_loosening, refuse_past_vendor_caps, rollout_overrides
from guard.core.run import ExecutionInput, RunRecord
from guard.errors import InvalidInput
from guard.rollout.models import RolloutInput
from guard.services.plan import BatchPlanner, parse_input
from guard.services.report import RollbackSection, change_description

from tests.support.clock import FakeClock
from tests.unit.test_cluster_accounts import NOW, config, items, role, seed, tables  # noqa: F401

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.yaml"


def example(**execution: Any) -> TenantConfig:
    cfg = load_config(EXAMPLE)  # pod_disruption_budget_required: true, soak 60, rollout.on_failure: halt
    return cfg.model_copy(update={"execution": cfg.execution.model_copy(update=execution)})


def batch_input(**fields: Any) -> ExecutionInput:
    return ExecutionInput(batch="dev-1", target_version="1.20.0", **fields)


@pytest.mark.parametrize(("fields", "named"), [
    ({"ensure_pdb": False}, "ensure_pdb"),
    ({"ignore_alerts": True}, "ignore_alerts"),
    ({"soak_period_minutes": 5}, "soak_period_minutes"),
])
def test_a_batch_input_that_loosens_the_config_is_refused_naming_the_field(fields: dict[str, Any],
                                                                          named: str) -> None:
    # GIVEN the example config, which allows no override
    cfg = example()
    # WHEN an input loosens it THEN it is refused, naming the field and the key that would allow it
    with pytest.raises(InvalidInput) as caught:
        refuse_loosening(batch_overrides(batch_input(**fields), cfg), cfg, "execution input")
    assert f"{named}: " in str(caught.value)
    assert f"adding {named} to execution.allowed_overrides" in str(caught.value)


def test_a_stricter_input_is_accepted_and_listed() -> None:
    # GIVEN a config that does not require PDBs and soaks 60 minutes
    cfg = example(pod_disruption_budget_required=False)
    # WHEN the input requires PDBs, soaks longer and adds a replica floor
    lines = refuse_loosening(batch_overrides(batch_input(ensure_pdb=True, soak_period_minutes=90, min_replicas=2),
                                             cfg), cfg, "execution input")
    # THEN it is accepted and every difference is listed for the merge request
    assert lines == ["`ensure_pdb`: true (config: pod_disruption_budget_required false)",
                     "`soak_period_minutes`: 90 minutes (config: 60)",
                     "`min_replicas`: 2 (an extra check)"]


def test_a_loosening_the_config_allows_is_accepted_and_says_so() -> None:
    # GIVEN a config that lets inputs skip the PDB requirement
    cfg = example(allowed_overrides=["ensure_pdb"])
    # WHEN an input does THEN it is accepted, and the MR line says it loosens the config
    assert refuse_loosening(batch_overrides(batch_input(ensure_pdb=False), cfg), cfg, "execution input") == [
        "`ensure_pdb`: false (config: pod_disruption_budget_required true) (loosens the config; allowed by "
        "execution.allowed_overrides)"]


@pytest.mark.parametrize(("fields", "named"), [
    ({"on_failure": "continue_independent"}, "on_failure"),
    ({"max_concurrent_batches": 10}, "max_concurrent_batches"),
    ({"soak_overrides": {"prod-canary": 10}}, "soak_overrides"),
    ({"ignore_alerts": True}, "ignore_alerts"),
])
def test_a_rollout_input_that_loosens_the_config_is_refused(fields: dict[str, Any], named: str) -> None:
    # GIVEN the example config (halt after a failure, 3 batches at once, the canary soaks 240 minutes)
    cfg = example()
    # WHEN a rollout input loosens one of them THEN it is refused naming the field
    with pytest.raises(InvalidInput, match=f"rollout input: {named}: "):
        refuse_loosening(rollout_overrides(RolloutInput(target_version="1.20.0", **fields), cfg), cfg,
                         "rollout input")


def test_a_stricter_rollout_input_is_accepted() -> None:
    # GIVEN the example config WHEN a rollout asks for fewer batches at once THEN it is accepted
    cfg = example()
    assert refuse_loosening(rollout_overrides(RolloutInput(target_version="1.20.0", max_concurrent_batches=1), cfg),
                            cfg, "rollout input") == [
        "`max_concurrent_batches`: 1 (config: execution.max_concurrent_batches 3)"]


def test_more_batches_at_once_than_the_vendor_caps_are_shared_for_is_refused_even_when_allowed() -> None:
    # GIVEN a config that lets inputs raise max_concurrent_batches (3) and caps Datadog at 36 calls at once
    cfg = example(allowed_overrides=["max_concurrent_batches"])
    cfg.execution.vendor_concurrency.datadog = 36
    rollout = RolloutInput(target_version="1.20.0", max_concurrent_batches=6)
    refuse_loosening(rollout_overrides(rollout, cfg), cfg, "rollout input")  # the override itself is allowed
    # WHEN the rollout asks for 6 batches at once THEN it is refused: each Lambda's share was cut for 3
    with pytest.raises(InvalidInput, match=r"max_concurrent_batches 6 is more than execution.max_concurrent_batches "
                                           r"3, which execution.vendor_concurrency \(datadog 36\)"):
        refuse_past_vendor_caps(rollout, cfg)
    # AND as many or fewer batches are fine, and so is any number when no vendor is capped
    refuse_past_vendor_caps(RolloutInput(target_version="1.20.0", max_concurrent_batches=3), cfg)
    refuse_past_vendor_caps(rollout, example(allowed_overrides=["max_concurrent_batches"]))


def run(**fields: Any) -> RunRecord:
    return RunRecord(run_id="run-1", execution_arn="arn", batch="dev-1", target_version="1.20.0",
                     clusters=["eks-dev-1"], from_versions={"eks-dev-1": "1.19.3"}, gitlab_project="p",
                     options=batch_input(), started_at=datetime(2024, 5, 6, tzinfo=UTC), **fields)


def test_the_overrides_a_run_used_are_listed_in_its_merge_request() -> None:
    # GIVEN a run whose input required PDBs although the config does not
    record = run(overrides=["`ensure_pdb`: true (config: pod_disruption_budget_required false)"])
    # WHEN its MR description is rendered THEN the override is listed
    text = change_description(record, {"eks-dev-1": "1.20.0"})
    assert "**This run's input overrides the tenant config:**\n\n- `ensure_pdb`: true" in text


def test_a_manual_rollback_reason_is_shown_not_rendered() -> None:
    # GIVEN a manual rollback whose reason carries markup, a backtick escape and a line break
    reason = "hurts` <img src=x> [click](https://evil.example)\n\n# Approved by security"
    # WHEN the rollback MR description is rendered
    text = change_description(run(), {"eks-dev-1": "1.19.3"}, rollback=RollbackSection(reason=reason, manual=True))
    # THEN the reason stays on its line, inert (guard.outbound): no heading, no image, no link
    line = next(lo for lo in text.splitlines() if lo.startswith("**Reason:**"))
    assert "# Approved by security" in line and "\n# Approved" not in text
    assert "<img" not in text and "[click](" not in text


def test_plan_refuses_a_loosening_input_before_anything_changes(tables: Any) -> None:  # noqa: F811
    # GIVEN dev-1's clusters registered, and the example config requiring PDBs
    registry, state, state_table = seed(tables, role("111122223333", "eks-dev-2"))
    planner = BatchPlanner(config(["111122223333"]), registry, state, FakeClock(NOW))
    before = items(state_table)
    # WHEN dev-1 is started with ensure_pdb: false THEN Plan refuses, naming the field, and writes nothing
    with pytest.raises(InvalidInput, match="execution input: ensure_pdb: false"):
        planner.plan(parse_input({"batch": "dev-1", "target_version": "1.20.0", "ensure_pdb": False}),
                     "run-1", "arn:exec:run-1")
    assert items(state_table) == before
    # AND a stricter input is planned, and the run record keeps the override for the MR
    planner.plan(parse_input({"batch": "dev-1", "target_version": "1.20.0", "soak_period_minutes": 120}),
                 "run-2", "arn:exec:run-2")
    assert state.get_run("run-2").overrides == ["`soak_period_minutes`: 120 minutes (config: 60)"]
