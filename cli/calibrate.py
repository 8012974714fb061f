"""`guard calibrate --batch B [--days N]`: replay the judge on a batch's own Datadog history.

Reads N days of each cluster's queries (the tenant's, rendered per cluster as a run renders
them) and prints per rule how often healthy window pairs would have been rolled back at the
configured threshold, and the threshold that would have held `--target`. The operator needs
only AWS credentials: the clusters come from the registry table and the Datadog keys from the
tenant's Secrets Manager secret, as the deployed functions read them (`GUARD_DATADOG_HOST`
points the Datadog client at another endpoint, e.g. a simulator). `--local` runs the same
against the local rehearsal's world (its registry, secret and Datadog simulator).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from guard.config.loader import load_config
from guard.config.models import TenantConfig
from guard.errors import ConfigError, ExternalServiceError, GuardError, InvalidInput
from guard.ports import Clock, MetricsProvider
from guard.rules import RuleKind
from guard.services.calibration import Calibration, calibrate, read_history
from guard.services.metrics import render_queries
from guard.services.validate import judge_settings
from guard.stores.registry import ClusterRegistry

MAX_DAYS = 30
DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "default.yaml"
HELP = """\
Replay the judge on N days of batch B's own Datadog history and print, per rule, how often
healthy windows would have been rolled back at the configured threshold (after the batch
correction, as Conclude judges) and the threshold that would have held --target (per
comparison, without the correction: it errs towards safety). Window pairs are shaped like a
run's: a baseline of validation.baseline_window_minutes, then a current window ending one soak
later. The history is taken as healthy: pick days without incidents.
Exit codes: 0 printed, 1 Datadog/AWS failure, 2 bad arguments, config or batch.
"""


@dataclass
class Sources:
    """Where calibrate reads from: a deployed tenant, or the local rehearsal's world."""

    config: TenantConfig
    registry: ClusterRegistry
    secrets: Any  # a boto3 Secrets Manager client
    datadog_host: str | None
    clock: Clock


def add_command(commands: Any) -> None:
    """Add `calibrate` to the top-level subparsers."""
    p = commands.add_parser("calibrate", help="false-rollback rates and thresholds from a batch's own history",
                            description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", required=True, metavar="B")
    p.add_argument("--days", type=int, default=7, metavar="N", help=f"days of history, 1..{MAX_DAYS} (default 7)")
    p.add_argument("--target", type=float, default=0.005, metavar="RATE",
                   help="false-rollback rate the suggested thresholds hold, 0 < RATE < 0.5 (default 0.005)")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="soak to shape the windows with (default: the batch's soak_period_minutes, else the config's)")
    p.add_argument("--config", metavar="TENANT_YAML",
                   help="tenant config: queries, thresholds, the registry table and the Datadog secret")
    p.add_argument("--region", help="AWS region (default: the config's aws.region)")
    p.add_argument("--local", action="store_true", help="read from the local rehearsal's world instead of AWS")
    p.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO,
                   help="with --local: the scenario that builds the world (default: %(default)s)")
    p.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        _check_arguments(args)
        with _sources(args) as sources:
            result = _calibrate(args, sources)
    except (InvalidInput, ConfigError) as e:
        return _fail(e, 2)
    except GuardError as e:
        return _fail(e, 1)
    print(render(result), file=out)
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    if not args.batch.strip():
        raise InvalidInput("--batch: must not be empty")
    if not 1 <= args.days <= MAX_DAYS:
        raise InvalidInput(f"--days: must be between 1 and {MAX_DAYS}, got {args.days}")
    if not 0 < args.target < 0.5:
        raise InvalidInput(f"--target: a false-rollback rate between 0 and 0.5 (e.g. 0.005), got {args.target:g}")
    if args.soak is not None and args.soak <= 0:
        raise InvalidInput(f"--soak: minutes after the upgrade must be positive, got {args.soak:g}")
    if not args.local and not args.config:
        raise InvalidInput("say which tenant: --config TENANT_YAML (or --local --scenario FILE)")


@contextmanager
def _sources(args: argparse.Namespace) -> Iterator[Sources]:
    if args.local:
        from sandbox.scenario import ScenarioError, load_scenario
        from sandbox.world import LocalWorld

        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as e:
            raise InvalidInput(str(e)) from e
        with LocalWorld(scenario) as world:
            table = world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name)
            yield Sources(world.config, ClusterRegistry(table, world.config.tenant),
                          world.engine.client("secretsmanager"),
                          world.datadog.url, world.clock)
        return
    import boto3  # the edge: credentials, region and AWS_ENDPOINT_URL come from the environment
    from guard.clock import SystemClock

    from cli.registry import _open_registry
    from infra.naming import table_names

    config = load_config(args.config)
    region = args.region or config.aws.region
    yield Sources(config, _open_registry(table_names(config).table_name, region, config.tenant),
                  boto3.client("secretsmanager", region_name=region),
                  os.environ.get("GUARD_DATADOG_HOST") or None, SystemClock())


def _metrics(sources: Sources) -> MetricsProvider:
    from botocore.exceptions import BotoCoreError, ClientError
    from guard.adapters.datadog_metrics import DatadogMetrics
    from guard.runtime import datadog_keys

    config = sources.config
    name = config.aws.secrets_manager.datadog_credentials_secret
    try:
        raw = sources.secrets.get_secret_value(SecretId=name)["SecretString"]
    except (ClientError, BotoCoreError) as e:
        raise ExternalServiceError(f"cannot read the Datadog secret '{name}': {e}") from e
    api_key, app_key = datadog_keys(raw, name)
    return DatadogMetrics.from_keys(api_key, app_key, site=config.datadog.site, host=sources.datadog_host,
                                    timeout_seconds=config.datadog.timeout_seconds, clock=sources.clock,
                                    interval_seconds=config.validation.metric_interval_seconds)


def _calibrate(args: argparse.Namespace, sources: Sources) -> Calibration:
    from cli.registry import batch_clusters

    config = sources.config
    clusters = batch_clusters(sources.registry, args.batch, config)
    batch = config.batch(args.batch)
    assert batch is not None  # batch_clusters refused an unknown batch
    validation = config.validation
    soak = args.soak if args.soak is not None else (
        batch.soak_period_minutes if batch.soak_period_minutes is not None else validation.soak_period_minutes)
    settings = judge_settings(validation)
    shortest = settings.min_data_points * validation.metric_interval_seconds / 60
    if min(soak, validation.baseline_window_minutes) < shortest:
        raise InvalidInput(f"--soak: a {soak:g}-minute window holds fewer than min_data_points "
                           f"({settings.min_data_points}) buckets of {validation.metric_interval_seconds}s; "
                           "nothing could be judged")
    if args.days * 24 * 60 < validation.baseline_window_minutes + soak:
        raise InvalidInput(f"--days: {args.days} day(s) hold no baseline ({validation.baseline_window_minutes:g} "
                           f"min) plus soak ({soak:g} min)")
    interval = timedelta(seconds=validation.metric_interval_seconds)
    now = sources.clock.now()
    end = now - (now - now.replace(hour=0, minute=0, second=0, microsecond=0)) % interval  # last whole bucket
    start = end - timedelta(days=args.days)
    metrics = _metrics(sources)
    histories = {c.cluster_id: read_history(metrics, render_queries(config.datadog.queries, c), start, end,
                                            validation.metric_interval_seconds)
                 for c in clusters}
    return calibrate(args.batch, histories, config.thresholds_for(args.batch), settings, start=start, end=end,
                     baseline_minutes=validation.baseline_window_minutes, soak_minutes=soak, target=args.target)


def render(result: Calibration) -> str:
    """The table `guard calibrate` prints."""
    pairs = result.slots * len(result.clusters)
    lines = [
        f"batch {result.batch}: {len(result.clusters)} cluster(s) ({', '.join(result.clusters)}), "
        f"{result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC",
        f"windows: baseline {result.baseline_minutes:g} min, current {result.current_minutes:g} min ending "
        f"{result.soak_minutes:g} min later; {result.slots} pairs per cluster, {pairs} in all",
        "",
        f"{'rule':<40} {'configured':>10} {'false rollbacks':>20} {'inconclusive':>13} "
        f"{'holds ' + format(result.target, '.2%'):>14}",
    ]
    short = False
    for rule in result.rules:
        rate = f"{rule.rate:.2%} ({rule.false_rollbacks}/{rule.windows})"
        inconclusive = f"{rule.inconclusive / rule.windows:.1%}" if rule.windows else "-"
        if rule.recommended is None:
            holds = "-" if rule.kind == RuleKind.MIN_REQUEST_COUNT else "no data"
        else:
            holds = f"{'<' if rule.kind == RuleKind.MIN else ''}{_round(rule.recommended, rule.kind)}"
            short = short or rule.judged * result.target < 1
        lines.append(f"{rule.key:<40} {rule.configured:>10g} {rate:>20} {inconclusive:>13} {holds:>14}")
    lines += [
        "",
        f"batch: a healthy batch would have been rolled back in {result.batch_false_rollbacks} of "
        f"{result.slots} windows ({result.correction})",
        "holds: the threshold at which at most the target share of judged pairs would have failed (a _min rule: "
        "fails below it); min_request_count makes a verdict inconclusive, never a rollback",
    ]
    if short:
        lines.append(f"note: fewer than 1/{result.target:g} judged pairs for some rules: their 'holds' is the most "
                     "extreme pair seen, a lower bound; read more --days")
    return "\n".join(lines)


def _round(value: float, kind: RuleKind) -> str:
    """Towards the safe side: relative and `_max` limits up, `_min` limits down (4 significant digits;
    relative limits to 0.1 percent point)."""
    if kind.relative:
        return f"{math.ceil(value * 10) / 10:g}"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value))) - 3
    step = 10.0 ** exponent
    units = math.floor(value / step) if kind == RuleKind.MIN else math.ceil(value / step)
    return f"{units * step:.{max(0, -exponent)}f}"


def _fail(error: Exception, code: int) -> int:
    print(f"error: {error}", file=sys.stderr)
    return code
