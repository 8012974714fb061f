"""Clusters' Istio installs read from the GitOps repository, and what a change to them touches.

Shared by the precheck (refuse before any MR) and the change pipeline (write the MR): both read
the installs the same way (guard.gitops.istio_install) at one revision of the repository.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from guard.core.models import Cluster
from guard.errors import ConfigError, GuardError, TransientError
from guard.gitops.istio_install import Files, Install, Location, plan_edits, read_install
from guard.ports import GitOpsRepo

# File texts by blob id (git's id of a file's content), kept by a warm environment between invocations: each
# batch's tasks read the whole repository (every other cluster's install, for the change's scope), and
# between two batches only the files the last merge changed have a new id. With 5,000 clusters that is
# ~5,000 GitLab reads per batch and task kind otherwise.
_BLOBS: OrderedDict[str, str] = OrderedDict()
_BLOBS_CHARS = 32_000_000  # at most this many characters kept (the least recently read go first)
_BLOBS_LOCK = threading.Lock()
_blobs_size = [0]
# Files one task reads from GitLab at once. A batch's MR reads every cluster's install, and its scope
# every other cluster's of the project: one at a time, 2,000 clusters at ~80 ms a read were ~160 s
# (past OpenMergeRequest's 120 s). Eight keep a task well inside GitLab's per-user rate limits.
GITLAB_READERS = 8

K = TypeVar("K")
V = TypeVar("V")


def repo_files(repo: GitOpsRepo, project: str, ref: str) -> Files:
    """One revision of `project`, read through `repo` (each file once; a file whose content was read
    before, at any revision, not again)."""
    def read(path: str) -> str | None:
        blob = listing().get(path)
        if blob is None:
            return None
        with _BLOBS_LOCK:
            if blob in _BLOBS:
                _BLOBS.move_to_end(blob)
                return _BLOBS[blob]
        text = repo.read_file(project, path, ref)
        with _BLOBS_LOCK:
            if blob not in _BLOBS:
                _BLOBS[blob] = text
                _blobs_size[0] += len(text)
            while _blobs_size[0] > _BLOBS_CHARS and _BLOBS:
                _blobs_size[0] -= len(_BLOBS.popitem(last=False)[1])
        return text

    cache: list[dict[str, str]] = []
    paths: list[str] = []
    listed = threading.Lock()  # installs are read by several threads: the tree is listed once

    def listing() -> dict[str, str]:
        with listed:
            if not cache:
                blobs = repo.list_blobs(project, "", ref)
                paths.extend(sorted(blobs))
                cache.append(blobs)
        return cache[0]

    def list_dir(directory: str) -> list[str]:
        # The sorted paths below `directory` are one slice: each cluster lists its own directory, and a scan
        # of every path for each made reading the fleet's installs grow as its square.
        prefix = directory.strip("/") + "/" if directory.strip("/") else ""
        listing()
        start = bisect.bisect_left(paths, prefix)
        end = start
        while end < len(paths) and paths[end].startswith(prefix):
            end += 1
        return paths[start:end]

    return Files(read, list_dir)


def _each(items: Iterable[K], work: Callable[[K], V]) -> list[V]:
    """`work` on every item, GITLAB_READERS at a time, results in the items' order; the first item's
    error (in that order) is raised, as a loop would have raised it."""
    todo = list(items)
    if len(todo) <= 1:
        return [work(item) for item in todo]
    with ThreadPoolExecutor(max_workers=min(GITLAB_READERS, len(todo))) as pool:
        futures = [pool.submit(work, item) for item in todo]
        return [future.result() for future in futures]


def read_installs(files: Files, clusters: dict[str, Cluster]) -> dict[str, Install]:
    """Every cluster's install at the revision of `files`, read GITLAB_READERS clusters at a time."""
    installs = _each(clusters.items(), lambda item: read_install(files, item[0], item[1].flux_config_path))
    return dict(zip(clusters, installs, strict=True))


def location_users(files: Files, fleet: list[Cluster], inside: set[str], project: str
                   ) -> dict[tuple[str, int, int], list[str]]:
    """Every version location that clusters of `project` outside `inside` read -> those clusters (fleet order).

    It reads the install of every such cluster: build it once for all the clusters a task checks
    (`outside_users(..., index=)`), not once per cluster, which read the fleet once per cluster.
    """
    def install_of(cluster: Cluster) -> Install | None:
        try:
            return read_install(files, cluster.cluster_id, cluster.flux_config_path)
        except TransientError:
            raise  # GitLab did not answer: the scope is unknown (and must not be kept as "nobody else")
        except GuardError:
            return None  # a cluster GUARD cannot read is not one it can tell about; its own run will say why

    others = [c for c in fleet if c.cluster_id not in inside and c.gitlab_project == project]
    users: dict[tuple[str, int, int], list[str]] = {}
    for cluster, install in zip(others, _each(others, install_of), strict=True):
        for location in install.locations() if install else ():
            users.setdefault(location.key, []).append(cluster.cluster_id)
    return users


def outside_users(files: Files, edits: dict[Location, str], inside: set[str], fleet: list[Cluster],
                  project: str, index: dict[tuple[str, int, int], list[str]] | None = None) -> dict[str, list[str]]:
    """Locations the change writes that clusters outside `inside` read too: what -> those clusters.

    `index`: `location_users(files, fleet, inside, project)` when the caller has it already."""
    if index is None:
        index = location_users(files, fleet, inside, project)
    users: dict[str, list[str]] = {}
    for location in edits:
        if location.key in index:
            users.setdefault(f"{location.path} ({location.field})", []).extend(index[location.key])
    return users


def refuse_outside(users: dict[str, list[str]]) -> None:
    """ConfigError listing every cluster outside the batch a change would touch."""
    if users:
        clusters = sorted({c for found in users.values() for c in found})
        where = "; ".join(f"{what} also serves {', '.join(sorted(found))}" for what, found in sorted(users.items()))
        raise ConfigError(f"the change would also touch {len(clusters)} cluster(s) outside the batch: "
                          f"{', '.join(clusters)} ({where}); put them in the batch, or give the batch's clusters "
                          "their own version")


def planned_changes(files: Files, installs: dict[str, Install], versions: dict[str, str],
                    fleet: list[Cluster], project: str) -> dict[Location, str]:
    """The edits bringing each cluster of `versions` to its version; refused when they reach other clusters."""
    edits = plan_edits(installs, versions)
    refuse_outside(outside_users(files, edits, set(versions), fleet, project))
    return edits
