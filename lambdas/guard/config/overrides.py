"""Execution inputs may only make a run stricter than the tenant config, unless the config says otherwise.

Whoever may start an execution (a console user, a schedule, a CI job) is not necessarily who
wrote the tenant config. An input field that loosens a policy the config sets (skip the PDB
check the config requires, ignore firing monitors, soak less, run more batches at once, keep
going after a failure) is refused with an error naming the field, unless the config lists the
field under `execution.allowed_overrides`. A stricter input is always accepted. Every field
that differs from the config, stricter or allowed, is returned as one line for the merge
request and the run record, so a reviewer sees what this run changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.config.models import VENDORS, OverrideName, TenantConfig
from guard.core.run import ExecutionInput
from guard.errors import InvalidInput
from guard.rollout.models import RolloutInput

ALLOWED_KEY = "execution.allowed_overrides"


@dataclass(frozen=True)
class Override:
    """One input field that differs from the config: what it says and whether it loosens it."""

    field: OverrideName | str
    text: str
    loosens: bool

    def line(self) -> str:
        return f"`{self.field}`: {self.text}" + (" (loosens the config; allowed by "
                                                  f"{ALLOWED_KEY})" if self.loosens else "")


def _soak(config: TenantConfig, batch: str) -> float:
    found = config.batch(batch)
    if found is not None and found.soak_period_minutes is not None:
        return found.soak_period_minutes
    return config.validation.soak_period_minutes


def batch_overrides(request: ExecutionInput, config: TenantConfig) -> list[Override]:
    """Every field of a batch input that differs from what `config` decides for the batch."""
    found: list[Override] = []
    required = config.execution.pod_disruption_budget_required
    if request.ensure_pdb is not None and request.ensure_pdb != required:
        found.append(Override("ensure_pdb", f"{str(request.ensure_pdb).lower()} (config: "
                              f"pod_disruption_budget_required {str(required).lower()})", loosens=required))
    if request.ignore_alerts:
        found.append(Override("ignore_alerts", "true: firing Datadog monitors do not stop the precheck",
                              loosens=True))
    if request.soak_period_minutes is not None:
        configured = _soak(config, request.batch)
        if request.soak_period_minutes != configured:
            found.append(Override("soak_period_minutes", f"{request.soak_period_minutes:g} minutes (config: "
                                  f"{configured:g})", loosens=request.soak_period_minutes < configured))
    # Extra floors: they add checks and never remove one.
    if request.min_replicas is not None:
        found.append(Override("min_replicas", f"{request.min_replicas} (an extra check)", loosens=False))
    if request.max_unavailable is not None:
        found.append(Override("max_unavailable", f"{request.max_unavailable} (an extra check)", loosens=False))
    return found


def rollout_overrides(request: RolloutInput, config: TenantConfig) -> list[Override]:
    """Every field of a rollout input that differs from the config (its batches are checked again at Plan)."""
    found: list[Override] = []
    policy = config.rollout.on_failure
    if request.on_failure is not None and request.on_failure != policy:
        found.append(Override("on_failure", f"{request.on_failure} (config: rollout.on_failure {policy})",
                              loosens=policy == "halt"))
    most = config.execution.max_concurrent_batches
    if request.max_concurrent_batches is not None and request.max_concurrent_batches != most:
        found.append(Override("max_concurrent_batches", f"{request.max_concurrent_batches} (config: "
                              f"execution.max_concurrent_batches {most})",
                              loosens=request.max_concurrent_batches > most))
    if request.ignore_alerts:
        found.append(Override("ignore_alerts", "true: firing Datadog monitors do not stop the prechecks",
                              loosens=True))
    soaks = {name: request.soak_period_minutes for name in (b.name for b in config.batches)
             if request.soak_period_minutes is not None}
    soaks.update(request.soak_overrides)
    shorter = sorted(name for name, minutes in soaks.items()
                     if minutes is not None and config.batch(name) is not None and minutes < _soak(config, name))
    if shorter:
        field = "soak_overrides" if set(shorter) <= set(request.soak_overrides) else "soak_period_minutes"
        found.append(Override(field, f"a shorter soak than configured for {', '.join(shorter)}", loosens=True))
    return found


def refuse_loosening(overrides: list[Override], config: TenantConfig, what: str) -> list[str]:
    """The MR lines of `overrides`; InvalidInput naming each field that loosens the config without permission.

    `soak_overrides` is allowed with `soak_period_minutes`: both shorten a soak.
    """
    allowed: set[str] = set(config.execution.allowed_overrides)
    if "soak_period_minutes" in allowed:
        allowed.add("soak_overrides")
    refused = [o for o in overrides if o.loosens and o.field not in allowed]
    if refused:
        lines = "; ".join(f"{o.field}: {o.text} loosens the tenant config" for o in refused)
        names = ", ".join(sorted({o.field for o in refused}))
        raise InvalidInput(f"{what}: {lines}. An execution input may only make a run stricter; a deployer may "
                           f"allow it by adding {names} to {ALLOWED_KEY}")
    return [o.line() for o in overrides]


def refuse_past_vendor_caps(request: RolloutInput, config: TenantConfig) -> None:
    """InvalidInput when a rollout would run more batches at once than the vendor caps are shared for.

    Each Lambda takes `vendor_concurrency.<vendor> // (max_concurrent_chunks x max_concurrent_batches)` of
    a vendor's calls, from the config (ExecutionConfig.vendor_slots): a rollout running more batches at
    once than the config says would make more calls than the cap, even where `allowed_overrides` lets
    the input loosen `max_concurrent_batches`.
    """
    most = config.execution.max_concurrent_batches
    wanted = request.max_concurrent_batches
    capped = [v for v in VENDORS if getattr(config.execution.vendor_concurrency, v) is not None]
    if wanted is None or wanted <= most or not capped:
        return
    caps = ", ".join(f"{v} {getattr(config.execution.vendor_concurrency, v)}" for v in capped)
    raise InvalidInput(
        f"rollout input: max_concurrent_batches {wanted} is more than execution.max_concurrent_batches {most}, "
        f"which execution.vendor_concurrency ({caps}) is shared across: {wanted} batches at once would make "
        f"up to {wanted / most:.1f} times the capped calls. Raise execution.max_concurrent_batches in the config "
        "(the shares follow) or run this rollout with at most that many")
