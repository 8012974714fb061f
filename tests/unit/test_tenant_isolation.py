"""Two tenants in one account: one tenant's webhook and token can never resume the other's execution."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from guard.errors import WebhookUnauthorized
from guard.services.webhook import WebhookService, verify_token
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from moto import mock_aws

from tests.support.clock import FakeClock

NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
MR_A = "https://gitlab.example.com/team-a/istio/-/merge_requests/7"
MR_B = "https://gitlab.example.com/team-b/istio/-/merge_requests/7"


class RecordingStepFunctions:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def send_task_success(self, *, taskToken: str, output: str) -> Any:
        self.calls.append({"token": taskToken, "output": output})

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> Any:
        self.calls.append({"token": taskToken, "error": error})


@pytest.fixture
def tenants(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.resource("dynamodb", region_name="us-east-1")
        stores = {}
        for tenant in ("team-a", "team-b"):  # the names infra/naming.py gives each tenant's state table
            _, table = create_tables(dynamodb, state_name=f"guard-{tenant}-state")
            stores[tenant] = StateStore(table)
        # Both tenants have an execution waiting on an MR (same iid, different projects).
        stores["team-a"].put_task_token(TaskTokenRecord(merge_request_url=MR_A, task_token="token-a",
                                                        run_id="run-a"), NOW, 72)
        stores["team-b"].put_task_token(TaskTokenRecord(merge_request_url=MR_B, task_token="token-b",
                                                        run_id="run-b"), NOW, 72)
        yield stores


def merge(url: str) -> str:
    return json.dumps({"object_kind": "merge_request", "user": {"username": "mallory"},
                       "object_attributes": {"iid": 7, "url": url, "action": "merge", "merge_commit_sha": "f" * 40}})


def test_tenant_a_webhook_with_a_valid_token_cannot_resume_tenant_b(tenants: Any) -> None:
    # GIVEN tenant A's webhook (its own state table), called with A's valid token but B's MR URL
    verify_token("secret-a", "secret-a")
    sfn = RecordingStepFunctions()
    service = WebhookService(tenants["team-a"], sfn, FakeClock(NOW, on_sleep="stand_still"))
    # WHEN it handles B's merge event
    result = service.handle("Merge Request Hook", "delivery-1", merge(MR_B))
    # THEN A's table has no token for B's MR: nothing is resumed, and B's execution still waits
    assert result.message == "ignored: no GUARD execution waits on this merge request"
    assert sfn.calls == []
    assert tenants["team-b"].get_task_token(MR_B) is not None
    assert tenants["team-a"].get_task_token(MR_B) is None


def test_tenant_b_token_is_refused_by_tenant_a_webhook() -> None:
    # GIVEN each tenant's webhook checks its own secret
    # WHEN B's token reaches A's webhook THEN it is unauthorized before anything is read
    with pytest.raises(WebhookUnauthorized):
        verify_token("secret-a", "secret-b")


def test_each_tenant_resumes_only_its_own_execution(tenants: Any) -> None:
    # GIVEN both webhooks
    for mine, url, token in (("team-a", MR_A, "token-a"), ("team-b", MR_B, "token-b")):
        sfn = RecordingStepFunctions()
        # WHEN a tenant's own MR merges THEN exactly its own task token is answered
        service = WebhookService(tenants[mine], sfn, FakeClock(NOW, on_sleep="stand_still"))
        service.handle("Merge Request Hook", f"d-{mine}", merge(url))
        assert [c["token"] for c in sfn.calls] == [token]
