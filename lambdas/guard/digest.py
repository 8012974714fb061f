"""Bounded summaries of per-cluster results, for everything whose size must not grow with the fleet.

An error cause (Step Functions keeps 32,768 characters), a state's data (256 KB) and a GitLab
note are read by a person who needs the counts and a few examples, not 500 lines. Every such
text here is a *digest*: counts per kind, the first `FIRST` clusters with their reason, and
where the rest are. The per-cluster detail stays in DynamoDB (verdicts, prechecks, the run
record), which `guard status` reads.

The digest is built before `guard.outbound.cause` cuts a text to the limit, so that last-resort
cut never hides the counts: a digest is at most about `FIRST * REASON_LIMIT` characters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

FIRST = 10
"""How many clusters a digest names with their reason."""

REASON_LIMIT = 1_000
"""Characters of one cluster's reason in a digest (its whole verdict is stored)."""

WHERE = "every cluster's result is stored with the run: `guard status <execution>` shows it"
"""Where the clusters a digest leaves out are."""


class Issue(NamedTuple):
    """One cluster's problem: `kinds` are what is counted (check or query names, a state)."""

    cluster_id: str
    reason: str
    kinds: tuple[str, ...] = ()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def counts(kinds: Iterable[str]) -> str:
    """`latency_p95 498, istiod_ready 2`: most frequent first, then by name."""
    tally = Counter(kinds)
    return ", ".join(f"{kind} {n}" for kind, n in sorted(tally.items(), key=lambda item: (-item[1], item[0])))


def issues_digest(issues: Sequence[Issue], *, what: str, where: str = WHERE, first: int = FIRST,
                  reason_limit: int = REASON_LIMIT) -> str:
    """The issues as one text: with at most `first` of them, their reasons joined by ` | ` (as a short
    batch always read); with more, `<n> clusters <what> (<counts per kind>): <first reasons> | … and
    <rest> more: <where>`."""
    reasons = [_cut(i.reason, reason_limit) for i in issues[:first]]
    if len(issues) <= first:
        return " | ".join(reasons)
    kinds = counts(k for i in issues for k in (i.kinds or ("other",)))
    return (f"{len(issues)} clusters {what} ({kinds}); the first {first}: " + " | ".join(reasons)
            + f" | … and {len(issues) - first} more: {where}")


def names_digest(names: Sequence[str], *, first: int = FIRST) -> str:
    """`a, b, c` for a few names; `a, b, … and 490 more (500 clusters)` for many."""
    if len(names) <= first:
        return ", ".join(names)
    return ", ".join(names[:first]) + f", … and {len(names) - first} more ({len(names)} clusters)"


def versions_digest(versions: Mapping[str, str], *, first: int = FIRST, sep: str = " → ") -> str:
    """`a → 1.19.3, b → 1.19.2` for a few clusters; for many, how many go to each version and the first."""
    if len(versions) <= first:
        return ", ".join(f"{c}{sep}{v}" for c, v in versions.items())
    per_version = counts(versions.values())
    named = ", ".join(f"{c}{sep}{v}" for c, v in list(versions.items())[:first])
    return f"{len(versions)} clusters (to {per_version}): {named}, … and {len(versions) - first} more"


def bounded(items: Sequence[str], first: int = FIRST) -> list[str]:
    """The first `first` items: what a state's data may carry of a list that grows with the fleet."""
    return list(items[:first])
