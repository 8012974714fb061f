"""The GitLab simulator's line merge (sandbox/sims/gitlab_merge.py, used by its merge and rebase) decides
like git's own three-way merge: `git merge-file` on the same three texts, when git is installed.

Git merges changes to different regions of a file and refuses two changes that overlap or touch
(no unchanged line between them), unless both sides made the same change: the reason two batches'
MRs on neighbouring lines of one version map conflict on a real GitLab."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox.sims.gitlab_merge import MergeConflict, merge_text

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

MAP = ["data:", "  a: 1.22.3", "  b: 1.22.3", "  c: 1.22.3", "  d: 1.22.3", "  e: 1.22.3"]


def git_merge(tmp: Path, base: str, ours: str, theirs: str) -> str | None:
    """git's merge of the three texts; None when git reports a conflict."""
    for name, text in (("base", base), ("ours", ours), ("theirs", theirs)):
        (tmp / name).write_text(text)
    done = subprocess.run(["git", "merge-file", "-p", str(tmp / "ours"), str(tmp / "base"), str(tmp / "theirs")],
                          capture_output=True, text=True, check=False)
    assert done.returncode >= 0, done.stderr  # a negative code is git's own error, not a conflict
    return done.stdout if done.returncode == 0 else None


def sim_merge(base: str, ours: str, theirs: str) -> str | None:
    try:
        return merge_text(base, ours, theirs, "f")
    except MergeConflict:
        return None


def text(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def edit(lines: list[str], at: dict[int, str]) -> list[str]:
    return [at.get(i, line) for i, line in enumerate(lines)]


CASES = {
    "neighbouring lines": ({1: "  a: 1.23.0"}, {2: "  b: 1.23.0"}),
    "one unchanged line between": ({1: "  a: 1.23.0"}, {3: "  c: 1.23.0"}),
    "the same line differently": ({2: "  b: 1.23.0"}, {2: "  b: 1.24.0"}),
    "the same change on both sides": ({2: "  b: 1.23.0"}, {2: "  b: 1.23.0"}),
    "first and last line": ({0: "data: {}"}, {5: "  e: 1.23.0"}),
    "two lines against their neighbours": ({1: "  a: 1.23.0", 2: "  b: 1.23.0"}, {3: "  c: 1.23.0"}),
    "far apart on both sides": ({1: "  a: 1.23.0", 5: "  e: 1.23.0"}, {3: "  c: 1.23.0"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_simulator_merges_a_version_map_as_git_does(case: str, tmp_path: Path) -> None:
    # GIVEN two branches each bumping lines of one version map
    ours, theirs = CASES[case]
    base = text(MAP)
    a, b = text(edit(MAP, ours)), text(edit(MAP, theirs))
    # WHEN both the simulator and git merge them
    expected = git_merge(tmp_path, base, a, b)
    # THEN they agree: the same text, or both a conflict
    assert sim_merge(base, a, b) == expected, (case, expected)


def test_neighbouring_lines_conflict_and_separated_lines_merge_in_git(tmp_path: Path) -> None:
    # The fact the parallel-batches scenarios rest on, asked of git itself.
    base = text(MAP)
    assert git_merge(tmp_path, base, text(edit(MAP, {1: "  a: 1.23.0"})), text(edit(MAP, {2: "  b: 1.23.0"}))) is None
    assert git_merge(tmp_path, base, text(edit(MAP, {1: "  a: 1.23.0"})),
                     text(edit(MAP, {3: "  c: 1.23.0"}))) == text(edit(MAP, {1: "  a: 1.23.0", 3: "  c: 1.23.0"}))


def test_random_line_edits_merge_as_git_merges_them(tmp_path: Path) -> None:
    # GIVEN many pairs of edits (replaced, inserted and deleted lines) of a file whose lines are all distinct,
    # so that the diff of each side has one reading
    rng = random.Random(15)
    base_lines = [f"line {i}" for i in range(12)]
    for round_ in range(150):
        sides = []
        for side in ("ours", "theirs"):
            lines = list(base_lines)
            for _ in range(rng.randint(1, 3)):
                at = rng.randrange(len(lines) + 1)
                action = rng.choice(("replace", "insert", "delete"))
                if action == "insert" or at == len(lines):
                    lines.insert(at, f"{side} {round_} {at} new")
                elif action == "replace":
                    lines[at] = f"{side} {round_} {at} changed"
                else:
                    del lines[at]
            sides.append(text(lines))
        base = text(base_lines)
        # WHEN the simulator and git merge them
        # THEN they agree on every pair
        assert sim_merge(base, *sides) == git_merge(tmp_path, base, *sides), (round_, sides)
