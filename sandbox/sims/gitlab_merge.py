"""Line-level three-way merge for the GitLab simulator: what Gitaly's merge and rebase decide.

Git (xdiff) merges two sides' changes to one file line by line: changes to different regions
merge cleanly, and two changes whose regions overlap *or touch* (no unchanged line between
them) conflict, unless both sides made the same change. So two merge requests that each bump
the version on neighbouring lines of one file conflict, as they do on a real GitLab.
"""

from __future__ import annotations

from difflib import SequenceMatcher

_Hunk = tuple[int, int, list[str]]  # base lines [start, end) replaced by these lines


class MergeConflict(Exception):
    """Both sides changed the same or adjacent lines of a file."""


def _hunks(base: list[str], side: list[str]) -> list[_Hunk]:
    matcher = SequenceMatcher(a=base, b=side, autojunk=False)
    return [(i1, i2, side[j1:j2]) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def merge_text(base: str | None, ours: str | None, theirs: str | None, path: str = "") -> str | None:
    """The merge of `ours` and `theirs` (each derived from `base`); None means the file is deleted.

    Raises MergeConflict when both changed the file in overlapping or adjacent places, or one
    deleted a file the other changed."""
    if ours == theirs:
        return ours
    if theirs == base:
        return ours
    if ours == base:
        return theirs
    if base is None or ours is None or theirs is None:
        raise MergeConflict(f"{path}: added or deleted on both sides differently")
    lines = base.splitlines(keepends=True)
    mine, other = _hunks(lines, ours.splitlines(keepends=True)), _hunks(lines, theirs.splitlines(keepends=True))
    chosen: list[_Hunk] = list(mine)
    for hunk in other:
        touching = [m for m in mine if m[0] <= hunk[1] and hunk[0] <= m[1]]
        if not touching:
            chosen.append(hunk)
        elif touching != [hunk]:  # the very same change on both sides merges; anything else conflicts
            raise MergeConflict(f"{path}: both sides changed lines {hunk[0] + 1}-{max(hunk[1], hunk[0] + 1)}")
    out: list[str] = []
    at = 0
    for start, end, replacement in sorted(chosen, key=lambda h: (h[0], h[1])):
        out.extend(lines[at:start])
        out.extend(replacement)
        at = end
    out.extend(lines[at:])
    return "".join(out)


def merge_trees(base: dict[str, str], ours: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    """Every file merged (`merge_text`); raises MergeConflict naming the first file that conflicts."""
    merged: dict[str, str] = {}
    for path in sorted(set(base) | set(ours) | set(theirs)):
        text = merge_text(base.get(path), ours.get(path), theirs.get(path), path)
        if text is not None:
            merged[path] = text
    return merged
