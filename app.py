#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (see docs/deploy.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def _in_project_venv() -> None:
    """cdk.json runs `python3 app.py` with whatever python3 is first on PATH. Without the CDK libraries
    there (no venv activated), run again with the project's venv (`make setup`), so `cdk synth` and
    `cdk deploy` work from a fresh clone without activating anything."""
    try:
        import aws_cdk  # noqa: F401
    except ImportError:
        venv = ROOT / ".venv"
        # A venv's python is a symlink to the base interpreter: tell them apart by sys.prefix, not by path.
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
        missing = "has no CDK libraries" if VENV_PYTHON.exists() else "does not exist"
        sys.exit(f"GUARD synth: {sys.executable} has no CDK libraries and {venv} {missing}: run `make setup` first")


# Before aws_cdk is first imported (in _in_project_venv): jsii warns about Node 20 at import.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
_in_project_venv()
sys.path.insert(0, str(ROOT / "lambdas"))

from guard.errors import ConfigError  # noqa: E402

from infra.application import build_app  # noqa: E402


def _context() -> dict[str, object]:
    """The CLI's context (CDK_CONTEXT_JSON), else cdk.json's, for `python3 app.py` without the CLI.

    Read here as well as by the App so the same values reach build_app however it is run.
    """
    if "CDK_CONTEXT_JSON" in os.environ:
        return dict(json.loads(os.environ["CDK_CONTEXT_JSON"]))
    if "CONTEXT_OVERFLOW_LOCATION" in os.environ:  # the CLI moved a large context to a file
        return {}
    return dict(json.loads((ROOT / "cdk.json").read_text()).get("context", {}))


def main() -> int:
    try:
        # The CLI sets CDK_OUTDIR; `python3 app.py` alone writes to ./cdk.out, not a temp dir.
        app = build_app(_context(), account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                        outdir=os.environ.get("CDK_OUTDIR") or str(ROOT / "cdk.out"))
    except ConfigError as e:
        print(f"GUARD synth failed: {e}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
