"""Istio version parsing and the upgrade rules GUARD enforces."""

from __future__ import annotations

import re
from functools import total_ordering

from guard.core.quote import quoted

# ASCII digits only: `\d` would also match full-width or Arabic-Indic digits, which int() reads
# but no chart repository, Flux nor Istio does.
_SEMVER = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)", re.ASCII)
_MAX_LENGTH = 32


@total_ordering
class Version:
    """A plain `MAJOR.MINOR.PATCH` Istio version."""

    def __init__(self, major: int, minor: int, patch: int) -> None:
        self.major, self.minor, self.patch = major, minor, patch

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `1.20.0` (ASCII digits); raises ValueError quoting the text (shortened) when it is not one."""
        stripped = str(text).strip()
        match = _SEMVER.fullmatch(stripped) if len(stripped) <= _MAX_LENGTH else None
        if not match:
            raise ValueError(f"{quoted(text)} is not a version of the form MAJOR.MINOR.PATCH in ASCII digits "
                             "(e.g. 1.20.0)")
        return cls(*(int(g) for g in match.groups()))

    def _key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __repr__(self) -> str:
        return f"Version('{self}')"


def upgrade_problem(current: Version, target: Version, max_minor_skip: int) -> str | None:
    """Why `current -> target` is not allowed, or None when it is.

    Istio supports in-place upgrades one minor at a time and revision (canary) upgrades
    up to two minors; `max_minor_skip` carries the chosen mode's limit.
    """
    if target < current:
        return f"{target} is a downgrade from {current}"
    if target == current:
        return f"already at {current}"
    if target.major != current.major:
        return f"{current} -> {target} changes the major version, which Istio does not support"
    skip = target.minor - current.minor
    if skip > max_minor_skip:
        return (
            f"{current} -> {target} skips {skip} minor versions; the upgrade mode allows "
            f"at most {max_minor_skip}"
        )
    return None
