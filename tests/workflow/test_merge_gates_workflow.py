"""The gates before a merge in the whole workflow: the real ASL on the local engine, GUARD's reconciler on its
schedule, a GitLab project that merges fast-forward only, needs an approval and a passing pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from guard.gitops.helm_release import read_chart_version
from guard.services.gates import GATES_HEADING, NOTE_MARKER

from sandbox import layouts
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
    # (by the task that opened it or by the reconciler, whichever saw it stale first: the log shows the
    # reconciler's passes, the MR's status note the last action)
    said = seen["log"] + [n for notes in seen["notes"].values() for n in notes]
    assert any("regenerated from the head of `main`" in line for line in said), progress
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


def test_two_parallel_batches_on_neighbouring_lines_of_one_version_map_both_merge(rehearse: Rehearse) -> None:
    # GIVEN test and dev-1 upgrading at once on a fast-forward-only project, every cluster's version on its own
    # line of one ConfigMap, eks-test's line next to eks-dev-1's
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        project = world.scenario.gitlab_project
        seen["mrs"] = mrs = world.gitlab.merge_requests(project)
        # Each MR's change: the one commit GUARD's branch holds (it replaces the branch with one commit) against
        # its parent, the main it was cut from or rebased onto.
        seen["diffs"] = {mr["iid"]: {path: (world.gitlab.file_at(project, path,
                                                                 world.gitlab.parents(project, mr["sha"])[0]),
                                            world.gitlab.file_at(project, path, mr["sha"]))
                                     for path in world.gitlab.files(project, mr["sha"])} for mr in mrs}
        seen["map"] = world.gitlab.file_at(project, layouts.VERSION_MAP)
        seen["log"] = [text for _, text in world.human_log]
        seen["notes"] = {mr["iid"]: world.gitlab.notes(project, mr["iid"]) for mr in mrs}
        seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                           for c in world.scenario.fleet}

    # WHEN the rollout is rehearsed
    summary, progress = rehearse("parallel-batches-version-map", inspect=inspect)

    # THEN both batches succeeded and ran at the same time
    assert summary["status"] == "SUCCEEDED", progress
    assert rollout_expectation_problems(scenario("parallel-batches-version-map"), summary) == [], progress
    assert ["test", "dev-1"] in summary["overlapping"] or ["dev-1", "test"] in summary["overlapping"], progress
    # AND both MRs merged; the second conflicted (neighbouring lines) and GUARD regenerated it, nobody resolved it
    assert [mr["state"] for mr in seen["mrs"]] == ["merged", "merged"], progress
    said = seen["log"] + [n for notes in seen["notes"].values() for n in notes]
    assert any("regenerated from the head of `main`" in line for line in said), progress
    # AND each MR changed only its own clusters' lines of the map, and nothing else
    own = {"batch test": ["eks-test"], "batch dev-1": ["eks-dev-1", "eks-dev-2"]}
    for mr in seen["mrs"]:
        changed = {path: pair for path, pair in seen["diffs"][mr["iid"]].items() if pair[0] != pair[1]}
        assert list(changed) == [layouts.VERSION_MAP], (mr["title"], list(changed))
        before, after = changed[layouts.VERSION_MAP]
        lines = [(x, y) for x, y in zip((before or "").splitlines(), (after or "").splitlines(), strict=True)
                 if x != y]
        clusters = next(v for k, v in own.items() if mr["title"].endswith(k))
        assert lines == [(f'  {layouts.map_key(c)}: "1.19.3"', f'  {layouts.map_key(c)}: "1.20.0"')
                         for c in clusters], (mr["title"], lines)
    # AND main's map has every cluster at the target, and every cluster runs it
    assert (seen["map"] or "").count('"1.20.0"') == 3 and "1.19.3" not in (seen["map"] or "")
    assert seen["running"] == {"eks-test": "1.20.0", "eks-dev-1": "1.20.0", "eks-dev-2": "1.20.0"}


def test_version_map_lines_with_an_unchanged_line_between_are_rebased_not_regenerated(rehearse: Rehearse) -> None:
    # GIVEN the same two batches, but eks-dev-3 (in neither) keeps its line between eks-test's and eks-dev-1's
    loaded = scenario("parallel-batches-version-map").model_dump(exclude_unset=True)
    test, dev1, dev2 = loaded["fleet"]
    fleet = [test, {**dev2, "cluster": "eks-dev-3", "role_arn": "arn:aws:iam::111122223333:role/guard-eks-dev-3"},
             dev1, dev2]
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["mrs"] = world.gitlab.merge_requests(world.scenario.gitlab_project)
        seen["log"] = [text for _, text in world.human_log]
        seen["log"] += [n for mr in seen["mrs"] for n in world.gitlab.notes(world.scenario.gitlab_project, mr["iid"])]
        seen["map"] = world.gitlab.file_at(world.scenario.gitlab_project, layouts.VERSION_MAP) or ""

    # WHEN the rollout is rehearsed
    summary, progress = rehearse("parallel-batches-version-map", inspect=inspect, fleet=fleet)

    # THEN both merged; the second went stale and GitLab's rebase (git's line merge) was clean: nothing regenerated
    assert summary["status"] == "SUCCEEDED", progress
    assert [mr["state"] for mr in seen["mrs"]] == ["merged", "merged"], progress
    assert not any("regenerated from the head" in line for line in seen["log"]), progress
    assert any("rebased onto the head of `main`" in line for line in seen["log"]), seen["log"]  # log or note
    # AND the map has the batches' three clusters at the target, eks-dev-3 untouched between them
    assert seen["map"].count('"1.20.0"') == 3 and f'  {layouts.map_key("eks-dev-3")}: "1.19.3"' in seen["map"]
