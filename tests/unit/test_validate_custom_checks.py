"""A misspelt custom check is refused by `guard validate-config` (and the synth, tests/infra/test_tenants.py),
naming the config file and the key, instead of failing every run after the deploy."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from guard.checks.custom import verify_custom_checks
from guard.config.loader import load_config
from guard.errors import ConfigError

from cli.guard import main

CONFIG = Path(__file__).resolve().parents[2] / "config"
GOOD = '''
from guard.checks.base import HealthCheck


class DatabaseCheck(HealthCheck):
    async def run(self, cluster):
        raise NotImplementedError


class HalfACheck(HealthCheck):
    """Forgets to implement run."""


class NotACheck:
    async def run(self, cluster):
        return None
'''


def _tenant(tmp_path: Path, checks: list[tuple[str, str]], module_text: str = GOOD) -> Path:
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "team_checks.py").write_text(module_text)
    listed = "".join(f"  - module: {m}\n    class: {c}\n" for m, c in checks)
    config = tmp_path / "team-a-config.yaml"
    config.write_text(f"batches: [{{name: a, clusters: [eks-a]}}]\ncustom_checks:\n{listed}")
    return config


def test_the_seed_s_example_check_passes(tmp_path: Path) -> None:
    # GIVEN the example tenant, whose checks folder holds the seed's CustomDatabaseCheck verbatim
    out = io.StringIO()
    # WHEN validated THEN it passes
    assert main(["validate-config", str(CONFIG / "example.yaml")], out=out) == 0


@pytest.mark.parametrize("module, cls, reason", [
    ("team_checks", "DatabseCheck", "team_checks.py defines no class 'DatabseCheck'"),
    ("team_check", "DatabaseCheck", "module 'team_check' not found at"),
    ("team_checks", "NotACheck", "team_checks.NotACheck is not a guard.checks.base.HealthCheck"),
    ("team_checks", "HalfACheck", "HalfACheck does not implement run"),
])
def test_validate_config_refuses_a_bad_check_naming_the_file_and_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], module: str, cls: str, reason: str) -> None:
    # GIVEN a config whose second custom check is missing, misspelt or not a check
    config = _tenant(tmp_path, [("team_checks", "DatabaseCheck"), (module, cls)])
    # WHEN validated
    code = main(["validate-config", str(config)], out=io.StringIO())
    # THEN exit 2, naming the file, the key custom_checks[1] and the reason
    err = capsys.readouterr().err
    assert code == 2
    assert str(config) in err
    assert f"custom_checks[1] (module: {module}, class: {cls})" in err and reason in err, err
    assert "custom_checks[0]" not in err


def test_a_module_that_raises_on_import_is_refused(tmp_path: Path) -> None:
    config = _tenant(tmp_path, [("team_checks", "DatabaseCheck")], module_text="import not_installed_anywhere\n")
    loaded = load_config(config)
    with pytest.raises(ConfigError) as caught:
        verify_custom_checks(loaded.custom_checks, tmp_path / "checks", str(config))
    assert "custom_checks[0]" in str(caught.value)
    assert "raised ModuleNotFoundError" in str(caught.value)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    config = _tenant(tmp_path, [("team_checks", "Nope"), ("other", "X")])
    with pytest.raises(ConfigError) as caught:
        verify_custom_checks(load_config(config).custom_checks, tmp_path / "checks", str(config))
    assert "custom_checks[0]" in str(caught.value) and "custom_checks[1]" in str(caught.value)
