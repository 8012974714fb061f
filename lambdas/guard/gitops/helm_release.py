"""Read and bump `spec.chart.spec.version` of a Flux HelmRelease file, keeping it byte-for-byte.

The file is only parsed to find where the version scalar sits; the edit replaces that span
of the original text, so comments, blank lines, indentation, key order, line endings and
the quote style of the value survive a round trip that a YAML dump would rewrite.
"""

from __future__ import annotations

import re

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from guard.errors import ConfigError

_API_GROUP = "helm.toolkit.fluxcd.io/"
_VERSION_PATH = ("spec", "chart", "spec", "version")
# Anchors and tags written before a scalar (`&v 1.2.3`, `!!str 1.2.3`) are part of the node's span.
_NODE_PROPERTIES = re.compile(r"^(?:[!&]\S*\s+)+")


def read_chart_version(text: str, *, source: str = "HelmRelease file") -> str:
    """Value of `spec.chart.spec.version` of the one HelmRelease document in `text`."""
    node, _, _ = _locate_version(text, source)
    return str(node.value)


def set_chart_version(text: str, version: str, *, source: str = "HelmRelease file") -> str:
    """`text` with only the chart version replaced by `version`, in the old value's quote style."""
    if not version or version != version.strip() or any(c in version for c in "\r\n\t"):
        raise ConfigError(f"{source}: refusing to write chart version {version!r}")
    node, start, end = _locate_version(text, source)
    updated = text[:start] + _render(version, node.style) + text[end:]
    # Post-condition: the result parses and says what we meant; a bad edit must never reach an MR.
    if read_chart_version(updated, source=source) != version:  # pragma: no cover - defensive
        raise ConfigError(f"{source}: editing spec.chart.spec.version did not round-trip")
    return updated


def _locate_version(text: str, source: str) -> tuple[ScalarNode, int, int]:
    """The version scalar node and the [start, end) span of its text (quotes included)."""
    try:
        documents = [doc for doc in YAML(typ="rt").compose_all(text) if doc is not None]
    except YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from e

    releases = [doc for doc in documents if _is_helm_release(doc)]
    if not releases:
        raise ConfigError(f"{source}: no HelmRelease document (kind: HelmRelease, apiVersion {_API_GROUP}*)")
    if len(releases) > 1:
        names = ", ".join(_scalar(_get(doc, "metadata", "name")) or "?" for doc in releases)
        raise ConfigError(f"{source}: {len(releases)} HelmRelease documents ({names}); expected exactly one")
    release = releases[0]

    if _get(release, "spec", "chartRef") is not None and _get(release, "spec", "chart") is None:
        raise ConfigError(
            f"{source}: HelmRelease uses spec.chartRef; only spec.chart.spec.version is supported"
        )
    parent = _get(release, *_VERSION_PATH[:-1])
    node = _get(release, *_VERSION_PATH)
    if not isinstance(parent, MappingNode) or not isinstance(node, ScalarNode):
        raise ConfigError(f"{source}: HelmRelease has no scalar spec.chart.spec.version")
    if node.style in ("|", ">"):
        raise ConfigError(f"{source}: spec.chart.spec.version is a block scalar; write it on one line")

    key = next(k for k, v in parent.value if v is node)
    start, end = node.start_mark.index, node.end_mark.index
    if start < key.end_mark.index:
        raise ConfigError(f"{source}: spec.chart.spec.version is an alias; edit the anchored value instead")
    span = text[start:end]
    properties = _NODE_PROPERTIES.match(span)
    if properties:
        start += properties.end()
    if "\n" in text[start:end] or "\r" in text[start:end]:
        raise ConfigError(f"{source}: spec.chart.spec.version spans several lines; write it on one line")
    return node, start, end


def _is_helm_release(doc: Node) -> bool:
    kind = _scalar(_get(doc, "kind"))
    api_version = _scalar(_get(doc, "apiVersion")) or ""
    return kind == "HelmRelease" and api_version.startswith(_API_GROUP)


def _get(node: Node | None, *path: str) -> Node | None:
    """Child node at `path` of nested mappings; None when any step is missing. Duplicate keys are refused."""
    for key in path:
        if not isinstance(node, MappingNode):
            return None
        matches = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == key]
        if len(matches) > 1:
            raise ConfigError(f"duplicate key {key!r} (line {matches[1].start_mark.line + 1})")
        node = matches[0] if matches else None
    return node


def _scalar(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def _render(version: str, style: str | None) -> str:
    if style == "'":
        return "'" + version.replace("'", "''") + "'"
    if style == '"' or not _plain_is_string(version):
        # A plain value that YAML would read as a number or bool (e.g. 1.20) must be quoted.
        return '"' + version.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return version


def _plain_is_string(value: str) -> bool:
    try:
        doc = YAML(typ="rt").compose(f"v: {value}\n")
    except YAMLError:
        return False
    node = _get(doc, "v")
    return (
        isinstance(node, ScalarNode)
        and node.style is None
        and node.tag == "tag:yaml.org,2002:str"
        and node.value == value
    )
