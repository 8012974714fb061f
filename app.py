#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` (see docs/deploy.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "lambdas"))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from guard.errors import ConfigError  # noqa: E402

from infra.application import build_app  # noqa: E402


def _cdk_json_context() -> dict[str, object]:
    # `python3 app.py` without the CLI gets no context; read cdk.json the way the CLI would.
    if "CDK_CONTEXT_JSON" in os.environ or "CDK_CONTEXT_JSON_FILE" in os.environ:
        return {}
    context = json.loads((ROOT / "cdk.json").read_text()).get("context", {})
    return dict(context)


def main() -> int:
    try:
        app = build_app(_cdk_json_context(), account=os.environ.get("CDK_DEFAULT_ACCOUNT"))
    except ConfigError as e:
        print(f"GUARD synth failed: {e}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
