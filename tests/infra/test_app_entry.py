"""`cdk.json` runs `python3 app.py` from the repository root; with no venv activated (a python3 without the
CDK libraries), app.py runs itself again with the project's .venv and synthesizes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]


def _python_without_cdk() -> str | None:
    for candidate in ("python3", "python3.11", "python3.12"):
        found = shutil.which(candidate, path=os.defpath + os.pathsep + os.environ.get("PATH", ""))
        if found and subprocess.run([found, "-c", "import aws_cdk"], capture_output=True).returncode != 0:
            return found
    return None


def test_cdk_json_runs_app_py_with_the_project_venv_without_activating_it(tmp_path: Path) -> None:
    # GIVEN cdk.json's app command, and a python3 on PATH that lacks the CDK libraries (no venv activated)
    assert json.loads((ROOT / "cdk.json").read_text())["app"] == "python3 app.py"
    python = _python_without_cdk()
    if python is None or not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs a python3 without aws_cdk and the project's .venv")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    # The CLI's context: the example tenant, bundling skipped (fast), output to a temp dir.
    env["CDK_CONTEXT_JSON"] = json.dumps({"tenants": ["config/example.yaml"], "aws:cdk:bundling-stacks": [],
                                          "guard:build_dir": str(tmp_path / "build")})
    env["CDK_OUTDIR"] = str(tmp_path / "cdk.out")
    # WHEN the CDK CLI would run it (from the repository root)
    done = subprocess.run([python, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    # THEN it synthesizes the tenant's stack
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cdk.out" / "Guard-example.template.json").is_file()
