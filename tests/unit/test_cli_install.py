"""`pip install <this repository>` gives a working `guard` CLI: every package the CLI imports comes from a
dependency pyproject.toml declares (or one of theirs), and none of the heavy Lambda-only packages is needed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LAMBDA_ONLY = {"aws_lambda_powertools", "gitlab", "openai", "anthropic", "ruamel", "aws_cdk", "constructs",
               "cdk_nag", "moto", "flask", "scipy"}
# Imported here because they are installed, not needed: the CLI ran without them in a fresh venv.
OPTIONAL = {"certifi": "botocore uses it when installed, else its own CA bundle",
            "cython_runtime": "the runtime module of Cython-compiled extensions (no distribution)"}

# Runs the CLI commands a CI job runs, then prints the third-party top-level modules they imported.
PROBE = """
import io, json, sys, contextlib
sys.path[:0] = ["lambdas", "."]
before = set(sys.modules)
from cli.guard import main
for argv in {commands}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
own = {{"cli", "guard", "infra", "handlers", "sandbox", "guard_custom_checks"}}
tops = {{m.split(".")[0] for m in sys.modules}} - {{m.split(".")[0] for m in before}}
print(json.dumps(sorted(t for t in tops if t not in sys.stdlib_module_names and t not in own
                        and not t.startswith("_"))))
"""
COMMANDS = [["--help"], ["validate-config", "config/example.yaml"], ["run", "--help"], ["status", "--help"],
            ["registry", "import", "--help"], ["registry", "export", "--help"], ["registry", "migrate", "--help"]]


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: list[str]) -> set[str]:
    """The declared distributions and everything they require (installed here), normalised names."""
    seen: set[str] = set()
    todo = [_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            deps = requires(name) or []
        except PackageNotFoundError:
            continue
        todo += [_name(d) for d in deps if "extra ==" not in d]
    return seen


@pytest.fixture(scope="module")
def imported() -> list[str]:
    probe = PROBE.format(commands=json.dumps(COMMANDS))
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=True)
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def test_every_module_the_cli_imports_comes_from_a_declared_dependency(imported: list[str]) -> None:
    # GIVEN the distributions pyproject.toml declares, with their own requirements
    allowed = _closure(PYPROJECT["project"]["dependencies"])
    owners = packages_distributions()
    # WHEN the CLI's commands run THEN each third-party module they import is provided by one of them
    missing = {m: owners.get(m) for m in imported
               if m not in OPTIONAL and not {_name(d) for d in owners.get(m, [])} & allowed}
    assert imported and not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_cli_needs_none_of_the_lambda_only_packages(imported: list[str]) -> None:
    assert not LAMBDA_ONLY & set(imported)
    declared = {_name(d) for d in PYPROJECT["project"]["dependencies"]}
    assert {"boto3", "pydantic", "pyyaml"} <= declared
    assert PYPROJECT["project"]["scripts"]["guard"] == "cli.guard:main"


def test_ci_docs_install_from_the_repository_and_warn_about_the_pypi_package() -> None:
    text = (ROOT / "docs" / "ci-cd.md").read_text()
    assert re.search(r"pip install [\"']?git\+https://", text)
    assert "pip install guard\n" not in text and "pip install guard`" in text  # named only in the warning
    assert "unrelated" in text


def _pip_install(source: Path, target: Path) -> tuple[bool, str]:
    """`pip install <source> --target <target>` as a CI job runs it, dependencies included (from the index pip
    is configured with). (True, log) when the dependencies came too; (False, log) when only the package could be
    installed (no index reachable: --no-deps, the build backend of this environment). Fails when neither works."""
    log = ""
    for deps, argv in ((True, []), (False, ["--no-deps"]), (False, ["--no-deps", "--no-build-isolation"])):
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *argv,
                               str(source)], capture_output=True, text=True, timeout=600)
        log += f"$ pip install {' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}\n"
        if done.returncode == 0:
            return deps, log
        shutil.rmtree(target, ignore_errors=True)
    raise AssertionError(f"pip could not install the repository:\n{log}")


def test_pip_install_of_the_repository_gives_a_guard_command_that_runs(tmp_path: Path) -> None:
    # GIVEN what `pip install <path or git URL>` builds: the repository's packages and pyproject.toml
    source = tmp_path / "guard"
    for part in ("cli", "sandbox", "infra", "lambdas"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", source)
    # WHEN pip installs it into a fresh target, with its dependencies
    target = tmp_path / "site"
    with_deps, log = _pip_install(source, target)
    # THEN the installed distribution declares what the CLI imports
    metadata = next(target.glob("guard_serverless-*.dist-info")) / "METADATA"
    declared = {_name(line.split(":", 1)[1].strip()) for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert {"boto3", "pydantic", "pyyaml"} <= declared
    # AND its `guard` entry point runs from the installed copy alone, outside the repository: with the
    # dependencies installed, `python -S` leaves this environment's site-packages out, so the target's
    # declared dependencies are all the CLI has.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "AWS_"))}
    env["PYTHONPATH"] = str(target)
    python = [sys.executable, "-S"] if with_deps else [sys.executable]

    def guard(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python, str(target / "bin" / "guard"), *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    ran = guard("--version")
    assert ran.returncode == 0 and ran.stdout.strip() == f"guard {PYPROJECT['project']['version']}", log + ran.stderr
    checked = guard("validate-config", str(ROOT / "config" / "example.yaml"))
    assert checked.returncode == 0 and ": ok (tenant example" in checked.stdout, checked.stdout + checked.stderr
    helped = guard("monitor", "--help")
    assert helped.returncode == 0 and "--soak-period" in helped.stdout, helped.stderr
    found = subprocess.run([*python, "-c", "import cli.guard, guard.errors, yaml, pydantic; "
                            "print(cli.guard.__file__, guard.errors.__file__, yaml.__file__, pydantic.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    modules = found.stdout.split()
    assert modules and all(m.startswith(str(target)) for m in modules[:2]), found.stdout + found.stderr
    if with_deps:
        assert all(m.startswith(str(target)) for m in modules), found.stdout
