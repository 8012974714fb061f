"""GitLab: `GitOpsRepo` (GitLabRepo) and `ProjectMembers` (GitLabMembers) through python-gitlab.

Every public method looks up before it writes, so a Lambda task that runs twice leaves
one branch, one commit and one merge request, and a call the retry policy (guard.retry) tries
again is safe. Errors leave as `TransientError` (timeouts, 429, 5xx: the policy retries them,
honouring `Retry-After`, then the Step Functions Retry), `RateLimited` (a wait too long for a
Lambda, waited out by the state machine) or `ExternalServiceError` (a person has to look),
naming the project and the operation.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Self, TypeVar

import gitlab
import requests
from gitlab.v4.objects import Project, ProjectMergeRequest

from guard.clock import SystemClock
from guard.errors import ExternalServiceError, TransientError
from guard.outbound import gitlab_body
from guard.ports import Clock, FileChange, GitLabUser, MergeGates, MergeRequest, Note
from guard.retry import RetryPolicy, policy, retry_after_seconds
from guard.vendor_slots import VendorSlots, unlimited

T = TypeVar("T")

# One HTTP attempt per python-gitlab call: guard.retry owns back-off. python-gitlab's own loop
# would sleep inside the Lambda, up to 10 times and for as long as a 429's Retry-After says,
# burning the function's timeout.
_NO_CLIENT_RETRY: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}
_TRANSIENT_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
# A rebase runs in GitLab's background jobs: GUARD looks this many times, this far apart, then leaves the
# rest to its next pass (the MR then still shows rebase_in_progress).
_REBASE_POLLS = 20
_REBASE_POLL_SECONDS = 0.5


class _GitLabClient:
    """One `gitlab.Gitlab` client whose calls go through the retry policy, with each response's
    `Retry-After` remembered (python-gitlab's errors do not carry headers)."""

    def __init__(self, client: gitlab.Gitlab, retry: RetryPolicy | None = None, clock: Clock | None = None,
                 slots: VendorSlots | None = None) -> None:
        self._gl = client
        self._slots = slots  # execution.vendor_concurrency: held for one request, never across a wait
        self._clock: Clock = clock or SystemClock()
        self._retry = retry or policy(self._clock.sleep)
        self._last = threading.local()
        client.session.hooks.setdefault("response", []).append(self._remember_wait)

    @classmethod
    def from_token(cls, url: str, token: str, timeout_seconds: float = 10, *,
                   retry: RetryPolicy | None = None, clock: Clock | None = None,
                   slots: VendorSlots | None = None) -> Self:
        """Client for `url` authenticated with a personal/project access token."""
        return cls(gitlab.Gitlab(url, private_token=token, timeout=timeout_seconds, retry_transient_errors=False),
                   retry=retry, clock=clock, slots=slots)

    def _remember_wait(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.retry_after = retry_after_seconds(response.headers.get("Retry-After"), self._clock.now()) \
            if response.status_code in (429, 503) else None

    def _call(self, project: str, operation: str, fn: Callable[[], T]) -> T:
        """`fn()` with errors mapped (`gitlab_errors`) and retried as the policy says."""
        def once() -> T:
            self._last.retry_after = None
            with (self._slots.held() if self._slots else unlimited()), \
                    gitlab_errors(project, operation, lambda: getattr(self._last, "retry_after", None)):
                return fn()
        return self._retry.call(f"GitLab {project}: {operation}", once)


class GitLabRepo(_GitLabClient):
    """The GitLab operations GUARD needs, on one `gitlab.Gitlab` client."""

    # ------------------------------------------------------------------ GitOpsRepo

    def read_file(self, project: str, path: str, ref: str) -> str:
        def go() -> Any:  # one attempt; _call maps and retries it
            return self._read(self._project(project), path, ref, missing_ok=False) or ""
        return self._call(project, f"read {path}@{ref}", go)

    def list_files(self, project: str, path: str, ref: str) -> list[str]:
        return sorted(self.list_blobs(project, path, ref))

    def list_blobs(self, project: str, path: str, ref: str) -> dict[str, str]:
        def go() -> Any:
            # GET /projects/:id/repository/tree?recursive=true, every page: blobs are files, trees directories.
            try:
                items = self._project(project).repository_tree(
                    path=path, ref=ref, recursive=True, get_all=True, **_NO_CLIENT_RETRY)
            except gitlab.GitlabGetError as e:
                if e.response_code == 404:  # no such directory (or an empty repository)
                    return {}
                raise
            return {str(item["path"]): str(item["id"]) for item in items if item.get("type") == "blob"}
        return self._call(project, f"list {path or '/'}@{ref}", go)

    def branch_head(self, project: str, branch: str) -> str:
        def go() -> Any:  # GET /projects/:id/repository/branches/:branch
            return str(self._project(project).branches.get(branch, **_NO_CLIENT_RETRY).commit["id"])
        return self._call(project, f"read branch {branch}", go)

    def ensure_branch(self, project: str, branch: str, ref: str) -> None:
        def go() -> Any:
            p = self._project(project)
            if self._exists(lambda: p.branches.get(branch, **_NO_CLIENT_RETRY)):
                return
            try:
                p.branches.create({"branch": branch, "ref": ref}, **_NO_CLIENT_RETRY)
            except gitlab.GitlabCreateError as e:
                # A concurrent run created it between our look-up and the create: same outcome.
                if e.response_code == 400 and "already exists" in str(e.error_message):
                    return
                raise
        return self._call(project, f"ensure branch {branch} from {ref}", go)

    def commit_files(self, project: str, branch: str, changes: list[FileChange], message: str) -> str | None:
        def go() -> Any:
            p = self._project(project)
            actions = []
            for change in changes:
                current = self._read(p, change.path, branch, missing_ok=True)
                if current == change.content:
                    continue  # already there: a re-run must not add an empty commit
                action = "create" if current is None else "update"
                actions.append({"action": action, "file_path": change.path, "content": change.content})
            if not actions:
                return None
            commit = p.commits.create(
                {"branch": branch, "commit_message": message, "actions": actions}, **_NO_CLIENT_RETRY
            )
            return str(commit.id)
        return self._call(project, f"commit to {branch}", go)

    def ensure_merge_request(
        self, project: str, source_branch: str, target_branch: str, title: str, description: str
    ) -> MergeRequest:
        def go() -> Any:
            p = self._project(project)
            existing = self._open_mr(p, project, source_branch, target_branch)
            if existing:
                return existing
            data = {  # the last pass before GitLab: redacted, nothing that acts (guard.outbound)
                "source_branch": source_branch, "target_branch": target_branch, "title": gitlab_body(title),
                "description": gitlab_body(description), "remove_source_branch": True,
            }
            try:
                mr = p.mergerequests.create(data, **_NO_CLIENT_RETRY)
            except gitlab.GitlabCreateError as e:
                # 409: another run opened it after our look-up; return that one, never a second MR.
                raced = None
                if e.response_code == 409:
                    raced = self._open_mr(p, project, source_branch, target_branch)
                if raced:
                    return raced
                raise
            return _to_model(project, mr)
        return self._call(project, f"ensure merge request {source_branch} -> {target_branch}", go)

    def get_merge_request(self, project: str, iid: int) -> MergeRequest:
        def go() -> Any:
            return _to_model(project, self._project(project).mergerequests.get(iid, **_NO_CLIENT_RETRY))
        return self._call(project, f"get merge request !{iid}", go)

    def comment(self, project: str, iid: int, body: str) -> None:
        body = gitlab_body(body)  # the last pass before GitLab: redacted, nothing that acts (guard.outbound)

        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            mr.notes.create({"body": body}, **_NO_CLIENT_RETRY)
        return self._call(project, f"comment on merge request !{iid}", go)

    def list_notes(self, project: str, iid: int) -> list[Note]:
        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            notes = mr.notes.list(get_all=True, sort="asc", order_by="created_at", **_NO_CLIENT_RETRY)
            return sorted((_to_note(n.attributes) for n in notes), key=lambda n: n.id)
        return self._call(project, f"list notes of merge request !{iid}", go)

    def close_merge_request(self, project: str, iid: int) -> MergeRequest:
        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, **_NO_CLIENT_RETRY)
            if mr.state == "opened":
                mr.state_event = "close"
                mr.save(**_NO_CLIENT_RETRY)
            return _to_model(project, mr)
        return self._call(project, f"close merge request !{iid}", go)

    # ------------------------------------------------------------------ the gates before a merge

    def merge_gates(self, project: str, iid: int) -> MergeGates:
        def go() -> Any:
            p = self._project(project)
            mr = p.mergerequests.get(iid, include_rebase_in_progress=True, **_NO_CLIENT_RETRY)
            settings = self._gl.projects.get(project, **_NO_CLIENT_RETRY).attributes
            try:
                approvals = mr.approvals.get(**_NO_CLIENT_RETRY).attributes
            except gitlab.GitlabGetError as e:
                if e.response_code not in (403, 404):
                    raise
                approvals = {}  # no approvals API on this instance/tier: no approval rule blocks the merge
            return merge_gates_from(mr.attributes, settings, approvals)
        return self._call(project, f"read the merge gates of !{iid}", go)

    def rebase_merge_request(self, project: str, iid: int) -> MergeGates:
        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            try:
                mr.rebase(**_NO_CLIENT_RETRY)
            except gitlab.GitlabMRRebaseError as e:
                if e.response_code != 409:  # 409: a rebase is already running; wait for that one
                    raise
        self._call(project, f"rebase !{iid}", go)
        gates = self.merge_gates(project, iid)
        for _ in range(_REBASE_POLLS):  # asynchronous: rebase_in_progress until GitLab's job is done
            if not gates.rebase_in_progress:
                break
            self._clock.sleep(_REBASE_POLL_SECONDS)
            gates = self.merge_gates(project, iid)
        return gates

    def replace_branch(self, project: str, branch: str, start_branch: str, changes: list[FileChange],
                       message: str) -> str | None:
        def go() -> Any:
            p = self._project(project)
            start = p.branches.get(start_branch, **_NO_CLIENT_RETRY).commit["id"]
            actions = []
            for change in changes:
                current = self._read(p, change.path, start, missing_ok=True)
                if current != change.content:
                    action = "create" if current is None else "update"
                    actions.append({"action": action, "file_path": change.path, "content": change.content})
            if not actions:
                return None
            # A re-run after a success finds the branch one commit on top of that head, with these contents.
            if self._exists(lambda: p.branches.get(branch, **_NO_CLIENT_RETRY)):
                head = p.branches.get(branch, **_NO_CLIENT_RETRY).commit
                if list(head.get("parent_ids") or []) == [start] and all(
                        self._read(p, c.path, head["id"], missing_ok=True) == c.content for c in changes):
                    return str(head["id"])
            commit = p.commits.create({"branch": branch, "start_sha": start, "force": True,
                                       "commit_message": message, "actions": actions}, **_NO_CLIENT_RETRY)
            return str(commit.id)
        return self._call(project, f"replace {branch} from {start_branch}", go)

    def upsert_note(self, project: str, iid: int, marker: str, body: str, *, create: bool = True) -> int | None:
        body = gitlab_body(body)  # the last pass before GitLab: redacted, nothing that acts (guard.outbound)
        if marker not in body:
            raise ValueError(f"the status note must contain its marker {marker!r}")

        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            me = self._me()
            notes = mr.notes.list(get_all=True, sort="asc", order_by="created_at", **_NO_CLIENT_RETRY)
            mine = [n for n in notes if marker in str(n.attributes.get("body") or "")
                    and _to_note(n.attributes).author_id == me and not n.attributes.get("system")]
            if not mine:
                return int(mr.notes.create({"body": body}, **_NO_CLIENT_RETRY).id) if create else None
            note = mine[0]  # the first one GUARD wrote stays the one: it is edited, never repeated
            if note.attributes.get("body") != body:
                note.body = body
                note.save(**_NO_CLIENT_RETRY)
            return int(note.id)
        return self._call(project, f"update the status note of !{iid}", go)

    def update_description(self, project: str, iid: int, description: str) -> None:
        description = gitlab_body(description)

        def go() -> Any:
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            mr.description = description
            mr.save(**_NO_CLIENT_RETRY)
        return self._call(project, f"update the description of !{iid}", go)

    def set_auto_merge(self, project: str, iid: int, sha: str) -> bool:
        def go() -> Any:
            p = self._project(project)
            try:
                # auto_merge (GitLab 17.11+) and its older name: an instance ignores the one it does not know.
                self._gl.http_put(f"/projects/{p.encoded_id}/merge_requests/{iid}/merge", post_data={
                    "auto_merge": True, "merge_when_pipeline_succeeds": True, "sha": sha}, **_NO_CLIENT_RETRY)
            except gitlab.GitlabHttpError as e:
                if e.response_code in (405, 406, 409, 422):  # not now: not mergeable, or the head moved
                    return False
                raise
            return True
        return self._call(project, f"set auto-merge on !{iid}", go)

    # ------------------------------------------------------------------ helpers

    def _me(self) -> int:
        """The token's account id (`GET /user`), once per client: GUARD edits only its own notes."""
        known = getattr(self, "_my_id", None)
        if known is None:
            response = self._gl.http_get("/user", **_NO_CLIENT_RETRY)
            if not isinstance(response, dict) or not isinstance(response.get("id"), int):
                raise ExternalServiceError("GitLab GET /user did not return a user")
            known = self._my_id = int(response["id"])
        return int(known)

    def _project(self, project: str) -> Project:
        # lazy: no GET /projects/:id round trip; a missing project surfaces as 404 on the real call.
        return self._gl.projects.get(project, lazy=True)

    def _read(self, p: Project, path: str, ref: str, *, missing_ok: bool) -> str | None:
        try:
            f = p.files.get(file_path=path, ref=ref, **_NO_CLIENT_RETRY)
        except gitlab.GitlabGetError as e:
            if missing_ok and e.response_code == 404:
                return None
            raise
        return base64.b64decode(f.content).decode("utf-8")

    def _open_mr(self, p: Project, project: str, source: str, target: str) -> MergeRequest | None:
        found = p.mergerequests.list(state="opened", source_branch=source, get_all=True, **_NO_CLIENT_RETRY)
        mine = sorted((mr for mr in found if mr.target_branch == target), key=lambda mr: mr.iid)
        if mine:
            return _to_model(project, mine[0])
        if found:
            raise ExternalServiceError(
                f"GitLab {project}: branch {source} already has open merge request !{found[0].iid} "
                f"into {found[0].target_branch}, not {target}"
            )
        return None

    @staticmethod
    def _exists(get: Callable[[], T]) -> bool:
        try:
            get()
        except gitlab.GitlabGetError as e:
            if e.response_code == 404:
                return False
            raise
        return True



@contextmanager
def gitlab_errors(project: str, operation: str,
                  asked_wait: Callable[[], float | None] = lambda: None) -> Iterator[None]:
    """Map python-gitlab and transport errors to GUARD's; the message never carries the token.
    `asked_wait`: the Retry-After of the failed response, when the caller kept it."""
    where = f"GitLab {project}: {operation}"
    try:
        yield
    except gitlab.GitlabError as e:
        code = e.response_code
        detail = f"{where} failed: HTTP {code} {e.error_message}" if code else f"{where} failed: {e}"
        if code in _TRANSIENT_STATUS:
            raise TransientError(detail, retry_after=asked_wait()) from e
        raise ExternalServiceError(detail) from e
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
        raise TransientError(f"{where} failed: {type(e).__name__}: {e}") from e
    except requests.RequestException as e:
        raise ExternalServiceError(f"{where} failed: {type(e).__name__}") from e


def _to_model(project: str, mr: ProjectMergeRequest) -> MergeRequest:
    return MergeRequest(
        project=project,
        iid=mr.iid,
        web_url=mr.web_url,
        source_branch=mr.source_branch,
        target_branch=mr.target_branch,
        state=mr.state,
        merge_commit_sha=mr.merge_commit_sha,
        merged_by=_username(getattr(mr, "merge_user", None)) or _username(getattr(mr, "merged_by", None)),
        description=str(getattr(mr, "description", None) or ""),
    )


def merge_gates_from(mr: dict[str, Any], project: dict[str, Any], approvals: dict[str, Any]) -> MergeGates:
    """The gates from GitLab's answers: the single MR, its project, its approvals (empty: no approvals API)."""
    pipeline = mr.get("head_pipeline") if isinstance(mr.get("head_pipeline"), dict) else None
    raw = approvals.get("approved_by")
    approved: list[Any] = raw if isinstance(raw, list) else []
    return MergeGates(
        state=str(mr.get("state") or ""), detailed_merge_status=mr.get("detailed_merge_status"),
        draft=bool(mr.get("draft") or mr.get("work_in_progress")), has_conflicts=bool(mr.get("has_conflicts")),
        approvals_required=int(approvals.get("approvals_required") or 0),
        approvals_left=int(approvals.get("approvals_left") or 0),
        approved_by=[u for u in (_username(a.get("user")) for a in approved if isinstance(a, dict)) if u],
        pipeline_status=str(pipeline["status"]) if pipeline and pipeline.get("status") else None,
        pipeline_url=str(pipeline["web_url"]) if pipeline and pipeline.get("web_url") else None,
        pipeline_must_succeed=bool(project.get("only_allow_merge_if_pipeline_succeeds")),
        merge_method=str(project.get("merge_method") or "merge"),
        rebase_in_progress=bool(mr.get("rebase_in_progress")), merge_error=mr.get("merge_error") or None,
        auto_merge=bool(mr.get("merge_when_pipeline_succeeds") or mr.get("auto_merge_enabled")),
        head_sha=mr.get("sha"), discussions_resolved=mr.get("blocking_discussions_resolved") is not False)


def _username(user: object) -> str | None:
    return str(user["username"]) if isinstance(user, dict) and user.get("username") else None


def _to_note(attrs: dict[str, Any]) -> Note:
    raw = attrs.get("author")
    author: dict[str, Any] = raw if isinstance(raw, dict) else {}
    author_id = author.get("id")
    return Note(id=int(attrs["id"]), body=str(attrs.get("body") or ""),
                author_id=author_id if isinstance(author_id, int) else None,
                author_username=str(author.get("username") or ""), system=bool(attrs.get("system")))


class GitLabMembers(_GitLabClient):
    """`ProjectMembers`: effective access levels (inherited group memberships included),
    `GET /projects/:id/members/all/:user_id`, and the token's own account (`GET /user`), on one
    `gitlab.Gitlab` client."""

    # The token's account, per (GitLab URL, token digest), for the life of the Lambda environment:
    # it only changes with the token, and every `/guard` comment asks for it.
    _whoami: ClassVar[dict[tuple[str, str], GitLabUser]] = {}
    _whoami_lock: ClassVar[threading.Lock] = threading.Lock()

    def current_user(self) -> GitLabUser:
        key = (self._gl.url, hashlib.sha256(str(self._gl.private_token or "").encode()).hexdigest())
        with self._whoami_lock:
            known = self._whoami.get(key)
        if known is not None:
            return known

        def go() -> Any:
            response = self._gl.http_get("/user", **_NO_CLIENT_RETRY)
            if not isinstance(response, dict) or not isinstance(response.get("id"), int):
                raise ExternalServiceError("GitLab GET /user did not return a user")
            return GitLabUser(id=response["id"], username=str(response.get("username") or ""))
        user: GitLabUser = self._call("(token owner)", "read the current user", go)
        with self._whoami_lock:
            self._whoami[key] = user
        return user

    def access_level(self, project: str, user_id: int) -> int | None:
        def go() -> Any:
            try:
                member = self._gl.projects.get(project, lazy=True).members_all.get(user_id, **_NO_CLIENT_RETRY)
            except gitlab.GitlabGetError as e:
                if e.response_code == 404:
                    return None  # not a member (nor inherited)
                raise
            return int(member.access_level)
        return self._call(project, f"read member {user_id}", go)
