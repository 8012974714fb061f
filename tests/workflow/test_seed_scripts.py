"""The seed's shell scripts, run as written by bash against the persistent local stack.

Each test gives bash a fresh $HOME holding the seed's `~/.guard/*.yaml`, puts a `guard` on PATH
(this tree's CLI: what the documented install puts there), starts the stack with
`guard local up`, runs the script with Enter for each `read` (the stack's reviewer merges the
MRs), and checks what the script's user would see, then what GUARD recorded (`guard list -o json`).
The scripts and configs are in tests/fixtures/seed (README there says which are verbatim).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.engine import HANG_SECONDS

pytestmark = pytest.mark.workflow
ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "tests" / "fixtures" / "seed"
# A fast clock: a 4-hour soak takes ~15 real seconds; the reviewer merges 5 scenario minutes after an MR opens.
UP = ["--speedup", "1000", "--merge-after", "300", "--idle-timeout", "300"]
# The documented install (docs/ci-cd.md: `pip install ./guard`, the repository checked out beside the job),
# run by each CI job in place of the seed's `pip install guard`. Two additions keep the test offline and the
# shared environment untouched: --no-deps (the dependencies are already in this environment; pip's own
# resolution of them is tests/unit/test_cli_install.py's) and --target (a fresh directory per test, put first
# on PATH and PYTHONPATH as a CI runner's environment would be). `command -v guard` shows which one ran.
INSTALL = (f'{sys.executable} -m pip install --quiet --disable-pip-version-check --no-deps '
           '--target "$GUARD_SITE" ./guard\n'
           'export PATH="$GUARD_SITE/bin:$PATH" PYTHONPATH="$GUARD_SITE"\n'
           'echo "installed guard: $(command -v guard)"')

Shell = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def seed_home(tmp_path: Path) -> Iterator[Shell]:
    """`sh(script, configs={name: fixture}, up=[...])`: a $HOME with the configs, the stack up, the script run."""
    home = tmp_path / "home"
    (home / ".guard").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    guard = bin_dir / "guard"
    guard.write_text(f"#!/bin/sh\nexec {sys.executable} -m cli.guard \"$@\"\n")
    guard.chmod(guard.stat().st_mode | stat.S_IEXEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env |= {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": f"{ROOT / 'lambdas'}{os.pathsep}{ROOT}"}
    started = False

    def sh(script: str, configs: dict[str, str] | None = None, up: list[str] | None = None,
           stdin: str = "\n" * 20) -> subprocess.CompletedProcess[str]:
        nonlocal started
        for name, fixture in (configs or {}).items():
            (home / ".guard" / name).write_text((SEED / fixture).read_text())
        if up is not None and not started:
            done = subprocess.run(["guard", "local", "up", *up], env=env, cwd=tmp_path, capture_output=True,
                                  text=True, timeout=HANG_SECONDS)
            started = True
            assert done.returncode == 0, done.stdout + done.stderr
        return subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, input=stdin, capture_output=True,
                              text=True, timeout=HANG_SECONDS)

    sh.env = env  # type: ignore[attr-defined]
    yield sh
    subprocess.run(["guard", "local", "down"], env=env, capture_output=True, text=True, timeout=120)


def listed(sh: Shell, *args: str) -> dict[str, Any]:
    """`guard list -o json` (as the user would check), by batch."""
    done = sh(" ".join(["guard", "list", "-o", "json", *args]))
    assert done.returncode == 0, done.stdout + done.stderr
    return {b["batch"]: b for b in json.loads(done.stdout)["batches"]}


def script(name: str) -> str:
    return (SEED / name).read_text()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_multi_region_script_upgrades_each_region_after_the_one_before(seed_home: Shell) -> None:
    # GIVEN the seed's multi-region config as ~/.guard/config.yaml, and the local stack up
    # WHEN the seed's script runs (set -e; run, read, monitor per region)
    out = ok(seed_home(script("multi-region.sh"), {"config.yaml": "multi-region-config.yaml"}, up=UP))
    # THEN it reaches its end, each run printed its MR and each monitor saw its batch succeed
    assert "✓ Multi-region upgrade complete!" in out
    for batch in ("us-east-prod-wave-1", "us-west-prod-wave-1", "eu-prod-wave-1"):
        assert f"[{batch}] merge request: http://127.0.0.1:" in out and f"[{batch}] succeeded" in out
    # AND every region runs 1.20.0, the last runs succeeded, no lock is left
    for batch in listed(seed_home).values():
        assert {c["version"] for c in batch["clusters"]} == {"1.20.0"}, batch
        assert batch["last_outcome"] == "succeeded" and batch["lock_holder"] is None


def test_multi_region_order_is_enforced_when_a_region_is_skipped(seed_home: Shell) -> None:
    # GIVEN the multi-region config and the stack
    # WHEN the EU region is started before the US regions ran
    done = seed_home("guard run --batch eu-prod-wave-1 --target-version 1.20.0",
                     {"config.yaml": "multi-region-config.yaml"}, up=UP)
    # THEN guard run exits non-zero with the reason (the prerequisite), and no MR was opened
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PrerequisiteNotMet" in done.stdout and "us-east-prod-wave-1" in done.stdout
    assert "merge request:" not in done.stdout


def test_canary_script_upgrades_the_canary_then_main(seed_home: Shell) -> None:
    # GIVEN the seed's canary config; WHEN its script runs
    out = ok(seed_home(script("canary.sh"), {"config.yaml": "canary-config.yaml"}, up=UP))
    # THEN the canary passed, so main was upgraded too
    assert "Canary successful, proceeding with main clusters" in out
    assert "[prod-canary] succeeded" in out and "[prod-main] succeeded" in out
    batches = listed(seed_home)
    assert batches["prod-main"]["last_outcome"] == "succeeded"


def test_canary_script_stops_before_main_when_the_canary_is_rolled_back(seed_home: Shell) -> None:
    # GIVEN the canary config where the canary's latency rises 25% after the upgrade
    # WHEN the seed's canary script runs
    done = seed_home(script("canary.sh"), {"config.yaml": "canary-config.yaml"},
                     up=["--scenario", str(SEED / "canary-regression.scenario.yaml"), "--idle-timeout", "300"])
    # THEN monitor exited non-zero (3: rolled back), so the script aborted main and exited 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Canary failed, aborting main cluster upgrade" in done.stdout
    assert "[prod-canary] the upgrade was rolled back" in done.stdout
    assert "[prod-main]" not in done.stdout
    batches = listed(seed_home)
    assert batches["prod-canary"]["last_outcome"] == "rolled_back"
    assert {c["version"] for c in batches["prod-main"]["clusters"]} == {"1.19.3"}


def test_monitor_follows_a_four_hour_canary_soak_to_its_end(seed_home: Shell) -> None:
    # GIVEN the canary config and a canary run whose soak is 4 hours (240 minutes)
    seed_home("true", {"config.yaml": "canary-config.yaml"}, up=UP)
    ok(seed_home("guard run --batch prod-canary --target-version 1.20.0 --soak-period 240"))
    # WHEN guard monitor attaches (by batch, no flags) and follows it
    done = seed_home("guard monitor --batch prod-canary")
    # THEN it followed the whole soak, saying the time left, and exited 0 when the run succeeded
    out = ok(done)
    soaking = [line for line in out.splitlines() if "soaking:" in line]
    assert any("of 4h 00m" in line and line.split("soaking: ")[1].startswith("3h") for line in soaking), out
    assert not soaking[-1].split("soaking: ")[1].startswith(("1h", "2h", "3h", "4h")), out  # followed to the end
    assert out.rstrip().splitlines()[-1].startswith("[prod-canary] succeeded")


def test_llm_script_follows_with_llm_analysis_on(seed_home: Shell) -> None:
    # GIVEN the seed's LLM config (llm.enabled, openai) with a batch; the stack serves an OpenAI-compatible LLM
    # WHEN the seed's script runs (its `aws secretsmanager create-secret` is the operator's one-time AWS setup:
    # the local stack holds that secret already, so the line is left out)
    body = "\n".join(line for line in script("llm.sh").splitlines()
                     if not line.startswith(("aws ", "    --name", "    --secret-string")))
    out = ok(seed_home(body, {"config.yaml": "llm-config.yaml"}, up=UP))
    # THEN monitor says the run's failure path will be analysed, and the healthy run succeeds
    assert "[prod-wave-1] LLM analysis: on" in out
    assert "[prod-wave-1] succeeded" in out


def test_zero_downtime_script_passes_its_prechecks_and_opens_the_mr(seed_home: Shell) -> None:
    # GIVEN the seed's zero-downtime config (PDBs required) and healthy clusters (3 replicas, PDBs maxUnavailable 1)
    # WHEN the seed's `guard run ... --ensure-pdb --min-replicas 3 --max-unavailable 1` runs
    out = ok(seed_home(script("zero-downtime.sh"), {"config.yaml": "zero-downtime-config.yaml"}, up=UP))
    # THEN the prechecks passed and the MR is open
    assert "[prod-wave-1] merge request: http://127.0.0.1:" in out
    assert "precheck pass" in out and "precheck fail" not in out


def test_zero_downtime_min_replicas_refuses_a_thin_workload(seed_home: Shell) -> None:
    # GIVEN the same config; WHEN the run asks for more replicas than the workloads have
    done = seed_home("guard run --batch prod-wave-1 --target-version 1.20.0 --ensure-pdb --min-replicas 5",
                     {"config.yaml": "zero-downtime-config.yaml"}, up=UP)
    # THEN the prechecks refuse, guard run exits 1 with the reason, and no MR is opened
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PrecheckFailed" in done.stdout and "min_replicas 5" in done.stdout
    assert "merge request:" not in done.stdout


def _ci_steps(kind: str, site: Path, batch: str = "prod-wave-1", version: str = "1.20.0") -> dict[str, str]:
    """Each CI job's shell steps, `pip install guard` replaced by the documented install."""
    if kind == "gitlab":
        jobs = yaml.safe_load(script("gitlab-ci.yml"))
        steps = {name: job["script"] for name, job in jobs.items() if isinstance(job, dict) and "script" in job}
        env = {k: str(v) for k, v in jobs["variables"].items()}
    else:
        jobs = yaml.safe_load(script("github-actions.yml"))["jobs"]
        steps = {name: [s["run"] for s in job["steps"] if "run" in s] for name, job in jobs.items()}
        env = {}
    env["GUARD_SITE"] = str(site)
    shell = {}
    for name, lines in steps.items():
        body = "\n".join(INSTALL if line.strip() == "pip install guard" else line for line in lines)
        body = body.replace("${{ inputs.batch }}", batch).replace("${{ inputs.target_version }}", version)
        shell[name] = "set -e\n" + "".join(f"export {k}={v}\n" for k, v in env.items()) + body
    return shell


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The repository as a CI job sees it: `./guard` (its packages and pyproject.toml) in the job's directory,
    `$GUARD_SITE` where that job's pip installs it."""
    source = tmp_path / "guard"
    for part in ("cli", "sandbox", "infra", "lambdas"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", source)
    return tmp_path / "site"


def installed(job_output: str, site: Path) -> None:
    """The job's `guard` commands ran from what its own `pip install ./guard` put in $GUARD_SITE."""
    assert f"installed guard: {site / 'bin' / 'guard'}" in job_output, job_output


def test_gitlab_ci_jobs_run_as_the_seed_writes_them(seed_home: Shell, checkout: Path) -> None:
    # GIVEN the seed's .gitlab-ci.yml jobs (`pip install guard` replaced by the documented install) and a config
    jobs = _ci_steps("gitlab", site=checkout)
    seed_home("true", {"config.yaml": "cicd-config.yaml"}, up=UP)
    # WHEN upgrade-test runs (run + monitor), then upgrade-prod (run) and validate-prod (monitor --soak-period 120)
    test_job = ok(seed_home(jobs["upgrade-test"]))
    prod_job = ok(seed_home(jobs["upgrade-prod"]))
    validate_job = ok(seed_home(jobs["validate-prod"]))
    # THEN each job passed: the test batch succeeded; the prod job ended with its MR open; validate followed it
    assert "[test] succeeded" in test_job
    assert "[prod-wave-1] merge request: http://127.0.0.1:" in prod_job and "succeeded" not in prod_job
    assert "[prod-wave-1] succeeded" in validate_job
    # AND each job's guard was the one its own pip install put there
    for job in (test_job, prod_job, validate_job):
        installed(job, checkout)


def test_github_actions_jobs_run_as_the_seed_writes_them(seed_home: Shell, checkout: Path) -> None:
    # GIVEN the seed's workflow, dispatched with batch=prod-wave-1 and target_version=1.20.0
    jobs = _ci_steps("github", site=checkout)
    seed_home("true", {"config.yaml": "cicd-config.yaml"}, up=UP)
    # WHEN the upgrade job and then the validate job run
    upgrade = ok(seed_home(jobs["upgrade"]))
    validate = ok(seed_home(jobs["validate"]))
    # THEN the MR was opened by the first and the run followed to success by the second
    assert "[prod-wave-1] merge request: http://127.0.0.1:" in upgrade
    assert "[prod-wave-1] succeeded" in validate
    # AND both jobs ran the guard that their own pip install put there
    installed(upgrade, checkout)
    installed(validate, checkout)


def test_parallel_script_returns_when_the_three_mrs_are_ready(seed_home: Shell) -> None:
    # GIVEN three independent dev batches; the reviewer never merges (each run returns once its MR is open)
    seed_home("true", {"config.yaml": "parallel-config.yaml"}, up=[*UP[:2], "--reviewer", "ignore", *UP[4:]])
    # WHEN the seed's parallel script runs (`guard run ... &` three times, then `wait`)
    out = ok(seed_home(script("parallel.sh")))
    # THEN all three printed their MR URL before the script's last line, and three distinct MRs are open
    assert "All dev batches ready for MR merge" in out
    urls = {line.split("merge request: ")[1] for line in out.splitlines() if "] merge request: " in line}
    assert len(urls) == 3, out
    batches = listed(seed_home)
    assert all(batches[b]["last_status"] == "running" and batches[b]["lock_holder"]
               for b in ("dev-us-east", "dev-us-west", "dev-eu"))


def test_multi_tenancy_script_runs_each_team_on_its_own_stack(seed_home: Shell) -> None:
    # GIVEN the seed's team-a config verbatim and team-b's written the same way (neither has `tenant:`)
    from guard.config.loader import load_config

    assert (load_config(SEED / "team-a-config.yaml").tenant, load_config(SEED / "team-b-config.yaml").tenant) == (
        "team-a", "team-b")
    configs = {"team-a-config.yaml": "team-a-config.yaml", "team-b-config.yaml": "team-b-config.yaml"}
    # WHEN `guard local up` starts each team's stack and the seed's script runs; the reviewer leaves the MRs
    # open, so each run still holds its batch when `guard list` looks (a merged run may end before it does)
    out = ok(seed_home(script("multi-tenancy.sh"), configs, up=[*UP[:2], "--reviewer", "ignore", *UP[4:]]))
    # THEN each run printed its own MR, on its own tenant's stack
    assert "[team-a-prod] merge request: http://127.0.0.1:" in out
    assert "[team-b-prod] merge request: http://127.0.0.1:" in out
    a = listed(seed_home, "--config", "~/.guard/team-a-config.yaml")
    b = listed(seed_home, "--config", "~/.guard/team-b-config.yaml")
    assert set(a) == {"team-a-prod"} and a["team-a-prod"]["lock_holder"], a
    assert set(b) == {"team-b-prod"} and b["team-b-prod"]["lock_holder"], b
    assert a["team-a-prod"]["lock_holder"] != b["team-b-prod"]["lock_holder"]


def test_a_monitor_killed_with_its_ci_job_says_how_to_resume_and_monitor_picks_the_run_up(seed_home: Shell) -> None:
    # GIVEN a canary run soaking for 4 hours, followed by `guard monitor`
    seed_home("true", {"config.yaml": "canary-config.yaml"}, up=UP)
    ok(seed_home("guard run --batch prod-canary --target-version 1.20.0 --soak-period 240"))
    env = seed_home.env  # type: ignore[attr-defined]
    follower = subprocess.Popen(["guard", "monitor", "--batch", "prod-canary"], env=env, stdout=subprocess.PIPE,
                                text=True)
    assert follower.stdout is not None
    seen = []
    for line in follower.stdout:  # bounded: the run ends within HANG_SECONDS, which ends the output
        seen.append(line)
        if "soaking:" in line:
            break
    # WHEN the CI job is cancelled (SIGTERM to the monitor)
    follower.terminate()
    rest, _ = follower.communicate(timeout=60)
    # THEN it exits 130 saying how to resume, and the run goes on
    assert follower.returncode == 130, "".join(seen) + rest
    assert "Resume with `guard monitor --batch prod-canary`" in rest
    # AND the resumed monitor follows the same run to its end
    again = ok(seed_home("guard monitor --batch prod-canary"))
    assert "[prod-canary] succeeded" in again
