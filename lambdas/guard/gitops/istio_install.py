"""A cluster's whole Istio install as its GitOps repository lays it out, and where each version lives.

From the cluster's Flux path (the directory of `flux_config_path`) GUARD follows what Flux
would apply: every YAML file of a directory (or, when it has a `kustomization.yaml`, the
`resources` it lists, shared bases included), and the `spec.path` of each Flux Kustomization
found on the way, carrying that Kustomization's `postBuild` along. Every HelmRelease of an
Istio chart (base, istiod, cni, ztunnel, gateway) is one component of the install.

The version of a component lives in one of:
- its `spec.chart.spec.version`;
- a `postBuild.substitute` variable when that value is `${var}`: in the Flux Kustomization
  that applies it, or in a ConfigMap its `substituteFrom` names (`substitute` wins, as in Flux);
- the `spec.ref.tag` / `spec.ref.semver` of the OCIRepository a `spec.chartRef` names.

Edits replace the version scalar's span of the original text only (guard.gitops.helm_release),
so an MR's diff changes version tokens and nothing else.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from guard.core.istio import CHARTS, COMPONENT_RANK
from guard.errors import ConfigError
from guard.gitops.helm_release import _NODE_PROPERTIES, _get, _render, _scalar

_VAR = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[=-]([^}]*))?\}$")
_VERSION_TEXT = re.compile(r"^v?[0-9]+\.[0-9]+\.[0-9]+$")
_KUSTOMIZE_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_FLUX_KUSTOMIZATION = "kustomize.toolkit.fluxcd.io/"
_HELM = "helm.toolkit.fluxcd.io/"
_SOURCE = "source.toolkit.fluxcd.io/"


class Files:
    """Read access to one revision of the repository: `read(path)` (None when absent) and
    `list(directory)` (every file below it, recursively; "" for the whole repository). Texts and
    listings are cached: one install reads each file once."""

    def __init__(self, read: Callable[[str], str | None], list_dir: Callable[[str], list[str]]) -> None:
        self._read, self._list = read, list_dir
        self._texts: dict[str, str | None] = {}
        self._lists: dict[str, list[str]] = {}
        self._docs: dict[str, list[Doc]] = {}

    def read(self, path: str) -> str | None:
        if path not in self._texts:
            self._texts[path] = self._read(path)
        return self._texts[path]

    def listing(self, directory: str) -> list[str]:
        if directory not in self._lists:
            self._lists[directory] = sorted(self._list(directory))
        return self._lists[directory]

    def docs(self, path: str) -> list[Doc]:
        """The YAML documents of `path` (none when it is absent); ConfigError naming it when invalid."""
        if path not in self._docs:
            text = self.read(path)
            self._docs[path] = [] if text is None else _compose(text, path)
        return self._docs[path]

    def find(self, kind: str, api: str, name: str, namespace: str, near: Iterable[str]) -> Doc | None:
        """The `kind` document named `namespace/name`: among the files `near` first, then the whole repository."""
        for paths in (list(near), [p for p in self.listing("") if _is_yaml(p)]):
            for path in paths:
                for doc in self.docs(path):
                    if doc.kind == kind and doc.api.startswith(api) and doc.name == name \
                            and (doc.namespace or namespace) == namespace:
                        return doc
        return None


@dataclass(frozen=True)
class Doc:
    """One YAML document of one file."""

    path: str
    index: int
    node: MappingNode
    text: str

    @property
    def kind(self) -> str:
        return _scalar(_get(self.node, "kind")) or ""

    @property
    def api(self) -> str:
        return _scalar(_get(self.node, "apiVersion")) or ""

    @property
    def name(self) -> str:
        return _scalar(_get(self.node, "metadata", "name")) or ""

    @property
    def namespace(self) -> str:
        return _scalar(_get(self.node, "metadata", "namespace")) or ""

    def get(self, *path: str) -> Node | None:
        return _get(self.node, *path)

    def where(self) -> str:
        return f"{self.path} ({self.kind} {self.name})"


@dataclass(frozen=True)
class Location:
    """Where one version is written: the [start, end) span of its scalar in `path`."""

    path: str
    start: int
    end: int
    style: str | None
    field: str  # what it is, for people: "HelmRelease istio-system/istiod spec.chart.spec.version"
    current: str
    bare: bool = False  # the span is inside a scalar (a `${var:=default}`): write the version without quotes

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.start, self.end)


@dataclass(frozen=True)
class ChartSource:
    """Where a chart is published: a Helm repository (index.yaml) or an OCI repository (tags list)."""

    kind: str  # "helm" | "oci"
    url: str  # https://... for helm; oci://host/path/<chart> for oci (the chart's repository)
    chart: str
    insecure: bool = False  # plain HTTP (Flux `spec.insecure`)


@dataclass
class Component:
    """One Istio HelmRelease of a cluster's install."""

    component: str
    name: str
    namespace: str
    chart: str
    release_path: str
    location: Location
    depends_on: list[tuple[str, str]] = field(default_factory=list)  # (namespace, name)
    crds_policy: str | None = None  # spec.upgrade.crds
    crd_templates: bool | None = None  # values.base.enableCRDTemplates, when written
    source: ChartSource | None = None
    problems: list[str] = field(default_factory=list)  # what stops GUARD from knowing its source

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def rank(self) -> int:
        return COMPONENT_RANK[self.component]


@dataclass
class Install:
    """Every Istio component of one cluster, in upgrade order, and the files they came from."""

    cluster_id: str
    components: list[Component]
    files: list[str]

    def locations(self) -> list[Location]:
        return list({c.location.key: c.location for c in self.components}.values())


# ------------------------------------------------------------------------------------- reading


def read_install(files: Files, cluster_id: str, flux_config_path: str) -> Install:
    """The cluster's Istio install, from the directory of `flux_config_path`; ConfigError when it has none."""
    walker = _Walker(files)
    start = posixpath.dirname(flux_config_path)
    if files.read(flux_config_path) is None:
        raise ConfigError(f"{cluster_id}: {flux_config_path} does not exist in the repository")
    walker.visit_dir(start, None)
    components = []
    for doc, contexts in walker.releases.values():
        # One document reached several ways (a Flux Kustomization whose path holds its own directory, say):
        # the Kustomization with a postBuild is the one whose variables apply.
        context = next((c for c in contexts if c is not None and c.get("spec", "postBuild") is not None),
                       contexts[0])
        component = _component(files, doc, context, walker.visited)
        if component is not None:
            components.append(component)
    if not components:
        raise ConfigError(f"{cluster_id}: no HelmRelease of an Istio chart ({', '.join(sorted(set(CHARTS)))}) "
                          f"under {start or '/'} (from flux_config_path {flux_config_path})")
    seen: dict[str, Component] = {}
    for c in components:
        if c.ref in seen:
            raise ConfigError(f"{cluster_id}: HelmRelease {c.ref} is defined twice ({seen[c.ref].release_path} "
                              f"and {c.release_path})")
        seen[c.ref] = c
    components.sort(key=lambda c: (c.rank, c.namespace, c.name))
    return Install(cluster_id, components, sorted(walker.visited))


class _Walker:
    """Follows what Flux applies from a directory, as described in the module docstring."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.visited: set[str] = set()
        self._seen: set[tuple[str, str]] = set()
        self.releases: dict[tuple[str, int], tuple[Doc, list[Doc | None]]] = {}

    def visit_dir(self, directory: str, context: Doc | None) -> None:
        directory = directory.strip("/")
        kustomization = next((f"{directory}/{n}".lstrip("/") for n in _KUSTOMIZE_FILES
                              if self.files.read(f"{directory}/{n}".lstrip("/")) is not None), None)
        if kustomization is not None:
            self.visit_file(kustomization, context)
            return
        for path in self.files.listing(directory):
            if _is_yaml(path):
                self.visit_file(path, context)

    def visit_file(self, path: str, context: Doc | None) -> None:
        key = (path, context.where() if context else "")
        if key in self._seen:
            return
        self._seen.add(key)
        self.visited.add(path)
        for doc in self.files.docs(path):
            if doc.kind == "Kustomization" and doc.api.startswith(_FLUX_KUSTOMIZATION):
                target = _scalar(doc.get("spec", "path"))
                if target is not None:
                    self.visit_dir(posixpath.normpath(target.removeprefix("./")).removeprefix("."), doc)
            elif doc.kind == "Kustomization" or posixpath.basename(path) in _KUSTOMIZE_FILES:
                for resource in _strings(doc.get("resources")):
                    if "://" in resource:
                        continue  # a remote base: not in this repository
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(path), resource))
                    if target.startswith(".."):
                        raise ConfigError(f"{path}: resource {resource} leaves the repository")
                    if self.files.read(target) is not None:
                        self.visit_file(target, context)
                    else:
                        self.visit_dir(target, context)
            elif doc.kind == "HelmRelease" and doc.api.startswith(_HELM):
                self.releases.setdefault((doc.path, doc.index), (doc, []))[1].append(context)


def _component(files: Files, doc: Doc, context: Doc | None, near: set[str]) -> Component | None:
    namespace = doc.namespace or (context and _scalar(context.get("spec", "targetNamespace"))) or "default"
    chart_ref = doc.get("spec", "chartRef")
    problems: list[str] = []
    source: ChartSource | None = None
    if chart_ref is not None:
        kind = _scalar(_get(chart_ref, "kind")) or ""
        ref_name = _scalar(_get(chart_ref, "name")) or ""
        ref_ns = _scalar(_get(chart_ref, "namespace")) or namespace
        if kind != "OCIRepository":
            return None if not _istio_name(ref_name) else _refuse(
                doc, f"spec.chartRef to a {kind}: GUARD bumps an OCIRepository's ref, not a {kind}")
        repo = files.find("OCIRepository", _SOURCE, ref_name, ref_ns, near)
        url = _scalar(repo.get("spec", "url")) if repo else None
        chart = (url or ref_name).rstrip("/").rsplit("/", 1)[-1]
        component = CHARTS.get(chart)
        if component is None:
            return None
        if repo is None:
            raise ConfigError(f"{doc.where()}: spec.chartRef names OCIRepository {ref_ns}/{ref_name}, which is not "
                              "in the repository")
        ref = repo.get("spec", "ref")
        tag, semver = _get(ref, "tag"), _get(ref, "semver")
        target = tag if isinstance(tag, ScalarNode) else semver if isinstance(semver, ScalarNode) else None
        if target is None:
            raise ConfigError(f"{repo.where()}: spec.ref has no tag or semver (a digest pins no version GUARD can "
                              "bump); write spec.ref.tag")
        fieldname = "spec.ref.tag" if target is tag else "spec.ref.semver"
        location = _resolve(files, repo, target, f"OCIRepository {ref_ns}/{ref_name} {fieldname}", context, near)
        source = ChartSource("oci", str(url), chart, insecure=_scalar(repo.get("spec", "insecure")) == "true")
    else:
        chart = _scalar(doc.get("spec", "chart", "spec", "chart")) or ""
        component = CHARTS.get(chart)
        if component is None:
            return None
        node = doc.get("spec", "chart", "spec", "version")
        if not isinstance(node, ScalarNode):
            raise ConfigError(f"{doc.where()}: no scalar spec.chart.spec.version (GUARD pins every Istio chart)")
        location = _resolve(files, doc, node, f"HelmRelease {namespace}/{doc.name} spec.chart.spec.version",
                            context, near)
        source_ref = doc.get("spec", "chart", "spec", "sourceRef")
        source_kind = _scalar(_get(source_ref, "kind")) or ""
        source_name = _scalar(_get(source_ref, "name")) or ""
        source_ns = _scalar(_get(source_ref, "namespace")) or namespace
        if source_kind != "HelmRepository":
            problems.append(f"spec.chart.spec.sourceRef is a {source_kind or 'nothing'}: GUARD checks published "
                            "versions in a HelmRepository only")
        else:
            repo = files.find("HelmRepository", _SOURCE, source_name, source_ns, near)
            url = _scalar(repo.get("spec", "url")) if repo else None
            if repo is None or not url:
                problems.append(f"HelmRepository {source_ns}/{source_name} is not in the repository")
            elif _scalar(repo.get("spec", "type")) == "oci" or url.startswith("oci://"):
                source = ChartSource("oci", f"{url.rstrip('/')}/{chart}", chart,
                                     insecure=_scalar(repo.get("spec", "insecure")) == "true")
            else:
                source = ChartSource("helm", url, chart)
    templates = _scalar(doc.get("spec", "values", "base", "enableCRDTemplates"))
    return Component(
        component=component, name=doc.name, namespace=namespace, chart=chart, release_path=doc.path,
        location=location, depends_on=_depends_on(doc, namespace),
        crds_policy=_scalar(doc.get("spec", "upgrade", "crds")),
        crd_templates=None if templates is None else templates.lower() == "true", source=source, problems=problems)


def _refuse(doc: Doc, why: str) -> Component:
    raise ConfigError(f"{doc.where()}: {why}")


def _istio_name(name: str) -> bool:
    return name in CHARTS


def _depends_on(doc: Doc, namespace: str) -> list[tuple[str, str]]:
    found = []
    node = doc.get("spec", "dependsOn")
    if isinstance(node, SequenceNode):
        for item in node.value:
            name = _scalar(_get(item, "name"))
            if name:
                found.append((_scalar(_get(item, "namespace")) or namespace, name))
    return found


def _resolve(files: Files, doc: Doc, node: ScalarNode, what: str, context: Doc | None,
             near: set[str]) -> Location:
    """The location of the value `node` holds: itself, or the postBuild variable it names."""
    value = str(node.value)
    match = _VAR.match(value)
    if match is None:
        return _location(doc, node, what)
    var = match.group(1)
    if context is None:
        raise ConfigError(f"{doc.where()}: {what} is {value} but no Flux Kustomization with postBuild applies "
                          f"{doc.path}; GUARD cannot tell where {var} is set")
    substitute = _get(context.get("spec", "postBuild", "substitute"), var)
    if isinstance(substitute, ScalarNode):
        return _location(context, substitute, f"Kustomization {context.name} postBuild.substitute.{var} ({what})")
    found: Location | None = None
    namespace = context.namespace or "flux-system"
    sources = context.get("spec", "postBuild", "substituteFrom")
    for item in sources.value if isinstance(sources, SequenceNode) else []:
        kind, name = _scalar(_get(item, "kind")), _scalar(_get(item, "name")) or ""
        if kind != "ConfigMap":
            continue
        config_map = files.find("ConfigMap", "v1", name, namespace, near)
        entry = _get(config_map.get("data"), var) if config_map else None
        if isinstance(entry, ScalarNode) and config_map is not None:
            found = _location(config_map, entry, f"ConfigMap {namespace}/{name} data.{var} ({what})")
    if found is None and match.group(2):
        # `${var:=1.2.3}` with var set nowhere: Flux writes the default, which is where the version lives.
        return _default_location(doc, node, match.group(2), what)
    if found is None:
        raise ConfigError(f"{doc.where()}: {what} is {value}, and {var} is in neither postBuild.substitute of "
                          f"Kustomization {context.name} ({context.path}) nor a ConfigMap of its substituteFrom "
                          "in the repository (a Secret's value GUARD does not edit)")
    return found


def _default_location(doc: Doc, node: ScalarNode, default: str, what: str) -> Location:
    whole = _location(doc, node, what)
    offset = doc.text.find(default, whole.start, whole.end)
    if offset < 0 or node.style not in (None, '"', "'") or not _VERSION_TEXT.match(default):
        raise ConfigError(f"{doc.path}: {what} is {node.value}: GUARD cannot edit its default in place")
    return Location(doc.path, offset, offset + len(default), "'", f"{what} (the default of {node.value})", default,
                    bare=True)


def _location(doc: Doc, node: ScalarNode, what: str) -> Location:
    if node.style in ("|", ">"):
        raise ConfigError(f"{doc.path}: {what} is a block scalar; write it on one line")
    start, end = node.start_mark.index, node.end_mark.index
    properties = _NODE_PROPERTIES.match(doc.text[start:end])
    if properties:
        start += properties.end()
    if "\n" in doc.text[start:end] or "\r" in doc.text[start:end]:
        raise ConfigError(f"{doc.path}: {what} spans several lines; write it on one line")
    if doc.text[start:start + 1] == "*":
        raise ConfigError(f"{doc.path}: {what} is an alias; edit the anchored value instead")
    return Location(doc.path, start, end, node.style, what, str(node.value))


# ------------------------------------------------------------------------------------- editing


def plan_edits(installs: dict[str, Install], versions: dict[str, str]) -> dict[Location, str]:
    """Each location the change writes and the version it gets; ConfigError when two clusters of
    the change need one location at different versions."""
    wanted: dict[tuple[str, int, int], tuple[Location, str, str]] = {}
    for cluster_id, install in installs.items():
        version = versions[cluster_id]
        for location in install.locations():
            previous = wanted.setdefault(location.key, (location, version, cluster_id))
            if previous[1] != version:
                raise ConfigError(f"{location.field} in {location.path} is shared by {previous[2]} "
                                  f"(to {previous[1]}) and {cluster_id} (to {version})")
    return {location: version for location, version, _ in wanted.values()}


def apply_edits(files: Files, edits: dict[Location, str]) -> dict[str, str]:
    """New text of every file `edits` change (files already at their versions left out)."""
    by_path: dict[str, list[tuple[Location, str]]] = {}
    for location, version in edits.items():
        if not version or version != version.strip() or any(c in version for c in "\r\n\t\"'$"):
            raise ConfigError(f"refusing to write version {version!r} to {location.path}")
        by_path.setdefault(location.path, []).append((location, version))
    changed: dict[str, str] = {}
    for path, items in sorted(by_path.items()):
        text = files.read(path)
        if text is None:  # pragma: no cover - the location was read from it
            raise ConfigError(f"{path} vanished while GUARD edited it")
        updated = text
        for location, version in sorted(items, key=lambda item: item[0].start, reverse=True):
            text_of = version if location.bare else _render(version, location.style)
            updated = updated[:location.start] + text_of + updated[location.end:]
        if updated != text:
            _check_versions_only(path, text, updated)
            changed[path] = updated
    return changed


def _check_versions_only(path: str, before: str, after: str) -> None:
    """Post-condition: same lines, and every changed line still parses as YAML."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    if len(old) != len(new):  # pragma: no cover - a one-line scalar replaced by a one-line scalar
        raise ConfigError(f"{path}: a version edit changed the number of lines")
    _compose(after, path)


# ------------------------------------------------------------------------------------- YAML helpers


def _compose(text: str, path: str) -> list[Doc]:
    try:
        nodes = [n for n in YAML(typ="rt").compose_all(text) if n is not None]
    except YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    return [Doc(path, i, n, text) for i, n in enumerate(nodes) if isinstance(n, MappingNode)]


def _strings(node: Node | None) -> list[str]:
    return [str(n.value) for n in node.value if isinstance(n, ScalarNode)] if isinstance(node, SequenceNode) else []


def _is_yaml(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))
