"""Build the CDK app from context: one GuardStack per tenant config, cdk-nag on the whole app."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from guard.checks.custom import verify_custom_checks
from guard.config.loader import load_config
from guard.config.models import TenantConfig
from guard.errors import ConfigError

from infra.naming import stack_name, table_names
from infra.stack import ROOT, GuardStack
from infra.tables import SharedRegistryStack

BUILD_DIR_CONTEXT = "guard:build_dir"


def tenant_files(value: Any) -> list[Path]:
    """Context `tenants`: a JSON list (cdk.json) or a comma-separated string (`-c tenants=a.yaml,b.yaml`)."""
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError("context tenants: give a list of tenant config files, e.g. [\"config/example.yaml\"]")
    return [(ROOT / v.strip()) if not Path(v.strip()).is_absolute() else Path(v.strip()) for v in value]


def build_app(context: Mapping[str, Any] | None = None, *, account: str | None = None,
              outdir: str | None = None) -> cdk.App:
    """The app for `context`; raises ConfigError (naming the file and key path) on a bad tenant config."""
    app = cdk.App(context=dict(context or {}), outdir=outdir)
    files = tenant_files(app.node.try_get_context("tenants"))
    build_dir = Path(app.node.try_get_context(BUILD_DIR_CONTEXT) or ROOT / ".build")
    configs = [(file, load_config(file)) for file in files]
    seen: dict[str, Path] = {}
    for file, config in configs:
        if config.tenant in seen:
            raise ConfigError(f"{file}: tenant '{config.tenant}' is already defined by {seen[config.tenant]}")
        seen[config.tenant] = file
        # A misspelt check module or class fails the synth, not every run after the deploy.
        verify_custom_checks(config.custom_checks, file.parent / config.custom_checks_path, str(file))
    shared = _shared_registries(app, configs, account)
    for file, config in configs:
        GuardStack(app, stack_name(config), config=config, config_file=file, build_dir=build_dir,
                   shared_registry=shared.get((config.aws.region, table_names(config).table_name)),
                   env=cdk.Environment(account=account, region=config.aws.region),
                   description=f"GUARD Istio upgrades for tenant {config.tenant}")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def _shared_registries(app: cdk.App, configs: list[tuple[Path, TenantConfig]],
                       account: str | None) -> dict[tuple[str, str], SharedRegistryStack]:
    """One stack per registry table that several tenants name (in one region), which creates it; the
    tenants' stacks reference it. Any other physical name two tenants would share is refused."""
    registries: dict[tuple[str, str], list[str]] = {}
    owners: dict[tuple[str, str], str] = {}  # (region, table name) -> "<file> (<key>)", for the state tables
    for file, config in configs:
        names = table_names(config)
        registries.setdefault((config.aws.region, names.table_name), []).append(config.tenant)
        where = (config.aws.region, names.state_table_name)
        if where in owners:
            raise ConfigError(f"{file}: aws.dynamodb.state_table_name '{names.state_table_name}' is also named by "
                              f"{owners[where]}; only the registry table may be shared by tenants")
        owners[where] = f"{file} (aws.dynamodb.state_table_name)"
    for file, config in configs:
        where = (config.aws.region, table_names(config).table_name)
        if where in owners:
            raise ConfigError(f"{file}: aws.dynamodb.table_name '{where[1]}' is the state table of {owners[where]}")
    regions_of: dict[str, set[str]] = {}
    for region, name in registries:
        regions_of.setdefault(name, set()).add(region)
    shared: dict[tuple[str, str], SharedRegistryStack] = {}
    for (region, name), tenants in registries.items():
        if len(tenants) < 2:
            continue  # a registry of one tenant stays in that tenant's stack
        stack_id = "Guard-registry-" + re.sub(r"[^A-Za-z0-9-]", "-", name)
        if len(regions_of[name]) > 1:
            stack_id += f"-{region}"
        shared[(region, name)] = SharedRegistryStack(app, stack_id, table_name=name, tenants=tenants,
                                                     env=cdk.Environment(account=account, region=region))
    return shared
