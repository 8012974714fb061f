"""Where the upgrade happened, on Datadog: events at the merge, the soak's start and the verdict, and
before/after graph snapshots of each failing query for the rollback MR.

Best effort, always: a marker helps a person read a dashboard, it never decides anything, so an event
or a snapshot that cannot be made is logged and noted, and the run goes on (the adapter has already
retried it per `guard.retry`). The texts are GUARD's own (names, versions, counts), redacted on the way
out like every outbound text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from guard.core.run import ClusterVerdict, MetricSummary, RunRecord, VerdictOutcome
from guard.digest import names_digest
from guard.errors import GuardError
from guard.outbound import plain_text, untrusted_inline
from guard.ports import DashboardMarkers, MarkerEvent

TAGGED_CLUSTERS = 25
"""Clusters an event is tagged with (`cluster:<id>`); a larger batch's event names the count in its text."""

SNAPSHOTS = 10
"""Failing queries a rollback MR shows graphs of (two snapshots each); the rest are counted."""


class Graphs(BaseModel):
    """Before/after snapshots of one failing query on one cluster (None: that snapshot could not be made)."""

    cluster_id: str
    query_name: str
    before: str | None = None
    after: str | None = None
    explorer: str | None = None  # the Metrics Explorer link over both windows
    note: str | None = None  # why a snapshot is missing


class UpgradeMarkers:
    """`markers` None (no Datadog credentials): nothing is posted, and the MR says there are no graphs."""

    def __init__(self, markers: DashboardMarkers | None, tenant: str,
                 log_warning: Callable[..., Any] | None = None) -> None:
        self._markers = markers
        self._tenant = tenant
        self._warn = log_warning or (lambda *a, **k: None)

    # ------------------------------------------------------------------ events

    def merged(self, run: RunRecord) -> None:
        """The MR was merged: Flux rolls the new version out from here."""
        self._post(run, f"Istio {run.target_version} merged on batch {run.batch}",
                   f"GUARD run {run.run_id}: merge request {run.merge_request_url or '(unknown)'} merged; Flux "
                   f"rolls Istio {run.target_version} out to {self._clusters(run)}.", "info")

    def soak_started(self, run: RunRecord) -> None:
        """Every cluster runs the new version: the soak starts, validation follows it."""
        self._post(run, f"Istio {run.target_version} soak started on batch {run.batch}",
                   f"GUARD run {run.run_id}: {self._clusters(run)} run Istio {run.target_version}; the soak "
                   f"starts now and validation follows it. Merge request: {run.merge_request_url}.", "info")

    def verdict(self, run: RunRecord, outcome: VerdictOutcome, summary: str) -> None:
        """The batch's verdict (pass, fail, inconclusive), with what did not pass."""
        kind: Literal["success", "error", "warning"] = (
            "success" if outcome == VerdictOutcome.PASS else "error" if outcome == VerdictOutcome.FAIL
            else "warning")
        self._post(run, f"Istio {run.target_version} validation {outcome.value} on batch {run.batch}",
                   f"GUARD run {run.run_id}: validation of Istio {run.target_version} on {self._clusters(run)}: "
                   f"{outcome.value}. {summary} Merge request: {run.merge_request_url}.", kind)

    def _post(self, run: RunRecord, title: str, text: str, kind: Literal["info", "success", "warning", "error"]
              ) -> None:
        if self._markers is None:
            return
        tags = ["source:guard", f"guard_tenant:{self._tenant}", f"guard_batch:{run.batch}",
                f"guard_run:{run.run_id}", f"istio_version:{run.target_version}",
                *(f"cluster:{c}" for c in run.clusters[:TAGGED_CLUSTERS])]
        try:
            # Datadog turns `@handle` in an event into a notification: a quoted cause must never page anyone.
            event = MarkerEvent(title=_no_mentions(plain_text(title, 100))[:100],
                                text=_no_mentions(plain_text(text, 3900)),
                                tags=[t[:200] for t in tags], alert_type=kind, aggregation_key=run.run_id[:100])
            self._markers.post_event(event)
        except (GuardError, ValueError) as e:  # ValueError: a model refused a field (best effort all the same)
            self._warn("Datadog event not posted", extra={"title": title, "error": plain_text(str(e), 500)})

    @staticmethod
    def _clusters(run: RunRecord) -> str:
        return names_digest(run.clusters)

    # ------------------------------------------------------------------ graph snapshots

    def failing_graphs(self, run: RunRecord, verdicts: list[ClusterVerdict],
                       baselines: dict[str, dict[str, MetricSummary]]) -> tuple[list[Graphs], int]:
        """Before/after snapshots of every failing query of `verdicts` (the first `SNAPSHOTS`), and how many
        failing queries were left out. `baselines`: cluster -> query name -> the window before the change."""
        failing = [(v, f) for v in verdicts if v.outcome == VerdictOutcome.FAIL
                   for f in v.findings if f.outcome == VerdictOutcome.FAIL]
        shown = list({(v.cluster_id, f.query_name): (v, f) for v, f in failing}.values())
        graphs = []
        for verdict, finding in shown[:SNAPSHOTS]:
            before = baselines.get(verdict.cluster_id, {}).get(finding.query_name)
            after = verdict.current.get(finding.query_name)
            graphs.append(self._graphs(verdict.cluster_id, finding.query_name, finding.query, before, after))
        return graphs, max(0, len(shown) - SNAPSHOTS)

    def _graphs(self, cluster_id: str, name: str, query: str, before: MetricSummary | None,
                after: MetricSummary | None) -> Graphs:
        windows = [w for w in (before, after) if w is not None]
        graphs = Graphs(cluster_id=cluster_id, query_name=name)
        if windows and self._markers is not None:  # one link over both windows: the change in the middle
            graphs.explorer = self._markers.dashboard_url(query, windows[0].start, windows[-1].end)
        problems = []
        for side, window in (("before", before), ("after", after)):
            if window is None:
                problems.append(f"no {side} window recorded")
                continue
            if self._markers is None:
                problems.append("Datadog is not configured for snapshots")
                break
            url = self._snapshot(query, window.start, window.end, f"{cluster_id} {name} {side} the upgrade")
            if url is None:
                problems.append(f"the {side} snapshot could not be made")
            setattr(graphs, side, url)
        graphs.note = "; ".join(problems) or None
        return graphs

    def _snapshot(self, query: str, start: datetime, end: datetime, title: str) -> str | None:
        assert self._markers is not None
        try:
            return self._markers.graph_snapshot(query, start, end, title)
        except GuardError as e:
            self._warn("Datadog graph snapshot not made", extra={"title": title, "error": plain_text(str(e), 500)})
            return None


def _no_mentions(text: str) -> str:
    return text.replace("@", "@\u2060")


_LINK = re.compile(r"^https://[A-Za-z0-9.-]+(?::[0-9]+)?/[^\s()<>\[\]]*$")


def graphs_markdown(graphs: list[Graphs], left_out: int) -> str:
    """The rollback MR's "Graphs" section: before/after images of each failing query, and the explorer link.

    GUARD's own content: the images are Datadog's snapshots (`guard.outbound.gitlab_body` lets only
    those through as images); a URL that is not a plain https link is left out, never rendered."""
    if not graphs:
        return ""
    lines = ["## Graphs of the failing queries", "",
             "Datadog graph snapshots of each failing query, before the upgrade and after it.", ""]
    for g in graphs:
        name = untrusted_inline(g.query_name, 200)
        lines += [f"### `{g.cluster_id}`: {name}", ""]
        for side in ("before", "after"):
            url = getattr(g, side)
            if url and _LINK.match(url):
                lines += [f"![{name} {side} the upgrade]({url})", ""]
        if g.explorer and _LINK.match(g.explorer):
            lines += [f"[Open in Datadog's Metrics Explorer]({g.explorer})", ""]
        if g.note:
            lines += [f"_Graphs incomplete: {g.note}._", ""]
    if left_out:
        lines.append(f"_{left_out} more failing queries have no graphs here: see the failure data below._")
    return "\n".join(lines)
