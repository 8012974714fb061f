"""The change pipeline's first step (`services/change.py`) when the task token cannot be stored: python-gitlab
against the GitLab simulator, DynamoDB on moto with its PutItem of token items refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guard.errors import TaskTokenNotStored, TransientError
from guard.services.change import Change, ChangeService, upgrade_branch
from guard.services.merge_request import MergeRequestService
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import ChangeKind

from tests.adapter.failure_world import CLUSTERS, PROJECT, RUN_ID, World, opened, refusing_writes

NEXT = "1.22.0"


@pytest.fixture
def world(monkeypatch) -> Iterator[World]:
    with opened(monkeypatch) as w:
        yield w


def upgrade(w: World) -> Change:
    return Change(run_id=RUN_ID, kind=ChangeKind.UPGRADE, project=PROJECT,
                  source_branch=upgrade_branch("guard/istio-upgrade", "prod-canary", NEXT), target_branch="main",
                  versions=dict.fromkeys(CLUSTERS, NEXT), title=f"Upgrade Istio to {NEXT}", commit_message="upgrade",
                  description="health report", wait_hours=96)


def test_an_upgrade_mr_whose_token_could_not_be_stored_is_closed_saying_why(world):
    # GIVEN DynamoDB refuses the task token (the MR itself opens fine)
    changes = ChangeService(world.registry, StateStore(refusing_writes()), world.repo, world.clock)

    # WHEN the upgrade MR is opened THEN the task fails naming the cause, so the execution fails clearly
    with pytest.raises(TaskTokenNotStored, match="GUARD closed it") as raised:
        changes.open(upgrade(world), "token-up")
    assert "ProvisionedThroughputExceededException" in str(raised.value)

    # AND the MR is closed (a merge would deploy with nobody validating it), with a comment saying why
    mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["source_branch"].endswith(NEXT))
    assert mr["state"] == "closed"
    note = world.gitlab.notes(PROJECT, mr["iid"])[-1]
    assert "could not store the task token" in note and "GUARD closed it" in note
    assert world.state.get_task_token(mr["web_url"]) is None


def test_an_upgrade_mr_gitlab_would_not_close_asks_a_person_to_close_it(world):
    # GIVEN DynamoDB refuses the token and GitLab refuses to close the MR
    changes = ChangeService(world.registry, StateStore(refusing_writes()), world.repo, world.clock)
    world.gitlab.fail_next("PUT", r"/merge_requests/\d+$", 503, times=10)  # longer than the retry policy tries

    # WHEN the upgrade MR is opened THEN the error says it is still open and must be closed by hand
    with pytest.raises(TaskTokenNotStored, match="could not close it: close it by hand"):
        changes.open(upgrade(world), "token-up")
    mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["source_branch"].endswith(NEXT))
    assert mr["state"] == "opened" and "close it by hand" in world.gitlab.notes(PROJECT, mr["iid"])[-1]


def test_an_upgrade_mr_task_that_fails_after_storing_its_token_leaves_no_token_behind(world):
    # GIVEN DynamoDB refuses the run record (after the MR and its token were stored)
    planner = MergeRequestService(world.config, world.registry, StateStore(refusing_writes("META")), world.repo,
                                  world.clock)
    run = world.run()  # its upgrade MR is merged already: another target version gets a new MR
    run.target_version = NEXT
    world.state.put_run(run)

    # WHEN the task runs THEN it fails, and the token of that attempt is gone (the run could not name its MR)
    with pytest.raises(TransientError):
        planner.open(RUN_ID, "token-up")
    mr = next(m for m in world.gitlab.merge_requests(PROJECT) if m["source_branch"].endswith(NEXT))
    assert world.state.get_task_token(mr["web_url"]) is None


def test_a_retry_after_a_person_merged_the_first_attempt_s_mr_watches_it_and_rebuilds_nothing(world):
    # GIVEN a first attempt opened the upgrade MR, then crashed; a person merged it (GitLab deleted the branch)
    changes = ChangeService(world.registry, world.state, world.repo, world.clock)
    first = changes.open(upgrade(world), "token-1")
    world.gitlab.merge(PROJECT, first.iid)
    change = upgrade(world).model_copy(update={"known_iid": first.iid})
    before = len(world.gitlab.merge_requests(PROJECT))

    # WHEN the retried task opens the change again
    again = changes.open(change, "token-2")

    # THEN it is the merged MR, its branch is not re-created, no MR is opened, and the retry's token waits on it
    assert (again.iid, again.state) == (first.iid, "merged")
    assert world.gitlab.branch_head(PROJECT, change.source_branch) is None
    assert len(world.gitlab.merge_requests(PROJECT)) == before
    token = world.state.get_task_token(first.web_url)
    assert token is not None and token.task_token == "token-2"


def test_a_retry_whose_first_mr_is_still_open_carries_on_as_before(world):
    changes = ChangeService(world.registry, world.state, world.repo, world.clock)
    first = changes.open(upgrade(world), "token-1")
    again = changes.open(upgrade(world).model_copy(update={"known_iid": first.iid}), "token-2")
    assert (again.iid, again.state) == (first.iid, "opened")
    assert world.state.get_task_token(first.web_url).task_token == "token-2"
