"""execution.vendor_concurrency: fleet-wide caps per vendor, split across the Lambdas that run at once."""

from __future__ import annotations

import pytest
from guard.config.models import ExecutionConfig
from pydantic import ValidationError


def test_the_fleet_wide_cap_is_split_across_every_lambda_that_may_run_at_once() -> None:
    # GIVEN 4 chunks per batch and 3 batches at once: 12 per-cluster Lambdas
    execution = ExecutionConfig.model_validate({"max_concurrent_chunks": 4, "max_concurrent_batches": 3,
                                                "vendor_concurrency": {"datadog": 30, "kubernetes": 120}})
    # THEN each gets its share, rounded down (12 x 2 = 24 <= 30 Datadog calls at once), and GitLab is not capped
    assert execution.vendor_slots("datadog") == 2
    assert execution.vendor_slots("kubernetes") == 10
    assert execution.vendor_slots("gitlab") is None


def test_a_cap_smaller_than_the_lambdas_is_refused_naming_them() -> None:
    # GIVEN a Datadog cap of 8 with 12 Lambdas at once: one of them would get no call at all
    with pytest.raises(ValidationError) as refused:
        ExecutionConfig.model_validate({"max_concurrent_chunks": 4, "max_concurrent_batches": 3,
                                        "vendor_concurrency": {"datadog": 8}})
    # THEN the error names the field, the value and why
    assert "vendor_concurrency.datadog: 8 is fewer than the Lambdas that may run at once" in str(refused.value)
    assert "= 12" in str(refused.value)


def test_unknown_vendors_are_refused() -> None:
    with pytest.raises(ValidationError, match="slack"):
        ExecutionConfig.model_validate({"vendor_concurrency": {"slack": 4}})
    with pytest.raises(ValueError, match="unknown vendor 'slack'"):
        ExecutionConfig().vendor_slots("slack")
