"""In-memory GitLab projects for the simulator: branches, commits (full file snapshots), MRs, notes,
and what stands before a merge: the project's merge method, approval rule, pipelines per head sha,
draft state, conflicts and staleness (`detailed_merge_status`), rebase.

Not thread-safe on its own: `GitLabSimulator` holds one lock around every call.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox.sims.gitlab_merge import MergeConflict, merge_trees

# GitLab's rebase failure, as the API documents it in `merge_error` ('Rebase a merge request').
REBASE_FAILED = "Rebase failed. Please rebase locally"
PIPELINE_RUNNING = frozenset({"created", "waiting_for_resource", "preparing", "pending", "running"})

class ApiError(Exception):
    """An API answer other than 2xx; `body` is what GitLab would send."""

    def __init__(self, status: int, message: Any) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.body: dict[str, Any] = {"message": message}


@dataclass
class Commit:
    id: str
    parents: list[str]
    message: str
    files: dict[str, str]
    created_at: str


@dataclass
class MergeRequestRecord:
    id: int
    iid: int
    source_branch: str
    target_branch: str
    title: str
    description: str
    remove_source_branch: bool
    created_at: str
    updated_at: str
    state: str = "opened"
    merge_commit_sha: str | None = None
    merged_at: str | None = None
    closed_at: str | None = None
    merged_head: str | None = None  # source head at merge time; the branch may be deleted
    notes: list[dict[str, Any]] = field(default_factory=list)
    draft: bool = False
    approved_by: list[dict[str, Any]] = field(default_factory=list)  # users
    rebase_pending: bool = False  # PUT rebase asked; done once the next read has shown it in progress
    merge_error: str | None = None
    auto_merge: bool = False  # merge_when_pipeline_succeeds / auto_merge set


@dataclass
class Project:
    id: int
    path: str
    default_branch: str
    web_url: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> head commit id
    commits: dict[str, Commit] = field(default_factory=dict)
    mrs: dict[int, MergeRequestRecord] = field(default_factory=dict)
    # Merge settings (GitLab's project API names): merge | rebase_merge | ff.
    merge_method: str = "merge"
    only_allow_merge_if_pipeline_succeeds: bool = False
    approvals_required: int = 0  # one project approval rule: this many approvals from anyone but the author
    reset_approvals_on_push: bool = True  # a pushed commit removes approvals; a rebase through the API does not
    ci: bool = False  # every new branch head gets a pipeline
    pipeline_start: str = "running"  # the status a new pipeline has
    pipeline_seconds: float | None = None  # a running pipeline succeeds this long after it started (None: never)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)  # head sha -> its latest pipeline


# The account the API token belongs to (GUARD's bot): it authors what the API writes.
TOKEN_USER = {"id": 1, "username": "guard-sim", "name": "GUARD simulator", "state": "active"}
_USER = TOKEN_USER
_STATE_ID = {"opened": 1, "closed": 2, "merged": 3, "locked": 4}


class GitLabStore:
    """Projects keyed by id and by path; the operations the REST routes and the test API share."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.projects: dict[int, Project] = {}
        self._ids = itertools.count(1)  # one sequence for project, MR and note ids, like global ids

    # ------------------------------------------------------------------ lookups

    def project(self, ref: str | int) -> Project:
        """Project by numeric id or by path (`group/name`)."""
        text = str(ref)
        for p in self.projects.values():
            if (text.isdigit() and p.id == int(text)) or p.path == text:
                return p
        raise ApiError(404, "404 Project Not Found")

    def head(self, project: Project, ref: str) -> Commit:
        """Commit a branch name or a commit id points at."""
        sha = project.branches.get(ref, ref)
        if sha not in project.commits:
            raise ApiError(404, "404 Commit Not Found")
        return project.commits[sha]

    def mr(self, project: Project, iid: int) -> MergeRequestRecord:
        if iid not in project.mrs:
            raise ApiError(404, "404 Not found")
        return project.mrs[iid]

    # ------------------------------------------------------------------ writes

    def add_project(self, path: str, files: dict[str, str], default_branch: str, now: str) -> Project:
        if any(p.path == path for p in self.projects.values()):
            raise ValueError(f"project {path} exists already")
        project = Project(next(self._ids), path, default_branch, f"{self.base_url}/{path}")
        self.projects[project.id] = project
        root = self._new_commit(project, [], "Initial commit", dict(files), now)
        project.branches[default_branch] = root.id
        return project

    def create_branch(self, project: Project, name: str, ref: str) -> None:
        if not name:
            raise ApiError(400, "branch is missing")
        if name in project.branches:
            raise ApiError(400, "Branch already exists")
        try:
            project.branches[name] = self.head(project, ref).id
        except ApiError:
            raise ApiError(400, "Invalid reference name") from None

    def commit(self, project: Project, branch: str, message: str, actions: list[dict[str, Any]],
               now: str, start_branch: str | None = None, *, force: bool = False,
               start_sha: str | None = None) -> Commit:
        """POST repository/commits. `start_branch` (or `start_sha`) with `force`: the new commit's parent is that
        head and `branch` is overwritten (a force push), as GitLab's Commits API does."""
        if start_branch and start_sha:
            raise ApiError(400, "start_branch, start_sha are mutually exclusive")
        if start_sha:
            if start_sha not in project.commits:
                raise ApiError(400, "Invalid start_sha")
            start_branch = start_sha
        elif start_branch and start_branch not in project.branches:
            raise ApiError(400, "You can only create or edit files when you are on a branch")
        if branch in project.branches and start_branch and start_branch != branch and not force:
            raise ApiError(400, f"A branch called '{branch}' already exists. Switch to that branch in order to "
                                "make changes")
        if branch not in project.branches or (force and start_branch):
            if not start_branch:
                raise ApiError(400, "You can only create or edit files when you are on a branch")
            parent = self.head(project, start_branch)
        else:
            parent = self.head(project, branch)
        files = dict(parent.files)
        for action in actions:
            kind, path = action.get("action"), action.get("file_path", "")
            content = action.get("content") or ""
            if action.get("encoding") == "base64":
                content = base64.b64decode(content).decode()
            if kind == "create" and path in files:
                raise ApiError(400, "A file with this name already exists")
            if kind in ("update", "delete") and path not in files:
                raise ApiError(400, "A file with this name doesn't exist")
            if kind in ("create", "update"):
                files[path] = content
            elif kind == "delete":
                del files[path]
            else:
                raise ApiError(400, f"action {kind!r} is not supported by the simulator")
        new = self._new_commit(project, [parent.id], message, files, now)
        self.move(project, branch, new.id, now)
        return new

    def move(self, project: Project, branch: str, sha: str, now: str, *, pushed: bool = True) -> None:
        """Point `branch` at `sha`: a pipeline starts for the new head (when the project has CI), and a
        push (`pushed`; not a rebase through the API) removes the approvals of MRs from that branch."""
        project.branches[branch] = sha
        if project.ci:
            self.pipeline(project, sha, branch, project.pipeline_start, now)
        for mr in project.mrs.values():
            if mr.state == "opened" and mr.source_branch == branch:
                mr.merge_error = None
                if pushed and project.reset_approvals_on_push:
                    mr.approved_by = []

    def pipeline(self, project: Project, sha: str, ref: str, status: str, now: str) -> dict[str, Any]:
        """A new pipeline for `sha` (the head's latest pipeline is what an MR shows)."""
        record = {"id": next(self._ids), "iid": len(project.pipelines) + 1, "project_id": project.id, "sha": sha,
                  "ref": ref, "status": status, "source": "push", "created_at": now, "updated_at": now,
                  "web_url": f"{project.web_url}/-/pipelines/{len(project.pipelines) + 1}"}
        project.pipelines[sha] = record
        return record

    def create_mr(self, project: Project, data: dict[str, Any], now: str) -> MergeRequestRecord:
        source, target = data.get("source_branch", ""), data.get("target_branch", "")
        if not source or not data.get("title"):
            raise ApiError(400, "source_branch, target_branch, title are missing")
        if source == target:
            raise ApiError(400, ["You can't use same project/branch for source and target"])
        for name in (source, target):
            if name not in project.branches:
                raise ApiError(400, [f"Branch {name} does not exist"])
        for other in project.mrs.values():
            if other.state == "opened" and (other.source_branch, other.target_branch) == (source, target):
                raise ApiError(409, [f"Another open merge request already exists for this source branch: "
                                     f"!{other.iid}"])
        iid = max(project.mrs, default=0) + 1
        record = MergeRequestRecord(
            next(self._ids), iid, source, target, data["title"], data.get("description") or "",
            bool(data.get("remove_source_branch")), now, now,
        )
        project.mrs[iid] = record
        return record

    def merge(self, project: Project, iid: int, now: str, *, fast_forward: bool = False) -> MergeRequestRecord:
        """Merge by the project's merge method: a merge commit of the three-way (line-level) merge of the source
        onto the target; with `fast_forward` or merge method `ff`, the target moved to the source head (no merge
        commit: `merge_commit_sha` stays null). Raises ValueError when git cannot: conflicts, or a fast-forward
        (or `rebase_merge`) whose target moved on. The gates (approvals, pipeline, draft) are the REST route's."""
        mr = self.mr(project, iid)
        if mr.state != "opened":
            raise ValueError(f"{project.path}!{iid} is {mr.state}, not opened")
        source, target = self.head(project, mr.source_branch), self.head(project, mr.target_branch)
        ff = fast_forward or project.merge_method == "ff"
        if (ff or project.merge_method == "rebase_merge") and target.id not in self._walk(project, source.id):
            raise ValueError(f"{project.path}!{iid} cannot be fast-forwarded: {mr.target_branch} moved on")
        if ff:
            self.move(project, mr.target_branch, source.id, now, pushed=False)
        else:
            base = self._merge_base(project, source.id, target.id)
            try:
                files = merge_trees(base.files, target.files, source.files)
            except MergeConflict as e:
                raise ValueError(f"{project.path}!{iid} conflicts with {mr.target_branch}: {e}") from None
            message = (f"Merge branch '{mr.source_branch}' into '{mr.target_branch}'\n\n{mr.title}\n\n"
                       f"See merge request !{iid}")
            merged = self._new_commit(project, [target.id, source.id], message, files, now)
            self.move(project, mr.target_branch, merged.id, now, pushed=False)
            mr.merge_commit_sha = merged.id
        mr.merged_head = source.id
        if mr.remove_source_branch:
            del project.branches[mr.source_branch]
        mr.state, mr.merged_at, mr.updated_at, mr.auto_merge = "merged", now, now, False
        return mr

    # ------------------------------------------------------------------ the gates before a merge

    def conflicts(self, project: Project, mr: MergeRequestRecord) -> bool:
        """Whether git cannot merge the source onto the target (the MR's `has_conflicts`)."""
        source, target = project.branches.get(mr.source_branch), project.branches.get(mr.target_branch)
        if source is None or target is None:
            return False
        base = self._merge_base(project, source, target)
        try:
            merge_trees(base.files, project.commits[target].files, project.commits[source].files)
        except MergeConflict:
            return True
        return False

    def behind(self, project: Project, mr: MergeRequestRecord) -> bool:
        """The target branch has commits the source branch does not contain."""
        source, target = project.branches.get(mr.source_branch), project.branches.get(mr.target_branch)
        return source is not None and target is not None and target not in self._walk(project, source)

    def approvals_left(self, project: Project, mr: MergeRequestRecord) -> int:
        return max(project.approvals_required - len(mr.approved_by), 0)

    def head_pipeline(self, project: Project, mr: MergeRequestRecord) -> dict[str, Any] | None:
        head = mr.merged_head or project.branches.get(mr.source_branch)
        return project.pipelines.get(head) if head else None

    def detailed_merge_status(self, project: Project, mr: MergeRequestRecord) -> str:
        """GitLab's `detailed_merge_status`: the first check that blocks the merge, or `mergeable`."""
        if mr.state != "opened":
            return "not_open"
        if mr.draft:
            return "draft_status"
        if self.conflicts(project, mr):
            return "conflict"
        if project.merge_method in ("ff", "rebase_merge") and self.behind(project, mr):
            return "need_rebase"
        if self.approvals_left(project, mr):
            return "not_approved"
        if project.only_allow_merge_if_pipeline_succeeds:
            pipeline = self.head_pipeline(project, mr)
            if pipeline is not None and pipeline["status"] in PIPELINE_RUNNING:
                return "ci_still_running"
            if pipeline is None or pipeline["status"] not in ("success", "skipped"):
                return "ci_must_pass"
        return "mergeable"

    def approve(self, project: Project, mr: MergeRequestRecord, user: dict[str, Any]) -> None:
        if mr.state != "opened":
            raise ApiError(401, "401 Unauthorized")
        if user["id"] == _USER["id"]:  # GitLab's default: authors cannot approve their own MR
            raise ApiError(401, "401 Unauthorized")
        if any(u["id"] == user["id"] for u in mr.approved_by):
            raise ApiError(401, "401 Unauthorized")  # what GitLab answers to a second approval
        mr.approved_by.append(dict(user))

    def rebase(self, project: Project, mr: MergeRequestRecord, now: str) -> None:
        """Do the rebase PUT /rebase asked for: the source's changes replayed on the target's head as one new
        commit, or `merge_error` set when they conflict (the branch is left as it was)."""
        mr.rebase_pending = False
        source, target = self.head(project, mr.source_branch), self.head(project, mr.target_branch)
        if target.id in self._walk(project, source.id):
            return  # already on top of the target
        base = self._merge_base(project, source.id, target.id)
        try:
            files = merge_trees(base.files, target.files, source.files)
        except MergeConflict:
            mr.merge_error = REBASE_FAILED
            return
        messages = [c.message for c in self._commits_between(project, base.id, source.id)]
        rebased = self._new_commit(project, [target.id], "\n\n".join(messages) or "Rebase", files, now)
        self.move(project, mr.source_branch, rebased.id, now, pushed=False)

    def _commits_between(self, project: Project, base: str, head: str) -> list[Commit]:
        ancestors = set(self._walk(project, base))
        return [project.commits[sha] for sha in reversed(self._walk(project, head)) if sha not in ancestors]

    def close(self, project: Project, iid: int, now: str) -> MergeRequestRecord:
        mr = self.mr(project, iid)
        if mr.state != "opened":
            raise ValueError(f"{project.path}!{iid} is {mr.state}, not opened")
        mr.state, mr.closed_at, mr.updated_at = "closed", now, now
        return mr

    def add_note(self, project: Project, mr: MergeRequestRecord, body: str, now: str, *,
                 author: dict[str, Any] | None = None, internal: bool = False) -> dict[str, Any]:
        if not body:
            raise ApiError(400, "body is missing")
        note = {
            "id": next(self._ids), "type": None, "body": body, "author": dict(author or _USER), "created_at": now,
            "updated_at": now, "system": False, "noteable_id": mr.id, "noteable_type": "MergeRequest",
            "noteable_iid": mr.iid, "project_id": project.id, "resolvable": False, "confidential": internal,
            "internal": internal,
        }
        mr.notes.append(note)
        return note

    def _new_commit(self, project: Project, parents: list[str], message: str,
                    files: dict[str, str], now: str) -> Commit:
        # As git's ids cover the tree: two commits with different files never share an id (GUARD caches
        # what it read at a commit id across invocations).
        content = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
        seed = f"{project.id}:{len(project.commits)}:{parents}:{message}:{content}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parents, message, files, now)
        project.commits[commit.id] = commit
        return commit

    def _merge_base(self, project: Project, a: str, b: str) -> Commit:
        ancestors_b = set(self._walk(project, b))
        return project.commits[next(sha for sha in self._walk(project, a) if sha in ancestors_b)]

    @staticmethod
    def _walk(project: Project, start: str) -> list[str]:
        seen: list[str] = []
        queue = deque([start])
        while queue:
            sha = queue.popleft()
            if sha not in seen:
                seen.append(sha)
                queue.extend(project.commits[sha].parents)
        return seen

    # ------------------------------------------------------------------ JSON views

    def project_json(self, p: Project) -> dict[str, Any]:
        name = p.path.rsplit("/", 1)[-1]
        return {
            "id": p.id, "name": name, "path": name, "path_with_namespace": p.path,
            "name_with_namespace": p.path.replace("/", " / "), "default_branch": p.default_branch,
            "web_url": p.web_url, "http_url_to_repo": f"{p.web_url}.git", "merge_method": p.merge_method,
            "only_allow_merge_if_pipeline_succeeds": p.only_allow_merge_if_pipeline_succeeds,
            "only_allow_merge_if_all_discussions_are_resolved": False, "approvals_before_merge": p.approvals_required,
            "merge_requests_enabled": True, "jobs_enabled": p.ci,
        }

    def commit_json(self, p: Project, c: Commit) -> dict[str, Any]:
        return {
            "id": c.id, "short_id": c.id[:8], "title": c.message.splitlines()[0] if c.message else "",
            "message": c.message, "parent_ids": c.parents, "created_at": c.created_at,
            "authored_date": c.created_at, "committed_date": c.created_at,
            "author_name": _USER["name"], "author_email": "guard-sim@example.invalid",
            "web_url": f"{p.web_url}/-/commit/{c.id}",
        }

    def branch_json(self, p: Project, name: str) -> dict[str, Any]:
        return {
            "name": name, "commit": self.commit_json(p, p.commits[p.branches[name]]), "merged": False,
            "protected": name == p.default_branch, "default": name == p.default_branch,
            "developers_can_push": False, "developers_can_merge": False, "can_push": True,
            "web_url": f"{p.web_url}/-/tree/{name}",
        }

    def file_json(self, p: Project, path: str, ref: str) -> dict[str, Any]:
        commit = self.head(p, ref)
        if path not in commit.files:
            raise ApiError(404, "404 File Not Found")
        raw = commit.files[path].encode()
        return {
            "file_name": path.rsplit("/", 1)[-1], "file_path": path, "size": len(raw), "encoding": "base64",
            "content": base64.b64encode(raw).decode(), "content_sha256": hashlib.sha256(raw).hexdigest(),
            "ref": ref, "blob_id": hashlib.sha1(raw).hexdigest(), "commit_id": commit.id,
            "last_commit_id": commit.id,
        }

    def tree_json(self, p: Project, path: str, ref: str, recursive: bool) -> list[dict[str, Any]]:
        """GET /repository/tree: the entries below `path` (trees and blobs), as GitLab lists them;
        404 "Tree Not Found" for a directory that does not exist."""
        commit = self.head(p, ref)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, str] = {}
        for file_path in commit.files:
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts) + 1 if recursive else 2):
                entry = prefix + "/".join(parts[:depth])
                entries[entry] = "blob" if depth == len(parts) else "tree"
        if prefix and not entries:
            raise ApiError(404, "404 Tree Not Found")
        return [{"id": _blob_id(commit.files[e]) if kind == "blob" else hashlib.sha1(f"{commit.id}:{e}".encode())
                 .hexdigest(), "name": e.rsplit("/", 1)[-1], "type": kind, "path": e,
                 "mode": "100644" if kind == "blob" else "040000"}
                for e, kind in sorted(entries.items())]

    def mr_json(self, p: Project, mr: MergeRequestRecord, *, include_rebase_in_progress: bool = False
                ) -> dict[str, Any]:
        head = mr.merged_head or p.branches.get(mr.source_branch)
        detailed = self.detailed_merge_status(p, mr)
        conflicts = mr.state == "opened" and self.conflicts(p, mr)
        pipeline = self.head_pipeline(p, mr)
        target = p.branches.get(mr.target_branch)
        base = self._merge_base(p, head, target).id if head in p.commits and target else None
        gates = {
            "draft": mr.draft, "work_in_progress": mr.draft, "has_conflicts": conflicts,
            "blocking_discussions_resolved": True, "detailed_merge_status": detailed,
            "merge_status": "cannot_be_merged" if conflicts else "can_be_merged",
            "head_pipeline": {k: pipeline[k] for k in ("id", "iid", "project_id", "sha", "ref", "status", "source",
                                                       "created_at", "updated_at", "web_url")} if pipeline else None,
            "merge_error": mr.merge_error, "merge_when_pipeline_succeeds": mr.auto_merge,
            "diff_refs": {"base_sha": base, "head_sha": head, "start_sha": target},
        }
        if include_rebase_in_progress:
            gates["rebase_in_progress"] = mr.rebase_pending
        return gates | {
            "id": mr.id, "iid": mr.iid, "project_id": p.id, "title": mr.title, "description": mr.description,
            "state": mr.state, "created_at": mr.created_at, "updated_at": mr.updated_at,
            "merged_at": mr.merged_at, "closed_at": mr.closed_at, "source_branch": mr.source_branch,
            "target_branch": mr.target_branch, "source_project_id": p.id, "target_project_id": p.id,
            "merge_commit_sha": mr.merge_commit_sha, "sha": head, "author": _USER,
            "labels": [], "force_remove_source_branch": mr.remove_source_branch,
            "should_remove_source_branch": mr.remove_source_branch,
            "web_url": f"{p.web_url}/-/merge_requests/{mr.iid}", "user_notes_count": len(mr.notes),
            "merge_user": _USER if mr.state == "merged" else None,
            "merged_by": _USER if mr.state == "merged" else None,
        }

    def approvals_json(self, p: Project, mr: MergeRequestRecord) -> dict[str, Any]:
        """GET merge_requests/:iid/approvals."""
        left = self.approvals_left(p, mr)
        return {
            "id": mr.id, "iid": mr.iid, "project_id": p.id, "title": mr.title, "description": mr.description,
            "state": mr.state, "created_at": mr.created_at, "updated_at": mr.updated_at,
            "merge_status": "can_be_merged", "approved": left == 0, "approvals_required": p.approvals_required,
            "approvals_left": left, "require_password_to_approve": False,
            "approved_by": [{"user": dict(u)} for u in mr.approved_by], "suggested_approvers": [],
            "approvers": [], "approver_groups": [], "user_has_approved": False, "user_can_approve": False,
            "approval_rules_left": [{"id": 1, "name": "Default", "rule_type": "regular"}] if left else [],
            "has_approval_rules": p.approvals_required > 0, "merge_request_approvers_available": True,
            "multiple_approval_rules_available": True, "invalid_approvers_rules": [],
        }

    def hook_payload(self, p: Project, mr: MergeRequestRecord, action: str) -> dict[str, Any]:
        """A GitLab "Merge Request Hook" body (object_kind merge_request)."""
        attrs = self.mr_json(p, mr)
        attrs.update({
            "action": action, "url": attrs["web_url"], "state_id": _STATE_ID[mr.state],
            "last_commit": {"id": attrs["sha"]} if attrs["sha"] else None,
        })
        return {
            "object_kind": "merge_request", "event_type": "merge_request", "user": _USER,
            "project": {
                "id": p.id, "name": p.path.rsplit("/", 1)[-1], "path_with_namespace": p.path,
                "web_url": p.web_url, "default_branch": p.default_branch,
            },
            "repository": {
                "name": p.path.rsplit("/", 1)[-1], "url": f"{p.web_url}.git", "homepage": p.web_url,
            },
            "object_attributes": attrs,
            "labels": [],
            "changes": {"state_id": {"previous": _STATE_ID["opened"], "current": _STATE_ID[mr.state]}},
        }


def _blob_id(text: str) -> str:
    """A file's blob id as git computes it (`git hash-object`): the same content has the same id in any
    commit, so a reader may keep a file's text by its id."""
    data = text.encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
