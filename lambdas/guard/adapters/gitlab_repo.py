"""GitLab: `GitOpsRepo` (GitLabRepo) and `ProjectMembers` (GitLabMembers) through python-gitlab.

Every public method looks up before it writes, so a Lambda task that runs twice leaves
one branch, one commit and one merge request. Errors leave as `TransientError` (worth a
Step Functions Retry) or `ExternalServiceError` (a person has to look), naming the
project and the operation.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import gitlab
import requests
from gitlab.v4.objects import Project, ProjectMergeRequest

from guard.errors import ExternalServiceError, TransientError
from guard.ports import FileChange, MergeRequest, Note

T = TypeVar("T")

# One HTTP attempt per call. Step Functions' Retry owns back-off (and sees each attempt in
# the execution history); python-gitlab's own loop would sleep inside the Lambda, up to 10
# times and for as long as a 429's Retry-After says, burning the function's timeout.
_NO_CLIENT_RETRY: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}
_TRANSIENT_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class GitLabRepo:
    """The GitLab operations GUARD needs, on one `gitlab.Gitlab` client."""

    def __init__(self, client: gitlab.Gitlab) -> None:
        self._gl = client

    @classmethod
    def from_token(cls, url: str, token: str, timeout_seconds: float = 10) -> GitLabRepo:
        """Client for `url` authenticated with a personal/project access token."""
        return cls(
            gitlab.Gitlab(url, private_token=token, timeout=timeout_seconds, retry_transient_errors=False)
        )

    # ------------------------------------------------------------------ GitOpsRepo

    def read_file(self, project: str, path: str, ref: str) -> str:
        with gitlab_errors(project, f"read {path}@{ref}"):
            return self._read(self._project(project), path, ref, missing_ok=False) or ""

    def ensure_branch(self, project: str, branch: str, ref: str) -> None:
        with gitlab_errors(project, f"ensure branch {branch} from {ref}"):
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

    def commit_files(self, project: str, branch: str, changes: list[FileChange], message: str) -> str | None:
        with gitlab_errors(project, f"commit to {branch}"):
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

    def ensure_merge_request(
        self, project: str, source_branch: str, target_branch: str, title: str, description: str
    ) -> MergeRequest:
        with gitlab_errors(project, f"ensure merge request {source_branch} -> {target_branch}"):
            p = self._project(project)
            existing = self._open_mr(p, project, source_branch, target_branch)
            if existing:
                return existing
            data = {
                "source_branch": source_branch, "target_branch": target_branch, "title": title,
                "description": description, "remove_source_branch": True,
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

    def get_merge_request(self, project: str, iid: int) -> MergeRequest:
        with gitlab_errors(project, f"get merge request !{iid}"):
            return _to_model(project, self._project(project).mergerequests.get(iid, **_NO_CLIENT_RETRY))

    def comment(self, project: str, iid: int, body: str) -> None:
        with gitlab_errors(project, f"comment on merge request !{iid}"):
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            mr.notes.create({"body": body}, **_NO_CLIENT_RETRY)

    def list_notes(self, project: str, iid: int) -> list[Note]:
        with gitlab_errors(project, f"list notes of merge request !{iid}"):
            mr = self._project(project).mergerequests.get(iid, lazy=True)
            notes = mr.notes.list(get_all=True, sort="asc", order_by="created_at", **_NO_CLIENT_RETRY)
            return sorted((_to_note(n.attributes) for n in notes), key=lambda n: n.id)

    def close_merge_request(self, project: str, iid: int) -> MergeRequest:
        with gitlab_errors(project, f"close merge request !{iid}"):
            mr = self._project(project).mergerequests.get(iid, **_NO_CLIENT_RETRY)
            if mr.state == "opened":
                mr.state_event = "close"
                mr.save(**_NO_CLIENT_RETRY)
            return _to_model(project, mr)

    # ------------------------------------------------------------------ helpers

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
def gitlab_errors(project: str, operation: str) -> Iterator[None]:
    """Map python-gitlab and transport errors to GUARD's; the message never carries the token."""
    where = f"GitLab {project}: {operation}"
    try:
        yield
    except gitlab.GitlabError as e:
        code = e.response_code
        detail = f"{where} failed: HTTP {code} {e.error_message}" if code else f"{where} failed: {e}"
        if code in _TRANSIENT_STATUS:
            raise TransientError(detail) from e
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
    )


def _username(user: object) -> str | None:
    return str(user["username"]) if isinstance(user, dict) and user.get("username") else None


def _to_note(attrs: dict[str, Any]) -> Note:
    raw = attrs.get("author")
    author: dict[str, Any] = raw if isinstance(raw, dict) else {}
    author_id = author.get("id")
    return Note(id=int(attrs["id"]), body=str(attrs.get("body") or ""),
                author_id=author_id if isinstance(author_id, int) else None,
                author_username=str(author.get("username") or ""), system=bool(attrs.get("system")))


class GitLabMembers:
    """`ProjectMembers`: effective access levels (inherited group memberships included),
    `GET /projects/:id/members/all/:user_id`, on one `gitlab.Gitlab` client."""

    def __init__(self, client: gitlab.Gitlab) -> None:
        self._gl = client

    @classmethod
    def from_token(cls, url: str, token: str, timeout_seconds: float = 10) -> GitLabMembers:
        return cls(gitlab.Gitlab(url, private_token=token, timeout=timeout_seconds, retry_transient_errors=False))

    def access_level(self, project: str, user_id: int) -> int | None:
        with gitlab_errors(project, f"read member {user_id}"):
            try:
                member = self._gl.projects.get(project, lazy=True).members_all.get(user_id, **_NO_CLIENT_RETRY)
            except gitlab.GitlabGetError as e:
                if e.response_code == 404:
                    return None  # not a member (nor inherited)
                raise
            return int(member.access_level)
