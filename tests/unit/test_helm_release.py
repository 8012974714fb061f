"""Bumping the Istio HelmRelease must change the version and nothing else, byte for byte."""

from __future__ import annotations

import pytest
from guard.errors import ConfigError
from guard.gitops.helm_release import read_chart_version, set_chart_version

RELEASE = """\
# Istio control plane for prod-eu-1.
# Owned by platform-team; GUARD bumps the version below.
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: istiod
  namespace: istio-system   # keep in sync with the Kustomization

spec:
  interval: 10m
  chart:
    spec:
      chart: istiod
      version: "1.20.3"     # upgraded by GUARD
      sourceRef:
        kind: HelmRepository
        name: istio
  values:
    pilot:
      resources: {requests: {cpu: 500m}}
    meshConfig:
        accessLogFile: /dev/stdout   # odd indentation kept on purpose
"""


def test_set_changes_only_the_version_and_keeps_the_quotes():
    # GIVEN a HelmRelease with comments, a blank line, flow maps and odd indentation
    # WHEN the version is bumped
    updated = set_chart_version(RELEASE, "1.21.0")

    # THEN the file is the same except the value, which stays double-quoted
    assert updated == RELEASE.replace('version: "1.20.3"', 'version: "1.21.0"')
    assert read_chart_version(updated) == "1.21.0"


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("version: 1.20.3", "version: 1.21.0"),
        ("version: '1.20.3'", "version: '1.21.0'"),
        ('version: "1.20.3"', 'version: "1.21.0"'),
        ("version: &istio 1.20.3", "version: &istio 1.21.0"),
    ],
)
def test_quote_style_of_the_old_value_is_kept(written: str, expected: str):
    # GIVEN the version written plain, single-quoted, double-quoted or anchored
    text = RELEASE.replace('version: "1.20.3"', written)

    # WHEN it is bumped
    updated = set_chart_version(text, "1.21.0")

    # THEN the same style is used for the new value
    assert updated == RELEASE.replace('version: "1.20.3"', expected)


def test_plain_version_that_yaml_would_read_as_a_number_gets_quoted():
    # GIVEN a plain version
    text = RELEASE.replace('"1.20.3"', "1.20.3")

    # WHEN the new version would be a float if written plain
    updated = set_chart_version(text, "1.21")

    # THEN it is quoted so Flux still reads a string
    assert 'version: "1.21"     # upgraded by GUARD' in updated
    assert read_chart_version(updated) == "1.21"


def test_multi_document_file_edits_the_helm_release_only():
    # GIVEN a file with a HelmRepository, the HelmRelease and a ConfigMap that also has a version
    repo = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {name: istio}\n"
    other = "---\napiVersion: v1\nkind: ConfigMap\ndata:\n  version: 1.20.3\n"
    text = repo + RELEASE + other

    # WHEN the version is read and bumped
    before = read_chart_version(text)
    updated = set_chart_version(text, "1.21.0")

    # THEN only the HelmRelease changed
    assert before == "1.20.3"
    assert updated == repo + RELEASE.replace('"1.20.3"', '"1.21.0"') + other


def test_windows_line_endings_and_older_api_versions_are_kept():
    # GIVEN a v2beta1 HelmRelease saved with CRLF line endings
    text = RELEASE.replace("fluxcd.io/v2", "fluxcd.io/v2beta1").replace("\n", "\r\n")

    # WHEN it is bumped
    updated = set_chart_version(text, "1.21.0")

    # THEN the CRLF endings survive
    assert updated == text.replace('"1.20.3"', '"1.21.0"')


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("apiVersion: v1\nkind: ConfigMap\n", "no HelmRelease"),
        (RELEASE.replace('version: "1.20.3"', "sourceRef2: {}"), "no scalar spec.chart.spec.version"),
        (RELEASE + RELEASE.replace("name: istiod", "name: base"), "2 HelmRelease documents (istiod, base)"),
        (RELEASE.replace("kind: HelmRelease", "kind: HelmRelease\n  bad: [unclosed"), "invalid YAML"),
        (RELEASE.replace("helm.toolkit.fluxcd.io/v2", "example.com/v1"), "no HelmRelease"),
    ],
)
def test_unusable_files_are_refused_with_a_message_naming_the_problem(text: str, problem: str):
    # GIVEN a file GUARD cannot safely edit
    # WHEN it is read or bumped
    # THEN ConfigError names the file and the problem, and nothing is written
    with pytest.raises(ConfigError, match=r"clusters/eu/istio\.yaml") as read_error:
        read_chart_version(text, source="clusters/eu/istio.yaml")
    with pytest.raises(ConfigError):
        set_chart_version(text, "1.21.0")
    assert problem in str(read_error.value)


def test_a_version_that_would_break_the_line_is_refused():
    # GIVEN a well-formed file
    # WHEN the new version contains a newline
    # THEN nothing is written
    with pytest.raises(ConfigError, match="refusing"):
        set_chart_version(RELEASE, "1.21.0\nkind: Secret")
