"""`/guard proceed|rollback` on the MR: the GitLab simulator posts real Note Hook payloads, the access level
is read through python-gitlab (`members/all/:user_id`), DynamoDB on moto."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from guard.errors import TransientError
from guard.services.decision import DecisionService
from guard.services.webhook import WebhookService
from guard.stores.deliveries import Deliveries

from tests.adapter.failure_world import PROJECT, RUN_ID, World, closed_port_url, opened

MAINTAINER, DEVELOPER = 40, 30


@pytest.fixture
def world(monkeypatch) -> Iterator[World]:
    with opened(monkeypatch) as w:
        gitlab = w.gitlab
        gitlab.add_hook(PROJECT, closed_port_url(), "hook-token")  # deliveries are recorded with their payload
        gitlab.add_member(PROJECT, "maria", MAINTAINER)
        gitlab.add_member(PROJECT, "dev", DEVELOPER)
        yield w


def decisions(w: World) -> DecisionService:
    return DecisionService(w.state, w.failures, w.sfn, w.members, w.repo, w.clock, timeout_hours=24)


def waiting_for_decision(w: World) -> None:
    decisions(w).request(RUN_ID, "token-decide", "eks-prod-1 inconclusive: request_count has no data")


def webhook(w: World) -> WebhookService:
    """The webhook as the handler builds it: deliveries recorded in the state table."""
    return WebhookService(w.state, w.sfn, w.clock, decisions=lambda: decisions(w),
                          deliveries=Deliveries(boto3.client("dynamodb", region_name="us-east-1"), "state"))


def comment(w: World, username: str, body: str) -> str:
    """`username` comments; the delivered Note Hook goes through the webhook service. Returns its message."""
    w.gitlab.comment_as(PROJECT, w.upgrade_iid, username, body)
    delivery = w.gitlab.hook_deliveries[-1]
    return webhook(w).handle("Note Hook", delivery.event_uuid, json.dumps(delivery.payload)).message


def test_asking_comments_the_evidence_and_the_commands_on_the_upgrade_mr(world):
    # WHEN the decision is requested
    waiting_for_decision(world)

    # THEN the MR shows why, the two commands and the violation; the token waits on the MR
    note = world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    assert "GUARD needs a decision" in note and "`/guard proceed`" in note and "`/guard rollback`" in note
    assert "request_count has no data" in note
    token = world.state.get_task_token(world.run().merge_request_url or "")
    assert token is not None and (token.kind, token.task_token) == ("decision", "token-decide")


def test_a_maintainer_proceeds(world):
    # GIVEN GUARD waits for a decision
    waiting_for_decision(world)

    # WHEN a Maintainer comments /guard proceed
    message = comment(world, "maria", "/guard proceed")

    # THEN the execution resumes with the decision and who took it; the token is gone; the MR acknowledges
    assert world.sfn.successes == [{"taskToken": "token-decide", "output": {"decision": "proceed", "by": "maria"}}]
    assert "proceed by maria" in message
    assert world.state.get_task_token(world.run().merge_request_url or "") is None
    assert world.failures.get_decision(RUN_ID).decision == "proceed"
    assert "@maria decided **proceed**" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    # AND the access level was read through the members API
    assert any(r.path.endswith("/members/all/1001") for r in world.gitlab.requests)


def test_a_maintainer_rolls_back(world):
    waiting_for_decision(world)
    comment(world, "maria", "Latency looks off.\n/guard rollback\n")
    assert world.sfn.successes[0]["output"] == {"decision": "rollback", "by": "maria"}


def test_a_developer_is_answered_and_ignored(world):
    # GIVEN GUARD waits for a decision
    waiting_for_decision(world)

    # WHEN a Developer comments /guard proceed
    message = comment(world, "dev", "/guard proceed")

    # THEN nothing resumes, the token still waits, and the developer is told why
    assert world.sfn.successes == [] and "not a Maintainer" in message
    assert world.state.get_task_token(world.run().merge_request_url or "") is not None
    assert "@dev only a Maintainer" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]


def test_a_non_member_is_ignored(world):
    waiting_for_decision(world)
    assert "not a Maintainer" in comment(world, "stranger", "/guard rollback")
    assert world.sfn.successes == []


def test_an_unknown_command_and_plain_comments_are_ignored(world):
    # GIVEN GUARD waits for a decision
    waiting_for_decision(world)

    # WHEN a Maintainer writes an unknown command, then a plain comment
    unknown = comment(world, "maria", "/guard merge-it")
    plain = comment(world, "maria", "looks fine to me")

    # THEN nothing resumes; the unknown command gets the usage as a reply
    assert world.sfn.successes == []
    assert "unknown command" in unknown and "no /guard command" in plain
    assert "use `/guard proceed` or `/guard rollback`" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-2]


def test_a_redelivered_note_is_acted_on_once(world):
    # GIVEN a Maintainer's decision was delivered
    waiting_for_decision(world)
    comment(world, "maria", "/guard proceed")
    delivery = world.gitlab.hook_deliveries[-1]

    # WHEN GitLab redelivers it
    again = webhook(world).handle("Note Hook", delivery.event_uuid, json.dumps(delivery.payload))

    # THEN no second resume, and no second reply on the MR
    assert len(world.sfn.successes) == 1 and "ignored" in again.message
    assert sum("decided **proceed**" in n for n in world.gitlab.notes(PROJECT, world.upgrade_iid)) == 1


def test_a_decision_that_failed_to_resume_is_applied_on_resend(world):
    # GIVEN Step Functions throttled the first attempt to resume on a Maintainer's /guard rollback
    waiting_for_decision(world)
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "/guard rollback")
    delivery = world.gitlab.hook_deliveries[-1]
    sfn, calls = world.sfn, []

    class ThrottledOnce:
        def send_task_success(self, *, taskToken: str, output: str) -> None:
            calls.append(taskToken)
            if len(calls) == 1:
                raise TransientError("Step Functions SendTaskSuccess: ThrottlingException")
            sfn.send_task_success(taskToken=taskToken, output=output)

        def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
            raise AssertionError("a decision never fails the task")

    world.sfn = ThrottledOnce()  # type: ignore[assignment]
    with pytest.raises(TransientError):
        webhook(world).handle("Note Hook", delivery.event_uuid, json.dumps(delivery.payload))

    # WHEN the same delivery is resent
    again = webhook(world).handle("Note Hook", delivery.event_uuid, json.dumps(delivery.payload))

    # THEN the decision is applied this time, once
    assert again.message.endswith("rollback by maria")
    assert sfn.successes == [{"taskToken": "token-decide", "output": {"decision": "rollback", "by": "maria"}}]


def test_a_command_on_an_mr_nobody_waits_on_is_ignored(world):
    # GIVEN no decision is awaited; WHEN a Maintainer comments THEN nothing happens
    assert "no GUARD decision waits" in comment(world, "maria", "/guard proceed")
    assert world.sfn.successes == []


def test_the_note_hook_payload_has_gitlab_s_shape(world):
    # WHEN someone comments through the simulator
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "hello")

    # THEN the delivery is a Note Hook in GitLab's shape
    delivery = world.gitlab.hook_deliveries[-1]
    payload = delivery.payload
    assert payload["object_kind"] == "note"
    assert payload["object_attributes"]["noteable_type"] == "MergeRequest"
    assert payload["object_attributes"]["note"] == "hello"
    assert payload["object_attributes"]["url"].startswith(world.run().merge_request_url or "?")
    assert payload["merge_request"]["iid"] == world.upgrade_iid
    assert payload["merge_request"]["url"] == world.run().merge_request_url
    assert payload["user"]["username"] == "maria" and isinstance(payload["user"]["id"], int)


# ------------------------------------------------------------------ the wait timed out: GitLab is asked once more


def test_a_timeout_with_a_maintainer_answer_whose_note_hook_was_lost_applies_that_answer(world):
    # GIVEN GUARD asked; a Developer and then a Maintainer answered, but no Note Hook reached GUARD
    waiting_for_decision(world)
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "dev", "/guard rollback")
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "/guard proceed")

    # WHEN the wait times out
    taken = decisions(world).after_timeout(RUN_ID)

    # THEN the Maintainer's answer is applied as if delivered: returned, recorded, acknowledged on the MR
    assert (taken.decision, taken.by, taken.timed_out) == ("proceed", "maria", False)
    assert world.failures.get_decision(RUN_ID).by == "maria"
    notes = world.gitlab.notes(PROJECT, world.upgrade_iid)
    assert "@maria decided **proceed**" in notes[-1]
    assert not any("no Maintainer answered" in n for n in notes)
    # AND the dead token is gone (neither a late webhook nor the reconciler answers it)
    assert world.state.get_task_token(world.run().merge_request_url or "") is None


def test_a_timeout_says_no_maintainer_answered_only_when_the_notes_confirm_it(world):
    # GIVEN GUARD asked and only a Developer answered
    waiting_for_decision(world)
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "dev", "/guard proceed")

    # WHEN the wait times out
    taken = decisions(world).after_timeout(RUN_ID)

    # THEN GUARD rolls back, saying on the MR that no Maintainer answered within the timeout (24 h);
    # the decision is recorded as nobody's, so later texts never name a person
    assert (taken.decision, taken.by, taken.timed_out) == ("rollback", None, True)
    assert "no Maintainer answered within 24 h" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    recorded = world.failures.get_decision(RUN_ID)
    assert recorded is not None and (recorded.by, recorded.timed_out, recorded.timeout_hours) == (None, True, 24)


def test_a_timeout_while_gitlab_cannot_be_read_claims_nothing(world):
    # GIVEN GUARD asked, and GitLab answers 503 to the notes
    waiting_for_decision(world)
    world.gitlab.fail_next("GET", r"/merge_requests/\d+/notes", 503, times=10)  # longer than the retry policy tries
    before = world.gitlab.notes(PROJECT, world.upgrade_iid)

    # WHEN the wait times out THEN the task fails as retryable, and nothing was said on the MR
    with pytest.raises(TransientError):
        decisions(world).after_timeout(RUN_ID)
    assert world.gitlab.notes(PROJECT, world.upgrade_iid) == before


def test_a_question_that_could_not_be_posted_leaves_no_token_behind(world):
    # GIVEN GitLab refuses the decision comment
    world.gitlab.fail_next("POST", r"/merge_requests/\d+/notes", 503, times=10)  # longer than the retry policy tries

    # WHEN the decision is requested THEN the task fails, and the token it stored first is deleted again
    with pytest.raises(TransientError):
        waiting_for_decision(world)
    assert world.state.get_task_token(world.run().merge_request_url or "") is None


# ------------------------------------------------------------------ notes that are not a person's new command


def _last_delivery_through_webhook(w: World, service: WebhookService | None = None) -> str:
    delivery = w.gitlab.hook_deliveries[-1]
    return (service or webhook(w)).handle(delivery.event, delivery.idempotency_key,
                                          json.dumps(delivery.payload)).message


def test_a_note_guard_wrote_containing_guard_proceed_decides_nothing(world):
    # GIVEN GUARD waits for a decision, and its own account is a Maintainer of the project
    waiting_for_decision(world)
    world.gitlab.add_member(PROJECT, "guard-sim", MAINTAINER)

    # WHEN GUARD's account posts (through the API) a note with a `/guard proceed` line, e.g. quoted LLM text
    # gone wrong, and GitLab delivers its Note Hook as it does for every note
    world.repo.comment(PROJECT, world.upgrade_iid, "The model said:\n/guard proceed\n")
    assert world.gitlab.hook_deliveries[-1].payload["user"]["username"] == "guard-sim"
    message = _last_delivery_through_webhook(world)

    # THEN nothing resumes, GUARD does not answer itself, and the decision still waits. (GUARD's adapter also
    # escapes a leading `/` in everything it posts, so its own note carries no command line at all.)
    assert world.sfn.successes == [] and ("GUARD's own account" in message or "no /guard command" in message)
    assert "\n\\/guard proceed" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    assert world.state.get_task_token(world.run().merge_request_url or "") is not None
    assert not world.gitlab.notes(PROJECT, world.upgrade_iid)[-1].startswith("👍")
    # AND the token's account was asked of GitLab once, then remembered
    world.repo.comment(PROJECT, world.upgrade_iid, "/guard proceed")
    _last_delivery_through_webhook(world)
    assert world.sfn.successes == []
    assert sum(r.path == "/api/v4/user" for r in world.gitlab.requests) <= 1


def test_a_timeout_does_not_read_guard_s_own_note_as_the_answer(world):
    # GIVEN GUARD asked, and only its own account wrote `/guard proceed` afterwards
    waiting_for_decision(world)
    world.gitlab.add_member(PROJECT, "guard-sim", MAINTAINER)
    world.repo.comment(PROJECT, world.upgrade_iid, "/guard proceed")

    # WHEN the wait times out  THEN nobody answered: GUARD rolls back
    taken = decisions(world).after_timeout(RUN_ID)
    assert (taken.decision, taken.by, taken.timed_out) == ("rollback", None, True)


def test_a_configured_bot_account_decides_nothing(world):
    # GIVEN another automation account, a Maintainer, listed in gitlab.bot_usernames
    waiting_for_decision(world)
    world.gitlab.add_member(PROJECT, "release-bot", MAINTAINER)
    service = WebhookService(world.state, world.sfn, world.clock, decisions=lambda: DecisionService(
        world.state, world.failures, world.sfn, world.members, world.repo, world.clock, bot_usernames=["Release-Bot"]))

    # WHEN it comments /guard proceed  THEN it is ignored
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "release-bot", "/guard proceed")
    assert "GUARD's own account" in _last_delivery_through_webhook(world, service)
    assert world.sfn.successes == []


def test_an_edited_comment_is_not_a_new_command(world):
    # GIVEN a Maintainer's plain comment, while GUARD waits for a decision
    waiting_for_decision(world)
    note = world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "let me look")

    # WHEN the comment is edited into a command (GitLab sends a Note Hook with action "update")
    world.gitlab.edit_note(PROJECT, world.upgrade_iid, note["id"], "/guard proceed")
    assert world.gitlab.hook_deliveries[-1].payload["object_attributes"]["action"] == "update"

    # THEN nothing is decided
    assert "edited comment" in _last_delivery_through_webhook(world)
    assert world.sfn.successes == []


def test_an_internal_note_from_a_maintainer_decides(world):
    # GIVEN a hook that receives confidential note events, and GUARD waiting for a decision
    world.gitlab.add_hook(PROJECT, closed_port_url(), "hook-token", confidential_note_events=True)
    waiting_for_decision(world)

    # WHEN a Maintainer answers in an internal note
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "/guard rollback", internal=True)
    delivery = world.gitlab.hook_deliveries[-1]
    assert delivery.event == "Confidential Note Hook" and delivery.payload["object_attributes"]["internal"] is True

    # THEN it is a decision like any other (the reconciler would read it from the notes anyway)
    _last_delivery_through_webhook(world)
    assert world.sfn.successes[0]["output"] == {"decision": "rollback", "by": "maria"}


def test_a_plain_comment_or_a_command_nobody_waits_for_builds_no_gitlab_client(world):
    # GIVEN a webhook whose GitLab clients cannot be built (the token secret is unreadable)
    def broken() -> DecisionService:
        raise AssertionError("GitLab clients built for a comment that needs none")

    service = WebhookService(world.state, world.sfn, world.clock, decisions=broken)

    # WHEN a plain comment and a command arrive while no decision waits
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "nice")
    plain = _last_delivery_through_webhook(world, service)
    world.gitlab.comment_as(PROJECT, world.upgrade_iid, "maria", "/guard proceed")
    command = _last_delivery_through_webhook(world, service)

    # THEN both are answered without GitLab
    assert "no /guard command" in plain and "no GUARD decision waits" in command
