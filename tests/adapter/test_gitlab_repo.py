"""GitLabRepo with the real python-gitlab, over HTTP, against the local GitLab simulator."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from guard.adapters.gitlab_repo import GitLabRepo
from guard.errors import ExternalServiceError, RateLimited, TransientError
from guard.gitops.helm_release import read_chart_version, set_chart_version
from guard.ports import FileChange
from guard.retry import RetryPolicy

from sandbox.sims.gitlab_sim import GitLabSimulator

TOKEN = "glpat-sim"
PROJECT = "platform/istio-fleet"
PATH = "clusters/prod-eu-1/istio/helmrelease.yaml"
BRANCH = "guard/istio-1.21.0/prod-eu"
RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: istiod   # control plane
spec:
  chart:
    spec:
      chart: istiod
      version: "1.20.3"
"""


@pytest.fixture
def sim() -> Iterator[GitLabSimulator]:
    with GitLabSimulator(token=TOKEN) as s:
        s.add_project(PROJECT, {PATH: RELEASE, "README.md": "fleet\n"})
        yield s


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def repo(sim: GitLabSimulator, sleeps: list[float]) -> GitLabRepo:
    return GitLabRepo.from_token(sim.url, TOKEN, timeout_seconds=5, retry=RetryPolicy(sleep=sleeps.append))


def open_upgrade_mr(repo: GitLabRepo) -> tuple[str | None, Any]:
    """What the Open MR task does: branch, bumped file, merge request."""
    repo.ensure_branch(PROJECT, BRANCH, "main")
    bumped = set_chart_version(repo.read_file(PROJECT, PATH, "main"), "1.21.0")
    commit = repo.commit_files(PROJECT, BRANCH, [FileChange(path=PATH, content=bumped)], "istio 1.21.0")
    mr = repo.ensure_merge_request(PROJECT, BRANCH, "main", "Upgrade Istio to 1.21.0", "health report")
    return commit, mr


def calls(sim: GitLabSimulator, method: str, suffix: str) -> int:
    return sum(1 for r in sim.requests if r.method == method and r.path.endswith(suffix))


def test_upgrade_mr_flow_bumps_the_file_on_a_branch_and_opens_one_mr(sim, repo):
    # GIVEN a fleet repo whose HelmRelease pins 1.20.3
    # WHEN GUARD opens the upgrade merge request
    commit, mr = open_upgrade_mr(repo)

    # THEN the branch holds the bumped file, formatting kept, and main is untouched
    assert commit is not None and sim.branch_head(PROJECT, BRANCH) == commit
    assert sim.file_at(PROJECT, PATH, BRANCH) == RELEASE.replace('"1.20.3"', '"1.21.0"')
    assert sim.file_at(PROJECT, PATH, "main") == RELEASE
    # AND one open MR from the branch into main is returned with a link a person can open
    assert (mr.project, mr.iid, mr.state, mr.source_branch, mr.target_branch) == (
        PROJECT, 1, "opened", BRANCH, "main",
    )
    assert mr.web_url == f"{sim.url}/{PROJECT}/-/merge_requests/1"
    assert [m["description"] for m in sim.merge_requests(PROJECT)] == ["health report"]


def test_rerunning_the_task_opens_no_second_mr_and_makes_no_empty_commit(sim, repo):
    # GIVEN the upgrade MR is already open (the Lambda task ran once)
    _, first = open_upgrade_mr(repo)

    # WHEN the task runs again
    commit, again = open_upgrade_mr(repo)

    # THEN nothing new is written: same MR, no commit, no extra branch
    assert commit is None
    assert again == first
    assert len(sim.merge_requests(PROJECT)) == 1
    assert calls(sim, "POST", "/repository/commits") == 1
    assert calls(sim, "POST", "/repository/branches") == 1


def test_a_wrong_token_is_not_retryable_and_is_never_echoed(sim):
    # GIVEN a client with a revoked token
    repo = GitLabRepo.from_token(sim.url, "glpat-revoked")

    # WHEN it reads a file
    with pytest.raises(ExternalServiceError) as error:
        repo.read_file(PROJECT, PATH, "main")

    # THEN the error names the project, the operation and the status, not the token
    message = str(error.value)
    assert PROJECT in message and f"read {PATH}@main" in message and "401" in message
    assert "revoked" not in message and TOKEN not in message


def test_one_503_is_retried_and_the_commit_lands_once(sim, repo, sleeps):
    # GIVEN GitLab answers the next commit with 503
    sim.fail_next("POST", r"/repository/commits$", 503)
    repo.ensure_branch(PROJECT, BRANCH, "main")

    # WHEN GUARD commits
    commit = repo.commit_files(PROJECT, BRANCH, [FileChange(path=PATH, content="x: 1\n")], "m")

    # THEN the policy tried again after one jittered backoff, and the file is committed once
    assert commit is not None
    assert calls(sim, "POST", "/repository/commits") == 2
    assert sim.file_at(PROJECT, PATH, BRANCH) == "x: 1\n"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= RetryPolicy().base_seconds


def test_a_503_that_outlasts_the_policy_is_transient_and_names_the_attempts(sim, repo, sleeps):
    # GIVEN GitLab answers every commit with 503
    sim.fail_next("POST", r"/repository/commits$", 503, times=10)
    repo.ensure_branch(PROJECT, BRANCH, "main")

    # WHEN GUARD commits
    with pytest.raises(TransientError, match=r"platform/istio-fleet: commit to .*HTTP 503.*gave up after 4 attempt"):
        repo.commit_files(PROJECT, BRANCH, [FileChange(path=PATH, content="x: 1\n")], "m")

    # THEN python-gitlab did not retry on its own (4 requests = the policy's attempts), nothing was committed
    assert calls(sim, "POST", "/repository/commits") == 4
    assert len(sleeps) == 3
    assert sim.file_at(PROJECT, PATH, BRANCH) == RELEASE


def test_a_short_retry_after_is_waited_exactly(sim, repo, sleeps):
    # GIVEN GitLab rate-limits the MR list once with Retry-After: 3
    sim.fail_next("GET", r"/merge_requests$", 429, retry_after=3)
    repo.ensure_branch(PROJECT, BRANCH, "main")

    # WHEN GUARD ensures the MR
    mr = repo.ensure_merge_request(PROJECT, BRANCH, "main", "t", "d")

    # THEN it waited what GitLab asked, then opened one MR
    assert sleeps == [3.0]
    assert [m["iid"] for m in sim.merge_requests(PROJECT)] == [mr.iid]


def test_a_long_retry_after_is_left_to_the_state_machine_with_its_length(sim, repo, sleeps):
    # GIVEN GitLab rate-limits the MR list with Retry-After: 120
    sim.fail_next("GET", r"/merge_requests$", 429, retry_after=120)
    repo.ensure_branch(PROJECT, BRANCH, "main")

    # WHEN GUARD ensures the MR
    started = time.monotonic()
    with pytest.raises(RateLimited) as raised:
        repo.ensure_merge_request(PROJECT, BRANCH, "main", "t", "d")

    # THEN it does not sleep inside the Lambda; the error carries the wait for a Wait state
    assert time.monotonic() - started < 5 and sleeps == []
    assert raised.value.retry_after_seconds == 120
    assert sim.merge_requests(PROJECT) == []


def test_a_timeout_and_a_refused_connection_are_transient(sim):
    # GIVEN GitLab holds every branch look-up longer than the client's timeout
    sim.stall_next("GET", r"/repository/branches/", seconds=2, times=4)
    quick = RetryPolicy(sleep=lambda _: None)
    slow = GitLabRepo.from_token(sim.url, TOKEN, timeout_seconds=0.3, retry=quick)
    # AND nothing listens on another port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    down = GitLabRepo.from_token(f"http://127.0.0.1:{closed_port}", TOKEN, timeout_seconds=2, retry=quick)

    # WHEN / THEN both are worth a retry
    with pytest.raises(TransientError, match="ensure branch"):
        slow.ensure_branch(PROJECT, BRANCH, "main")
    with pytest.raises(TransientError, match="ConnectionError"):
        down.get_merge_request(PROJECT, 1)


def test_a_missing_file_or_merge_request_is_a_permanent_error(repo):
    # GIVEN a repo without the requested file or MR
    # WHEN / THEN the 404s are not retried
    with pytest.raises(ExternalServiceError, match="404"):
        repo.read_file(PROJECT, "clusters/nope.yaml", "main")
    with pytest.raises(ExternalServiceError, match="get merge request !42"):
        repo.get_merge_request(PROJECT, 42)


class _HookReceiver:
    """A local endpoint standing in for API Gateway: records each delivery, answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[Message, dict[str, Any]]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.received.append((self.headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/gitlab"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_HookReceiver]:
    r = _HookReceiver()
    yield r
    r.close()


def test_merging_the_mr_posts_a_merge_request_hook_and_updates_main(sim, repo, receiver):
    # GIVEN an open upgrade MR, a project webhook, and a follower of merged commits
    sim.add_hook(PROJECT, receiver.url, token="hook-secret")
    followed: list[tuple[str, int, str]] = []
    sim.add_merge_listener(lambda project, iid, sha: followed.append((project, iid, sha)))
    _, mr = open_upgrade_mr(repo)

    # WHEN a reviewer merges it
    sha = sim.merge(PROJECT, mr.iid)

    # THEN the webhook received one GitLab Merge Request Hook with the token and a delivery id
    assert len(receiver.received) == 1
    headers, payload = receiver.received[0]
    assert headers["X-Gitlab-Event"] == "Merge Request Hook"
    assert headers["X-Gitlab-Token"] == "hook-secret"
    assert headers["X-Gitlab-Event-UUID"] == sim.hook_deliveries[0].event_uuid
    assert payload["object_kind"] == "merge_request"
    assert payload["project"]["path_with_namespace"] == PROJECT
    attrs = payload["object_attributes"]
    assert (attrs["iid"], attrs["action"], attrs["state"], attrs["merge_commit_sha"]) == (
        mr.iid, "merge", "merged", sha,
    )
    assert (attrs["source_branch"], attrs["target_branch"], attrs["url"]) == (BRANCH, "main", mr.web_url)
    assert sim.hook_deliveries[0].status == 200
    # AND main carries the new version, the adapter sees the merge, the follower got the sha
    assert read_chart_version(sim.file_at(PROJECT, PATH, "main") or "") == "1.21.0"
    assert repo.get_merge_request(PROJECT, mr.iid).model_dump() == mr.model_copy(
        update={"state": "merged", "merge_commit_sha": sha, "merged_by": "guard-sim"}
    ).model_dump()
    assert followed == [(PROJECT, mr.iid, sha)]


def test_a_resend_keeps_the_idempotency_key_and_gets_a_new_event_uuid(sim, repo, receiver):
    # GIVEN a merge delivered to the webhook (GitLab 17.4+ sends Idempotency-Key)
    sim.add_hook(PROJECT, receiver.url, token="hook-secret")
    _, mr = open_upgrade_mr(repo)
    sim.merge(PROJECT, mr.iid)
    first_headers, first_payload = receiver.received[0]

    # WHEN someone presses "Resend Request" on that delivery
    sim.resend(sim.hook_deliveries[0])

    # THEN the receiver gets the same payload and Idempotency-Key under a new X-Gitlab-Event-UUID
    headers, payload = receiver.received[1]
    assert payload == first_payload and headers["X-Gitlab-Event"] == "Merge Request Hook"
    assert headers["Idempotency-Key"] == first_headers["Idempotency-Key"] != ""
    assert headers["X-Gitlab-Event-UUID"] != first_headers["X-Gitlab-Event-UUID"]


def test_closing_the_mr_posts_a_close_hook(sim, repo, receiver):
    # GIVEN an open upgrade MR and a project webhook
    sim.add_hook(PROJECT, receiver.url, token="hook-secret")
    _, mr = open_upgrade_mr(repo)

    # WHEN a reviewer closes it
    sim.close(PROJECT, mr.iid)

    # THEN the hook says close, main is untouched and the adapter reports closed
    attrs = receiver.received[0][1]["object_attributes"]
    assert (attrs["action"], attrs["state"], attrs["merge_commit_sha"]) == ("close", "closed", None)
    assert sim.file_at(PROJECT, PATH, "main") == RELEASE
    assert repo.get_merge_request(PROJECT, mr.iid).state == "closed"


def test_comment_adds_a_note_to_the_mr(sim, repo):
    # GIVEN an open upgrade MR
    _, mr = open_upgrade_mr(repo)

    # WHEN GUARD comments the validation verdict
    repo.comment(PROJECT, mr.iid, "Validation passed on prod-eu-1")

    # THEN reviewers see it on the MR
    assert sim.notes(PROJECT, mr.iid) == ["Validation passed on prod-eu-1"]


def test_list_notes_reads_every_note_oldest_first_with_its_author(sim, repo):
    # GIVEN GUARD's comment, then a user's
    _, mr = open_upgrade_mr(repo)
    repo.comment(PROJECT, mr.iid, "GUARD needs a decision")
    user_id = sim.add_user("maria")
    sim.comment_as(PROJECT, mr.iid, "maria", "/guard proceed")

    # WHEN the notes are listed
    notes = repo.list_notes(PROJECT, mr.iid)

    # THEN both come back in order, each with who wrote it
    assert [(n.body, n.author_username) for n in notes] == [("GUARD needs a decision", "guard-sim"),
                                                           ("/guard proceed", "maria")]
    assert notes[1].author_id == user_id and not notes[1].system
