"""Import the cluster registry from, or export it to, a YAML or JSON file; reconcile it with
what a batch's clusters run.

The file holds a top-level `clusters:` list of `Cluster` documents (see guard.core.models and
config/registry.example.yaml). `import_clusters` / `export_clusters` work on a `ClusterRegistry`
and read no environment; the command functions below build the boto3 table at the edge
(boto3 honours AWS_ENDPOINT_URL, AWS_PROFILE, ... as usual).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from guard.config.accounts import CONFIG_KEY, account_problems
from guard.config.loader import format_validation_error, load_config
from guard.config.models import DEFAULT_TENANT, TenantConfig
from guard.config.registry_policy import ENDPOINTS_KEY, PROJECTS_KEY, connection_problems, registry_problems
from guard.core.models import Cluster
from guard.core.version import Version
from guard.errors import ConfigError, ExternalServiceError, GuardError, InvalidInput
from guard.services.observation import Reconciliation, RegistryObserver
from guard.stores.registry import ClusterRegistry
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from infra.naming import table_names

FORMATS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
STDIO = "-"


# ------------------------------------------------------------------ the file format
class _FileCluster(Cluster):
    """A registry-file entry: a `Cluster` whose version must be MAJOR.MINOR.PATCH."""

    @field_validator("current_istio_version", mode="before")
    @classmethod
    def _semver(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(
                f"must be a string of the form MAJOR.MINOR.PATCH, got {value!r} "
                "(quote versions in YAML: '1.20.0')"
            )
        Version.parse(value)
        return value


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: list[_FileCluster]


def parse_registry(data: Any, source: str) -> list[Cluster]:
    """Validate a whole parsed registry file; InvalidInput lists every bad key path.

    Each returned Cluster's `model_fields_set` says which keys the file gave, so
    `import_clusters` can tell "no upgrade_history given" from "upgrade_history: []".
    """
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: the top level must be a mapping with a 'clusters:' list, "
                           f"got {type(data).__name__}")
    problems: list[str] = []
    parsed: _RegistryFile | None = None
    try:
        parsed = _RegistryFile.model_validate(data)
    except ValidationError as e:
        problems += format_validation_error(e, source).split("\n  ")[1:]
    problems += _duplicates(data.get("clusters"))
    if problems or parsed is None:
        raise InvalidInput(f"{source}: invalid registry file, nothing imported\n  " + "\n  ".join(problems))
    return [Cluster.model_validate(c.model_dump(exclude_unset=True)) for c in parsed.clusters]


def _duplicates(entries: Any) -> list[str]:
    if not isinstance(entries, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, entry in enumerate(entries):
        cluster_id = entry.get("cluster_id") if isinstance(entry, dict) else None
        if not isinstance(cluster_id, str):
            continue
        if cluster_id in first:
            problems.append(f"clusters[{index}].cluster_id: duplicate '{cluster_id}' "
                            f"(also clusters[{first[cluster_id]}])")
        else:
            first[cluster_id] = index
    return problems


def file_format(path: str, explicit: str | None) -> str:
    """`yaml` or `json`: `explicit` when given, else from the extension; `-` defaults to YAML."""
    if explicit:
        return explicit
    if path == STDIO:
        return "yaml"
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{path}: cannot tell the format from the extension; use .yaml, .yml or .json")
    return fmt


def load_registry_file(path: str, fmt: str | None = None) -> list[Cluster]:
    """Read and validate a registry file (`-` = stdin)."""
    fmt = file_format(path, fmt)
    source = "<stdin>" if path == STDIO else path
    try:
        text = sys.stdin.read() if path == STDIO else Path(path).read_text()
    except OSError as e:
        raise InvalidInput(f"{source}: cannot read: {e.strerror}") from e
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{source}: not valid JSON: {e}") from e
    except yaml.YAMLError as e:
        raise InvalidInput(f"{source}: not valid YAML: {e}") from e
    return parse_registry(data, source)


def render_registry(clusters: list[Cluster], fmt: str) -> str:
    """The file text for `clusters` (sorted by id): stable, so export -> import -> export is identical."""
    data = {"clusters": [c.model_dump(mode="json", exclude_none=True)
                         for c in sorted(clusters, key=lambda c: c.cluster_id)]}
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=4096)


# ------------------------------------------------------------------ the service
@dataclass(frozen=True)
class ImportResult:
    """Cluster ids by what the import did (or would do, on a dry run)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def import_clusters(registry: ClusterRegistry, clusters: list[Cluster], *, dry_run: bool = False) -> ImportResult:
    """Create or replace each cluster; ones identical to the registry are not written.

    An existing cluster keeps its `upgrade_history` unless the document sets that field
    (`"upgrade_history" in cluster.model_fields_set`, as `parse_registry` leaves it).
    """
    ids = [c.cluster_id for c in clusters]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InvalidInput(f"cluster_id given more than once: {', '.join(dupes)}")
    existing = registry.get_many(ids)
    result = ImportResult()
    for cluster in clusters:
        old = existing.get(cluster.cluster_id)
        if old is not None and "upgrade_history" not in cluster.model_fields_set:
            cluster = cluster.model_copy(update={"upgrade_history": list(old.upgrade_history)})
        if old is None:
            result.created.append(cluster.cluster_id)
        elif old.model_dump() == cluster.model_dump():
            result.unchanged.append(cluster.cluster_id)
            continue
        else:
            result.updated.append(cluster.cluster_id)
        if not dry_run:
            registry.put(cluster)
    return result


def export_clusters(registry: ClusterRegistry) -> list[Cluster]:
    """Every registry cluster, sorted by cluster_id."""
    return sorted(registry.all(), key=lambda c: c.cluster_id)


def batch_clusters(registry: ClusterRegistry, batch: str, config: TenantConfig | None) -> list[Cluster]:
    """The clusters of `batch`: the config's list when given (each must be in the registry), else
    the registry clusters whose batch_id is `batch`. InvalidInput names what is missing."""
    if config is None:
        found = [c for c in registry.all() if c.batch_id == batch]
        if not found:
            raise InvalidInput(f"--batch: no registry cluster has batch_id '{batch}' "
                               "(pass --config to take the batch from the tenant config)")
        return found
    listed = config.batch(batch)
    if listed is None:
        known = ", ".join(b.name for b in config.batches)
        raise InvalidInput(f"--batch: unknown batch '{batch}' (tenant '{config.tenant}' has: {known})")
    clusters = registry.get_many(listed.clusters)
    missing = [c for c in listed.clusters if c not in clusters]
    if missing:
        raise InvalidInput(f"batch '{batch}' lists clusters missing from the registry: {', '.join(missing)} "
                           "(import them first)")
    return [clusters[c] for c in listed.clusters]


def config_warnings(config: TenantConfig, clusters: list[Cluster]) -> list[str]:
    """Where the file and the tenant's batches disagree (the batches decide what a run upgrades)."""
    batch_of = {cid: b.name for b in config.batches for cid in b.clusters}
    warnings = []
    for cluster in clusters:
        listed = batch_of.get(cluster.cluster_id)
        if listed is None:
            warnings.append(f"{cluster.cluster_id}: not in any batch of tenant '{config.tenant}'")
        elif listed != cluster.batch_id:
            warnings.append(f"{cluster.cluster_id}: batch_id '{cluster.batch_id}' but tenant "
                            f"'{config.tenant}' lists it in batch '{listed}'")
    if config.gitlab.projects is None:
        projects = sorted({c.gitlab_project for c in clusters})
        warnings.append(f"{PROJECTS_KEY} is not set, so any GitLab project is accepted (this file names "
                        f"{', '.join(projects)}); list the GitOps projects to refuse others")
    return warnings


# ------------------------------------------------------------------ the commands
IMPORT_HELP = """\
Validate FILE and write its clusters to the cluster registry table.

The whole file is validated before anything is written: a bad entry is reported with its
key path (e.g. clusters[2].current_istio_version: ...), exit code 2, and nothing is imported.
A cluster whose aws_role_arn is not a guard-* role in an account of the tenant's
aws.cluster_accounts (with --config; without it, or when the key is left out: the
account of your AWS credentials, where the table is) is refused the same way, and so is
one whose api_endpoint host is not in aws.allowed_api_endpoints (and pins no api_ca_data),
whose gitlab_project is not in gitlab.projects or whose flux_config_path is not under
gitlab.allowed_path_prefixes (docs/security.md).
Each cluster document replaces the registry's copy, except that an existing cluster KEEPS
ITS upgrade_history unless the file gives one (`upgrade_history: []` clears it). Clusters
identical to the registry are left alone; clusters not in the file are not touched.
Exit codes: 0 imported, 1 AWS/DynamoDB failure, 2 invalid file, config or arguments.
"""

EXPORT_HELP = """\
Write every registry cluster, sorted by cluster_id, to FILE (`-` = stdout) as a
`clusters:` list. The output imports back unchanged (export -> import -> export is identical).
"""

RECONCILE_HELP = """\
Read what each cluster of batch B runs (the Flux HelmRelease Ready at a version and istiod
running it with every replica ready: the reading GUARD's runs use) and set the registry's
current_istio_version to it. A cluster that cannot be reached, or whose HelmRelease and istiod
disagree, keeps its registry version and is reported. Each correction is added to the cluster's
upgrade_history (outcome `observed`). Runs do the same before planning and at their end.
Exit codes: 0 every cluster observed (the registry now says what they run), 1 a cluster could
not be observed or an AWS failure, 2 bad arguments, config or batch.
"""

MIGRATE_HELP = """\
Registry items are keyed <tenant>#<cluster id>, so that tenants can share a table and each
tenant's functions reach only their own items (IAM dynamodb:LeadingKeys). Items written before
(keyed by the bare cluster id) are moved to the tenant of --config (or --tenant): copied under
the new key, then deleted if unchanged. Items that already carry a tenant are left alone. Run it
once right after the deploy that brings tenant keys; running it again moves nothing.
Exit codes: 0 every legacy item moved (or none left), 1 an item was left as is or AWS failed, 2 bad arguments.
"""

FILE_FORMAT = "YAML for .yaml/.yml, JSON for .json; the format is taken from the extension"


def add_commands(commands: Any) -> None:
    """Add `registry import|export` to the top-level subparsers."""
    group = commands.add_parser("registry", help="import/export the cluster registry",
                                description="Import or export the cluster registry (a DynamoDB table).")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    imp = actions.add_parser("import", help="load clusters from a YAML/JSON file", description=IMPORT_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("file", metavar="FILE", help=f"registry file, `-` = stdin ({FILE_FORMAT})")
    _add_target(imp)
    imp.add_argument("--dry-run", action="store_true",
                     help="validate and report what would be created/updated; write nothing")
    imp.set_defaults(run=run_import)

    exp = actions.add_parser("export", help="write the registry to a YAML/JSON file", description=EXPORT_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    exp.add_argument("file", metavar="FILE", help=f"output file, `-` = stdout ({FILE_FORMAT})")
    _add_target(exp)
    exp.set_defaults(run=run_export)

    rec = actions.add_parser("reconcile", help="set a batch's registry versions to what its clusters run",
                             description=RECONCILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    rec.add_argument("--batch", required=True, metavar="B",
                     help="batch name (from --config; with --table: the registry clusters whose batch_id is B)")
    _add_target(rec, file_format=False)
    rec.add_argument("--dry-run", action="store_true", help="observe and report what would change; write nothing")
    rec.set_defaults(run=run_reconcile)

    mig = actions.add_parser("migrate", help="give registry items written before tenant keys the tenant's keys",
                             description=MIGRATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_target(mig, file_format=False)
    mig.add_argument("--dry-run", action="store_true", help="report what would move; write nothing")
    mig.set_defaults(run=run_migrate)


def _add_target(parser: argparse.ArgumentParser, file_format: bool = True) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--table", metavar="NAME", help="registry table name")
    target.add_argument("--config", metavar="TENANT_YAML",
                        help="tenant config: its deployed registry table (aws.dynamodb.table_name, else "
                             "guard-<tenant>-cluster-registry), aws.region and aws.cluster_accounts")
    parser.add_argument("--region", help="AWS region (default: the config's aws.region, else the AWS environment)")
    parser.add_argument("--tenant", default=DEFAULT_TENANT,
                        help="with --table: whose clusters (keys <tenant>#<cluster id>; default "
                             f"'{DEFAULT_TENANT}'); with --config: the config's tenant")
    if file_format:
        parser.add_argument("--format", choices=["yaml", "json"],
                            help="file format when FILE is `-` (default yaml) or has another extension")


def _open_registry(table_name: str, region: str | None, tenant: str) -> ClusterRegistry:
    import boto3  # the edge: credentials, region and AWS_ENDPOINT_URL come from the environment
    from botocore.exceptions import NoRegionError

    try:
        table = boto3.resource("dynamodb", region_name=region).Table(table_name)
    except NoRegionError as e:
        raise InvalidInput("no AWS region: pass --region or --config, or set AWS_REGION") from e
    return ClusterRegistry(table, tenant)


def _tenant_of(args: argparse.Namespace, config: TenantConfig | None) -> str:
    """The tenant whose registry items a command reads and writes: the config's, else --tenant."""
    if config is not None:
        return config.tenant
    tenant: str = args.tenant
    return tenant


def _caller_account(region: str | None) -> str:
    """The account of the credentials in use: the one that holds the registry table, i.e. GUARD's."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(boto3.client("sts", region_name=region).get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as e:
        raise ExternalServiceError(f"sts:GetCallerIdentity (to tell GUARD's account): {e}") from e


def _target(args: argparse.Namespace) -> tuple[str, str | None, TenantConfig | None]:
    if args.config:
        config = load_config(args.config)
        # The name the stack deployed: a default one carries the tenant (infra/naming.py).
        return table_names(config).table_name, args.region or config.aws.region, config
    return args.table, args.region, None


def run_import(args: argparse.Namespace) -> int:
    try:
        table_name, region, config = _target(args)
        clusters = load_registry_file(args.file, args.format)
    except (InvalidInput, ConfigError) as e:
        return _fail(e, 2)
    try:
        unreachable = account_problems(clusters, config.aws.cluster_accounts if config else None,
                                       lambda: _caller_account(region))
    except GuardError as e:
        return _fail(e, 1)
    if unreachable:
        hint = "" if config else f"\n  (no --config: pass the tenant config to use its {CONFIG_KEY})"
        return _fail(InvalidInput(f"{args.file}: clusters GUARD may not reach, nothing imported\n  "
                                  + "\n  ".join(unreachable) + hint), 2)
    untrusted = registry_problems(clusters, config) if config else \
        [p for c in clusters for p in connection_problems(c, [])]
    if untrusted:
        hint = "" if config else f"\n  (no --config: pass the tenant config to use its {ENDPOINTS_KEY})"
        return _fail(InvalidInput(f"{args.file}: clusters the tenant config does not allow, nothing imported\n  "
                                  + "\n  ".join(untrusted) + hint), 2)
    for warning in config_warnings(config, clusters) if config else []:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        result = import_clusters(_open_registry(table_name, region, _tenant_of(args, config)), clusters,
                                 dry_run=args.dry_run)
    except InvalidInput as e:
        return _fail(e, 2)
    except GuardError as e:
        return _fail(e, 1)
    verb = "would import" if args.dry_run else "imported"
    print(f"{verb} {len(clusters)} clusters into {table_name}: {len(result.created)} created, "
          f"{len(result.updated)} updated, {len(result.unchanged)} unchanged")
    for label, ids in (("created", result.created), ("updated", result.updated)):
        if ids:
            print(f"  {label}: {', '.join(ids)}")
    if args.dry_run:
        print("dry run: nothing written")
    return 0


def run_export(args: argparse.Namespace) -> int:
    try:
        table_name, region, config = _target(args)
        fmt = file_format(args.file, args.format)
        clusters = export_clusters(_open_registry(table_name, region, _tenant_of(args, config)))
    except (InvalidInput, ConfigError) as e:
        return _fail(e, 2)
    except GuardError as e:
        return _fail(e, 1)
    text = render_registry(clusters, fmt)
    if args.file == STDIO:
        sys.stdout.write(text)
    else:
        try:
            Path(args.file).write_text(text)
        except OSError as e:
            return _fail(InvalidInput(f"{args.file}: cannot write: {e.strerror}"), 1)
    print(f"exported {len(clusters)} clusters from {table_name}"
          + ("" if args.file == STDIO else f" to {args.file}"), file=sys.stderr)
    return 0


def run_reconcile(args: argparse.Namespace) -> int:
    import boto3  # the edge: clusters are reached with the credentials of the environment
    from guard.adapters.eks_connector import EksConnector
    from guard.clock import SystemClock

    if not args.batch.strip():
        return _fail(InvalidInput("--batch: must not be empty"), 2)
    try:
        table_name, region, config = _target(args)
        registry = _open_registry(table_name, region, _tenant_of(args, config))
        clusters = batch_clusters(registry, args.batch, config)
    except (InvalidInput, ConfigError) as e:
        return _fail(e, 2)
    except GuardError as e:
        return _fail(e, 1)
    clock = SystemClock()
    # Without --config no endpoint is allowed: only eks:DescribeCluster's (or a pinned CA) is used.
    allowed = config.aws.allowed_api_endpoints if config else []
    observer = RegistryObserver(registry, EksConnector(boto3.session.Session(region_name=region),
                                                       allowed_endpoints=allowed), clock)
    try:
        found = observer.reconcile(clusters, run_id=f"registry-reconcile-{clock.now():%Y%m%dT%H%M%SZ}",
                                   dry_run=args.dry_run)
    except GuardError as e:
        return _fail(e, 1)
    _print_reconciliation(args.batch, table_name, found)
    return 1 if found.unobserved else 0


def _print_reconciliation(batch: str, table_name: str, found: Reconciliation) -> None:
    verb = "would update" if found.dry_run else "updated"
    print(f"batch {batch} in {table_name}: {len(found.versions)} clusters, {len(found.updated)} {verb}, "
          f"{len(found.unchanged)} unchanged, {len(found.unobserved)} not observed")
    for note in found.notes():
        print(f"  {note}")
    if found.dry_run:
        print("dry run: nothing written")


def run_migrate(args: argparse.Namespace) -> int:
    from guard.stores.registry_migration import migrate_to_tenant_keys

    try:
        table_name, region, config = _target(args)
        registry = _open_registry(table_name, region, _tenant_of(args, config))
    except (InvalidInput, ConfigError) as e:
        return _fail(e, 2)
    try:
        report = migrate_to_tenant_keys(registry.table, registry.tenant, dry_run=args.dry_run)
    except GuardError as e:
        return _fail(e, 1)
    print(f"{table_name}: {report.summary(args.dry_run)}")
    if args.dry_run:
        print("dry run: nothing written")
    return 1 if report.skipped else 0


def _fail(error: Exception, code: int) -> int:
    print(f"error: {error}", file=sys.stderr)
    return code
