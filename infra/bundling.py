"""Function code assets without Docker: a staged source tree plus pip-installed dependency groups.

The source of every function of a tenant is the same staged tree:

    guard/  handlers/  tenant/config.json  tenant/checks/  requirements/

Bundling copies `guard/`, `handlers/`, `tenant/` into the asset and installs only the
dependency groups the function needs, from their hash lock (`requirements/locks/`, made by
infra/locks.py) with `pip --require-hashes --no-deps --platform manylinux2014_<arch>
--only-binary=:all:`, which needs no Docker and no Linux host, then slims it and compiles it to
bytecode with the runtime's Python 3.12 (infra/slimming.py: Lambda cannot write `.pyc` into
/var/task, so a bundle without them compiles at every cold start). Installs are cached per
(lock, platform, slimming recipe) under the build dir, so the functions of every tenant cost one
pip run and one compilation per dependency set, once. When no pip is importable (or no Python 3.12)
the bundler declines and CDK runs the same commands in the SAM build image (Docker), pinned by
digest (`BUILD_IMAGE`); the context
`aws:cdk:bundling-stacks = []` skips bundling altogether (tests, `cdk diff` of one stack).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_

from infra import slimming
from infra.locks import PYTHON_VERSION, inputs_digest, lock_name, lock_path, recorded_digest

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
PLATFORM_TAGS = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}
# Copied from the staged source into every asset; requirements/ only feeds pip.
CODE_DIRS = ("guard", "handlers", "tenant")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
# The Docker fallback's image, by digest so a retagged image cannot change what builds the functions.
# Recorded for SAM CLI 1.164.0's `latest-x86_64` tag and NOT re-verified from the build machine (it
# reaches no container registry). It runs as linux/amd64 whatever the function's architecture: pip
# picks the wheels by --platform, so the image only needs a working pip. Refresh (docs/security.md):
#   docker buildx imagetools inspect public.ecr.aws/sam/build-python3.12:latest-x86_64
# then replace the digest and run tests/infra/test_bundling.py.
BUILD_IMAGE = ("public.ecr.aws/sam/build-python3.12@sha256:"
               "6b977f28341c892f743070ef945b600f1b257b668003720dc3bc9b1839fcd666")
BUILD_IMAGE_PLATFORM = "linux/amd64"
# The interpreter that compiles the bytecode: its version must be the runtime's (a 3.11 .pyc is ignored
# by 3.12). Found as $GUARD_BYTECODE_PYTHON, this Python if it is 3.12, python3.12 on PATH, or pyenv's.
BYTECODE_PYTHON_ENV = "GUARD_BYTECODE_PYTHON"
# Part of the dependency cache key: change it when slimming.py changes what an install becomes.
SLIMMING_RECIPE = "prune-aio-k8s-apis-dd-closure+lazy-k8s-init+pyc-unchecked-hash/3"
# Staged next to the requirements so the Docker fallback runs the same slimming (stdlib only).
STAGED_SLIMMING = "requirements/slimming.py"


class BundlingError(RuntimeError):
    """pip could not install a dependency group for the Lambda platform."""


def stage_source(*, lambdas_dir: Path, tenant_config: dict[str, Any], checks_dir: Path | None,
                 dest: Path) -> Path:
    """Write the tenant's function source tree to `dest` (replaced if present) and return it."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("guard", "handlers", "requirements"):
        shutil.copytree(lambdas_dir / name, dest / name, ignore=_IGNORE)
    shutil.copyfile(Path(slimming.__file__), dest / STAGED_SLIMMING)
    tenant = dest / "tenant"
    tenant.mkdir()
    (tenant / "config.json").write_text(json.dumps(tenant_config, indent=2, sort_keys=True) + "\n")
    if checks_dir is not None and checks_dir.is_dir():
        shutil.copytree(checks_dir, tenant / "checks", ignore=_IGNORE)
    return dest


def pip_install_command(requirement_files: Sequence[Path | str], target: Path | str, platform_tag: str,
                        python: str = sys.executable) -> list[str]:
    """The pip command that installs a hash lock's Linux wheels for the Lambda runtime from any host.

    `--require-hashes` refuses any file whose sha256 is not in the lock; `--no-deps` refuses to
    pull in anything the lock does not name (the lock lists every transitive package).
    """
    command = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
               "--require-hashes", "--no-deps"]
    for file in requirement_files:
        command += ["-r", str(file)]
    return [*command, "-t", str(target), "--platform", platform_tag, "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp"]


def bytecode_python() -> str:
    """A Python of the runtime's version to compile the bytecode with; BundlingError naming how to give one."""
    found = _bytecode_python(os.environ.get(BYTECODE_PYTHON_ENV, ""))
    if found is None:
        raise BundlingError(f"no Python {PYTHON_VERSION} to compile the functions' bytecode: install it or set "
                            f"{BYTECODE_PYTHON_ENV} to its path")
    return found


@cache
def _bytecode_python(explicit: str) -> str | None:
    if explicit:
        candidates = [explicit]
    else:
        pyenv = sorted(Path.home().glob(f".pyenv/versions/{PYTHON_VERSION}.*/bin/python{PYTHON_VERSION}"))
        candidates = [sys.executable, shutil.which(f"python{PYTHON_VERSION}") or "", *map(str, reversed(pyenv))]
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                     capture_output=True, text=True, check=False, timeout=30).stdout.strip()
        except OSError:
            continue
        if version == PYTHON_VERSION:
            return candidate
    if explicit:
        raise BundlingError(f"{BYTECODE_PYTHON_ENV}={explicit} is not a Python {PYTHON_VERSION}")
    return None


def install_groups(*, requirements_dir: Path, groups: Sequence[str], platform_tag: str,
                   cache_dir: Path, code_dirs: Sequence[Path] = ()) -> Path:
    """Install the groups' hash lock (one file for the set, so shared dependencies agree), slimmed for the
    code in `code_dirs` and compiled to bytecode; cached by lock, platform and what the code imports."""
    lock = lock_path(requirements_dir, groups)
    if not lock.is_file():
        raise BundlingError(f"no lock {lock} for {'+'.join(groups)}: run `python -m infra.locks`")
    if recorded_digest(lock) != inputs_digest(requirements_dir, groups):
        raise BundlingError(f"lock {lock.name} was made from other requirement files: run `python -m infra.locks`")
    files = [lock]
    digest = hashlib.sha256(platform_tag.encode() + PYTHON_VERSION.encode())
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    # The slimming keeps what the code imports from the pruned packages: a new import is a new install.
    pruned_imports = sorted(m for m in slimming.imported_modules(code_dirs)
                            if m.split(".")[0] in slimming.CLOSURE_PRUNED)
    digest.update(SLIMMING_RECIPE.encode() + b"\0" + "\n".join(pruned_imports).encode())
    python = bytecode_python()
    target = cache_dir / f"{'+'.join(groups)}-{platform_tag}-{digest.hexdigest()[:12]}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pip-") as scratch:
        out = Path(scratch) / "site-packages"
        result = subprocess.run(pip_install_command(files, out, platform_tag),
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BundlingError(
                f"pip could not install {'+'.join(groups)} for {platform_tag} "
                f"(python {PYTHON_VERSION}):\n{result.stderr.strip()[-2000:]}"
            )
        slimming.prune(out, code_dirs)
        try:
            slimming.compile_bytecode(python, out)
        except slimming.SlimmingError as e:
            raise BundlingError(str(e)) from e
        # Another synth may have won the race; either copy is complete.
        if not target.exists():
            out.rename(target)
    return target


@jsii.implements(cdk.ILocalBundling)
class LocalPipBundler:
    """Bundles a function asset on the host: staged code plus its dependency groups."""

    def __init__(self, *, source_dir: Path, groups: Sequence[str], architecture: str,
                 cache_dir: Path) -> None:
        self._source_dir = source_dir
        self._groups = tuple(groups)
        self._platform_tag = PLATFORM_TAGS[architecture]
        self._cache_dir = cache_dir

    def try_bundle(self, output_dir: str, *_options: Any, **_kw_options: Any) -> bool:
        # jsii passes the BundlingOptions struct positionally; the bundler needs none of it.
        if importlib.util.find_spec("pip") is None or _bytecode_python(os.environ.get(BYTECODE_PYTHON_ENV, "")) is None:
            if shutil.which("docker") is None:
                raise BundlingError("cannot bundle Lambda dependencies: no docker, and no pip in this Python or no "
                                    f"Python {PYTHON_VERSION} for the bytecode (set {BYTECODE_PYTHON_ENV})")
            return False  # CDK runs the same install, slimming and compilation in the SAM build image
        code_dirs = [self._source_dir / name for name in CODE_DIRS if (self._source_dir / name).is_dir()]
        deps = install_groups(requirements_dir=self._source_dir / "requirements", groups=self._groups,
                              platform_tag=self._platform_tag, cache_dir=self._cache_dir, code_dirs=code_dirs)
        out = Path(output_dir)
        shutil.copytree(deps, out, dirs_exist_ok=True)
        python = bytecode_python()
        for source in code_dirs:
            shutil.copytree(source, out / source.name, dirs_exist_ok=True, ignore=_IGNORE)
            try:
                slimming.compile_bytecode(python, out / source.name, ddir=f"{slimming.TASK_ROOT}/{source.name}")
            except slimming.SlimmingError as e:
                raise BundlingError(str(e)) from e
        return True


def function_code(*, source_dir: Path, groups: Sequence[str], cache_dir: Path,
                  architecture: lambda_.Architecture = ARCHITECTURE) -> lambda_.Code:
    """A code asset for a function packaging `groups`; share it between functions with the same groups."""
    arch = architecture.name
    docker_install = " ".join(
        pip_install_command([f"requirements/locks/{lock_name(groups)}"], "/asset-output",
                            PLATFORM_TAGS[arch], python="python")
    )
    return lambda_.Code.from_asset(
        str(source_dir),
        bundling=cdk.BundlingOptions(
            image=cdk.DockerImage.from_registry(BUILD_IMAGE),
            platform=BUILD_IMAGE_PLATFORM,
            command=["bash", "-c", f"{docker_install} && cp -r {' '.join(CODE_DIRS)} /asset-output/"
                                   f" && python {STAGED_SLIMMING} /asset-output {' '.join(CODE_DIRS)}"],
            local=LocalPipBundler(source_dir=source_dir, groups=groups, architecture=arch,
                                  cache_dir=cache_dir),
        ),
    )
