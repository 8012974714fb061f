"""Where a command acts: the tenant config, and the deployment (AWS or the persistent local stack).

The config is found as the seed expects: `--config FILE`, else `~/.guard/config.yaml` ($HOME is
respected). Its tenant is the loader's (guard.config.loader: `tenant:`, else what the file name
says). The deployment is, in this order:

1. `--state-machine-arn ARN`: that state machine, in the region of `--region` / the config;
2. the persistent local stack of the tenant while it runs (`guard local up`; its endpoints are in
   `~/.guard/local/<tenant>.json`), so the seed's scripts work unchanged against it;
3. the CloudFormation stack of the tenant (`Guard-<tenant>`): its outputs name the state
   machines and tables. boto3 uses the operator's credentials; no vendor secret is read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.errors import ConfigError, InvalidInput
from pydantic import BaseModel

from cli.aws import Aws

DEFAULT_TENANT = "default"
# The credentials moto accepts; the local stack is on 127.0.0.1 only.
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                     "aws_session_token": "testing"}


def guard_home() -> Path:
    """`~/.guard` of the current $HOME (read each time: a test or a CI job may set HOME)."""
    return Path(os.path.expanduser("~")) / ".guard"


def default_config_path() -> Path:
    return guard_home() / "config.yaml"


def find_config(explicit: str | None) -> Path | None:
    """`explicit` (which must exist), else `~/.guard/config.yaml` when it exists, else None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"--config {explicit}: no such file")
        return path
    default = default_config_path()
    return default if default.is_file() else None


def load(path: Path) -> Any:
    """The tenant config (guard.config.loader decides its tenant)."""
    from guard.config.loader import load_config

    return load_config(path)


# ------------------------------------------------------------------ the persistent local stack
class LocalStackInfo(BaseModel):
    """What `guard local up` writes to `~/.guard/local/<tenant>.json` while its stack runs."""

    tenant: str
    pid: int
    endpoint: str
    region: str
    state_machine_arn: str
    rollout_state_machine_arn: str
    registry_table: str
    state_table: str
    speedup: float
    gitlab_url: str
    webhook_url: str
    config: str
    started_at: float
    idle_timeout_seconds: float

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def local_dir() -> Path:
    return guard_home() / "local"


def local_stack_file(tenant: str) -> Path:
    return local_dir() / f"{tenant}.json"


def read_local_stack(tenant: str) -> LocalStackInfo | None:
    """The tenant's local stack when it runs (a file left by a stack that died is ignored)."""
    path = local_stack_file(tenant)
    try:
        info = LocalStackInfo.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    if not info.alive():
        return None
    with contextlib.suppress(OSError):  # using the stack counts as activity: its idle timeout starts again
        os.utime(path)
    return info


def running_local_stacks() -> list[LocalStackInfo]:
    """Every local stack that runs now."""
    found = []
    for path in sorted(local_dir().glob("*.json")) if local_dir().is_dir() else []:
        info = read_local_stack(path.stem)
        if info is not None:
            found.append(info)
    return found


# ------------------------------------------------------------------ the deployment
@dataclass
class Deployment:
    """A tenant's state machines and tables, and the AWS access to reach them."""

    aws: Aws
    tenant: str
    where: str
    batch_arn: str | None = None
    rollout_arn: str | None = None
    state_table: str | None = None
    registry_table: str | None = None
    config: Any = None
    speedup: float = 1.0  # the local stack's clock: scenario seconds per real second
    extras: dict[str, Any] = field(default_factory=dict)

    def machine(self, kind: str) -> str:
        arn = self.batch_arn if kind == "batch" else self.rollout_arn
        if not arn:
            raise InvalidInput(f"no {kind} state machine in {self.where}: pass --state-machine-arn, or "
                               "--tenant/--config so the ARN can be read from the Guard-<tenant> stack outputs")
        return arn

    def state(self) -> Any:
        """The state table (guard.stores.state.StateStore); InvalidInput when unknown."""
        from guard.stores.state import StateStore

        if not self.state_table:
            raise InvalidInput(f"{self.where}: the state table is unknown (with --state-machine-arn, pass --config "
                               "too, or use --tenant so the stack outputs name it)")
        return StateStore(self.aws.table(self.state_table))


def _tenant(args: argparse.Namespace, config: Any) -> str | None:
    return getattr(args, "tenant", None) or (config.tenant if config is not None else None)


def resolve(args: argparse.Namespace) -> Deployment:
    """The deployment a command acts on (module docstring: the order)."""
    path = find_config(getattr(args, "config", None))
    config = load(path) if path else None
    tenant = _tenant(args, config)
    region = getattr(args, "region", None) or (config.aws.region if config is not None else None)
    explicit_arn = getattr(args, "state_machine_arn", None)
    if explicit_arn:
        names = config.aws.dynamodb if config is not None else None
        return Deployment(aws=Aws(region, endpoint_url=os.environ.get("AWS_ENDPOINT_URL")),
                          tenant=tenant or DEFAULT_TENANT, where=f"state machine {explicit_arn}",
                          batch_arn=explicit_arn, rollout_arn=explicit_arn,
                          state_table=names.state_table_name if names else None,
                          registry_table=names.table_name if names else None, config=config)
    local = read_local_stack(tenant or DEFAULT_TENANT)
    if local is None and tenant is None:
        running = running_local_stacks()
        local = running[0] if len(running) == 1 else None
    if local is not None:
        return local_deployment(local, config)
    if tenant is None:
        raise InvalidInput(f"say which GUARD to use: --config FILE (default {default_config_path()}, not found), "
                           "--tenant NAME or --state-machine-arn ARN; or start the local stack with `guard local up`")
    return aws_deployment(tenant, region, config)


def local_deployment(info: LocalStackInfo, config: Any = None) -> Deployment:
    aws = Aws(info.region, endpoint_url=info.endpoint, credentials=LOCAL_CREDENTIALS)
    return Deployment(aws=aws, tenant=info.tenant, where=f"the local stack of tenant {info.tenant} ({info.endpoint})",
                      batch_arn=info.state_machine_arn, rollout_arn=info.rollout_state_machine_arn,
                      state_table=info.state_table, registry_table=info.registry_table, config=config,
                      speedup=info.speedup, extras={"local": info})


def aws_deployment(tenant: str, region: str | None, config: Any) -> Deployment:
    """The tenant's CloudFormation stack outputs (infra/stack.py names them)."""
    from botocore.exceptions import ClientError

    aws = Aws(region)
    stack = _stack_name(tenant, config)
    try:
        stacks = aws.call("cloudformation", "describe_stacks", StackName=stack)["Stacks"]
    except ClientError as e:
        raise InvalidInput(f"cannot read stack {stack} (tenant {tenant}): "
                           f"{e.response.get('Error', {}).get('Message', e)}") from e
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return Deployment(aws=aws, tenant=tenant, where=f"stack {stack}", batch_arn=outputs.get("StateMachineArn"),
                      rollout_arn=outputs.get("RolloutStateMachineArn"), state_table=outputs.get("StateTableName"),
                      registry_table=outputs.get("RegistryTableName"), config=config)


def _stack_name(tenant: str, config: Any) -> str:
    try:
        from infra.naming import stack_name
    except ImportError:  # installed without the CDK app: the same rule
        return f"Guard-{tenant}"
    return stack_name(config) if config is not None and config.tenant == tenant else f"Guard-{tenant}"


def write_local_stack(info: LocalStackInfo) -> Path:
    """Write the stack file atomically (a CLI reading it never sees half of it)."""
    path = local_stack_file(info.tenant)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info.model_dump(), indent=2))
    tmp.replace(path)
    return path


def wait_for_local_stack(tenant: str, pid: int, timeout: float) -> LocalStackInfo | None:
    """The stack file that process `pid` writes once its stack serves (None when it died or took too long)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_local_stack(tenant)
        if info is not None and info.pid == pid:
            return info
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        time.sleep(0.2)
    return None
