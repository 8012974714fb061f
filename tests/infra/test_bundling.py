"""The Docker-free bundler: real pip, Linux wheels, only the groups a function needs."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
import time
from pathlib import Path

import pytest

from infra.bundling import (
    BUILD_IMAGE,
    BundlingError,
    LocalPipBundler,
    install_groups,
    pip_install_command,
    stage_source,
)
from infra.functions import FUNCTIONS, FunctionSpec
from infra.handler_imports import LLM_MODULES, reachable_imports
from infra.locks import inputs_digest, lock_path, recorded_digest
from infra.slimming import missing_bytecode, unzipped_size

pytestmark = pytest.mark.infra

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def test_pip_command_targets_the_lambda_platform() -> None:
    # GIVEN the core lock for x86_64 WHEN the pip command is built
    command = pip_install_command(["requirements/locks/core.txt"], "/out", "manylinux2014_x86_64")
    # THEN it installs only hashed, locked files (nothing the lock does not name)
    joined = " ".join(command)
    assert "--require-hashes --no-deps -r requirements/locks/core.txt -t /out" in joined
    # AND asks for binary Linux wheels for CPython 3.12 into the target, whatever the host
    assert "--platform manylinux2014_x86_64 --only-binary=:all: --python-version 3.12 --implementation cp" in joined


@pytest.mark.skipif(os.environ.get("GUARD_BUNDLING_TEST", "1") == "0",
                    reason="GUARD_BUNDLING_TEST=0: skip the test that reaches PyPI")
def test_local_bundler_installs_core_for_linux_without_docker(tmp_path: Path) -> None:
    # GIVEN a staged tenant source tree
    source = stage_source(lambdas_dir=LAMBDAS, tenant_config={"tenant": "t", "batches": []},
                          checks_dir=None, dest=tmp_path / "src")
    bundler = LocalPipBundler(source_dir=source, groups=("core",), architecture="x86_64",
                              cache_dir=tmp_path / "deps")
    out = tmp_path / "asset"
    out.mkdir()
    # WHEN the bundler runs (real pip against the package index, no Docker)
    started = time.monotonic()
    assert bundler.try_bundle(str(out)) is True
    elapsed = time.monotonic() - started
    # THEN the asset holds the core dependencies built for Linux x86_64 / CPython 3.12
    assert (out / "aws_lambda_powertools").is_dir()
    assert (out / "yaml").is_dir()
    assert list((out / "pydantic_core").glob("_pydantic_core.cpython-312-x86_64-linux-gnu.so"))
    # AND the code and the tenant config, but not the other groups or the requirement files
    assert (out / "guard" / "errors.py").is_file()
    assert (out / "handlers").is_dir()
    assert (out / "tenant" / "config.json").is_file()
    assert not (out / "kubernetes").exists() and not (out / "gitlab").exists()
    assert not (out / "requirements").exists()
    # AND every module, ours and the dependencies', has 3.12 bytecode Lambda uses as is (unchecked-hash)
    assert not missing_bytecode(out), "modules Lambda would compile at every cold start"
    assert not list(out.rglob("*.cpython-311.pyc")), "no bytecode of the build host's Python"
    # AND the bytecode names the files where Lambda has them, not the build directory
    compiled = (out / "guard" / "__pycache__" / "errors.cpython-312.pyc").read_bytes()
    assert b"/var/task/guard/errors.py" in compiled and str(tmp_path).encode() not in compiled
    assert unzipped_size(out) < 100 * 2**20
    # AND a second function with the same groups reuses the install (no second pip run)
    again = tmp_path / "asset2"
    again.mkdir()
    started = time.monotonic()
    assert bundler.try_bundle(str(again)) is True
    assert time.monotonic() - started < max(elapsed, 1.0)
    assert len(list((tmp_path / "deps").iterdir())) == 1


@pytest.mark.parametrize("groups", sorted({s.groups for s in FUNCTIONS}), ids="+".join)
def test_every_function_has_a_lock_made_from_its_current_groups(groups: tuple[str, ...]) -> None:
    # GIVEN the dependency groups of a function WHEN its lock is read (offline)
    lock = lock_path(LAMBDAS / "requirements", groups)
    # THEN it exists, was made from the group files as they are now, and pins every line with a hash
    assert lock.is_file(), f"no lock for {'+'.join(groups)}: run `python -m infra.locks`"
    assert recorded_digest(lock) == inputs_digest(LAMBDAS / "requirements", groups), "stale: python -m infra.locks"
    pins = [line for line in lock.read_text().splitlines() if "==" in line]
    assert pins and all(line.endswith(" \\") for line in pins)
    assert "--hash=sha256:" in lock.read_text()


def test_the_docker_fallback_image_is_pinned_by_digest() -> None:
    # GIVEN the image CDK falls back to without a local pip WHEN read THEN it names a digest, not a tag
    assert "@sha256:" in BUILD_IMAGE and len(BUILD_IMAGE.split("@sha256:")[1]) == 64


@pytest.mark.skipif(os.environ.get("GUARD_BUNDLING_TEST", "1") == "0",
                    reason="GUARD_BUNDLING_TEST=0: skip the test that reaches the package index")
def test_a_file_whose_hash_is_not_in_the_lock_is_refused(tmp_path: Path) -> None:
    # GIVEN a staged tree whose core lock has one hash changed (a package index serving another file)
    source = stage_source(lambdas_dir=LAMBDAS, tenant_config={"tenant": "t", "batches": []},
                          checks_dir=None, dest=tmp_path / "src")
    lock = lock_path(source / "requirements", ("core",))
    text = lock.read_text()
    first = text.index("--hash=sha256:") + len("--hash=sha256:")
    lock.write_text(text[:first] + ("0" if text[first] != "0" else "1") + text[first + 1:])
    # WHEN the groups are installed THEN pip refuses the file and nothing is cached
    with pytest.raises(BundlingError, match=r"(?i)hash"):
        install_groups(requirements_dir=source / "requirements", groups=("core",),
                       platform_tag="manylinux2014_x86_64", cache_dir=tmp_path / "deps")
    assert not [p for p in (tmp_path / "deps").iterdir() if not p.name.startswith(".")]


# Provided by the Lambda runtime, not a lock (the python3.12 runtime ships the AWS SDK).
RUNTIME_PROVIDED = {"boto3", "botocore"}


@functools.cache
def _providers() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.id)
def test_every_package_a_function_imports_is_in_its_lock(spec: FunctionSpec) -> None:
    # GIVEN what the handler imports at load and on its first call (each LLM provider in turn), found statically
    module = spec.handler.rpartition(".")[0]
    imported = set().union(*(reachable_imports(module, LAMBDAS, provider) for provider in LLM_MODULES))
    third_party = {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names) - {
        "guard", "handlers", "__future__"} - RUNTIME_PROVIDED
    # WHEN each top-level package is mapped to the distribution that provides it
    providers = _providers()
    lock = lock_path(LAMBDAS / "requirements", spec.groups).read_text()
    locked = {_normalized(line.split("==")[0]) for line in lock.splitlines() if "==" in line}
    # THEN the function's lock installs it (Notify once shipped without requests for its Slack webhook)
    unknown = sorted(p for p in third_party if p not in providers)
    assert not unknown, f"{spec.id} imports {unknown}, which no installed distribution provides"
    missing = sorted(p for p in third_party if not {_normalized(d) for d in providers[p]} & locked)
    assert not missing, f"{spec.id} imports {missing} but its groups {spec.groups} do not install them"
    assert "pydantic" in third_party  # the scan reaches the models every handler imports
