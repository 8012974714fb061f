"""The gates before a merge: python-gitlab (GUARD's adapter) against the GitLab simulator, which holds
approval rules, pipelines per head sha, fast-forward-only merging, rebase and conflicts, and refuses the
merges GitLab refuses."""

from __future__ import annotations

from collections.abc import Iterator

import gitlab
import pytest
from guard.adapters.gitlab_repo import GitLabRepo
from guard.ports import FileChange, MergeGates
from guard.retry import RetryPolicy
from guard.services.gates import GATES_END, GATES_HEADING, NOTE_MARKER, MergeGateService, blockers

from sandbox.sims.gitlab_sim import GitLabSimulator
from tests.support.clock import FakeClock

TOKEN = "sim-gitlab-token"
PROJECT = "platform/istio-fleet"
# One per-cluster version map: each batch's MR changes its own line, and the lines are neighbours.
VERSIONS = "# cluster: Istio chart version (GUARD edits one line per cluster)\neks-a: 1.20.3\neks-b: 1.20.3\n"
OTHER = "unrelated: true\n"


@pytest.fixture
def sim() -> Iterator[GitLabSimulator]:
    with GitLabSimulator(token=TOKEN, auto_disable=False) as gl:
        gl.add_project(PROJECT, {"clusters/versions.yaml": VERSIONS, "clusters/other.yaml": OTHER})
        yield gl


@pytest.fixture
def repo(sim: GitLabSimulator) -> GitLabRepo:
    return GitLabRepo.from_token(sim.url, TOKEN, timeout_seconds=5, retry=RetryPolicy(sleep=lambda _: None),
                                 clock=FakeClock())


def bump(repo: GitLabRepo, cluster: str, version: str):
    """GUARD's edit of one cluster's line, on the file as it is at `ref`."""
    def edits(ref: str) -> list[FileChange]:
        text = repo.read_file(PROJECT, "clusters/versions.yaml", ref)
        lines = [f"{cluster}: {version}" if line.startswith(f"{cluster}:") else line for line in text.split("\n")]
        return [FileChange(path="clusters/versions.yaml", content="\n".join(lines))]
    return edits


def open_mr(repo: GitLabRepo, cluster: str, version: str = "1.21.0") -> int:
    branch = f"guard/istio-upgrade/{cluster}-{version}"
    repo.ensure_branch(PROJECT, branch, "main")
    repo.commit_files(PROJECT, branch, bump(repo, cluster, version)(branch), f"Upgrade {cluster}")
    return repo.ensure_merge_request(PROJECT, branch, "main", f"Upgrade Istio on {cluster}", "Health report.").iid


def guard_notes(sim: GitLabSimulator, iid: int) -> list[str]:
    return [n for n in sim.notes(PROJECT, iid) if NOTE_MARKER in n]


# ---------------------------------------------------------------- what blocks, shown in one place


def test_the_description_and_one_status_note_show_what_blocks_and_are_edited_in_place(sim, repo):
    # GIVEN a project that needs one approval and a passing pipeline, and GUARD's MR whose pipeline runs
    sim.configure(PROJECT, approvals_required=1, only_allow_merge_if_pipeline_succeeds=True, ci=True)
    iid = open_mr(repo, "eks-a")
    gates = MergeGateService(repo)

    # WHEN GUARD tends it
    first = gates.tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")

    # THEN the description and one note say a person must approve and the pipeline must pass
    assert first.detailed_merge_status == "not_approved"
    description = sim.merge_request(PROJECT, iid)["description"]
    assert description.startswith(GATES_HEADING) and GATES_END in description
    assert "**1 more approval** needed (1 required)" in description
    assert "the **pipeline is running**" in description and "Health report." in description
    assert len(guard_notes(sim, iid)) == 1

    # WHEN the pipeline passes and a reviewer approves, and GUARD tends it twice more
    sim.finish_pipelines(PROJECT, "success")
    sim.approve(PROJECT, iid, "reviewer")
    after = gates.tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")
    edits_before = sum(1 for r in sim.requests if r.method == "PUT")
    gates.tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")

    # THEN the same single note says nothing blocks; an unchanged state writes nothing
    assert after.blockers == [] and after.detailed_merge_status == "mergeable"
    notes = guard_notes(sim, iid)
    assert len(notes) == 1 and "nothing: GitLab reports the merge request mergeable" in notes[0]
    assert "approvals required: 1, pipelines must succeed" in notes[0]
    assert sum(1 for r in sim.requests if r.method == "PUT") == edits_before
    assert sim.merge_request(PROJECT, iid)["description"].count(GATES_HEADING) == 1


def test_a_mergeable_mr_gets_no_note_only_its_description_section(sim, repo):
    # GIVEN a project without approval rule or CI
    iid = open_mr(repo, "eks-a")

    # WHEN GUARD tends its MR
    result = MergeGateService(repo).tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")

    # THEN nothing blocks, no note is added, the description says so
    assert result.blockers == [] and guard_notes(sim, iid) == []
    assert "nothing: GitLab reports the merge request mergeable" in sim.merge_request(PROJECT, iid)["description"]


def test_each_gate_is_named():
    # GIVEN gates GitLab reported: draft, failed required pipeline, approvals missing, unresolved discussions
    gates = MergeGates(state="opened", detailed_merge_status="draft_status", draft=True, approvals_required=2,
                       approvals_left=1, approved_by=["ana"], pipeline_status="failed", pipeline_must_succeed=True,
                       discussions_resolved=False)

    # WHEN they are described
    found = blockers(gates)

    # THEN each one is there, in words a reviewer acts on
    assert found == [
        "the merge request is a **draft**: mark it as ready",
        "**1 more approval** needed (2 required; approved by @ana)",
        "the **pipeline failed**; the project requires it to succeed: fix or re-run it",
        "**unresolved discussions** block the merge",
    ]
    # AND a pipeline that is not required, or "mergeable", blocks nothing
    assert blockers(MergeGates(state="opened", detailed_merge_status="mergeable", pipeline_status="failed")) == []


# ---------------------------------------------------------------- GitLab refuses what it refuses


def test_gitlab_refuses_merges_until_the_gates_clear(sim, repo):
    # GIVEN a fast-forward-only project needing an approval and a passing pipeline, and two MRs on neighbouring lines
    sim.configure(PROJECT, merge_method="ff", approvals_required=1, only_allow_merge_if_pipeline_succeeds=True,
                  ci=True)
    a, b = open_mr(repo, "eks-a"), open_mr(repo, "eks-b")
    gl = gitlab.Gitlab(sim.url, private_token=TOKEN)
    mr_a = gl.projects.get(PROJECT).mergerequests.get(a)

    # WHEN a client merges before approval / while the pipeline runs / with a stale sha
    # THEN 405, 405, 409 (GitLab's answers)
    with pytest.raises(gitlab.GitlabMRClosedError) as unapproved:
        mr_a.merge()
    sim.approve(PROJECT, a, "reviewer")
    with pytest.raises(gitlab.GitlabMRClosedError) as running:
        mr_a.merge()
    sim.finish_pipelines(PROJECT, "success")
    with pytest.raises(gitlab.GitlabMRClosedError) as moved:
        mr_a.merge(sha="0" * 40)
    assert (unapproved.value.response_code, running.value.response_code, moved.value.response_code) == (405, 405, 409)

    # WHEN A merges (fast-forward) and B is tried next
    mr_a.merge()
    sim.approve(PROJECT, b, "reviewer")
    mr_b = gl.projects.get(PROJECT).mergerequests.get(b)

    # THEN B conflicts (neighbouring lines changed) and GitLab refuses it with 422
    assert mr_b.detailed_merge_status == "conflict" and mr_b.has_conflicts
    with pytest.raises(gitlab.GitlabMRClosedError) as conflict:
        mr_b.merge()
    assert conflict.value.response_code == 422
    assert sim.merge_request(PROJECT, a)["merge_commit_sha"] is None  # fast-forward: no merge commit


def test_auto_merge_waits_for_the_pipeline_then_gitlab_merges(sim, repo):
    # GIVEN a project whose pipelines must pass, and GUARD configured to ask for auto-merge
    sim.configure(PROJECT, only_allow_merge_if_pipeline_succeeds=True, ci=True)
    iid = open_mr(repo, "eks-a")

    # WHEN GUARD tends the MR while its pipeline runs
    result = MergeGateService(repo, auto_merge=True).tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade")

    # THEN auto-merge is set, and GitLab merges once the pipeline succeeds (not before)
    assert "asked GitLab to merge once the pipeline succeeds (auto-merge)" in result.actions
    assert sim.merge_request(PROJECT, iid)["merge_when_pipeline_succeeds"] is True
    assert sim.merge_request(PROJECT, iid)["state"] == "opened"
    sim.finish_pipelines(PROJECT, "success")
    assert sim.merge_request(PROJECT, iid)["state"] == "merged"
    assert "eks-a: 1.21.0" in (sim.file_at(PROJECT, "clusters/versions.yaml") or "")


# ---------------------------------------------------------------- stale MRs: rebase, or regenerate from the head


def test_a_stale_mr_is_rebased_when_the_rebase_is_clean(sim, repo):
    # GIVEN a fast-forward-only project; GUARD's MR touches one file and another change lands on main first
    sim.configure(PROJECT, merge_method="ff")
    iid = open_mr(repo, "eks-a")
    sim.push(PROJECT, "main", {"clusters/other.yaml": "unrelated: false\n"}, "someone else's change")
    assert sim.merge_request(PROJECT, iid)["detailed_merge_status"] == "need_rebase"

    # WHEN GUARD tends it
    result = MergeGateService(repo).tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")

    # THEN GitLab rebased it: mergeable, and a merge keeps both changes
    assert result.actions == ["rebased onto the head of `main` (another change merged first)"]
    assert result.detailed_merge_status == "mergeable"
    assert sim.merge_when_mergeable(PROJECT, iid) is not None
    assert sim.file_at(PROJECT, "clusters/other.yaml") == "unrelated: false\n"
    assert "eks-a: 1.21.0" in (sim.file_at(PROJECT, "clusters/versions.yaml") or "")


def test_two_batches_on_neighbouring_lines_both_merge_without_anyone_resolving(sim, repo):
    # GIVEN a fast-forward-only project with approvals and CI, and two batches' MRs open at once, each
    # changing only its own cluster's line of one version map (neighbouring lines)
    sim.configure(PROJECT, merge_method="ff", approvals_required=1, only_allow_merge_if_pipeline_succeeds=True,
                  ci=True)
    a, b = open_mr(repo, "eks-a"), open_mr(repo, "eks-b")
    for iid in (a, b):
        sim.approve(PROJECT, iid, "reviewer")
    sim.finish_pipelines(PROJECT, "success")
    assert sim.merge_when_mergeable(PROJECT, a) is not None  # batch A merges first

    # WHEN GUARD tends B, which now conflicts with main
    gates = MergeGateService(repo)
    result = gates.tend(PROJECT, b, bump(repo, "eks-b", "1.21.0"), "Upgrade eks-b")

    # THEN B is regenerated from main's head: its diff is its own line only, the pipeline runs on the new head,
    # and (approvals removed by the push) it waits for a person's approval and the pipeline
    assert result.actions[0].startswith("regenerated from the head of `main` (it conflicts with the target branch)")
    source = sim.merge_request(PROJECT, b)["source_branch"]
    assert sim.file_at(PROJECT, "clusters/versions.yaml", source) == VERSIONS.replace(
        "eks-a: 1.20.3", "eks-a: 1.21.0").replace("eks-b: 1.20.3", "eks-b: 1.21.0")
    assert result.detailed_merge_status == "not_approved"
    assert any("the **pipeline is running**" in b_ for b_ in result.blockers)

    # WHEN the reviewer approves and the pipeline passes
    sim.approve(PROJECT, b, "reviewer")
    sim.finish_pipelines(PROJECT, "success")
    gates.tend(PROJECT, b, bump(repo, "eks-b", "1.21.0"), "Upgrade eks-b")

    # THEN B merges by fast-forward; main has both batches' versions and one status note tells the story
    assert sim.merge_when_mergeable(PROJECT, b) is not None
    assert sim.file_at(PROJECT, "clusters/versions.yaml") == VERSIONS.replace("1.20.3", "1.21.0")
    notes = guard_notes(sim, b)
    assert len(notes) == 1 and "Last action by GUARD: regenerated from the head of `main`" in notes[0]


def test_a_rebase_that_conflicts_is_followed_by_a_regeneration(sim, repo):
    # GIVEN a stale MR (need_rebase only) and a conflicting change landing on main while GitLab rebases
    sim.configure(PROJECT, merge_method="ff")
    iid = open_mr(repo, "eks-b")
    sim.push(PROJECT, "main", {"clusters/other.yaml": "unrelated: false\n"}, "unrelated change")

    class Racing(GitLabRepo):
        def rebase_merge_request(self, project: str, iid: int) -> MergeGates:
            sim.push(PROJECT, "main", {"clusters/versions.yaml": VERSIONS.replace("eks-a: 1.20.3", "eks-a: 1.22.0")},
                     "someone pins eks-a")
            return super().rebase_merge_request(project, iid)

    racing = Racing.from_token(sim.url, TOKEN, timeout_seconds=5, retry=RetryPolicy(sleep=lambda _: None),
                               clock=FakeClock())

    # WHEN GUARD tends it
    result = MergeGateService(racing).tend(PROJECT, iid, bump(racing, "eks-b", "1.21.0"), "Upgrade eks-b")

    # THEN GitLab's rebase failed, and GUARD regenerated the branch from main's head, keeping the other change
    assert "Rebase failed" in result.actions[0] and "regenerated from the head of `main`" in result.actions[0]
    assert result.detailed_merge_status == "mergeable"
    assert sim.merge_when_mergeable(PROJECT, iid) is not None
    final = sim.file_at(PROJECT, "clusters/versions.yaml") or ""
    assert "eks-a: 1.22.0" in final and "eks-b: 1.21.0" in final


def test_replacing_a_branch_twice_makes_one_commit(sim, repo):
    # GIVEN a stale MR GUARD regenerated once
    iid = open_mr(repo, "eks-b")
    sim.push(PROJECT, "main", {"clusters/versions.yaml": VERSIONS.replace("eks-a: 1.20.3", "eks-a: 1.21.0")})
    source = sim.merge_request(PROJECT, iid)["source_branch"]
    first = repo.replace_branch(PROJECT, source, "main", bump(repo, "eks-b", "1.21.0")("main"), "regenerate")

    # WHEN the same regeneration runs again (a retried pass)
    again = repo.replace_branch(PROJECT, source, "main", bump(repo, "eks-b", "1.21.0")("main"), "regenerate")

    # THEN it finds its commit: no second one
    assert first is not None and again == first == sim.branch_head(PROJECT, source)


def test_guard_edits_only_its_own_status_note(sim, repo):
    # GIVEN a person quoted GUARD's status-note marker in their own comment on a blocked MR
    sim.configure(PROJECT, approvals_required=1)
    iid = open_mr(repo, "eks-a")
    sim.comment_as(PROJECT, iid, "maria", f"{NOTE_MARKER} is wrong, I think", deliver_hooks=False)

    # WHEN GUARD tends the MR twice
    gates = MergeGateService(repo)
    gates.tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")
    gates.tend(PROJECT, iid, bump(repo, "eks-a", "1.21.0"), "Upgrade eks-a")

    # THEN the person's comment is untouched and GUARD keeps exactly one note of its own
    notes = sim.notes(PROJECT, iid)
    assert notes[0] == f"{NOTE_MARKER} is wrong, I think"
    assert len(notes) == 2 and "**1 more approval** needed" in notes[1]
