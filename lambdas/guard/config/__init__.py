"""Tenant configuration: one YAML file per tenant, validated by pydantic."""

from guard.config.loader import load_config, parse_config, tenant_from_file_name
from guard.config.models import TenantConfig

__all__ = ["TenantConfig", "load_config", "parse_config", "tenant_from_file_name"]
