"""GitLab webhooks: GUARD reads the published Merge Request Hook and Note Hook examples, and the
simulator's deliveries (body and headers) have the same shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from guard.services.decision import NoteCommand, parse_note
from guard.services.webhook import delivery_key
from guard.stores.deliveries import WebhookResult

from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.gitlab_store import ApiError
from tests.contract.shapes import body_of, check, fixture

MR_HOOK = [
    "object_kind", "event_type", "user.id", "user.username", "project.id", "project.path_with_namespace",
    "project.web_url", "object_attributes.id", "object_attributes.iid", "object_attributes.url",
    "object_attributes.action", "object_attributes.state", "object_attributes.source_branch",
    "object_attributes.target_branch", "object_attributes.merge_commit_sha", "object_attributes.last_commit.id",
    "changes.state_id.current",
]
NOTE_HOOK = [
    "object_kind", "event_type", "user.id", "user.username", "project_id", "project.path_with_namespace",
    "object_attributes.id", "object_attributes.note", "object_attributes.noteable_type",
    "object_attributes.author_id", "object_attributes.system", "object_attributes.action",
    "object_attributes.internal", "object_attributes.url", "merge_request.id", "merge_request.iid",
    "merge_request.url", "merge_request.state", "merge_request.source_branch", "merge_request.target_branch",
]
HEADERS = ["X-Gitlab-Event", "X-Gitlab-Token", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID",
           "X-Gitlab-Instance", "Idempotency-Key"]
NULLABLE = frozenset({"object_attributes.merge_commit_sha"})
PROJECT = "platform/istio-fleet"
API = "/api/v4/projects/platform%2Fistio-fleet"


@pytest.fixture
def gitlab() -> Iterator[GitLabSimulator]:
    with GitLabSimulator(token="t0k3n", auto_disable=False) as sim:
        sim.add_project(PROJECT, {"README.md": "fleet\n"})
        sim.handle("POST", f"{API}/repository/branches", {"branch": "guard/upgrade", "ref": "main"})
        sim.push(PROJECT, "guard/upgrade", {"README.md": "fleet v2\n"})
        sim.add_hook(PROJECT, "http://127.0.0.1:9/unreachable", "secret-token")
        yield sim


def _open_mr(sim: GitLabSimulator) -> int:
    status, mr = sim.handle("POST", f"{API}/merge_requests",
                            {"source_branch": "guard/upgrade", "target_branch": "main", "title": "Upgrade"})
    assert status == 201
    return int(mr["iid"])


# ---------------------------------------------------------------- the published examples, read by GUARD


def test_the_published_examples_hold_the_contract() -> None:
    for name, contract in (("gitlab_merge_request_hook.json", MR_HOOK), ("gitlab_note_hook.json", NOTE_HOOK)):
        published = fixture(name)
        assert check(contract, body_of(published), body_of(published), NULLABLE) == [], name
        assert all(h in published["_headers"] for h in HEADERS), name


def test_guard_dedupes_the_published_delivery_on_its_idempotency_key() -> None:
    headers = {k.lower(): v for k, v in fixture("gitlab_merge_request_hook.json")["_headers"].items()}
    assert delivery_key(headers) == "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"


def test_guard_reads_a_command_from_the_published_note_hook() -> None:
    # GIVEN GitLab's published comment example, its text replaced by a command
    payload: dict[str, Any] = body_of(fixture("gitlab_note_hook.json"))
    payload["object_attributes"]["note"] = "Looks bad.\n/guard rollback"

    # WHEN GUARD reads it  THEN it finds the command, the MR and who wrote it
    note = parse_note(json.dumps(payload))
    assert isinstance(note, NoteCommand)
    assert (note.command, note.merge_request_url, note.merge_request_iid, note.username, note.user_id) == (
        "rollback", "http://example.com/gitlab-org/gitlab-test/merge_requests/1", 1, "root", 1)


def test_guard_ignores_the_published_note_hook_when_it_is_an_edit() -> None:
    payload: dict[str, Any] = body_of(fixture("gitlab_note_hook.json"))
    payload["object_attributes"].update(note="/guard proceed", action="update")
    result = parse_note(json.dumps(payload))
    assert isinstance(result, WebhookResult) and "edited" in result.message


# ---------------------------------------------------------------- the simulator, held to the same contract


def test_the_simulator_s_merge_request_hook_has_the_published_shape(gitlab: GitLabSimulator) -> None:
    iid = _open_mr(gitlab)
    gitlab.merge(PROJECT, iid)
    (delivery,) = [d for d in gitlab.hook_deliveries if d.event == "Merge Request Hook"]
    published = fixture("gitlab_merge_request_hook.json")
    assert check(MR_HOOK, body_of(published), delivery.payload, NULLABLE) == []
    assert [h for h in HEADERS if h not in delivery.headers] == []
    assert delivery.headers["X-Gitlab-Event"] == "Merge Request Hook"


def test_the_simulator_s_note_hooks_have_the_published_shape(gitlab: GitLabSimulator) -> None:
    # GIVEN notes of every kind the simulator sends: a person's, GUARD's own (API), an edit
    iid = _open_mr(gitlab)
    note = gitlab.comment_as(PROJECT, iid, "maria", "/guard proceed")
    gitlab.handle("POST", f"{API}/merge_requests/{iid}/notes",
                  {"body": "GUARD's own note"})
    gitlab.edit_note(PROJECT, iid, note["id"], "/guard rollback")

    # THEN each Note Hook has the published shape and headers
    published = body_of(fixture("gitlab_note_hook.json"))
    notes = [d for d in gitlab.hook_deliveries if d.event == "Note Hook"]
    assert [d.payload["object_attributes"]["action"] for d in notes] == ["create", "create", "update"]
    for delivery in notes:
        assert check(NOTE_HOOK, published, delivery.payload) == []
        assert [h for h in HEADERS if h not in delivery.headers] == []


# ---------------------------------------------------------------- the gates before a merge (REST API)

MR_GATES = [
    "iid", "state", "draft", "detailed_merge_status", "has_conflicts", "blocking_discussions_resolved",
    "merge_when_pipeline_succeeds", "sha", "source_branch", "target_branch", "description", "web_url",
    "head_pipeline.status", "head_pipeline.web_url", "head_pipeline.sha", "diff_refs.base_sha",
    "diff_refs.head_sha", "merge_error", "rebase_in_progress",
]
APPROVALS = ["approvals_required", "approvals_left", "approved_by.[].user.username", "approved_by.[].user.id"]
GATES_NULLABLE = frozenset({"merge_error", "head_pipeline.web_url"})


def test_guard_reads_the_gates_from_the_published_examples() -> None:
    # GIVEN GitLab's published single-MR and approvals examples  WHEN GUARD reads them
    from guard.adapters.gitlab_repo import merge_gates_from

    mr = body_of(fixture("gitlab_merge_request.json"))
    approvals = body_of(fixture("gitlab_merge_request_approvals.json"))
    assert check(MR_GATES, mr, mr, GATES_NULLABLE) == [] and check(APPROVALS, approvals, approvals) == []
    gates = merge_gates_from(mr, {"merge_method": "ff", "only_allow_merge_if_pipeline_succeeds": True}, approvals)

    # THEN it sees what blocks: one approval of two missing, and a required pipeline that failed
    assert (gates.approvals_required, gates.approvals_left, gates.approved_by) == (2, 1, ["root"])
    assert (gates.pipeline_status, gates.pipeline_must_succeed, gates.merge_method) == ("failed", True, "ff")
    assert gates.pipeline_url == "https://gitlab.com/marcel.amirault/test-project/-/pipelines/538317940"
    assert not gates.stale and not gates.draft and gates.head_sha == "e82eb4a098e32c796079ca3915e07487fc4db24c"


def test_the_simulator_s_merge_request_and_approvals_have_the_published_shape(gitlab: GitLabSimulator) -> None:
    # GIVEN a project with an approval rule and CI, and an MR whose pipeline ran
    gitlab.configure(PROJECT, approvals_required=2, ci=True, only_allow_merge_if_pipeline_succeeds=True)
    gitlab.push(PROJECT, "guard/upgrade", {"README.md": "fleet v3\n"})
    iid = _open_mr(gitlab)
    gitlab.approve(PROJECT, iid, "maria")

    # WHEN a client reads the MR (with its rebase state) and its approvals
    _, mr = gitlab.handle("GET", f"{API}/merge_requests/{iid}?include_rebase_in_progress=true", {})
    _, approvals = gitlab.handle("GET", f"{API}/merge_requests/{iid}/approvals", {})

    # THEN both have the published shape, and say what blocks
    assert check(MR_GATES, body_of(fixture("gitlab_merge_request.json")), mr, GATES_NULLABLE) == []
    assert check(APPROVALS, body_of(fixture("gitlab_merge_request_approvals.json")), approvals) == []
    assert (mr["detailed_merge_status"], approvals["approvals_left"]) == ("not_approved", 1)
    # AND without include_rebase_in_progress the field is absent, as on GitLab
    _, plain = gitlab.handle("GET", f"{API}/merge_requests/{iid}", {})
    assert "rebase_in_progress" not in plain


def test_the_simulator_s_rebase_is_asynchronous_as_documented(gitlab: GitLabSimulator) -> None:
    # GIVEN an MR behind its target on a fast-forward-only project
    gitlab.configure(PROJECT, merge_method="ff")
    iid = _open_mr(gitlab)
    gitlab.push(PROJECT, "main", {"CHANGELOG.md": "v1\n"})

    # WHEN a client asks for a rebase, asks again at once, then polls
    status, body = gitlab.handle("PUT", f"{API}/merge_requests/{iid}/rebase", {})
    with pytest.raises(ApiError) as again:
        gitlab.handle("PUT", f"{API}/merge_requests/{iid}/rebase", {})
    polls = [gitlab.handle("GET", f"{API}/merge_requests/{iid}?include_rebase_in_progress=true", {})[1]
             for _ in range(2)]

    # THEN 202 {"rebase_in_progress": true}, 409 while it is queued, then in progress, then done and mergeable
    assert (status, body, again.value.status) == (202, {"rebase_in_progress": True}, 409)
    assert [(p["rebase_in_progress"], p["merge_error"]) for p in polls] == [(True, None), (False, None)]
    assert polls[1]["detailed_merge_status"] == "mergeable"
