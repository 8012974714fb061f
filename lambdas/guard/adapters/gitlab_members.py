"""`ProjectMembers` on GitLab through python-gitlab (`GET /projects/:id/members/all/:user_id`)."""

from __future__ import annotations

import gitlab

from guard.adapters.gitlab_repo import GitLabRepo


class GitLabMembers:
    """Effective access levels (inherited group memberships included) on one `gitlab.Gitlab` client."""

    def __init__(self, client: gitlab.Gitlab) -> None:
        self._gl = client

    @classmethod
    def from_token(cls, url: str, token: str, timeout_seconds: float = 10) -> GitLabMembers:
        return cls(gitlab.Gitlab(url, private_token=token, timeout=timeout_seconds, retry_transient_errors=False))

    def access_level(self, project: str, user_id: int) -> int | None:
        with GitLabRepo._errors(project, f"read member {user_id}"):
            try:
                member = self._gl.projects.get(project, lazy=True).members_all.get(
                    user_id, obey_rate_limit=False, retry_transient_errors=False)
            except gitlab.GitlabGetError as e:
                if e.response_code == 404:
                    return None  # not a member (nor inherited)
                raise
            return int(member.access_level)
