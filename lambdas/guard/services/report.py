"""Markdown a person reads in the merge request: the health report per cluster."""

from __future__ import annotations

from guard.core.run import PrecheckReport, RunRecord


def _mark(passed: bool) -> str:
    return "✓" if passed else "✗"


def _mean(points: list[tuple[float, float]]) -> str:
    if not points:
        return "no data"
    return f"{sum(v for _, v in points) / len(points):.4g}"


def health_report(run: RunRecord, reports: dict[str, PrecheckReport]) -> str:
    """MR description: what changes, each cluster's checks ✓/✗, its baseline numbers and Datadog links."""
    lines = [
        f"## Istio upgrade: batch `{run.batch}` → `{run.target_version}`",
        "",
        f"Opened by GUARD run `{run.run_id}`. Merging this MR lets Flux roll out the new version; "
        "GUARD then waits for the sync, soaks and validates against the baseline below.",
        "",
        "| cluster | from | to |",
        "|---|---|---|",
    ]
    lines += [f"| `{c}` | {run.from_versions.get(c, '?')} | {run.target_version} |" for c in run.clusters]
    for cluster_id in run.clusters:
        report = reports.get(cluster_id)
        lines += ["", f"### `{cluster_id}`"]
        if report is None:
            lines.append("_no precheck report_")
            continue
        lines += ["", "| check | status | details |", "|---|---|---|"]
        for result in report.results:
            lines.append(f"| {result.check_name} | {_mark(result.passed)} {result.status.value} | "
                         f"{result.message.replace('|', '/')} |")
        if report.ignored_alerts:
            lines += ["", "**Datadog alerts were ignored for this run (`ignore_alerts: true`).**"]
        if report.baseline:
            lines += ["", "Baseline (before the change):", "", "| query | mean | points | dashboard |",
                      "|---|---|---|---|"]
            for name, summary in report.baseline.items():
                link = f"[Datadog]({summary.url})" if summary.url else ""
                lines.append(f"| {name} | {_mean(summary.points)} | {len(summary.points)} | {link} |")
    return "\n".join(lines) + "\n"
