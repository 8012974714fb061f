"""The Docker-free bundler: real pip, Linux wheels, only the groups a function needs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from infra.bundling import LocalPipBundler, pip_install_command, stage_source

pytestmark = pytest.mark.infra

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def test_pip_command_targets_the_lambda_platform() -> None:
    # GIVEN the core group for x86_64 WHEN the pip command is built
    command = pip_install_command(["requirements/core.txt"], "/out", "manylinux2014_x86_64")
    # THEN it asks for binary Linux wheels for CPython 3.12 into the target, whatever the host
    joined = " ".join(command)
    assert "-r requirements/core.txt -t /out" in joined
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
    assert not list(out.rglob("*.pyc")), "no host-compiled bytecode (3.11 .pyc is useless on 3.12)"
    # AND a second function with the same groups reuses the install (no second pip run)
    again = tmp_path / "asset2"
    again.mkdir()
    started = time.monotonic()
    assert bundler.try_bundle(str(again)) is True
    assert time.monotonic() - started < max(elapsed, 1.0)
    assert len(list((tmp_path / "deps").iterdir())) == 1
