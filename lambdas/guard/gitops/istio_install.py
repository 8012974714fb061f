"""A cluster's whole Istio install as its GitOps repository lays it out, and where each version lives.

From the cluster's Flux path (the directory of `flux_config_path`) GUARD follows what Flux
would apply: every YAML file of a directory (less other clusters' files kept beside the entry
file) or, when it has a `kustomization.yaml`, the `resources`, `bases` and `components` it
lists, shared bases included; and the `spec.path` of each Flux Kustomization found on the way,
carrying that Kustomization's `postBuild`. Every HelmRelease of an Istio chart (base, istiod,
cni, ztunnel, gateway) is one component of the install.

The version of a component lives in one of:
- its `spec.chart.spec.version`;
- the `spec.ref.tag` / `spec.ref.semver` of the OCIRepository a `spec.chartRef` names, or the
  `spec.version` of the HelmChart it names;
- a Kustomize patch (`patches`, `patchesStrategicMerge`, `patchesJson6902`, of an overlay or a
  component) that sets one of those fields: the outermost wins, as in `kustomize build`;
- a `postBuild.substitute` variable when that value is `${var}`: in the Flux Kustomization
  that applies it, or in the last source of its `substituteFrom` that sets it (a ConfigMap, or
  one a `configMapGenerator` makes from literals or an env file; a Secret is refused), with
  `substitute` winning, as in Flux.

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
        self._scan: list[str] | None = None

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
        """The `kind` document named `namespace/name`: among the files `near` first, then the whole repository
        (`_scan_order`)."""
        for paths in (list(near), self._scan_order()):
            for path in paths:
                for doc in self.docs(path):
                    if doc.kind == kind and doc.api.startswith(api) and doc.name == name \
                            and (doc.namespace or namespace) == namespace:
                        return doc
        return None


    def _scan_order(self) -> list[str]:
        """Every YAML file of the repository, those under its smaller top-level directories first.

        A shared source (`infrastructure/sources/istio.yaml`) is then read before the thousands of
        files under `clusters/`: in name order, finding it read every cluster's files first, for
        each cluster looked up (reads growing as the square of the fleet). Flux refuses one object
        defined twice, so which file is read first changes what is found only in a repository Flux
        would not apply.
        """
        if self._scan is None:
            paths = [p for p in self.listing("") if _is_yaml(p)]
            size: dict[str, int] = {}
            for path in paths:
                size[_top(path)] = size.get(_top(path), 0) + 1
            self._scan = sorted(paths, key=lambda p: (size[_top(p)], p))
        return self._scan


def _top(path: str) -> str:
    """The top-level directory of a repository path ("" for a file at the root)."""
    return path.split("/", 1)[0] if "/" in path else ""


@dataclass(frozen=True)
class Doc:
    """One YAML document of one file, or of a Kustomize patch written inline in a file (`origin` then maps an
    offset of the inline text to the offset of the same character in the file at `path`)."""

    path: str
    index: int
    node: MappingNode
    text: str
    origin: Callable[[int], int] | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        return (self.path, self.index)

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
    kustomization: str | None = None  # namespace/name of the Flux Kustomization that applies it, if any

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
    flux: dict[str, FluxKustomization] = field(default_factory=dict)  # the Flux Kustomizations on the way
    skipped: list[str] = field(default_factory=list)  # other clusters' files kept beside the entry file
    remote: list[str] = field(default_factory=list)  # remote Kustomize resources, which GUARD cannot read

    def locations(self) -> list[Location]:
        return list({c.location.key: c.location for c in self.components}.values())

    def dependencies(self, c: Component) -> list[tuple[str, str]]:
        """(namespace, name) of the releases `c` waits for directly: its HelmRelease `dependsOn`, and those its
        Flux Kustomization waits for: a Kustomization that `dependsOn` others (transitively) is applied only once
        they are Ready at the new revision, and they are Ready after every release they apply (`wait: true`) or
        those of their `healthChecks` (without either, once applied: before their releases upgraded)."""
        edges = list(c.depends_on)
        gated: set[str] = set()
        seen: set[str] = set()
        todo = list(self.flux[c.kustomization].depends_on) if c.kustomization in self.flux else []
        while todo:
            ref = todo.pop()
            if ref in seen or ref not in self.flux:
                continue
            seen.add(ref)
            kustomization = self.flux[ref]
            todo += kustomization.depends_on
            gated |= {x.ref for x in self.components if x.kustomization == ref and (
                kustomization.wait or f"HelmRelease {x.ref}" in kustomization.health_checks)}
        return edges + [(ref.split("/", 1)[0], ref.split("/", 1)[1]) for ref in sorted(gated) if ref != c.ref]


# ------------------------------------------------------------------------------------- reading


def read_install(files: Files, cluster_id: str, flux_config_path: str) -> Install:
    """The cluster's Istio install, from the directory of `flux_config_path` (or from that directory itself, when
    it names one); ConfigError when it has none."""
    walker = _Walker(files)
    start = posixpath.dirname(flux_config_path)
    if files.read(flux_config_path) is not None:
        walker.visit_start(start, flux_config_path, cluster_id)
    elif flux_config_path.strip("/") and files.listing(flux_config_path.strip("/")):
        start = flux_config_path.strip("/")
        walker.visit_dir(start, None)  # the cluster's own directory: everything Flux applies from it
    else:
        raise ConfigError(f"{cluster_id}: {flux_config_path} does not exist in the repository")
    components = []
    for doc, contexts in walker.releases.values():
        # One document reached several ways (a Flux Kustomization whose path holds its own directory, say):
        # the Kustomization with a postBuild is the one whose variables apply, and one that applies it is the
        # one whose dependsOn orders it (rather than the plain directory walk).
        context = next((c for c in contexts if c is not None and c.get("spec", "postBuild") is not None),
                       next((c for c in contexts if c is not None), contexts[0]))
        # Flux's targetNamespace overrides every object's namespace; then kustomize's `namespace:`; then its own.
        namespace = (_scalar(context.get("spec", "targetNamespace")) if context else None) \
            or walker.namespaces.get((doc.key, context.where() if context else "")) or doc.namespace or "default"
        component = _component(files, doc, context, walker.visited, walker.patch_for(context), namespace,
                               walker.flux_patch)
        if component is not None:
            component.kustomization = _flux_ref(context)
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
    return Install(cluster_id, components, sorted(walker.visited), dict(walker.flux),
                   skipped=sorted(walker.skipped), remote=sorted(walker.remote))


@dataclass(frozen=True)
class FluxKustomization:
    """What orders a Flux Kustomization's apply: the Kustomizations it waits for, and what it waits for itself
    before it reports Ready (`wait: true`: every object it applies; `healthChecks`: those listed)."""

    ref: str  # namespace/name
    depends_on: tuple[str, ...]
    wait: bool
    health_checks: tuple[str, ...]  # "HelmRelease namespace/name"


@dataclass(frozen=True)
class _Patch:
    """A Kustomize patch's value for one version field of one document: the node and the document holding it."""

    doc: Doc
    node: ScalarNode | None  # None: the patch removes or restructures the field in a way GUARD cannot place
    where: str  # for people: "patches[0] of overlays/eks-a/kustomization.yaml"
    raw: Node | None = None  # a non-scalar value it sets (a Flux Kustomization's postBuild.substituteFrom list)


# The version fields a patch may set, per kind.
_VERSION_FIELDS = {
    "HelmRelease": (("spec", "chart", "spec", "version"),),
    # Flux: a semver range takes precedence over a tag (and a digest over both, which GUARD refuses).
    "OCIRepository": (("spec", "ref", "semver"), ("spec", "ref", "tag")),
    "HelmChart": (("spec", "version"),),
}


class _Walker:
    """Follows what Flux applies from a directory, as described in the module docstring, and what Kustomize's
    patches (of kustomizations and their components) do to the version fields."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.visited: set[str] = set()
        self.skipped: set[str] = set()
        self.remote: set[str] = set()
        self._done: dict[tuple[str, str], set[tuple[str, int]]] = {}
        self.releases: dict[tuple[str, int], tuple[Doc, list[Doc | None]]] = {}
        self.docs: dict[tuple[str, int], Doc] = {}
        self.flux: dict[str, FluxKustomization] = {}
        self._flux_docs: dict[str, tuple[str, int]] = {}
        # (document, context) -> the namespace the outermost kustomization's `namespace:` gives it
        self.namespaces: dict[tuple[tuple[str, int], str], str] = {}
        # (document, context, field) -> the outermost patch that sets it
        self.patches: dict[tuple[tuple[str, int], str, tuple[str, ...]], _Patch] = {}
        self._flux_outer: dict[tuple[str, int], str] = {}  # Flux Kustomization -> the build that applies it

    def flux_patch(self, flux: Doc, fieldpath: tuple[str, ...]) -> _Patch | None:
        """The patch (if any) that sets a field of a Flux Kustomization in the build that applies it."""
        return self.patches.get((flux.key, self._flux_outer.get(flux.key, ""), fieldpath))

    def patch_for(self, context: Doc | None) -> Callable[[tuple[str, int], tuple[str, ...]], _Patch | None]:
        """The patch (if any) that sets a document's version field in the build `context` applies."""
        where = context.where() if context else ""
        return lambda doc_key, fieldpath: self.patches.get((doc_key, where, fieldpath))

    def visit_start(self, directory: str, entry: str, cluster_id: str) -> None:
        """The cluster's directory. With a kustomization.yaml, what it lists; else every YAML file below it, except
        the files of other clusters kept side by side with the entry file: a file that reaches a HelmRelease or a
        Flux Kustomization of the same name as one already taken, but another document of it. Files whose path
        names the cluster are taken first (`eks-a-base.yaml` beside `eks-b-base.yaml`)."""
        directory = directory.strip("/")
        if self._kustomization_file(directory) is not None:
            self.visit_dir(directory, None)
            return
        self.visit_file(entry, None)
        names_me = re.compile(rf"(?<![A-Za-z0-9]){re.escape(cluster_id)}(?![A-Za-z0-9])")
        siblings = [p for p in self.files.listing(directory) if _is_yaml(p) and p != entry]
        for path in sorted(siblings, key=lambda p: names_me.search(p.removeprefix(directory)) is None):
            probe = _Walker(self.files)
            probe.visit_file(path, None)
            mine = self._names()
            if any(name in mine and mine[name] != doc for name, doc in probe._names().items()):
                self.skipped.add(path)  # another cluster's file, side by side with this one
                continue
            self.visit_file(path, None)

    def _names(self) -> dict[str, tuple[str, int]]:
        """Every HelmRelease and Flux Kustomization reached so far: 'kind namespace/name' -> the document."""
        names = {f"HelmRelease {d.namespace}/{d.name}": k for k, (d, _) in self.releases.items()}
        for ref, key in self._flux_docs.items():
            names[f"Kustomization {ref}"] = key
        return names

    def _kustomization_file(self, directory: str) -> str | None:
        return next((f"{directory}/{n}".lstrip("/") for n in _KUSTOMIZE_FILES
                     if self.files.read(f"{directory}/{n}".lstrip("/")) is not None), None)

    def visit_dir(self, directory: str, context: Doc | None) -> set[tuple[str, int]]:
        directory = directory.strip("/")
        kustomization = self._kustomization_file(directory)
        if kustomization is not None:
            return self.visit_file(kustomization, context)
        reached: set[tuple[str, int]] = set()
        for path in self.files.listing(directory):
            if _is_yaml(path):
                reached |= self.visit_file(path, context)
        return reached

    def visit_file(self, path: str, context: Doc | None) -> set[tuple[str, int]]:
        """Every document key the file brings into the build (after its kustomization's patches)."""
        key = (path, context.where() if context else "")
        if key in self._done:
            return self._done[key]
        self._done[key] = set()
        self.visited.add(path)
        reached: set[tuple[str, int]] = set()
        for doc in self.files.docs(path):
            if doc.kind == "Kustomization" and doc.api.startswith(_FLUX_KUSTOMIZATION):
                self._flux(doc)
                # A kustomization around it may patch its postBuild (a cluster's variables on a shared one).
                reached.add(doc.key)
                self.docs[doc.key] = doc
                self._flux_outer.setdefault(doc.key, context.where() if context else "")
                target = _scalar(doc.get("spec", "path"))
                source_kind = _scalar(doc.get("spec", "sourceRef", "kind")) or "GitRepository"
                if source_kind != "GitRepository":
                    # Its path is inside an OCI artifact or a bucket, not this repository.
                    self.remote.add(f"{target or '.'} of {source_kind} {_scalar(doc.get('spec', 'sourceRef', 'name'))}"
                                    f" (Flux Kustomization {doc.name} in {doc.path})")
                elif target is not None:
                    self.visit_dir(posixpath.normpath(target.removeprefix("./")).removeprefix("."), doc)
            elif doc.kind in ("Kustomization", "Component") or posixpath.basename(path) in _KUSTOMIZE_FILES:
                reached |= self._kustomize(doc, context, set())
            else:
                reached.add(doc.key)
                self.docs[doc.key] = doc
                if doc.kind == "HelmRelease" and doc.api.startswith(_HELM):
                    self.releases.setdefault(doc.key, (doc, []))[1].append(context)
        self._done[key] = reached
        return reached

    def _flux(self, doc: Doc) -> None:
        namespace = doc.namespace or "flux-system"
        depends = tuple(f"{_scalar(_get(i, 'namespace')) or namespace}/{_scalar(_get(i, 'name'))}"
                        for i in _items(doc.get("spec", "dependsOn")) if _scalar(_get(i, "name")))
        checks = tuple(f"{_scalar(_get(i, 'kind'))} {_scalar(_get(i, 'namespace')) or namespace}/"
                       f"{_scalar(_get(i, 'name'))}" for i in _items(doc.get("spec", "healthChecks")))
        ref = f"{namespace}/{doc.name}"
        self._flux_docs.setdefault(ref, doc.key)
        self.flux[ref] = FluxKustomization(ref, depends, _scalar(doc.get("spec", "wait")) == "true", checks)

    def _target(self, base: str, entry: str, what: str) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(base), entry))
        if target.startswith(".."):
            raise ConfigError(f"{base}: {what} {entry} leaves the repository")
        return target

    def _kustomize(self, doc: Doc, context: Doc | None, inherited: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """A kustomization: its resources, then its components (whose patches see everything so far), then its
        own patches, as `kustomize build` orders them."""
        reached = set(inherited)
        for field_name in ("resources", "bases"):
            for resource in _strings(doc.get(field_name)):
                if "://" in resource:
                    self.remote.add(f"{resource} (in {doc.path})")  # a remote base: not in this repository
                    continue
                target = self._target(doc.path, resource, "resource")
                reached |= (self.visit_file(target, context) if self.files.read(target) is not None
                            else self.visit_dir(target, context))
        for component in _strings(doc.get("components")):
            target = self._target(doc.path, component, "component")
            kustomization = self._kustomization_file(target)
            if kustomization is None:
                raise ConfigError(f"{doc.path}: component {component} has no kustomization.yaml")
            self.visited.add(kustomization)
            for part in self.files.docs(kustomization):
                reached = self._kustomize(part, context, reached)
        self._patch(doc, context, reached)
        namespace = _scalar(doc.get("namespace"))
        if namespace:  # kustomize sets it on every resource of the build; an outer kustomization's wins
            for key in reached:
                self.namespaces[(key, context.where() if context else "")] = namespace
        return reached

    # --------------------------------------------------------------------------------- patches

    def _patch(self, kustomization: Doc, context: Doc | None, reached: set[tuple[str, int]]) -> None:
        targets = [self.docs[k] for k in sorted(reached) if k in self.docs and (
            self.docs[k].kind in _VERSION_FIELDS or _is_flux_kustomization(self.docs[k]))]
        if not targets:
            return
        self._replacements(kustomization, targets)
        for i, item in enumerate(_items(kustomization.get("patchesStrategicMerge"))):
            where = f"patchesStrategicMerge[{i}] of {kustomization.path}"
            for patch in self._patch_docs(kustomization, item, f"patchesStrategicMerge[{i}]"):
                if isinstance(patch, list):
                    raise ConfigError(f"{where}: a list of operations is a JSON6902 patch, not a strategic merge")
                self._strategic(patch, None, targets, context, where)
        for name in ("patches", "patchesJson6902"):
            for i, item in enumerate(_items(kustomization.get(name))):
                where = f"{name}[{i}] of {kustomization.path}"
                if not isinstance(item, MappingNode):
                    raise ConfigError(f"{where}: a patch entry must be a mapping with path or patch")
                selector = _get(item, "target")
                source = _get(item, "path") if _get(item, "path") is not None else _get(item, "patch")
                for patch in self._patch_docs(kustomization, source, f"{name}[{i}]"):
                    if isinstance(patch, list):
                        self._json6902(patch, selector, targets, context, where)
                    else:
                        self._strategic(patch, selector, targets, context, where)

    def _replacements(self, kustomization: Doc, targets: list[Doc]) -> None:
        """Kustomize `replacements` copying a value into a version field: refused, GUARD cannot place it."""
        for i, item in enumerate(_items(kustomization.get("replacements"))):
            where = f"replacements[{i}] of {kustomization.path}"
            path = _scalar(_get(item, "path"))
            entries = [item]
            if path is not None:
                text = self.files.read(self._target(kustomization.path, path, "replacement"))
                entries = [n for n in _compose_any(text or "", where) if isinstance(n, MappingNode)]
            for entry in entries:
                for target in _items(_get(entry, "targets")):
                    selector = _get(target, "select")
                    fields = {tuple(f.split(".")) for f in _strings(_get(target, "fieldPaths"))}
                    for doc in targets:
                        hit = [f for f in _VERSION_FIELDS[doc.kind] if f in fields]
                        if hit and (selector is None or _selects(selector, doc, where)):
                            raise ConfigError(f"{doc.where()}: {'.'.join(hit[0])} is written by {where}, copied from "
                                              "another field: GUARD cannot place that version; set it in the "
                                              "document or in a patch")

    def _patch_docs(self, kustomization: Doc, node: Node | None, what: str) -> list[Doc | list[Doc]]:
        """The documents of a patch: a file next to the kustomization, or inline text. A JSON6902 patch (a list of
        operations) comes back as the list of its operation mappings."""
        if not isinstance(node, ScalarNode):
            raise ConfigError(f"{kustomization.path}: {what} has no path or patch GUARD can read")
        value = str(node.value)
        if "\n" not in value and (_is_yaml(value) or value.endswith(".json")):
            path = self._target(kustomization.path, value, "patch")
            text = self.files.read(path)
            if text is None:
                raise ConfigError(f"{kustomization.path}: {what} names {value}, which is not in the repository")
            self.visited.add(path)
            return self._split(_compose_any(text, path), path, text, None)
        origin = _inline_origin(kustomization, node)
        where = f"{kustomization.path} ({what}, inline)"
        return self._split(_compose_any(value, where), kustomization.path, value, origin)

    @staticmethod
    def _split(nodes: list[Node], path: str, text: str, origin: Callable[[int], int] | None
               ) -> list[Doc | list[Doc]]:
        found: list[Doc | list[Doc]] = []
        for i, node in enumerate(nodes):
            if isinstance(node, MappingNode):
                found.append(Doc(path, 1000 + i, node, text, origin))
            elif isinstance(node, SequenceNode):
                found.append([Doc(path, 1000 + i, op, text, origin) for op in node.value
                              if isinstance(op, MappingNode)])
        return found

    def _strategic(self, patch: Doc, selector: Node | None, targets: list[Doc], context: Doc | None,
                   where: str) -> None:
        kind, name = patch.kind, patch.name
        for doc in targets:
            if selector is not None:
                if not _selects(selector, doc, where):
                    continue
            elif (kind, name) != (doc.kind, doc.name) or (patch.namespace and patch.namespace != doc.namespace):
                continue
            if _is_flux_kustomization(doc):
                self._flux_values(doc, context, (), patch.node, patch, where)
                continue
            for fieldpath in _VERSION_FIELDS[doc.kind]:
                node = patch.get(*fieldpath)
                if node is None:
                    parent = patch.get(*fieldpath[:-1])
                    if parent is not None and not isinstance(parent, MappingNode):
                        self._set(doc, context, fieldpath, _Patch(patch, None, where))
                    continue
                self._set(doc, context, fieldpath,
                          _Patch(patch, node if isinstance(node, ScalarNode) else None, where))

    def _json6902(self, ops: list[Doc], selector: Node | None, targets: list[Doc], context: Doc | None,
                  where: str) -> None:
        if selector is None:
            raise ConfigError(f"{where}: a JSON6902 patch needs a target")
        for doc in targets:
            if not _selects(selector, doc, where):
                continue
            for op in ops:
                verb, pointer = _scalar(op.get("op")) or "", _scalar(op.get("path")) or ""
                steps = tuple(s.replace("~1", "/").replace("~0", "~") for s in pointer.strip("/").split("/"))
                if _is_flux_kustomization(doc):
                    if verb in ("add", "replace") and steps[-1:] != ("-",):
                        self._flux_values(doc, context, steps, op.get("value"), op, where)
                    continue
                for fieldpath in _VERSION_FIELDS[doc.kind]:
                    if fieldpath[:len(steps)] != steps and steps[:len(fieldpath)] != fieldpath:
                        continue
                    if verb in ("add", "replace") and len(steps) <= len(fieldpath):
                        node = _get(op.get("value"), *fieldpath[len(steps):]) if len(steps) < len(fieldpath) \
                            else op.get("value")
                        if node is None and len(steps) < len(fieldpath):
                            continue  # the operation replaces a parent without this field
                        self._set(doc, context, fieldpath,
                                  _Patch(op, node if isinstance(node, ScalarNode) else None, where))
                    elif verb not in ("test",):
                        # remove/move/copy, or an operation inside the version: not a version GUARD can place
                        self._set(doc, context, fieldpath, _Patch(op, None, f"{where} ({verb} {pointer})"))

    def _flux_values(self, doc: Doc, context: Doc | None, at: tuple[str, ...], value: Node | None, patch: Doc,
                     where: str) -> None:
        """What a patch (its `value` placed at path `at`) sets in a Flux Kustomization's postBuild: each
        substitute variable, and the substituteFrom list (a strategic merge replaces such a list whole)."""
        def node_at(path: tuple[str, ...]) -> Node | None:
            if path[:len(at)] == at:
                return _get(value, *path[len(at):]) if len(path) > len(at) else value
            return None

        substitute = ("spec", "postBuild", "substitute")
        if len(at) == len(substitute) + 1 and at[:len(substitute)] == substitute:
            self._set(doc, context, at, _Patch(patch, value if isinstance(value, ScalarNode) else None, where))
        mapping = node_at(substitute)
        if isinstance(mapping, MappingNode):
            for key, item in mapping.value:
                if isinstance(key, ScalarNode):
                    self._set(doc, context, (*substitute, str(key.value)),
                              _Patch(patch, item if isinstance(item, ScalarNode) else None, where))
        sources = node_at(("spec", "postBuild", "substituteFrom"))
        if isinstance(sources, SequenceNode):
            self._set(doc, context, ("spec", "postBuild", "substituteFrom"), _Patch(patch, None, where, raw=sources))

    def _set(self, doc: Doc, context: Doc | None, fieldpath: tuple[str, ...], patch: _Patch) -> None:
        # Kustomize applies an overlay's patches after its bases': the last one set (outermost) wins.
        self.patches[(doc.key, context.where() if context else "", fieldpath)] = patch


def _selects(selector: Node, doc: Doc, where: str) -> bool:
    """Whether a Kustomize patch `target` selects `doc` (kind, name and namespace are regular expressions)."""
    if not isinstance(selector, MappingNode):
        raise ConfigError(f"{where}: target must be a mapping")
    for key, value in (("kind", doc.kind), ("name", doc.name), ("namespace", doc.namespace)):
        wanted = _scalar(_get(selector, key))
        if wanted is not None and not re.fullmatch(wanted, value):
            return False
    group = _scalar(_get(selector, "group"))
    if group is not None and doc.api.split("/")[0] != group:
        return False
    labels = _scalar(_get(selector, "labelSelector"))
    if labels is not None:
        have = _get(doc.node, "metadata", "labels")
        for term in labels.split(","):
            k, sep, v = term.strip().partition("=")
            if not sep or any(c in k + v for c in "!()<> "):
                raise ConfigError(f"{where}: labelSelector {labels!r}: GUARD reads key=value selectors only")
            if _scalar(_get(have, k.strip())) != v.strip().lstrip("="):
                return False
    if _get(selector, "annotationSelector") is not None:
        raise ConfigError(f"{where}: target.annotationSelector: GUARD cannot tell which release it patches")
    return True


def _inline_origin(kustomization: Doc, node: ScalarNode) -> Callable[[int], int]:
    """Offsets of an inline patch's text -> offsets of the kustomization file: exact for a literal block
    (`patch: |`), whose lines are the file's lines less their indentation. Anything else is refused."""
    text = kustomization.text
    where = f"{kustomization.path}: the inline patch at line {node.start_mark.line + 1}"
    if node.style != "|":
        raise ConfigError(f"{where} is not a literal block (`patch: |`); GUARD cannot place a version inside it")
    lines = str(node.value).split("\n")
    file_lines = text.splitlines(keepends=True)
    first = node.start_mark.line + 1
    starts: list[int] = []
    offset = sum(len(line) for line in file_lines[:first])
    indent: int | None = None
    for i, line in enumerate(lines):
        raw = file_lines[first + i] if first + i < len(file_lines) else ""
        body = raw.rstrip("\r\n")
        if line and indent is None:
            indent = len(body) - len(body.lstrip(" "))
        if line and body[indent or 0:] != line:
            raise ConfigError(f"{where}: GUARD cannot map its lines to the file (indentation indicator or tabs)")
        starts.append(offset + (indent or 0))
        offset += len(raw)

    def origin(at: int) -> int:
        line = str(node.value).count("\n", 0, at)
        column = at - (str(node.value).rfind("\n", 0, at) + 1)
        return starts[line] + column

    return origin


Patched = Callable[[tuple[str, int], tuple[str, ...]], "_Patch | None"]
FluxPatched = Callable[[Doc, tuple[str, ...]], "_Patch | None"]  # a patch on a Flux Kustomization's field


def _version_node(doc: Doc, fieldpath: tuple[str, ...], patched: Patched) -> tuple[Doc, ScalarNode | None, str]:
    """Where a document's version field really is after Kustomize's patches: (document, scalar node, note)."""
    patch = patched(doc.key, fieldpath)
    if patch is None:
        node = doc.get(*fieldpath)
        return doc, node if isinstance(node, ScalarNode) else None, ""
    if patch.node is None:
        raise ConfigError(f"{doc.where()}: {'.'.join(fieldpath)} is changed by {patch.where} in a way GUARD cannot "
                          "place (a removal, or not one scalar); set the version as one scalar in the patch")
    return patch.doc, patch.node, f", set by {patch.where}"


def _component(files: Files, doc: Doc, context: Doc | None, near: set[str], patched: Patched,
               namespace: str, flux: FluxPatched) -> Component | None:
    chart_ref = doc.get("spec", "chartRef")
    problems: list[str] = []
    source: ChartSource | None = None
    if chart_ref is not None:
        kind = _scalar(_get(chart_ref, "kind")) or ""
        ref_name = _scalar(_get(chart_ref, "name")) or ""
        ref_ns = _scalar(_get(chart_ref, "namespace")) or namespace
        if kind == "HelmChart":
            return _helm_chart_component(files, doc, context, near, patched, namespace, ref_name, ref_ns, flux)
        if kind != "OCIRepository":
            return None if not _istio_name(ref_name) and not _istio_name(doc.name) else _refuse(
                doc, f"spec.chartRef to a {kind or 'kind GUARD does not know'} {ref_name}: GUARD bumps the version of "
                "an OCIRepository's ref, a HelmChart's spec.version or a HelmRelease's spec.chart.spec.version")
        repo = files.find("OCIRepository", _SOURCE, ref_name, ref_ns, near)
        url = _scalar(repo.get("spec", "url")) if repo else None
        chart = (url or ref_name).rstrip("/").rsplit("/", 1)[-1]
        component = CHARTS.get(chart)
        if component is None:
            return None
        if repo is None:
            raise ConfigError(f"{doc.where()}: spec.chartRef names OCIRepository {ref_ns}/{ref_name}, which is not "
                              "in the repository")
        if repo.get("spec", "ref", "digest") is not None:
            raise ConfigError(f"{repo.where()}: spec.ref.digest pins the chart by digest, which no version GUARD can "
                              "bump replaces; pin it by spec.ref.tag")
        holder, target, fieldname = None, None, ""
        for fieldpath in _VERSION_FIELDS["OCIRepository"]:
            holder, target, note = _version_node(repo, fieldpath, patched)
            if target is not None:
                fieldname = ".".join(fieldpath) + note
                break
        if holder is None or target is None:
            raise ConfigError(f"{repo.where()}: spec.ref has no tag or semver (a digest pins no version GUARD can "
                              "bump); write spec.ref.tag")
        location = _resolve(files, holder, target, f"OCIRepository {ref_ns}/{ref_name} {fieldname}", context, near,
                            flux)
        source = ChartSource("oci", str(url), chart, insecure=_scalar(repo.get("spec", "insecure")) == "true")
    else:
        chart = _scalar(doc.get("spec", "chart", "spec", "chart")) or ""
        component = CHARTS.get(chart)
        if component is None:
            return None
        holder, node, note = _version_node(doc, ("spec", "chart", "spec", "version"), patched)
        if node is None:
            raise ConfigError(f"{doc.where()}: no scalar spec.chart.spec.version (GUARD pins every Istio chart)")
        location = _resolve(files, holder, node, f"HelmRelease {namespace}/{doc.name} spec.chart.spec.version{note}",
                            context, near, flux)
        source = _helm_source(files, doc.get("spec", "chart", "spec", "sourceRef"), namespace, chart, near, problems)
    return _release_component(doc, namespace, component, chart, location, source, problems)


def _release_component(doc: Doc, namespace: str, component: str, chart: str, location: Location,
                       source: ChartSource | None, problems: list[str]) -> Component:
    """The Component of HelmRelease `doc`, its version at `location`: the release's own dependsOn, CRD upgrade policy
    and CRD templates, whether the chart comes through spec.chart or a chartRef."""
    templates = _scalar(doc.get("spec", "values", "base", "enableCRDTemplates"))
    return Component(
        component=component, name=doc.name, namespace=namespace, chart=chart, release_path=doc.path,
        location=_exact(location), depends_on=_depends_on(doc, namespace),
        crds_policy=_scalar(doc.get("spec", "upgrade", "crds")),
        crd_templates=None if templates is None else templates.lower() == "true", source=source, problems=problems)


def _helm_chart_component(files: Files, doc: Doc, context: Doc | None, near: set[str], patched: Patched,
                          namespace: str, ref_name: str, ref_ns: str, flux: FluxPatched) -> Component | None:
    """A HelmRelease whose spec.chartRef names a HelmChart: the chart, version and source are the HelmChart's."""
    chart_doc = files.find("HelmChart", _SOURCE, ref_name, ref_ns, near)
    if chart_doc is None:
        if _istio_name(ref_name) or _istio_name(doc.name):
            raise ConfigError(f"{doc.where()}: spec.chartRef names HelmChart {ref_ns}/{ref_name}, which is not in the "
                              "repository; GUARD cannot tell the chart or its version")
        return None
    chart = _scalar(chart_doc.get("spec", "chart")) or ""
    component = CHARTS.get(chart)
    if component is None:
        return None
    holder, node, note = _version_node(chart_doc, ("spec", "version"), patched)
    if node is None:
        raise ConfigError(f"{chart_doc.where()}: no scalar spec.version (GUARD pins every Istio chart)")
    location = _resolve(files, holder, node, f"HelmChart {ref_ns}/{ref_name} spec.version{note}", context, near,
                        flux)
    problems: list[str] = []
    source = _helm_source(files, chart_doc.get("spec", "sourceRef"), ref_ns, chart, near, problems)
    return _release_component(doc, namespace, component, chart, location, source, problems)


def _helm_source(files: Files, source_ref: Node | None, namespace: str, chart: str, near: set[str],
                 problems: list[str]) -> ChartSource | None:
    """The chart source a `sourceRef` names; what stops GUARD from knowing it goes to `problems`."""
    source_kind = _scalar(_get(source_ref, "kind")) or ""
    source_name = _scalar(_get(source_ref, "name")) or ""
    source_ns = _scalar(_get(source_ref, "namespace")) or namespace
    if source_kind != "HelmRepository":
        problems.append(f"spec.chart.spec.sourceRef is a {source_kind or 'nothing'}: GUARD checks published "
                        "versions in a HelmRepository only")
        return None
    repo = files.find("HelmRepository", _SOURCE, source_name, source_ns, near)
    url = _scalar(repo.get("spec", "url")) if repo else None
    if repo is None or not url:
        problems.append(f"HelmRepository {source_ns}/{source_name} is not in the repository")
        return None
    if _scalar(repo.get("spec", "type")) == "oci" or url.startswith("oci://"):
        return ChartSource("oci", f"{url.rstrip('/')}/{chart}", chart,
                           insecure=_scalar(repo.get("spec", "insecure")) == "true")
    return ChartSource("helm", url, chart)


def _exact(location: Location) -> Location:
    """A version GUARD pins is one exact version: a range (`1.22.x`, `>=1.22.0`) would let Flux pick another."""
    if not _VERSION_TEXT.match(location.current):
        raise ConfigError(f"{location.path}: {location.field} is {location.current!r}, not one exact version "
                          "(MAJOR.MINOR.PATCH): GUARD pins the version it upgrades to; write the exact version")
    return location


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
             near: set[str], flux: FluxPatched | None = None) -> Location:
    """The location of the value `node` holds: itself, or the postBuild variable it names.

    Flux reads the `substituteFrom` sources in order, a later one overwriting an earlier one's variable, and
    `substitute` overwrites them all."""
    value = str(node.value)
    match = _VAR.match(value)
    if match is None:
        return _location(doc, node, what)
    var = match.group(1)
    if context is None:
        raise ConfigError(f"{doc.where()}: {what} is {value} but no Flux Kustomization with postBuild applies "
                          f"{doc.path}; GUARD cannot tell where {var} is set")
    patch = flux(context, ("spec", "postBuild", "substitute", var)) if flux else None
    if patch is not None:  # a kustomization around the Flux Kustomization patches the variable in
        if patch.node is None:
            raise ConfigError(f"{context.where()}: postBuild.substitute.{var} is set by {patch.where} as something "
                              "other than one scalar; GUARD cannot place the version")
        return _location(patch.doc, patch.node, f"Kustomization {context.name} postBuild.substitute.{var}, set by "
                                                f"{patch.where} ({what})")
    substitute = _get(context.get("spec", "postBuild", "substitute"), var)
    if isinstance(substitute, ScalarNode):
        return _location(context, substitute, f"Kustomization {context.name} postBuild.substitute.{var} ({what})")
    found: Location | None = None
    secret_at = ""  # the Secret that sets var last, when one does
    unseen: list[str] = []  # Secrets substituteFrom names that are not in the repository
    namespace = context.namespace or "flux-system"
    sources = flux(context, ("spec", "postBuild", "substituteFrom")) if flux else None
    for item in _items(sources.raw if sources is not None else context.get("spec", "postBuild", "substituteFrom")):
        kind, name = _scalar(_get(item, "kind")), _scalar(_get(item, "name")) or ""
        if kind == "Secret":
            secret = files.find("Secret", "v1", name, namespace, near)
            if secret is None:
                unseen.append(f"Secret {namespace}/{name}")
            if secret is not None and any(_get(secret.get(part), var) is not None for part in ("data", "stringData")):
                found, secret_at = None, f"Secret {namespace}/{name} ({secret.path})"
            continue
        if kind != "ConfigMap":
            continue
        config_map = files.find("ConfigMap", "v1", name, namespace, near)
        entry = _get(config_map.get("data"), var) if config_map else None
        if isinstance(entry, ScalarNode) and config_map is not None:
            found, secret_at = _location(config_map, entry, f"ConfigMap {namespace}/{name} data.{var} ({what})"), ""
        elif config_map is None:
            generated = _generated(files, name, namespace, var, what)
            if generated is not None:
                found, secret_at = generated, ""
    if found is None and secret_at:
        raise ConfigError(f"{doc.where()}: {what} is {value}, and {var} comes from {secret_at}: GUARD "
                          "does not edit Secrets (their values are encrypted or sealed, and an MR would show them); "
                          f"move {var} to postBuild.substitute or a ConfigMap")
    if found is None and match.group(2):
        # `${var:=1.2.3}` with var set nowhere: Flux writes the default, which is where the version lives.
        return _default_location(doc, node, match.group(2), what)
    if found is None:
        maybe = (f" (perhaps in {', '.join(unseen)}, which is not in the repository: GUARD does not edit "
                 "Secrets; move it to a ConfigMap or postBuild.substitute)") if unseen else ""
        raise ConfigError(f"{doc.where()}: {what} is {value}, and {var} is in neither postBuild.substitute of "
                          f"Kustomization {context.name} ({context.path}) nor a ConfigMap of its substituteFrom "
                          f"in the repository{maybe}")
    return found


_ENV_LINE = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=(.*)$")


def _generated(files: Files, name: str, namespace: str, var: str, what: str) -> Location | None:
    """`var` of a ConfigMap a Kustomize `configMapGenerator` makes (its `literals`, or an `envs` file): where its
    value is written. The generator must keep the name (`disableNameSuffixHash`) for Flux to find it."""
    for path in files.listing(""):
        if posixpath.basename(path) not in _KUSTOMIZE_FILES:
            continue
        for doc in files.docs(path):
            for generator in _items(doc.get("configMapGenerator")):
                if _scalar(_get(generator, "name")) != name or \
                        (_scalar(_get(generator, "namespace")) or _scalar(doc.get("namespace")) or namespace) \
                        != namespace:
                    continue
                field_what = f"configMapGenerator {name} in {path}: {var} ({what})"
                for literal in _items(_get(generator, "literals")):
                    if isinstance(literal, ScalarNode) and str(literal.value).split("=", 1)[0].strip() == var:
                        return _literal_location(doc, literal, field_what)
                for env in _strings(_get(generator, "envs")) + _strings(_get(generator, "env")):
                    env_path = posixpath.normpath(posixpath.join(posixpath.dirname(path), env))
                    location = _env_location(files, env_path, var, field_what)
                    if location is not None:
                        return location
    return None


def _literal_location(doc: Doc, node: ScalarNode, what: str) -> Location:
    """The value part of a `KEY=VALUE` literal scalar."""
    whole = _location(doc, node, what)
    raw = doc.text[node.start_mark.index:node.end_mark.index]
    value = str(node.value).split("=", 1)[1]
    offset = raw.find("=" + value)
    if node.style not in (None, '"', "'") or offset < 0 or not _VERSION_TEXT.match(value.strip()):
        raise ConfigError(f"{doc.path}: {what} is {node.value!r}: GUARD cannot edit it in place")
    start = whole.start + offset + 1 + (len(value) - len(value.lstrip()))
    return Location(doc.path, start, start + len(value.strip()), "'", what, value.strip(), bare=True)


def _env_location(files: Files, path: str, var: str, what: str) -> Location | None:
    """The value of `var=value` in an env file (one variable a line)."""
    text = files.read(path)
    if text is None:
        return None
    offset = 0
    for line in text.splitlines(keepends=True):
        match = _ENV_LINE.match(line.rstrip("\r\n"))
        if match and match.group(1) == var:
            value = match.group(2).strip()
            if not _VERSION_TEXT.match(value):
                raise ConfigError(f"{path}: {what} is {value!r}, not one exact version GUARD can edit in place")
            start = offset + match.start(2) + (len(match.group(2)) - len(match.group(2).lstrip()))
            return Location(path, start, start + len(value), "'", f"{what}, {path}", value, bare=True)
        offset += len(line)
    return None


def _default_location(doc: Doc, node: ScalarNode, default: str, what: str) -> Location:
    start, end = _span(doc, node, what)
    offset = doc.text.find(default, start, end)
    if offset < 0 or node.style not in (None, '"', "'") or not _VERSION_TEXT.match(default):
        raise ConfigError(f"{doc.path}: {what} is {node.value}: GUARD cannot edit its default in place")
    return _at(doc, offset, offset + len(default), "'", f"{what} (the default of {node.value})", default, bare=True)


def _span(doc: Doc, node: ScalarNode, what: str) -> tuple[int, int]:
    """The [start, end) of a one-line scalar in `doc.text` (quotes included, anchors and tags left out)."""
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
    return start, end


def _at(doc: Doc, start: int, end: int, style: str | None, what: str, current: str, bare: bool = False) -> Location:
    """A Location in the file of `doc` (an inline patch's offsets mapped to its kustomization file's)."""
    if doc.origin is not None:
        start, end = doc.origin(start), doc.origin(end)
    return Location(doc.path, start, end, style, what, current, bare)


def _location(doc: Doc, node: ScalarNode, what: str) -> Location:
    start, end = _span(doc, node, what)
    return _at(doc, start, end, node.style, what, str(node.value))


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
    if _is_yaml(path):
        _compose(after, path)


# ------------------------------------------------------------------------------------- YAML helpers


def _compose(text: str, path: str) -> list[Doc]:
    try:
        nodes = [n for n in YAML(typ="rt").compose_all(text) if n is not None]
    except YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    return [Doc(path, i, n, text) for i, n in enumerate(nodes) if isinstance(n, MappingNode)]


def _compose_any(text: str, path: str) -> list[Node]:
    """Every YAML document of `text` (mappings and sequences); ConfigError naming `path` when invalid."""
    try:
        return [n for n in YAML(typ="rt").compose_all(text) if n is not None]
    except YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e


def _items(node: Node | None) -> list[Node]:
    return list(node.value) if isinstance(node, SequenceNode) else []


def _is_flux_kustomization(doc: Doc) -> bool:
    return doc.kind == "Kustomization" and doc.api.startswith(_FLUX_KUSTOMIZATION)


def _flux_ref(context: Doc | None) -> str | None:
    return None if context is None else f"{context.namespace or 'flux-system'}/{context.name}"


def _strings(node: Node | None) -> list[str]:
    return [str(n.value) for n in node.value if isinstance(n, ScalarNode)] if isinstance(node, SequenceNode) else []


def _is_yaml(path: str) -> bool:
    return path.endswith((".yaml", ".yml"))
