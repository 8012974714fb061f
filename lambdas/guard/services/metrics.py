"""Render the tenant's named Datadog queries for a cluster and read a window of them."""

from __future__ import annotations

import re
from datetime import datetime

from guard.core.models import TAG_VALUE_PATTERN, Cluster
from guard.core.run import MetricSummary
from guard.errors import ConfigError
from guard.ports import MetricsProvider

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
    return {
        name: MetricSummary(
            query=query, start=start, end=end,
            points=[(p.ts.timestamp(), p.value) for p in series.get(name, [])],
            url=metrics.dashboard_url(query, start, end),
        )
        for name, query in queries.items()
    }
