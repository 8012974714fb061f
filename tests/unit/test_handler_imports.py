"""Cold start: each handler imports only the SDKs its function uses (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("openai", "kubernetes", "datadog_api_client", "gitlab")


def imported_after(module: str) -> dict[str, object]:
    """Top-level packages in sys.modules after `import module` in a new Python process."""
    code = (
        "import importlib, json, sys\n"
        f"mod = importlib.import_module({module!r})\n"
        "print(json.dumps({'packages': sorted({k.split('.')[0] for k in sys.modules}),"
        " 'has_handler': callable(getattr(mod, 'handler', None))}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lambdas"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("module", ["handlers.gitlab_webhook", "handlers.plan"])
def test_light_handlers_import_no_heavy_sdk(module):
    # GIVEN a fresh interpreter (as on a Lambda cold start)
    # WHEN the handler module is imported
    found = imported_after(module)
    # THEN none of openai, kubernetes, datadog_api_client or python-gitlab was loaded
    loaded = set(found["packages"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), f"{module} imports {sorted(loaded & set(HEAVY))} at cold start"
    assert found["has_handler"] is True


def test_precheck_handler_import_does_not_load_openai():
    # GIVEN the precheck function (it talks to Kubernetes and Datadog, never to an LLM)
    found = imported_after("handlers.precheck")
    # THEN importing its module does not load the OpenAI SDK
    assert "openai" not in set(found["packages"])  # type: ignore[arg-type]
    assert found["has_handler"] is True


@pytest.mark.parametrize("module", sorted(f"handlers.{p.stem}" for p in (ROOT / "lambdas" / "handlers").glob("*.py")
                                          if p.stem != "__init__"))
def test_every_handler_module_imports_and_exposes_handler(module):
    # GIVEN any handler module; WHEN imported alone THEN it loads and has a callable `handler`
    assert imported_after(module)["has_handler"] is True
