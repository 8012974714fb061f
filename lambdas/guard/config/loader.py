"""Load a tenant config file and turn pydantic errors into key paths a person can fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from guard.config.models import DEFAULT_TENANT, NAME_PATTERN, TenantConfig
from guard.errors import ConfigError

# `team-a-config.yaml` and `team-a_config.yml` name the tenant team-a (the seed's multi-tenancy files).
_CONFIG_SUFFIXES = ("-config", "_config")


def format_validation_error(error: ValidationError, source: str, what: str = "config") -> str:
    """`batches[3].clusters: List should have at least 1 item` lines, one per problem."""
    lines = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path else str(part)
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
        message = message.removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return f"{source}: invalid {what}\n  " + "\n  ".join(lines)


def parse_config(data: Any, source: str = "config") -> TenantConfig:
    """Validate already-parsed YAML/JSON data; raises ConfigError naming each bad key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return TenantConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e


def tenant_from_file_name(path: str | Path) -> str:
    """The tenant a config file without `tenant:` belongs to, from its name as the seed writes them:
    `config.yaml` is the default tenant, `team-a-config.yaml` is team-a, any other `<name>.yaml` is
    <name>. ConfigError when the name cannot be a tenant name (then the file must say `tenant:`)."""
    stem = Path(path).name.split(".", 1)[0].lower()
    if stem == "config":
        return DEFAULT_TENANT
    for suffix in _CONFIG_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    tenant = stem.replace("_", "-")
    if not re.fullmatch(NAME_PATTERN, tenant):
        raise ConfigError(f"{path}: no `tenant:` key, and the file name does not give one ('{tenant}' is not "
                          "lowercase letters, digits and '-'); add `tenant: <name>` or rename the file "
                          "<tenant>-config.yaml")
    return tenant


def load_config(path: str | Path) -> TenantConfig:
    """Read and validate a tenant config YAML (or JSON) file. Its tenant is its `tenant:` key, else
    the one its file name gives (`tenant_from_file_name`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    # Imported here: the functions read their config as JSON (runtime.config) and never pay for PyYAML.
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if isinstance(data, dict) and "tenant" not in data:
        data = {"tenant": tenant_from_file_name(path), **data}
    return parse_config(data, str(path))
