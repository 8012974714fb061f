"""Istio version rules: what GUARD refuses to upgrade, and why it says so."""

from __future__ import annotations

import pytest
from guard.core.version import Version, upgrade_problem


@pytest.mark.parametrize("text", ["1.20", "v1.20.0", "1.20.0-rc.1", "", "latest", "1.x.0", "1.20.0.1"])
def test_parse_rejects_what_is_not_major_minor_patch(text):
    # GIVEN a version string that is not MAJOR.MINOR.PATCH
    # WHEN parsed
    with pytest.raises(ValueError) as caught:
        Version.parse(text)
    # THEN the error quotes it and shows the expected form
    assert f"'{text}'" in str(caught.value)
    assert "MAJOR.MINOR.PATCH" in str(caught.value)


@pytest.mark.parametrize("text", ["\uff11.\uff12\uff10.\uff10", "1.\u0662\u0660.0", "\U0001d7cf.20.0", "1.20.0\n1"])
def test_parse_accepts_ascii_digits_only(text):
    # GIVEN a version whose digits are not ASCII (full-width, Arabic-Indic, mathematical bold)
    # WHEN parsed THEN it is refused, although int() would read those digits
    with pytest.raises(ValueError, match="ASCII digits"):
        Version.parse(text)


def test_parse_quotes_a_long_text_shortened():
    # GIVEN a 100 KB "version"
    with pytest.raises(ValueError) as caught:
        Version.parse("1" * 100_000)
    # THEN the message quotes its start and says how long it was
    assert "(100000 characters)" in str(caught.value)
    assert len(str(caught.value)) < 200


def test_parse_and_order():
    # GIVEN versions whose string order differs from their numeric order
    # THEN they compare numerically, and print back as given
    assert Version.parse("1.9.0") < Version.parse("1.10.0")
    assert Version.parse(" 1.20.3 ") == Version.parse("1.20.3")
    assert str(Version.parse("1.20.3")) == "1.20.3"
    assert len({Version.parse("1.20.3"), Version.parse("1.20.3")}) == 1


def problem(current: str, target: str, skip: int = 1) -> str | None:
    return upgrade_problem(Version.parse(current), Version.parse(target), skip)


def test_downgrade_is_refused():
    assert problem("1.20.1", "1.19.5") == "1.19.5 is a downgrade from 1.20.1"


def test_patch_downgrade_is_refused():
    assert "downgrade" in problem("1.20.2", "1.20.1")


def test_same_version_is_refused():
    assert problem("1.20.0", "1.20.0") == "already at 1.20.0"


def test_major_change_is_refused():
    message = problem("1.24.0", "2.0.0", skip=2)
    assert "changes the major version" in message
    assert "1.24.0 -> 2.0.0" in message


def test_minor_skip_beyond_the_limit_is_refused_with_numbers():
    # GIVEN the in-place mode (one minor at a time)
    # WHEN asked to go 1.19 -> 1.21
    message = problem("1.19.3", "1.21.0", skip=1)
    # THEN the skip and the limit are both said
    assert message == "1.19.3 -> 1.21.0 skips 2 minor versions; the upgrade mode allows at most 1"


def test_revision_mode_allows_two_minors_but_not_three():
    assert problem("1.19.3", "1.21.0", skip=2) is None
    assert "skips 3 minor versions" in problem("1.19.3", "1.22.0", skip=2)


@pytest.mark.parametrize(("current", "target"), [("1.19.3", "1.20.0"), ("1.20.0", "1.20.4"), ("1.19.3", "1.19.4")])
def test_allowed_upgrades(current, target):
    assert problem(current, target) is None
