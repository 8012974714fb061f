"""`pip install <this repository>` gives a working `guard` CLI: every package the CLI imports comes from a
dependency pyproject.toml declares (or one of theirs), and none of the heavy Lambda-only packages is needed."""

from __future__ import annotations

import json
import re
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
