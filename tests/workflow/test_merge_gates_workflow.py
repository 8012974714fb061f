"""The gates before a merge in the whole workflow: the real ASL on the local engine, GUARD's reconciler on its
schedule, a GitLab project that merges fast-forward only, needs an approval and a passing pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from guard.gitops.helm_release import read_chart_version
from guard.services.gates import GATES_HEADING, NOTE_MARKER

from sandbox.rollout_rehearsal import rollout_expectation_problems
from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse, scenario

pytestmark = pytest.mark.workflow

ANNOTATION = "chart: istiod  # from the platform team's mirror"


def test_two_parallel_batches_that_conflict_both_merge_without_anyone_resolving(rehearse: Rehearse) -> None:
    # GIVEN test and dev-1 upgrading at once; the first merge makes the other MR stale, and a teammate's
    # change on the line next to every version makes it conflict
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        project = world.scenario.gitlab_project
        seen["mrs"] = world.gitlab.merge_requests(project)
        seen["notes"] = {mr["iid"]: world.gitlab.notes(project, mr["iid"]) for mr in seen["mrs"]}
        seen["files"] = {c.cluster: world.gitlab.file_at(project, f"clusters/{c.cluster}/istio/helmrelease.yaml")
                         for c in world.scenario.fleet}
        seen["log"] = [text for _, text in world.human_log]
        seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                           for c in world.scenario.fleet}

    # WHEN the rollout is rehearsed (the reviewer approves and merges only what GitLab lets them merge)
    summary, progress = rehearse("parallel-batches-ff-only", inspect=inspect)

    # THEN both batches succeeded, and ran at the same time
    assert summary["status"] == "SUCCEEDED", progress
    assert rollout_expectation_problems(scenario("parallel-batches-ff-only"), summary) == [], progress
    assert ["test", "dev-1"] in summary["overlapping"] or ["dev-1", "test"] in summary["overlapping"], progress
    # AND both MRs merged; the second was regenerated from main's head by the reconciler, not by a person
    assert [mr["state"] for mr in seen["mrs"]] == ["merged", "merged"], progress
    regenerated = [line for line in seen["log"] if "regenerated from the head of `main`" in line]
    assert len(regenerated) == 1, progress
    # (GitLab let the reviewer merge each only once approved and its pipeline passed on the head it merged)
    assert all(any(f"reviewer approved MR !{mr['iid']}" in line for line in seen["log"]) for mr in seen["mrs"])
    # AND main has every cluster at the target, with the teammate's change kept
    for cluster, text in seen["files"].items():
        assert read_chart_version(text or "") == "1.20.0" and ANNOTATION in (text or ""), cluster
    assert seen["running"] == {"eks-test": "1.20.0", "eks-dev-1": "1.20.0", "eks-dev-2": "1.20.0"}
    # AND each MR showed its gates in the description, and the regenerated one told it in ONE status note
    assert all(mr["description"].startswith(GATES_HEADING) for mr in seen["mrs"])
    status_notes = {iid: [n for n in notes if NOTE_MARKER in n] for iid, notes in seen["notes"].items()}
    assert sorted(len(notes) for notes in status_notes.values()) == [1, 1], status_notes
    assert any("Last action by GUARD: regenerated from the head of `main`" in n
               for notes in status_notes.values() for n in notes)
