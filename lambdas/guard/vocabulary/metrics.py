"""GUARD's own CloudWatch metrics (Powertools Metrics, EMF): names the handlers emit and infra alarms on."""

from __future__ import annotations

NAMESPACE = "GUARD"  # POWERTOOLS_METRICS_NAMESPACE of every function
SERVICE = "guard"  # POWERTOOLS_SERVICE_NAME: Powertools adds it as the `service` dimension
TENANT_DIMENSION = "tenant"  # tenants may share an account: an alarm must hear only its own

ROLLBACK_NEEDS_PERSON = "RollbackNeedsPerson"
"""A rollback MR GUARD no longer watches (its wait timed out, or its task token could not be stored) is left
open: a person must merge it and check the clusters, or close it."""
