"""Build the CDK app from context: one GuardStack per tenant config, cdk-nag on the whole app."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks
from guard.checks.custom import verify_custom_checks
from guard.config.loader import load_config
from guard.errors import ConfigError

from infra.naming import stack_name
from infra.stack import ROOT, GuardStack

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
    for file, config in configs:
        GuardStack(app, stack_name(config), config=config, config_file=file, build_dir=build_dir,
                   env=cdk.Environment(account=account, region=config.aws.region),
                   description=f"GUARD Istio upgrades for tenant {config.tenant}")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app
