"""Base class of health checks, including tenant custom checks (seed "Custom Health Checks")."""

from __future__ import annotations

from abc import ABC, abstractmethod

from guard.core.models import Cluster, HealthCheckResult


class HealthCheck(ABC):
    """One check run against one cluster.

    Subclasses implement `run`; the precheck service calls it, and turns an exception into
    a failed result for this check only.
    """

    name: str = ""

    @abstractmethod
    async def run(self, cluster: Cluster) -> HealthCheckResult:
        """Run the check and return its result."""
