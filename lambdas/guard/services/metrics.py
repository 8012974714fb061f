"""Render the tenant's named Datadog queries for a cluster and read a window of them."""

from __future__ import annotations

import logging
import re
from datetime import datetime

from guard.core.models import TAG_VALUE_PATTERN, Cluster
from guard.core.run import MetricSummary
from guard.datadog_groups import group_queries
from guard.errors import ConfigError, ExternalServiceError, RateLimited, TransientError
from guard.ports import MetricsProvider, Point

logger = logging.getLogger(__name__)

_TAG_VALUE = re.compile(TAG_VALUE_PATTERN.strip("^$"))


def render_queries(templates: dict[str, str], cluster: Cluster) -> dict[str, str]:
    """Fill `{environment}`, `{cluster_name}`, `{cluster_id}`, `{region}` for one cluster.

    Plain replacement, not str.format: Datadog queries contain braces of their own.
    """
    values = {
        "environment": cluster.datadog_tags.get("env", cluster.environment),
        "cluster_name": cluster.datadog_tags.get("cluster_name", cluster.cluster_id),
        "cluster_id": cluster.cluster_id,
        "region": cluster.region,
    }
    sources = {"environment": "datadog_tags.env" if "env" in cluster.datadog_tags else "environment",
               "cluster_name": "datadog_tags.cluster_name" if "cluster_name" in cluster.datadog_tags else "cluster_id",
               "cluster_id": "cluster_id", "region": "region"}
    for key, value in values.items():
        # A `*`, `,`, brace or space would widen the scope (`env:*`) or add a filter, and a
        # regression on the real scope could hide behind the wider one.
        if not _TAG_VALUE.fullmatch(value):
            raise ConfigError(f"clusters.{cluster.cluster_id[:100]}.{sources[key]}: {value[:60]!r} cannot go into a "
                              "Datadog query (allowed: letters, digits and _ . : / -)")
    rendered = {}
    for name, template in templates.items():
        query = template
        for key, value in values.items():
            query = query.replace("{" + key + "}", value)
        rendered[name] = query
    return rendered


def read_window(metrics: MetricsProvider, queries: dict[str, str], start: datetime,
                end: datetime) -> dict[str, MetricSummary]:
    """All queries over [start, end] in one request, as stored summaries."""
    series = metrics.query(queries, start, end)
    return {name: _summary(metrics, query, start, end, series.get(name, [])) for name, query in queries.items()}


class ChunkWindows:
    """A window of the tenant's queries for the clusters of a chunk, asked grouped where Datadog allows.

    Each query is asked once per group of clusters (guard.datadog_groups: `... IN (...) by {tag}`),
    not once per cluster: the clusters of a 25-cluster chunk cost one request, not 25. `read` gives
    a cluster's summaries as `read_window` did. A query that cannot be grouped for a cluster (its
    cluster selector is not a plain tag filter) is read for that cluster alone. A rate limit or a
    vendor that kept failing is raised again by `read` for each cluster of the failed request, so each
    cluster's work handles it where it handled its own read; a grouped request Datadog refused leaves
    its clusters to be read one by one.
    """

    def __init__(self, metrics: MetricsProvider, queries: dict[str, dict[str, str]], start: datetime,
                 end: datetime) -> None:
        self._metrics = metrics
        self._queries = queries  # cluster id -> name -> rendered query
        self.start, self.end = start, end
        self._points: dict[str, dict[str, list[Point]]] = {c: {} for c in queries}
        self._errors: dict[str, Exception] = {}
        self.requests = 0
        self._prefetch()

    def _prefetch(self) -> None:
        names = list(dict.fromkeys(n for per_name in self._queries.values() for n in per_name))
        per_name = [group_queries(name, {c: q[name] for c, q in self._queries.items() if name in q})[0]
                    for name in names]
        # Request i asks the i-th group of every query: usually one request for the whole chunk.
        for i in range(max((len(g) for g in per_name), default=0)):
            asked = [g[i] for g in per_name if i < len(g)]
            self.requests += 1
            try:
                answers = self._metrics.query_groups(asked, self.start, self.end)
            except (RateLimited, TransientError) as e:
                for grouped in asked:
                    for cluster_id in grouped.clusters.values():
                        self._errors.setdefault(cluster_id, e)
                continue
            except (ExternalServiceError, ConfigError) as e:
                logger.warning("a grouped Datadog request was refused; its clusters are read one by one: %s", e)
                continue
            for grouped, answer in zip(asked, answers, strict=True):
                for cluster_id, points in answer.items():
                    self._points[cluster_id][grouped.name] = points

    def read(self, cluster_id: str, queries: dict[str, str]) -> dict[str, MetricSummary]:
        """`queries` of the cluster over the window, as stored summaries (what `read_window` returns)."""
        error = self._errors.get(cluster_id)
        if error is not None:
            raise error
        fetched = self._points.get(cluster_id, {})
        alone = {n: q for n, q in queries.items() if n not in fetched or self._queries[cluster_id].get(n) != q}
        points = dict(fetched)
        if alone:
            points.update(self._metrics.query(alone, self.start, self.end))
        return {name: _summary(self._metrics, query, self.start, self.end, points.get(name, []))
                for name, query in queries.items()}


def chunk_windows(metrics: MetricsProvider, templates: dict[str, str], clusters: list[Cluster], start: datetime,
                  end: datetime) -> ChunkWindows:
    """`ChunkWindows` of the tenant's query `templates` for `clusters`; a cluster whose values cannot be
    rendered is left out (its own read raises the ConfigError naming them)."""
    rendered: dict[str, dict[str, str]] = {}
    for cluster in clusters:
        try:
            rendered[cluster.cluster_id] = render_queries(templates, cluster)
        except ConfigError:
            continue
    return ChunkWindows(metrics, rendered, start, end)


def _summary(metrics: MetricsProvider, query: str, start: datetime, end: datetime,
             points: list[Point]) -> MetricSummary:
    return MetricSummary(query=query, start=start, end=end, points=[(p.ts.timestamp(), p.value) for p in points],
                         url=metrics.dashboard_url(query, start, end))
