"""Load a tenant config file and turn pydantic errors into key paths a person can fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from guard.config.models import TenantConfig
from guard.errors import ConfigError


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


def load_config(path: str | Path) -> TenantConfig:
    """Read and validate a tenant config YAML (or JSON) file."""
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
    return parse_config(data, str(path))
