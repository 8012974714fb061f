"""The GitLab simulator's webhooks and members behave like GitLab's (VENDOR-FACTS "GitLab webhooks")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from guard.adapters.gitlab_repo import GitLabMembers

from sandbox.sims.gitlab_sim import GitLabSimulator
from tests.support.clock import FakeClock

PROJECT = "platform/mesh/istio-fleet"
API = "/api/v4/projects/platform%2Fmesh%2Fistio-fleet"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gitlab(clock: FakeClock) -> Iterator[GitLabSimulator]:
    with GitLabSimulator(token="t0k3n", clock=clock, hook_timeout_seconds=1) as sim:
        sim.add_project(PROJECT, {"README.md": "fleet\n"})
        sim.handle("POST", f"{API}/repository/branches", {"branch": "b", "ref": "main"})
        sim.push(PROJECT, "b", {"README.md": "v2\n"})
        sim.handle("POST", f"{API}/merge_requests", {"source_branch": "b", "target_branch": "main", "title": "t"})
        sim.add_hook(PROJECT, "http://127.0.0.1:9/down", "secret")
        yield sim


def test_a_failing_hook_is_disabled_after_four_failures_then_backs_off(gitlab: GitLabSimulator,
                                                                       clock: FakeClock) -> None:
    # GIVEN a hook whose receiver is down  WHEN five comments are made
    for i in range(5):
        gitlab.comment_as(PROJECT, 1, "maria", f"comment {i}")

    # THEN four were attempted (and failed), the fifth was not sent: the hook is disabled for a minute
    assert [d.error == "hook disabled" for d in gitlab.hook_deliveries] == [False] * 4 + [True]
    assert gitlab.hook(PROJECT).failures == 4

    # WHEN the minute has passed and the next one fails too  THEN the hook is disabled for two minutes
    clock.advance(61)
    gitlab.comment_as(PROJECT, 1, "maria", "again")
    hook = gitlab.hook(PROJECT)
    assert gitlab.hook_deliveries[-1].error != "hook disabled" and hook.failures == 5
    assert hook.disabled_until is not None and hook.disabled_until - clock.now() == timedelta(minutes=2)


def test_a_hook_is_disabled_for_good_after_forty_failures(gitlab: GitLabSimulator) -> None:
    hook = gitlab.hook(PROJECT)
    hook.failures = 39
    gitlab.comment_as(PROJECT, 1, "maria", "the fortieth")
    assert hook.permanently_disabled


def test_a_manual_resend_keeps_the_idempotency_key_with_a_new_event_uuid(gitlab: GitLabSimulator) -> None:
    gitlab.comment_as(PROJECT, 1, "maria", "hello")
    first = gitlab.hook_deliveries[-1]
    again = gitlab.resend(first)
    assert again.idempotency_key == first.idempotency_key == first.headers["Idempotency-Key"]
    assert again.event_uuid != first.event_uuid
    assert again.headers["X-Gitlab-Event-UUID"] == again.event_uuid


def test_members_all_includes_members_inherited_from_parent_groups(gitlab: GitLabSimulator) -> None:
    # GIVEN maria is a Maintainer of the top group and a Developer of the project itself
    maria = gitlab.add_group_member("platform", "maria", 40)
    gitlab.add_member(PROJECT, "maria", 30)
    sam = gitlab.add_group_member("platform/mesh", "sam", 30)
    members = GitLabMembers.from_token(gitlab.url, "t0k3n")

    # WHEN GUARD reads their effective access  THEN the highest level wins, inherited ones included
    assert members.access_level(PROJECT, maria) == 40
    assert members.access_level(PROJECT, sam) == 30
    assert members.access_level(PROJECT, gitlab.add_user("stranger")) is None
    # AND the token's own account is GitLab's answer to GET /user
    assert members.current_user().username == "guard-sim"
