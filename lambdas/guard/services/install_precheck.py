"""The prechecks on a cluster's whole Istio install, before any MR: every chart found, Flux will
upgrade them in order, the CRDs move too, the change touches no cluster outside the batch, the
target version of every chart is published, and the target Istio supports the cluster's Kubernetes."""

from __future__ import annotations

import threading
from collections import OrderedDict

from guard.checks.install import ambient_skew, crds_upgraded, kubernetes_compatible, upgrade_order
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import RunRecord
from guard.errors import GuardError, RateLimited, TransientError
from guard.gitops.istio_install import Files, Install, plan_edits, read_install
from guard.ports import ChartRepository, ClusterConnector, GitOpsRepo
from guard.services.install import location_users, outside_users, repo_files
from guard.stores.registry import ClusterRegistry


def _result(cluster_id: str, name: str, status: CheckStatus, message: str, **details: object) -> HealthCheckResult:
    return HealthCheckResult(cluster_id=cluster_id, check_name=name, status=status, message=message,
                             details=dict(details))


Index = dict[tuple[str, int, int], list[str]]


class _Revision:
    """What the change's scope needs of one commit of a project: per set of clusters inside a run and
    per fleet, which version locations the clusters outside it read (small: ids, not documents)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.indexes: OrderedDict[tuple[frozenset[str], tuple[tuple[str, str, str], ...]], Index] = OrderedDict()


# What a warm Lambda environment keeps between invocations: the scope indexes of the last commits read, by
# (GitLab, project, commit id); a commit's files never change. Each precheck task of a batch (a chunk of
# clusters) would otherwise parse every other cluster's install again: with 5,000 clusters, 200 chunks
# each parsing ~5,000 files. The parsed files themselves are not kept (~20 KB a small file parsed: 100 MB
# at 5,000 clusters); their texts are, by blob id (guard.services.install.repo_files).
_REVISIONS: OrderedDict[tuple[str, str, str], _Revision] = OrderedDict()
_REVISIONS_KEPT = 4
_INDEXES_KEPT = 4
_REVISIONS_LOCK = threading.Lock()


class InstallPrecheck:
    """Reads the install at the target branch, as the MR will be cut from it.

    One instance serves one task (a chunk of clusters, checked from several threads): the
    repository revision and the registry are read once for all of them, not once per cluster. A
    HelmRepository lookup may scan every file of the repository, and the change's scope reads the
    whole registry, so per cluster both grew with the fleet: reads growing as its square. The
    change's scope (which clusters outside the run read a file the change writes) is worked out
    once per task, from every other cluster's install.

    `revision_cache` (the GitLab URL, what the Lambda passes): the branch is resolved to its
    commit, and the scope worked out at that commit is kept for the next tasks this environment
    runs (`_REVISIONS`), so a batch's chunks parse the fleet's installs once, not once per chunk.
    """

    def __init__(self, registry: ClusterRegistry, repo: GitOpsRepo, charts: ChartRepository,
                 target_branch: str, allowed_prefixes: list[str] | None = None,
                 revision_cache: str | None = None) -> None:
        self._target_branch = target_branch
        self._prefixes = list(allowed_prefixes or [])
        self._registry = registry
        self._repo = repo
        self._charts = charts
        self._revision_cache = revision_cache
        self._shared = threading.Lock()
        self._trees: dict[str, tuple[Files, _Revision]] = {}
        self._fleet: list[Cluster] | None = None

    def _revision(self, project: str) -> tuple[Files, _Revision]:
        """The project at the target branch, shared by this task's clusters (read and parsed lazily)."""
        with self._shared:
            if project not in self._trees:
                self._trees[project] = self._read_revision(project)
            return self._trees[project]

    def _read_revision(self, project: str) -> tuple[Files, _Revision]:
        if self._revision_cache is None:
            return repo_files(self._repo, project, self._target_branch), _Revision()
        commit = self._repo.branch_head(project, self._target_branch)
        key = (self._revision_cache, project, commit)
        with _REVISIONS_LOCK:
            if key in _REVISIONS:
                _REVISIONS.move_to_end(key)
            else:
                _REVISIONS[key] = _Revision()
                while len(_REVISIONS) > _REVISIONS_KEPT:
                    _REVISIONS.popitem(last=False)
            return repo_files(self._repo, project, commit), _REVISIONS[key]

    def _files(self, project: str) -> Files:
        return self._revision(project)[0]

    def _outside_index(self, run: RunRecord, project: str) -> Index:
        """Version locations that clusters of `project` outside the run read (for `outside_users`)."""
        files, revision = self._revision(project)
        fleet = self._all_clusters()
        key = (frozenset(run.clusters),
               tuple((c.cluster_id, c.gitlab_project, c.flux_config_path or "") for c in fleet))
        with revision.lock:  # one thread builds it; the others wait for it
            if key not in revision.indexes:
                revision.indexes[key] = location_users(files, fleet, set(run.clusters), project)
                while len(revision.indexes) > _INDEXES_KEPT:
                    revision.indexes.popitem(last=False)
            return revision.indexes[key]

    def _all_clusters(self) -> list[Cluster]:
        with self._shared:
            if self._fleet is None:
                self._fleet = self._registry.all()
            return self._fleet

    def run(self, run: RunRecord, cluster: Cluster, connector: ClusterConnector) -> list[HealthCheckResult]:
        cid, target = cluster.cluster_id, run.target_version
        results = [self._kubernetes(cluster, target, connector)]
        try:
            files = self._files(cluster.gitlab_project)
            install = read_install(files, cid, cluster.flux_config_path)
        except RateLimited:
            raise
        except TransientError as e:
            return [*results, HealthCheckResult.inconclusive(cid, "istio_install", f"GitLab: {e}")]
        except GuardError as e:
            return [*results, _result(cid, "istio_install", CheckStatus.FAIL, str(e))]
        found = ", ".join(f"{c.component} {c.ref} ({c.location.field} in {c.location.path}, now "
                          f"{c.location.current})" for c in install.components)
        found += "".join(f"; left out as another cluster's file: {path}" for path in install.skipped)
        if install.remote:
            # A chart in a remote base would stay on its version: say so rather than pass in silence.
            found += (f"; not read (remote Kustomize resources; any Istio chart there is not upgraded by GUARD): "
                      f"{', '.join(install.remote)}")
        results += [
            _result(cid, "istio_install", CheckStatus.WARN if install.remote else CheckStatus.PASS,
                    f"{len(install.components)} Istio chart(s): {found}",
                    components={c.ref: c.component for c in install.components}),
            upgrade_order(install),
            ambient_skew(install, target),
            crds_upgraded(install, target),
            self._scope(run, cluster, install, files),
            self._published(cid, install, target),
        ]
        return results

    def _kubernetes(self, cluster: Cluster, target: str, connector: ClusterConnector) -> HealthCheckResult:
        try:
            server = connector.connect(cluster).server_version()
        except RateLimited:
            raise
        except GuardError as e:
            return HealthCheckResult.inconclusive(cluster.cluster_id, "kubernetes_compatible", e)
        return kubernetes_compatible(cluster.cluster_id, target, server)

    def _scope(self, run: RunRecord, cluster: Cluster, install: Install, files: Files) -> HealthCheckResult:
        cid = cluster.cluster_id
        edits = plan_edits({cid: install}, {cid: run.target_version})
        users = outside_users(files, edits, set(run.clusters), self._all_clusters(), cluster.gitlab_project,
                              index=self._outside_index(run, cluster.gitlab_project))
        if users:
            clusters = sorted({c for found in users.values() for c in found})
            where = "; ".join(f"{what} also serves {', '.join(sorted(found))}" for what, found in sorted(users.items()))
            return _result(cid, "change_scope", CheckStatus.FAIL,
                           f"the change would also touch {len(clusters)} cluster(s) outside the batch: "
                           f"{', '.join(clusters)} ({where}); put them in the batch, or give the batch's clusters "
                           "their own version", outside=clusters)
        files_touched = sorted({loc.path for loc in edits})
        outside = [f for f in files_touched if self._prefixes and not f.startswith(tuple(self._prefixes))]
        if outside:
            # The version lives in a file GUARD may not commit to (gitlab.allowed_path_prefixes).
            return _result(cid, "change_scope", CheckStatus.FAIL,
                           f"the version lives in {', '.join(outside)}, outside gitlab.allowed_path_prefixes "
                           f"({', '.join(self._prefixes)}): add its directory there to let GUARD bump it")
        return _result(cid, "change_scope", CheckStatus.PASS,
                       f"the change touches only the batch's clusters ({', '.join(files_touched)})")

    def _published(self, cid: str, install: Install, target: str) -> HealthCheckResult:
        missing: list[str] = []
        unknown: list[str] = []
        seen: list[str] = []
        for c in install.components:
            if c.source is None:
                unknown.append(f"{c.ref}: " + "; ".join(c.problems or ["no chart source"]))
                continue
            try:
                versions = self._charts.published_versions(c.source.kind, c.source.url, c.chart, c.source.insecure)
            except RateLimited:
                raise
            except TransientError as e:
                return HealthCheckResult.inconclusive(cid, "chart_version_published", e)
            except GuardError as e:
                unknown.append(f"{c.ref}: {e}")
                continue
            where = f"{c.chart} in {c.source.url}"
            (seen if target in versions else missing).append(where)
        if missing or unknown:
            text = "; ".join([f"{target} is not published for {m}" for m in missing] + unknown)
            return _result(cid, "chart_version_published", CheckStatus.FAIL,
                           f"the target chart version cannot be pulled: {text}", missing=missing)
        return _result(cid, "chart_version_published", CheckStatus.PASS,
                       f"{target} is published for every chart ({'; '.join(seen)})")
