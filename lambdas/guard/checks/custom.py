"""Load and run tenant custom checks (seed "Custom Health Checks").

Check modules ship in the tenant's checks folder; `custom_checks: [{module, class}]`
names them. A check that cannot load or raises fails that check only.
"""

from __future__ import annotations

import asyncio
import datetime as _datetime
import importlib.util
import inspect
import sys
from pathlib import Path

from guard.checks.base import HealthCheck
from guard.config.models import CustomCheckConfig
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.errors import ConfigError


def load_custom_checks(specs: list[CustomCheckConfig], folder: Path) -> list[tuple[str, HealthCheck | str]]:
    """(name, instance) per spec, or (name, reason) when it cannot be loaded."""
    loaded: list[tuple[str, HealthCheck | str]] = []
    for spec in specs:
        name = f"{spec.module}.{spec.class_}"
        try:
            loaded.append((name, _instantiate(spec, folder)))
        except Exception as e:  # a broken tenant module must not hide the other checks
            loaded.append((name, f"cannot load {name}: {type(e).__name__}: {e}"))
    return loaded


def verify_custom_checks(specs: list[CustomCheckConfig], folder: Path, source: str) -> None:
    """Import every custom check as the functions will and refuse, before anything is deployed, a module
    that is missing or does not import, a class it does not define, or a class that is not a concrete
    HealthCheck. ConfigError names `source` (the config file) and each bad `custom_checks[i]` key."""
    problems: list[str] = []
    for i, spec in enumerate(specs):
        where = f"custom_checks[{i}] (module: {spec.module}, class: {spec.class_})"
        try:
            cls = _check_class(spec, folder)
        except ConfigError as e:
            problems.append(f"{where}: {str(e).removeprefix('custom_checks: ')}")
            continue
        except Exception as e:  # the tenant's module failed while importing
            problems.append(f"{where}: importing {folder / _module_file(spec)} raised {type(e).__name__}: {e}")
            continue
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
            problems.append(f"{where}: {spec.class_} does not implement {missing}, so it cannot be created")
    if problems:
        raise ConfigError(f"{source}: invalid custom checks\n  " + "\n  ".join(problems))


def _module_file(spec: CustomCheckConfig) -> str:
    return spec.module.replace(".", "/") + ".py"


def _instantiate(spec: CustomCheckConfig, folder: Path) -> HealthCheck:
    instance: HealthCheck = _check_class(spec, folder)()
    return instance


def _check_class(spec: CustomCheckConfig, folder: Path) -> type[HealthCheck]:
    path = folder / _module_file(spec)
    if not path.is_file():
        raise ConfigError(f"custom_checks: module '{spec.module}' not found at {path}")
    module_name = f"guard_custom_checks.{spec.module}"
    module = sys.modules.get(module_name)
    # Cached per process, but only for the same file: another tenant's folder may use the same module name.
    if module is None or Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigError(f"custom_checks: cannot import {path}")
        module = importlib.util.module_from_spec(module_spec)
        # The seed's documented example calls datetime.now() without importing it;
        # seeding the name lets that example run as written.
        module.__dict__.setdefault("datetime", _datetime.datetime)
        module_spec.loader.exec_module(module)
        sys.modules[module_name] = module
    cls = getattr(module, spec.class_, None)
    if cls is None:
        raise ConfigError(f"custom_checks: {path} defines no class '{spec.class_}'")
    if not isinstance(cls, type) or not issubclass(cls, HealthCheck):
        raise ConfigError(f"custom_checks: {spec.module}.{spec.class_} is not a guard.checks.base.HealthCheck")
    return cls


def run_custom_checks(loaded: list[tuple[str, HealthCheck | str]], cluster: Cluster,
                      timeout_seconds: float = 30) -> list[HealthCheckResult]:
    """Run every loaded check concurrently; failures and timeouts become FAIL results."""

    async def one(name: str, check: HealthCheck | str) -> HealthCheckResult:
        if isinstance(check, str):
            return _failed(cluster, name, check)
        try:
            result = await asyncio.wait_for(check.run(cluster), timeout_seconds)
        except TimeoutError:
            return HealthCheckResult.inconclusive(cluster.cluster_id, name,
                                                  f"{name} did not finish within {timeout_seconds:g}s")
        except Exception as e:  # the tenant's code: report it, never crash the precheck
            # An error is no answer about the cluster: inconclusive, never "fail" (guard.retry's rule).
            return HealthCheckResult.inconclusive(cluster.cluster_id, name, f"{name} raised {type(e).__name__}: {e}")
        if not isinstance(result, HealthCheckResult):
            return _failed(cluster, name, f"{name} returned {type(result).__name__}, not HealthCheckResult")
        return result

    async def run_all() -> list[HealthCheckResult]:
        return list(await asyncio.gather(*(one(n, c) for n, c in loaded)))

    return asyncio.run(run_all()) if loaded else []


def _failed(cluster: Cluster, name: str, message: str) -> HealthCheckResult:
    return HealthCheckResult(cluster_id=cluster.cluster_id, check_name=name, status=CheckStatus.FAIL,
                             message=message)
