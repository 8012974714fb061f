"""A local GitLab (REST API v4) good enough for python-gitlab and GUARD's GitOps adapter.

    with GitLabSimulator(token="t0k3n") as sim:
        pid = sim.add_project("platform/istio-fleet", {"clusters/a/istio.yaml": "..."})
        gl = gitlab.Gitlab(sim.url, private_token="t0k3n")
        ...
        sim.merge("platform/istio-fleet", 1)   # a human clicks Merge: hooks + listeners fire

Serves on 127.0.0.1 (port 0) from a daemon thread. Routes: the token's user (`/user`),
projects, repository files, branches, commits, merge requests, MR notes, project members
(`members/all/:user_id`, inherited group memberships included). Every request needs
`PRIVATE-TOKEN`. `add_member` / `add_group_member` give a user an access level;
`comment_as(project, iid, username, body)` posts a note as that user and fires a "Note Hook".
`fail_next` / `stall_next` inject faults; `requests` records what clients asked for.

Webhooks behave like GitLab's (VENDOR-FACTS "GitLab webhooks"):
- every delivery carries `X-Gitlab-Event-UUID` (new each time) and `Idempotency-Key`; `resend`
  is the manual "Resend Request": same key, new event UUID. GitLab never redelivers by itself.
- a Note Hook fires for every note, those created through the API (GUARD's own) included;
  editing a note fires one with `action: update`; an internal note fires a "Confidential Note
  Hook", only to hooks that asked for confidential note events.
- `auto_disable` (GitLab.com's behaviour, on by default): any answer other than 2xx/3xx, or no
  answer, is a failure; after 4 in a row the hook is disabled for 1 minute, then for a period
  doubling up to 24 hours, and after 40 for good. A success resets the count. A disabled hook is
  not called (the delivery is recorded with `error="hook disabled"`).
- `merge(..., fast_forward=True)` merges without a merge commit: `merge_commit_sha` is null.
"""

from __future__ import annotations

import json
import re
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.client import HTTPConnection, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from guard.clock import SystemClock
from guard.ports import Clock

from sandbox.sims.gitlab_store import PIPELINE_RUNNING, TOKEN_USER, ApiError, GitLabStore, MergeRequestRecord, Project
from sandbox.sims.loopback import LoopbackHandler

MergeListener = Callable[[str, int, str], None]  # (project path, MR iid, target branch head after the merge)
DISABLE_AFTER = 4  # consecutive failures before GitLab.com disables a hook for a while
DISABLE_FOR_GOOD_AFTER = 40
FIRST_DISABLE = timedelta(minutes=1)
LONGEST_DISABLE = timedelta(hours=24)


@dataclass
class Hook:
    project_id: int
    url: str
    token: str
    merge_requests_events: bool = True
    note_events: bool = True
    confidential_note_events: bool = False
    failures: int = 0  # consecutive
    disabled_until: datetime | None = None
    permanently_disabled: bool = False

    def wants(self, event: str) -> bool:
        return {"Merge Request Hook": self.merge_requests_events, "Note Hook": self.note_events,
                "Confidential Note Hook": self.confidential_note_events}.get(event, False)


@dataclass
class HookDelivery:
    """One webhook POST and what the receiver answered (status None when it could not be reached)."""

    url: str
    event_uuid: str
    payload: dict[str, Any]
    status: int | None
    error: str | None = None
    event: str = "Merge Request Hook"
    idempotency_key: str = ""
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # as sent


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    status: int | None = None
    retry_after: int | None = None
    stall_seconds: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str  # decoded, without the query string
    query: dict[str, str] = field(default_factory=dict)


class GitLabSimulator:
    """In-memory GitLab over HTTP, with a Python API for scenarios and tests."""

    def __init__(self, token: str, clock: Clock | None = None, hook_timeout_seconds: float = 5.0,
                 *, auto_disable: bool = True) -> None:
        self.token = token
        self.auto_disable = auto_disable
        self.clock = clock or SystemClock()
        self.hook_timeout_seconds = hook_timeout_seconds
        self.hook_deliveries: list[HookDelivery] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._faults: list[_Fault] = []
        self._hooks: list[Hook] = []
        self._pending_hooks: list[tuple[str, dict[str, Any]]] = []  # hooks an API call fired, delivered once it returns
        self._pending_merges: list[tuple[str, int, str]] = []  # merges whose listeners run once the call returns
        self._listeners: list[MergeListener] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._store = GitLabStore(self.url)
        self._thread: threading.Thread | None = None
        # Users and project memberships (access levels: 30 Developer, 40 Maintainer, 50 Owner).
        self._users: dict[str, dict[str, Any]] = {}
        self._members: dict[tuple[int, int], int] = {}
        self._group_members: dict[tuple[str, int], int] = {}  # (group path, user id) -> access level

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> GitLabSimulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="gitlab-sim", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> GitLabSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scenario / test API

    def add_project(self, path: str, files: dict[str, str], default_branch: str = "main") -> int:
        """Create a project whose `default_branch` holds `files`; returns its numeric id."""
        with self._lock:
            return self._store.add_project(path, files, default_branch, self._now()).id

    def file_at(self, project: str | int, path: str, ref: str | None = None) -> str | None:
        """Content of `path` at `ref` (default branch when None); None if the file does not exist."""
        with self._lock:
            p = self._store.project(project)
            return self._store.head(p, ref or p.default_branch).files.get(path)

    def parents(self, project: str | int, ref: str) -> list[str]:
        """The parent commit ids of the commit `ref` (a branch or a commit id) names."""
        with self._lock:
            return list(self._store.head(self._store.project(project), ref).parents)

    def files(self, project: str | int, ref: str | None = None) -> dict[str, str]:
        """Every file at `ref` (default branch when None): path -> content."""
        with self._lock:
            p = self._store.project(project)
            return dict(self._store.head(p, ref or p.default_branch).files)

    def branch_head(self, project: str | int, branch: str) -> str | None:
        with self._lock:
            return self._store.project(project).branches.get(branch)

    def push(self, project: str | int, branch: str, files: dict[str, str], message: str = "Edit") -> str:
        """Someone else commits `files` (full contents) to `branch`; returns the commit id."""
        with self._lock:
            p = self._store.project(project)
            head = self._store.head(p, branch).files
            actions = [{"action": "update" if path in head else "create", "file_path": path, "content": text}
                       for path, text in files.items()]
            return self._store.commit(p, branch, message, actions, self._now()).id

    def merge(self, project: str | int, iid: int, deliver_hooks: bool = True, *, fast_forward: bool = False) -> str:
        """Merge MR `iid` as a reviewer would; fires hooks (unless `deliver_hooks` is False: a delivery GitLab
        lost, which it never redelivers) and merge listeners; returns the target branch's new head.

        `fast_forward`: the project's "Fast-forward merge" method (the target must not have moved): no merge
        commit, so the MR and its hook carry `merge_commit_sha: null`. A project configured with
        `merge_method="ff"` merges so anyway. The merge gates (approvals, pipeline, draft) are not checked
        here: `merge_when_mergeable` or the REST API (`PUT .../merge`) check them as the Merge button does.
        """
        with self._lock:
            p = self._store.project(project)
            self._merged(p, iid, deliver_hooks, fast_forward)
            head = p.branches[p.mrs[iid].target_branch]
        self._flush()
        return head

    def merge_when_mergeable(self, project: str | int, iid: int) -> str | None:
        """A reviewer clicks Merge, which GitLab enables only when `detailed_merge_status` is `mergeable`:
        merges (hooks, listeners) and returns the target's new head; None (nothing done) otherwise."""
        with self._lock:
            p = self._store.project(project)
            self._tick(p)
            mr = self._store.mr(p, iid)
            if mr.state != "opened" or self._store.detailed_merge_status(p, mr) != "mergeable":
                return None
            self._merged(p, iid, True, False)
            head = p.branches[mr.target_branch]
        self._flush()
        return head

    def configure(self, project: str | int, *, merge_method: str | None = None, approvals_required: int | None = None,
                  only_allow_merge_if_pipeline_succeeds: bool | None = None, ci: bool | None = None,
                  pipeline_start: str | None = None, reset_approvals_on_push: bool | None = None,
                  pipeline_seconds: float | None = None) -> None:
        """Project merge settings: merge method (merge | rebase_merge | ff), one approval rule requiring
        `approvals_required` approvals, "Pipelines must succeed", CI (a pipeline per new head, starting as
        `pipeline_start`; with `pipeline_seconds`, a running one succeeds that long after it started, by the
        simulator's clock), and whether a push removes approvals."""
        if merge_method not in (None, "merge", "rebase_merge", "ff"):
            raise ValueError(f"unknown merge method {merge_method!r}")
        with self._lock:
            p = self._store.project(project)
            for name, value in (("merge_method", merge_method), ("approvals_required", approvals_required),
                                ("only_allow_merge_if_pipeline_succeeds", only_allow_merge_if_pipeline_succeeds),
                                ("ci", ci), ("pipeline_start", pipeline_start),
                                ("reset_approvals_on_push", reset_approvals_on_push),
                                ("pipeline_seconds", pipeline_seconds)):
                if value is not None:
                    setattr(p, name, value)

    def approve(self, project: str | int, iid: int, username: str) -> None:
        """`username` approves MR `iid` (an MR set to auto-merge merges once nothing blocks it)."""
        self.add_user(username)
        with self._lock:
            p = self._store.project(project)
            mr = self._store.mr(p, iid)
            self._store.approve(p, mr, dict(self._users[username]))
            self._auto_merge(p)
        self._flush()

    def approvals_left(self, project: str | int, iid: int) -> int:
        with self._lock:
            p = self._store.project(project)
            return self._store.approvals_left(p, self._store.mr(p, iid))

    def set_draft(self, project: str | int, iid: int, draft: bool = True) -> None:
        with self._lock:
            p = self._store.project(project)
            self._store.mr(p, iid).draft = draft

    def finish_pipelines(self, project: str | int, status: str = "success") -> list[str]:
        """Every running pipeline of the project ends with `status`; MRs set to auto-merge whose gates are then
        all clear merge. Returns the shas whose pipeline ended."""
        with self._lock:
            p = self._store.project(project)
            ended = [sha for sha, pl in p.pipelines.items() if pl["status"] in PIPELINE_RUNNING]
            for sha in ended:
                p.pipelines[sha]["status"], p.pipelines[sha]["updated_at"] = status, self._now()
            self._auto_merge(p)
        self._flush()
        return ended

    def merge_request(self, project: str | int, iid: int) -> dict[str, Any]:
        """MR `iid` as the API shows it (gates included)."""
        with self._lock:
            p = self._store.project(project)
            self._tick(p)
            shown = self._store.mr_json(p, self._store.mr(p, iid))
        self._flush()
        return shown

    def _tick(self, p: Project) -> None:
        """Pipelines whose time has come succeed (`pipeline_seconds`); auto-merge follows. Under the lock."""
        if p.pipeline_seconds is None:
            return
        now = self.clock.now()
        for pipeline in p.pipelines.values():
            started = datetime.fromisoformat(pipeline["created_at"].replace("Z", "+00:00"))
            if pipeline["status"] in PIPELINE_RUNNING and now >= started + timedelta(seconds=p.pipeline_seconds):
                pipeline["status"], pipeline["updated_at"] = "success", self._now()
        self._auto_merge(p)

    def _merged(self, p: Project, iid: int, deliver_hooks: bool, fast_forward: bool) -> None:
        """Merge under the lock; the hook and the listeners go out after it (`_flush`)."""
        mr = self._store.merge(p, iid, self._now(), fast_forward=fast_forward)
        if deliver_hooks:
            self._pending_hooks.append(("Merge Request Hook", self._store.hook_payload(p, mr, "merge")))
        self._pending_merges.append((p.path, iid, p.branches[mr.target_branch]))

    def _auto_merge(self, p: Project) -> None:
        for mr in sorted(p.mrs.values(), key=lambda m: m.iid):
            if mr.state == "opened" and mr.auto_merge and self._store.detailed_merge_status(p, mr) == "mergeable":
                self._merged(p, mr.iid, True, False)

    def _flush(self) -> None:
        """Deliver the hooks and call the merge listeners queued under the lock (the receiver may call back)."""
        with self._lock:
            hooks, self._pending_hooks = self._pending_hooks, []
            merges, self._pending_merges = self._pending_merges, []
            listeners = list(self._listeners)
        for event, payload in hooks:  # both hook kinds carry project.id
            self._deliver(self._hooks_for(int(payload["project"]["id"]), event), payload, event=event)
        for path, iid, head in merges:
            for listener in listeners:
                listener(path, iid, head)

    def close(self, project: str | int, iid: int, deliver_hooks: bool = True) -> None:
        """Close MR `iid` without merging; fires hooks (unless `deliver_hooks` is False)."""
        with self._lock:
            p = self._store.project(project)
            mr = self._store.close(p, iid, self._now())
            payload = self._store.hook_payload(p, mr, "close")
            hooks = self._hooks_for(p.id, "Merge Request Hook") if deliver_hooks else []
        self._deliver(hooks, payload)

    def merge_requests(self, project: str | int) -> list[dict[str, Any]]:
        """Every MR of the project as the API shows it, oldest first."""
        with self._lock:
            p = self._store.project(project)
            return [self._store.mr_json(p, mr) for mr in sorted(p.mrs.values(), key=lambda m: m.iid)]

    def notes(self, project: str | int, iid: int) -> list[str]:
        """Bodies of the notes on MR `iid`, oldest first."""
        with self._lock:
            p = self._store.project(project)
            return [n["body"] for n in self._store.mr(p, iid).notes]

    def add_hook(self, project: str | int, url: str, token: str, *, confidential_note_events: bool = False) -> Hook:
        """Deliver merge request and comment events of `project` to `url` with `X-Gitlab-Token: token`."""
        with self._lock:
            hook = Hook(self._store.project(project).id, url, token,
                        confidential_note_events=confidential_note_events)
            self._hooks.append(hook)
            return hook

    def add_merge_listener(self, listener: MergeListener) -> None:
        """Call `listener(project_path, iid, merge_commit_sha)` after every merge (in-process followers)."""
        with self._lock:
            self._listeners.append(listener)

    def fail_next(self, method: str, path_regex: str, status: int, times: int = 1,
                  retry_after: int | None = None) -> None:
        """Answer the next `times` requests matching `method` and `path_regex` with `status`.

        `path_regex` is searched in the decoded path, e.g. `/projects/group/app/repository/commits`.
        """
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), times, status, retry_after))

    def stall_next(self, method: str, path_regex: str, seconds: float, times: int = 1) -> None:
        """Hold the next matching requests for `seconds` before answering normally (client timeouts)."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), times, stall_seconds=seconds))

    def add_user(self, username: str) -> int:
        """A GitLab user (created once); returns its id."""
        with self._lock:
            if username not in self._users:
                user_id = 1000 + len(self._users) + 1
                self._users[username] = {"id": user_id, "username": username, "name": username.title(),
                                         "state": "active", "avatar_url": None,
                                         "web_url": f"{self.url}/{username}"}
            return int(self._users[username]["id"])

    def add_member(self, project: str | int, username: str, access_level: int) -> int:
        """Make `username` a member of `project` with `access_level`; returns the user id."""
        user_id = self.add_user(username)
        with self._lock:
            self._members[(self._store.project(project).id, user_id)] = access_level
        return user_id

    def add_group_member(self, group: str, username: str, access_level: int) -> int:
        """Make `username` a member of group `group` (e.g. `platform`): every project under it inherits the
        membership (`members/all`); returns the user id."""
        user_id = self.add_user(username)
        with self._lock:
            self._group_members[(group.strip("/"), user_id)] = access_level
        return user_id

    def comment_as(self, project: str | int, iid: int, username: str, body: str,
                   deliver_hooks: bool = True, *, internal: bool = False) -> dict[str, Any]:
        """`username` comments on MR `iid`: the note is stored and a "Note Hook" fires ("Confidential Note
        Hook" for an `internal` note; none when `deliver_hooks` is false: the delivery is lost); returns the
        note."""
        self.add_user(username)
        with self._lock:
            p = self._store.project(project)
            mr = self._store.mr(p, iid)
            user = dict(self._users[username])
            note = self._store.add_note(p, mr, body, self._now(), author=user, internal=internal)
            event, payload = self._note_event(p, mr, note, "create")
            hooks = self._hooks_for(p.id, event) if deliver_hooks else []
        self._deliver(hooks, payload, event=event)
        return note

    def edit_note(self, project: str | int, iid: int, note_id: int, body: str) -> dict[str, Any]:
        """The note's author edits it: GitLab 16.11+ fires a Note Hook with `action: update`."""
        with self._lock:
            p = self._store.project(project)
            mr = self._store.mr(p, iid)
            note = next(n for n in mr.notes if n["id"] == note_id)
            note["body"], note["updated_at"] = body, self._now()
            event, payload = self._note_event(p, mr, note, "update")
            hooks = self._hooks_for(p.id, event)
        self._deliver(hooks, payload, event=event)
        return note

    def hook(self, project: str | int) -> Hook:
        """The project's only hook (tests read its failure count and disabled state)."""
        with self._lock:
            pid = self._store.project(project).id
            (found,) = [h for h in self._hooks if h.project_id == pid]
            return found

    # ------------------------------------------------------------------ internals

    def _now(self) -> str:
        return self.clock.now().isoformat().replace("+00:00", "Z")

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _hooks_for(self, project_id: int, event: str) -> list[Hook]:
        return [h for h in self._hooks if h.project_id == project_id and h.wants(event)]

    def _note_event(self, p: Project, mr: MergeRequestRecord, note: dict[str, Any],
                    action: str) -> tuple[str, dict[str, Any]]:
        """(event name, body) of a Note Hook for `note`, as GitLab sends it."""
        user = dict(note["author"])
        mr_attrs = self._store.mr_json(p, mr)
        mr_attrs["url"] = mr_attrs["web_url"]
        internal = bool(note.get("internal"))
        payload = {
            "object_kind": "note", "event_type": "confidential_note" if internal else "note", "user": user,
            "project_id": p.id,
            "project": {"id": p.id, "name": p.path.rsplit("/", 1)[-1], "path_with_namespace": p.path,
                        "web_url": p.web_url, "default_branch": p.default_branch},
            "object_attributes": {
                "id": note["id"], "note": note["body"], "noteable_type": "MergeRequest", "author_id": user["id"],
                "created_at": note["created_at"], "updated_at": note["updated_at"], "project_id": p.id,
                "noteable_id": mr.id, "system": False, "action": action, "internal": internal,
                "confidential": internal, "url": f"{mr_attrs['web_url']}#note_{note['id']}",
            },
            "repository": {"name": p.path.rsplit("/", 1)[-1], "url": f"{p.web_url}.git", "homepage": p.web_url},
            "merge_request": mr_attrs,
        }
        return ("Confidential Note Hook" if internal else "Note Hook"), payload

    def _deliver(self, hooks: list[Hook], payload: dict[str, Any], event: str = "Merge Request Hook") -> None:
        for hook in hooks:
            delivery = HookDelivery(hook.url, str(uuid.uuid4()), payload, None, event=event,
                                    idempotency_key=str(uuid.uuid4()), token=hook.token)
            if self._disabled(hook):
                delivery.error = "hook disabled"
                with self._lock:
                    self.hook_deliveries.append(delivery)
                continue
            self._post(delivery, hook)

    def resend(self, delivery: HookDelivery) -> HookDelivery:
        """GitLab's "Resend Request": the same payload and Idempotency-Key, a new X-Gitlab-Event-UUID.
        A person may resend to a disabled hook; a success enables it again."""
        again = HookDelivery(delivery.url, str(uuid.uuid4()), delivery.payload, None, event=delivery.event,
                             idempotency_key=delivery.idempotency_key, token=delivery.token)
        with self._lock:
            hook = next((h for h in self._hooks if h.url == delivery.url and h.token == delivery.token), None)
        self._post(again, hook)
        return again

    def _disabled(self, hook: Hook) -> bool:
        with self._lock:
            if hook.permanently_disabled:
                return True
            return hook.disabled_until is not None and self.clock.now() < hook.disabled_until

    def _record_outcome(self, hook: Hook | None, ok: bool) -> None:
        if hook is None or not self.auto_disable:
            return
        with self._lock:
            if ok:
                hook.failures, hook.disabled_until, hook.permanently_disabled = 0, None, False
                return
            hook.failures += 1
            if hook.failures >= DISABLE_FOR_GOOD_AFTER:
                hook.permanently_disabled = True
            elif hook.failures >= DISABLE_AFTER:
                backoff = min(FIRST_DISABLE * 2 ** (hook.failures - DISABLE_AFTER), LONGEST_DISABLE)
                hook.disabled_until = self.clock.now() + backoff

    def _post(self, delivery: HookDelivery, hook: Hook | None = None) -> None:
        """POST one delivery with GitLab 17.4+'s headers (VENDOR-FACTS: Idempotency-Key survives resends)."""
        payload, hook_url = delivery.payload, delivery.url
        headers = {
            "Content-Type": "application/json", "User-Agent": "GitLab/17.4.0",
            "X-Gitlab-Event": delivery.event, "X-Gitlab-Token": delivery.token,
            "X-Gitlab-Event-UUID": delivery.event_uuid, "X-Gitlab-Instance": self.url,
            "X-Gitlab-Webhook-UUID": str(uuid.uuid4()), "Idempotency-Key": delivery.idempotency_key,
        }
        delivery.headers = dict(headers)
        # http.client rather than urllib: urllib rewrites header names ("X-gitlab-token").
        target = urlsplit(hook_url)
        connection_type = HTTPSConnection if target.scheme == "https" else HTTPConnection
        connection = connection_type(target.netloc, timeout=self.hook_timeout_seconds)
        try:
            path = (target.path or "/") + (f"?{target.query}" if target.query else "")
            connection.request("POST", path, body=json.dumps(payload), headers=headers)
            delivery.status = connection.getresponse().status
        except OSError as e:  # unreachable receiver: GitLab records the failure and moves on
            delivery.error = str(e)
        finally:
            connection.close()
        self._record_outcome(hook, delivery.status is not None and 200 <= delivery.status < 400)
        with self._lock:
            self.hook_deliveries.append(delivery)

    def handle(self, method: str, raw_path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Route one API call; returns (status, JSON body)."""
        parts = urlsplit(raw_path)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if segments == ["api", "v4", "user"] and method == "GET":
            return 200, dict(TOKEN_USER)  # the token's own account
        if segments[:2] != ["api", "v4"] or len(segments) < 4 or segments[2] != "projects":
            raise ApiError(404, "404 Not Found")
        with self._lock:
            p = self._store.project(segments[3])
            self._tick(p)
            answer = self._route(method, p, segments[4:], query | body)
        self._flush()  # outside the lock: the receiver may call back into this API
        return answer

    def _route(self, method: str, p: Project, rest: list[str], args: dict[str, Any]) -> tuple[int, Any]:
        s, now = self._store, self._now()
        match method, rest:
            case "GET", []:
                return 200, s.project_json(p)
            case "GET", ["repository", "files", path]:
                if not args.get("ref"):
                    raise ApiError(400, "ref is missing")
                return 200, s.file_json(p, path, args["ref"])
            case "GET", ["repository", "tree"]:
                return 200, s.tree_json(p, str(args.get("path") or ""), str(args.get("ref") or p.default_branch),
                                        str(args.get("recursive")).lower() == "true")
            case "GET", ["repository", "branches"]:
                return 200, [s.branch_json(p, name) for name in sorted(p.branches)]
            case "GET", ["repository", "branches", name]:
                if name not in p.branches:
                    raise ApiError(404, "404 Branch Not Found")
                return 200, s.branch_json(p, name)
            case "POST", ["repository", "branches"]:
                s.create_branch(p, args.get("branch", ""), args.get("ref", ""))
                return 201, s.branch_json(p, args["branch"])
            case "POST", ["repository", "commits"]:
                commit = s.commit(p, args.get("branch", ""), args.get("commit_message", ""),
                                  list(args.get("actions") or []), now, args.get("start_branch"),
                                  force=_true(args.get("force")), start_sha=args.get("start_sha"))
                return 201, s.commit_json(p, commit)
            case "GET", ["merge_requests"]:
                return 200, [s.mr_json(p, mr) for mr in self._filter_mrs(p, args)]
            case "POST", ["merge_requests"]:
                return 201, s.mr_json(p, s.create_mr(p, args, now))
            case "GET", ["merge_requests", iid]:
                mr = s.mr(p, _int(iid))
                shown = s.mr_json(p, mr, include_rebase_in_progress=_true(args.get("include_rebase_in_progress")))
                if mr.rebase_pending:  # asynchronous, like Sidekiq: seen in progress once, then done
                    s.rebase(p, mr, now)
                return 200, shown
            case "PUT", ["merge_requests", iid]:
                mr = s.mr(p, _int(iid))
                if args.get("state_event") == "close" and mr.state == "opened":
                    s.close(p, mr.iid, now)
                    self._pending_hooks.append(("Merge Request Hook", s.hook_payload(p, mr, "close")))
                for name in ("title", "description"):
                    if isinstance(args.get(name), str):
                        setattr(mr, name, args[name])
                        mr.updated_at = now
                if isinstance(args.get("title"), str):
                    mr.draft = args["title"].lower().startswith(("draft:", "[draft]", "(draft)"))
                return 200, s.mr_json(p, mr)
            case "PUT", ["merge_requests", iid, "rebase"]:
                mr = s.mr(p, _int(iid))
                if mr.state != "opened" or mr.source_branch not in p.branches:
                    raise ApiError(403, "Source branch does not exist")
                if mr.rebase_pending:
                    raise ApiError(409, "Failed to enqueue the rebase operation")
                mr.rebase_pending, mr.merge_error = True, None
                return 202, {"rebase_in_progress": True}
            case "PUT", ["merge_requests", iid, "merge"]:
                return self._merge_route(p, s.mr(p, _int(iid)), args)
            case "GET", ["merge_requests", iid, "approvals"]:
                return 200, s.approvals_json(p, s.mr(p, _int(iid)))
            case "POST", ["merge_requests", iid, "approve"]:
                mr = s.mr(p, _int(iid))
                s.approve(p, mr, dict(TOKEN_USER))
                return 201, s.approvals_json(p, mr)
            case "GET", ["merge_requests", iid, "notes", note_id]:
                return 200, self._note(s.mr(p, _int(iid)), _int(note_id))
            case "PUT", ["merge_requests", iid, "notes", note_id]:
                mr = s.mr(p, _int(iid))
                note = self._note(mr, _int(note_id))
                if note["author"]["id"] != TOKEN_USER["id"]:
                    raise ApiError(403, "403 Forbidden")
                if not args.get("body"):
                    raise ApiError(400, "body is missing")
                note["body"], note["updated_at"] = args["body"], now
                self._pending_hooks.append(self._note_event(p, mr, note, "update"))
                return 200, note
            case "GET", ["merge_requests", iid, "notes"]:
                return 200, list(s.mr(p, _int(iid)).notes)
            case "POST", ["merge_requests", iid, "notes"]:
                # Written by the token's account; GitLab fires a Note Hook for it like for any note.
                mr = s.mr(p, _int(iid))
                note = s.add_note(p, mr, args.get("body", ""), now, internal=bool(args.get("internal")))
                self._pending_hooks.append(self._note_event(p, mr, note, "create"))
                return 201, note
            case "GET", ["members", "all", user_id]:
                return 200, self._member_json(p, _int(user_id))
        raise ApiError(404, "404 Not Found")

    def _merge_route(self, p: Project, mr: MergeRequestRecord, args: dict[str, Any]) -> tuple[int, Any]:
        """PUT merge_requests/:iid/merge, refusing what GitLab refuses: 405 when the MR cannot be accepted (not
        open, draft, approvals missing, pipeline failed or missing when it must succeed), 422 "Branch cannot be
        merged" when git cannot (conflicts; the target moved on under a fast-forward method), 409 when `sha` is
        not the source head. A running required pipeline with `auto_merge` / `merge_when_pipeline_succeeds`
        sets auto-merge instead (GitLab merges once it succeeds)."""
        s = self._store
        if mr.state != "opened":
            raise ApiError(405, "405 Method Not Allowed")
        status = s.detailed_merge_status(p, mr)
        auto = _true(args.get("auto_merge")) or _true(args.get("merge_when_pipeline_succeeds"))
        if status in ("draft_status", "not_approved", "discussions_not_resolved", "ci_must_pass") \
                and not (auto and status == "not_approved"):
            raise ApiError(405, "405 Method Not Allowed")
        if status in ("conflict", "need_rebase"):
            raise ApiError(422, "Branch cannot be merged")
        head = p.branches.get(mr.source_branch)
        if args.get("sha") and args["sha"] != head:
            raise ApiError(409, "SHA does not match HEAD of source branch: " + str(head))
        if status != "mergeable":  # the pipeline runs (or approvals wait): merge when it all clears
            if not auto:
                raise ApiError(405, "405 Method Not Allowed")
            mr.auto_merge = True
            return 200, s.mr_json(p, mr)
        self._merged(p, mr.iid, True, False)
        return 200, s.mr_json(p, mr)

    @staticmethod
    def _note(mr: MergeRequestRecord, note_id: int) -> dict[str, Any]:
        for note in mr.notes:
            if note["id"] == note_id:
                return note
        raise ApiError(404, "404 Not found")

    def _member_json(self, p: Project, user_id: int) -> dict[str, Any]:
        # members/all: the project's own members and those inherited from every ancestor group, the
        # highest access level winning.
        groups = ["/".join(p.path.split("/")[:i]) for i in range(1, p.path.count("/") + 1)]
        levels = [self._members.get((p.id, user_id))] + [self._group_members.get((g, user_id)) for g in groups]
        found = [lv for lv in levels if lv is not None]
        level = max(found) if found else None
        user = next((u for u in self._users.values() if u["id"] == user_id), None)
        if level is None or user is None:
            raise ApiError(404, "404 Not found")
        return {**user, "access_level": level, "created_at": self._now(), "expires_at": None}

    @staticmethod
    def _filter_mrs(p: Project, args: dict[str, Any]) -> list[MergeRequestRecord]:
        state = args.get("state", "all")
        found = [
            mr for mr in p.mrs.values()
            if state in ("all", mr.state)
            and args.get("source_branch") in (None, mr.source_branch)
            and args.get("target_branch") in (None, mr.target_branch)
        ]
        return sorted(found, key=lambda m: m.iid, reverse=True)  # GitLab's default: newest first


def _true(value: Any) -> bool:
    """A boolean parameter, as GitLab reads JSON `true` or a form/query `true`."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _int(text: str) -> int:
    if not text.isdigit():
        raise ApiError(404, "404 Not found")
    return int(text)


def _handler_for(sim: GitLabSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(LoopbackHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw_body = self.rfile.read(length) if length else b""
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            with sim._lock:
                sim.requests.append(RecordedRequest(method, path, query))
            fault = sim._take_fault(method, path)
            if fault and fault.stall_seconds:
                # Wall-clock on purpose: the client's socket timeout is wall-clock too.
                threading.Event().wait(fault.stall_seconds)
            if fault and fault.status:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                return self._send(fault.status, {"message": f"{fault.status} injected by simulator"}, headers)
            if self.headers.get("PRIVATE-TOKEN") != sim.token:
                return self._send(401, {"message": "401 Unauthorized"})
            try:
                status, payload = sim.handle(method, self.path, _parse_body(self.headers, raw_body))
            except ValueError:
                status, payload = 400, {"message": "400 Bad request - malformed body"}
            except ApiError as e:
                status, payload = e.status, e.body
            except Exception as e:  # a simulator bug: answer 500 and show it, rather than hang the client
                traceback.print_exc()
                status, payload = 500, {"message": f"500 simulator error: {type(e).__name__}: {e}"}
            self._send(status, payload)

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if isinstance(payload, list):
                    # One page with every item; python-gitlab's get_all stops without a Link header.
                    paging = {"X-Page": "1", "X-Total-Pages": "1", "X-Total": str(len(payload))}
                    headers = paging | (headers or {})
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. a timeout test); nothing to answer

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean; `sim.requests` records the traffic

    return Handler


def _parse_body(headers: Any, raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    if "json" in (headers.get("Content-Type") or ""):
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ApiError(400, "body must be a JSON object")
        return parsed
    return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
