# custom_checks.py: the seed's "Custom Health Checks" example, as written there.
# GUARD loads it from the tenant's checks folder (config `custom_checks_path`).
from guard.checks.base import HealthCheck
from guard.core.models import HealthCheckResult, CheckStatus, Cluster

class CustomDatabaseCheck(HealthCheck):
    """Check database connectivity from cluster."""

    async def run(self, cluster: Cluster) -> HealthCheckResult:
        """Run database connectivity check."""
        try:
            # Connect to database via cluster
            # Run test query
            # Check query performance

            return HealthCheckResult(
                cluster_id=cluster.cluster_id,
                check_name="database_connectivity",
                status=CheckStatus.PASS,
                message="Database connectivity healthy",
                timestamp=datetime.now(),
                details={
                    "query_time_ms": 45,
                    "connection_pool_usage": "23%"
                }
            )
        except Exception as e:
            return HealthCheckResult(
                cluster_id=cluster.cluster_id,
                check_name="database_connectivity",
                status=CheckStatus.FAIL,
                message=f"Database check failed: {e}",
                timestamp=datetime.now(),
                details={"error": str(e)}
            )
