"""Markdown a person reads in a merge request: one description builder for every change.

An upgrade MR and a rollback MR share the frame (heading, what opened it, a table of
what goes from where to where); the upgrade adds each cluster's health report, the
rollback its own section (why, who decided, the failure data and the analysis).
"""

from __future__ import annotations

from pydantic import BaseModel

from guard.core.models import CheckStatus, Cluster
from guard.core.run import PrecheckReport, RunRecord
from guard.digest import names_digest
from guard.outbound import untrusted_inline
from guard.redact import redact

TABLE_ROWS = 300
"""Clusters listed in the version table of an MR description; the rest are counted."""

HEALTH_SECTIONS = 30
"""Clusters whose precheck report an upgrade MR description shows (the rest are stored with the run)."""


class RollbackSection(BaseModel):
    """What a rollback MR says beyond the shared frame."""

    reason: str
    manual: bool = False
    upgrade_merge_request_url: str | None = None
    decided: str | None = None  # "rolled back by @alice (`/guard rollback`) at ...", or nobody answered
    manual_approval: bool = False
    failure_markdown: str = ""
    analysis_markdown: str = ""
    graphs_markdown: str = ""  # Datadog snapshots of the failing queries (guard.services.markers)


OWNERS_SHOWN = 10
"""Owners an MR mentions; the rest are counted (a mention per owner, not per cluster)."""

_BROADCASTS = {"all", "here", "channel", "everyone"}


def cluster_owners(clusters: list[Cluster]) -> dict[str, list[str]]:
    """`@handle` -> the clusters it owns, from the registry's `owner_handle` and `owner_team`.

    The registry validates both (`OWNER_PATTERN`), so they are GUARD's own content and are mentioned as
    they are; a name GitLab would read as a broadcast (`@all`) is never mentioned."""
    owners: dict[str, list[str]] = {}
    for cluster in clusters:
        for name in (cluster.owner_handle, cluster.owner_team):
            handle = (name or "").lstrip("@")
            if handle and handle.lower() not in _BROADCASTS:
                owners.setdefault(f"@{handle}", []).append(cluster.cluster_id)
    return owners


def owners_line(owners: dict[str, list[str]]) -> str | None:
    """"**Owners:** @platform-oncall (eks-dev-1, eks-dev-2), @platform-team (…)": who GitLab notifies."""
    if not owners:
        return None
    shown = [f"{handle} ({names_digest(clusters)})" for handle, clusters in list(owners.items())[:OWNERS_SHOWN]]
    more = f", and {len(owners) - OWNERS_SHOWN} more owners" if len(owners) > OWNERS_SHOWN else ""
    return "**Owners:** " + ", ".join(shown) + more


def _mark(passed: bool, status: CheckStatus | None = None) -> str:
    if status == CheckStatus.INCONCLUSIVE:
        return "?"
    return "✓" if passed else "✗"


def _mean(points: list[tuple[float, float]]) -> str:
    if not points:
        return "no data"
    return f"{sum(v for _, v in points) / len(points):.4g}"


def change_description(run: RunRecord, versions: dict[str, str], *,
                       reports: dict[str, PrecheckReport] | None = None,
                       rollback: RollbackSection | None = None, owners: dict[str, list[str]] | None = None) -> str:
    """The MR description for bringing `run`'s clusters to `versions` (an upgrade unless `rollback`);
    `owners` (`cluster_owners`) are mentioned, so GitLab tells them."""
    if rollback is None:
        lines = [f"## Istio upgrade: batch `{run.batch}` → `{run.target_version}`", "",
                 f"Opened by GUARD run `{run.run_id}`. Merging this MR lets Flux roll out the new version; "
                 "GUARD then waits for the sync, soaks and validates against the baseline below.", ""]
        rows = [(c, run.from_versions.get(c, "?"), v) for c, v in versions.items()]
    else:
        lines = [f"## Istio rollback: batch `{run.batch}` {run.target_version} → previous version", "",
                 f"Opened by GUARD run `{run.run_id}`" + (" (manual rollback)" if rollback.manual else "")
                 + ". Merging this MR lets Flux roll back; GUARD then verifies that each cluster runs the "
                 "previous version.", "", f"**Reason:** {untrusted_inline(rollback.reason)}", ""]
        if rollback.upgrade_merge_request_url and not rollback.manual:
            lines += [f"Upgrade merge request: {rollback.upgrade_merge_request_url}", ""]
        if rollback.decided:
            lines += [f"**Decision:** {rollback.decided}.", ""]
        if rollback.manual_approval:
            lines += ["**Manual approval required** (`rollback.require_manual_approval`): a Maintainer reviews "
                      "and merges this MR; GUARD never merges it.", ""]
        rows = [(c, run.target_version, v) for c, v in versions.items()]
    mentioned = owners_line(owners or {})
    if mentioned:
        lines += [mentioned, ""]
    if run.overrides:
        lines += ["**This run's input overrides the tenant config:**", "", *(f"- {o}" for o in run.overrides), ""]
    lines += ["| cluster | from | " + ("to |" if rollback is None else "back to |"), "|---|---|---|"]
    lines += [f"| `{c}` | {old} | {new} |" for c, old, new in rows[:TABLE_ROWS]]
    if len(rows) > TABLE_ROWS:
        lines.append(f"| … {len(rows) - TABLE_ROWS} more clusters | | see `guard status <execution>` |")
    if rollback is None:
        lines += _health_sections(list(versions), reports or {})
    else:
        if rollback.graphs_markdown:
            lines += ["", rollback.graphs_markdown]
        lines += ["", "## Failure data", "", rollback.failure_markdown or
                  "_manual rollback: no validation data for this run_", rollback.analysis_markdown]
    return redact("\n".join(lines)) + "\n"


def _health_sections(clusters: list[str], reports: dict[str, PrecheckReport]) -> list[str]:
    """Each cluster's checks ✓/✗, its baseline numbers and Datadog links."""
    lines: list[str] = []
    # Failing reports first: they are what a reviewer must read if the description is cut.
    ordered = sorted(clusters, key=lambda c: bool(reports.get(c) and reports[c].passed))
    for cluster_id in ordered[:HEALTH_SECTIONS]:
        report = reports.get(cluster_id)
        lines += ["", f"### `{cluster_id}`"]
        if report is None:
            lines.append("_no precheck report_")
            continue
        lines += ["", "| check | status | details |", "|---|---|---|"]
        for result in report.results:
            lines.append(f"| {untrusted_inline(result.check_name)} | {_mark(result.passed, result.status)} "
                         f"{result.status.value} | {untrusted_inline(result.message)} |")
        if report.ignored_alerts:
            lines += ["", "**Datadog alerts were ignored for this run (`ignore_alerts: true`).**"]
        if report.baseline:
            lines += ["", "Baseline (before the change):", "", "| query | mean | points | dashboard |",
                      "|---|---|---|---|"]
            for name, summary in report.baseline.items():
                link = f"[Datadog]({summary.url})" if summary.url else ""
                lines.append(f"| {name} | {_mean(summary.points)} | {len(summary.points)} | {link} |")
    if len(clusters) > HEALTH_SECTIONS:
        lines += ["", f"_{len(clusters) - HEALTH_SECTIONS} more clusters' health reports: see "
                      "`guard status <execution>`._"]
    return lines
