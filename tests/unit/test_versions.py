"""Version ordering (`regate.versions`): what "never goes backwards" compares."""

from __future__ import annotations

import pytest

from regate.versions import UnorderableVersion, compare_versions


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0", "1.0.1"),
        ("1.0.9", "1.0.10"),  # numbers, not strings
        ("1.9.0", "1.10.0"),
        ("0.9.9", "1.0.0"),
        ("1.0.0-rc.1", "1.0.0"),  # a pre-release is lower than its release
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),  # numeric identifiers are lower
        ("1.0.0-alpha.beta", "1.0.0-beta"),
        ("1.0.0-beta.2", "1.0.0-beta.11"),
        ("1.0.0-rc.1", "1.0.0-rc.2"),
        ("1", "2"),
        ("2024.6", "2024.10"),
        ("1.2", "1.2.1"),
        ("1.10.0.1", "1.10.0.2"),
    ],
)
def test_order(lower: str, higher: str) -> None:
    assert compare_versions(lower, higher) == -1
    assert compare_versions(higher, lower) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [("1.0.0", "1.0.0"), ("1.0.0+build.1", "1.0.0+build.2"), ("1.2", "1.2.0"), ("3", "3.0")],
)
def test_equal_precedence(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("latest", "1.0.0"),
        ("1.0.0", "v1.0.1"),  # a leading "v" is not semver
        ("2024-06-01", "2024-07-01"),
        ("1.0.0-rc.1", "2"),
    ],
)
def test_unorderable_versions_are_said_so(a: str, b: str) -> None:
    with pytest.raises(UnorderableVersion, match="cannot be ordered"):
        compare_versions(a, b)
