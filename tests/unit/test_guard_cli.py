"""The `guard` CLI without AWS: exit-code table, reports, config validation, usage errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from cli.follow import EXIT_CODES, exit_code
from cli.guard import main
from cli.legacy import report

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("status, error, code", [
    ("SUCCEEDED", None, 0),
    ("FAILED", "ValidationFailed", 1),
    ("FAILED", "PrerequisiteNotMet", 1),
    ("FAILED", "ChangeWindowClosed", 1),
    ("FAILED", "RolloutFailed", 1),
    ("TIMED_OUT", None, 1),
    ("ABORTED", None, 1),
    ("FAILED", "RolledBack", 3),
    ("FAILED", "RolloutRolledBack", 3),
    ("FAILED", "InvalidInput", 2),
    ("FAILED", "UnknownBatch", 2),
    ("FAILED", "VersionNotAllowed", 2),
    ("FAILED", "NothingToRollBack", 2),
    ("RUNNING", None, 0),  # `guard status` read a running run: the read succeeded
])
def test_exit_code_table(status: str, error: str | None, code: int) -> None:
    assert exit_code(status, error) == code
    assert code in EXIT_CODES


def test_a_failed_rollout_report_lists_every_batch() -> None:
    cause = {"status": "failed", "counts": {"succeeded": 1, "rolled_back": 1, "skipped": 1}, "batches": [
        {"batch": "staging-us", "status": "succeeded"},
        {"batch": "prod-canary", "status": "rolled_back", "reason": "RolledBack: latency"},
        {"batch": "prod-eu", "status": "skipped", "reason": "depends on 'prod-canary', which rolled back"}]}
    out = io.StringIO()
    code = report({"executionArn": "arn:x", "status": "FAILED", "error": "RolloutRolledBack",
                   "cause": json.dumps(cause)}, out)
    assert code == 3
    assert "prod-eu" in out.getvalue() and "depends on 'prod-canary', which rolled back" in out.getvalue()


def test_validate_config_prints_the_rollout_order() -> None:
    out = io.StringIO()
    assert main(["validate-config", str(CONFIG / "example.yaml"), str(CONFIG / "multi-region.yaml")], out=out) == 0
    assert "{staging-us, staging-eu}" in out.getvalue()
    assert "us-east-prod-wave-1 → us-west-prod-wave-1 → eu-prod-wave-1" in out.getvalue()


def test_validate_config_with_a_cycle_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("batches: [{name: a, clusters: [x]}, {name: b, clusters: [y]}]\nbatch_order: {a: [b], b: [a]}\n")
    assert main(["validate-config", str(bad)], out=io.StringIO()) == 2
    assert "dependency cycle" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["run", "--batch", "dev-1"], ["frobnicate"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv, out=io.StringIO()) == 2


def test_no_state_machine_named_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.guard/config.yaml, no local stack
    assert main(["run", "--batch", "dev-1", "--target-version", "1.20.0", "--region", "us-east-1"],
                out=io.StringIO()) == 2
    assert "--state-machine-arn" in capsys.readouterr().err


def test_bad_soak_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollout", "--target-version", "1.20.0", "--soak-override", "prod-canary:240",
                 "--state-machine-arn", "arn:aws:states:us-east-1:1:stateMachine:x"], out=io.StringIO()) == 2


@pytest.mark.parametrize("command", [[], ["run"], ["monitor"], ["rollback"], ["abort"], ["retry"], ["status"],
                                     ["list"], ["rollout"], ["local"], ["local", "up"], ["local", "down"],
                                     ["validate-config"], ["registry"], ["calibrate"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN any command WHEN asked for --help THEN it prints its usage and exits 0
    assert main([*command, "--help"], out=io.StringIO()) == 0
    assert "usage: guard" in capsys.readouterr().out


def test_version_and_the_exit_code_table_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"], out=io.StringIO()) == 0
    assert capsys.readouterr().out.startswith("guard ")
    main(["--help"], out=io.StringIO())
    text = capsys.readouterr().out
    assert all(f"  {code} " in text for code in EXIT_CODES)
    assert "still running" not in text


@pytest.mark.parametrize("fmt, parse", [("json", json.loads), ("yaml", __import__("yaml").safe_load)])
def test_read_commands_print_json_and_yaml(fmt: str, parse: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN no local stack WHEN `guard local status -o json|yaml` THEN the output parses, an empty list
    monkeypatch.setenv("HOME", str(tmp_path))
    out = io.StringIO()
    assert main(["local", "status", "-o", fmt], out=out) == 0
    assert parse(out.getvalue()) == []
