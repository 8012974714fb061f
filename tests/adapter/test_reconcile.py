"""The reconciler asks GitLab (the simulator, over HTTP with python-gitlab) about every MR an execution waits
on and settles what a lost webhook would have; DynamoDB on moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from guard.errors import ExternalServiceError, TaskNoLongerWaiting
from guard.ports import FileChange
from guard.services.decision import DecisionService
from guard.services.reconcile import ReconcileService, merge_request_iid
from guard.stores.state import TaskTokenRecord
from guard.vocabulary.outcomes import ChangeKind

from tests.adapter.failure_world import (
    PROJECT,
    RUN_ID,
    RecordingStepFunctions,
    World,
    closed_port_url,
    opened,
)

MAINTAINER, DEVELOPER = 40, 30


@pytest.fixture
def world(monkeypatch) -> Iterator[World]:
    with opened(monkeypatch) as w:
        gitlab = w.gitlab
        gitlab.add_hook(PROJECT, closed_port_url(), "hook-token")  # every webhook is lost: nobody listens
        gitlab.add_member(PROJECT, "maria", MAINTAINER)
        gitlab.add_member(PROJECT, "dev", DEVELOPER)
        yield w


def decisions(w: World) -> DecisionService:
    return DecisionService(w.state, w.failures, w.sfn, w.members, w.repo, w.clock, timeout_hours=24)


def reconciler(w: World) -> ReconcileService:
    return ReconcileService(w.state, w.sfn, w.repo, lambda: decisions(w))


def wait_on(w: World, url: str, kind: ChangeKind, token: str = "token-1") -> None:
    w.state.put_task_token(TaskTokenRecord(merge_request_url=url, task_token=token, run_id=RUN_ID, kind=kind),
                           w.clock.now(), hours=24)


def open_rollback_mr(w: World) -> Any:
    w.repo.ensure_branch(PROJECT, "guard/istio-rollback/prod-canary", "main")
    w.repo.commit_files(PROJECT, "guard/istio-rollback/prod-canary",
                        [FileChange(path="README.md", content="rolled back\n")], "rollback")
    return w.repo.ensure_merge_request(PROJECT, "guard/istio-rollback/prod-canary", "main", "Roll back", "why")


def test_a_merged_upgrade_mr_whose_webhook_was_lost_resumes_the_execution(world):
    # GIVEN an execution waits on the upgrade MR, which GitLab shows merged (the merge webhook was lost)
    url = world.run().merge_request_url or ""
    wait_on(world, url, ChangeKind.UPGRADE)
    merged = world.repo.get_merge_request(PROJECT, world.upgrade_iid)

    # WHEN the reconciler runs
    report = reconciler(world).run()

    # THEN the execution resumes with the webhook's output, and the token is gone
    assert world.sfn.successes == [{"taskToken": "token-1", "output": {
        "merge_commit_sha": merged.merge_commit_sha, "merge_request_url": url, "merged_by": "guard-sim",
        "stage": "waiting_for_flux"}}]
    assert world.state.get_task_token(url) is None
    assert report.checked == 1 and "merge delivered" in report.settled[0]


def test_a_token_stored_before_the_watch_index_is_still_reconciled(world):
    # GIVEN a token item as the release before the watch index stored it (no `watch` attribute), on the
    # upgrade MR that GitLab shows merged (the merge webhook was lost)
    url = world.run().merge_request_url or ""
    record = TaskTokenRecord(merge_request_url=url, task_token="token-old", run_id=RUN_ID)
    table = boto3.resource("dynamodb").Table("state")
    table.put_item(Item={"pk": f"MR#{url}", "sk": "TOKEN", "doc": record.model_dump_json(), "run_id": RUN_ID,
                         "expires_at": 1})
    assert world.state.list_task_tokens() == []  # the index alone does not see it

    # WHEN the reconciler runs (its first pass since the deploy)
    report = reconciler(world).run()

    # THEN it indexed the item and resumed the execution, and the token is gone
    assert report.indexed == 1
    assert [s["taskToken"] for s in world.sfn.successes] == ["token-old"]
    assert world.state.get_task_token(url) is None and report.checked == 1


def test_an_open_mr_is_left_waiting_and_a_closed_rollback_mr_fails_its_wait(world):
    # GIVEN an execution waits on an open rollback MR
    mr = open_rollback_mr(world)
    wait_on(world, mr.web_url, ChangeKind.ROLLBACK)

    # WHEN the reconciler runs while it is open
    report = reconciler(world).run()

    # THEN nothing is sent and the token stays
    assert (world.sfn.successes, world.sfn.failures, report.settled) == ([], [], [])
    assert world.state.get_task_token(mr.web_url) is not None

    # WHEN the MR is closed (webhook lost) and the reconciler runs again
    world.gitlab.close(PROJECT, mr.iid)
    reconciler(world).run()

    # THEN the wait fails with the webhook's error
    assert [f["error"] for f in world.sfn.failures] == ["RollbackMergeRequestClosed"]
    assert "the clusters stay on the new version" in world.sfn.failures[0]["cause"]
    assert world.state.get_task_token(mr.web_url) is None


def test_a_closed_upgrade_mr_fails_with_merge_request_closed(world):
    mr = open_rollback_mr(world)  # any open MR will do as "the upgrade MR"
    wait_on(world, mr.web_url, ChangeKind.UPGRADE)
    world.gitlab.close(PROJECT, mr.iid)
    reconciler(world).run()
    assert [f["error"] for f in world.sfn.failures] == ["MergeRequestClosed"]


def test_an_execution_answered_already_only_loses_its_token(world):
    # GIVEN the webhook answered first: Step Functions refuses a second answer
    class Answered(RecordingStepFunctions):
        def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
            raise TaskNoLongerWaiting("Task Timed Out or already answered")

    world.sfn = Answered()
    url = world.run().merge_request_url or ""
    wait_on(world, url, ChangeKind.UPGRADE)

    # WHEN the reconciler runs
    report = reconciler(world).run()

    # THEN it does nothing more than delete the stale token
    assert world.state.get_task_token(url) is None
    assert "no longer waiting" in report.settled[0]


def test_a_maintainer_s_decision_whose_note_hook_was_lost_is_applied_once(world):
    # GIVEN GUARD asked for a decision; a Developer, then a Maintainer answered; no Note Hook arrived
    decisions(world).request(RUN_ID, "token-decide", "eks-prod-1 inconclusive")
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "dev", "/guard proceed")
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "Looks fine.\n/guard rollback")

    # WHEN the reconciler runs twice
    reconciler(world).run()
    reconciler(world).run()

    # THEN the Maintainer's command (not the Developer's) resumed the execution, once
    assert world.sfn.successes == [{"taskToken": "token-decide", "output": {"decision": "rollback", "by": "maria"}}]
    assert world.failures.get_decision(RUN_ID).decision == "rollback"
    assert "@maria decided **rollback**" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    # AND the Developer was not answered by the reconciler (the webhook answers those)
    assert not any("only a Maintainer" in n for n in world.gitlab.notes(PROJECT, world.upgrade_iid))


def test_a_command_posted_before_the_question_does_not_answer_it(world):
    # GIVEN a Maintainer's old command, then GUARD's question
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "/guard proceed")
    decisions(world).request(RUN_ID, "token-decide", "eks-prod-1 inconclusive")

    # WHEN the reconciler runs
    reconciler(world).run()

    # THEN the decision still waits
    assert world.sfn.successes == []
    assert world.state.get_task_token(world.run().merge_request_url or "") is not None


def test_an_orphan_token_is_deleted_with_a_warning_and_the_others_are_settled(world):
    # GIVEN a token whose run has no record (an orphan), and one on the merged upgrade MR
    orphan = f"{world.gitlab.url}/x/-/merge_requests/9"
    world.state.put_task_token(TaskTokenRecord(merge_request_url=orphan, task_token="t-x", run_id="no-such-run"),
                               world.clock.now(), hours=1)
    url = world.run().merge_request_url or ""
    wait_on(world, url, ChangeKind.UPGRADE)
    warnings: list[tuple[str, dict[str, Any]]] = []

    # WHEN the reconciler runs twice
    first = ReconcileService(world.state, world.sfn, world.repo, lambda: decisions(world),
                             log_warning=lambda message, extra: warnings.append((message, extra))).run()
    second = reconciler(world).run()

    # THEN the orphan is deleted with a warning naming its run, and the pass does not fail for it
    assert world.state.get_task_token(orphan) is None
    assert [(m, e["run_id"], e["reason"]) for m, e in warnings] == [
        ("reconciler deleted an orphan task token", "no-such-run", "its run has no record")]
    assert first.failed == [] and len(first.cleaned) == 1
    # AND an execution still waiting on the orphan is ended rather than left to its timeout
    assert [(f["taskToken"], f["error"]) for f in world.sfn.failures] == [("t-x", "OrphanTaskToken")]
    # AND the known one was resumed in the same pass; the next pass has nothing left to do
    assert [s["taskToken"] for s in world.sfn.successes] == ["token-1"]
    assert (second.checked, second.cleaned, second.failed) == (0, [], [])


def test_an_unreadable_token_item_is_skipped_and_does_not_hide_the_others(world):
    # GIVEN a token item whose document does not parse, and one on the merged upgrade MR
    boto3.resource("dynamodb").Table("state").put_item(
        Item={"pk": "MR#garbage", "sk": "TOKEN", "doc": "{not json", "expires_at": 1})
    wait_on(world, world.run().merge_request_url or "", ChangeKind.UPGRADE)
    warnings: list[str] = []

    # WHEN the reconciler runs
    report = ReconcileService(world.state, world.sfn, world.repo, lambda: decisions(world),
                              log_warning=lambda message, extra: warnings.append(extra["pk"])).run()

    # THEN the good one is settled and the bad one reported by its key
    assert [s["taskToken"] for s in world.sfn.successes] == ["token-1"]
    assert report.checked == 1 and warnings == ["MR#garbage"]


def test_one_mr_gitlab_cannot_answer_does_not_stop_the_others_and_the_pass_fails_loudly(world):
    # GIVEN a token on an MR GitLab does not have (404), and one on the merged upgrade MR
    missing = (world.run().merge_request_url or "").rsplit("/", 1)[0] + "/999"
    wait_on(world, missing, ChangeKind.UPGRADE, token="token-missing")
    url = world.run().merge_request_url or ""
    wait_on(world, url, ChangeKind.UPGRADE)

    # WHEN the reconciler runs
    with pytest.raises(ExternalServiceError, match="could not check 1 of 2"):
        reconciler(world).run()

    # THEN the known one was resumed anyway, and the unanswered one keeps its token for the next pass
    assert [s["taskToken"] for s in world.sfn.successes] == ["token-1"]
    assert world.state.get_task_token(missing) is not None


def test_the_iid_is_read_from_the_merge_request_url():
    assert merge_request_iid("https://gitlab.example.com/a/b/-/merge_requests/42") == 42
    assert merge_request_iid("https://gitlab.example.com/a/b") is None
