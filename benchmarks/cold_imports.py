"""Cold import time of each Lambda handler module, and which heavy SDKs it pulls in.

Each sample is a fresh interpreter (what a Lambda cold start pays). Prints the median of
--runs samples per handler. Usage: python benchmarks/cold_imports.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("openai", "anthropic", "kubernetes", "datadog_api_client", "gitlab")
HANDLERS = ["plan", "precheck", "open_merge_request", "flux_status", "validate", "conclude", "finish",
            "gitlab_webhook"]
PROBE = """
import json, sys, time
start = time.perf_counter()
import handlers.{name}
elapsed = (time.perf_counter() - start) * 1000
print(json.dumps({{"ms": elapsed, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def sample(name: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'lambdas'}", PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", PROBE.format(name=name, heavy=HEAVY)], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'handler':<22}{'median ms':>10}{'min':>8}{'max':>8}  heavy SDKs imported")
    for name in HANDLERS:
        samples = [sample(name) for _ in range(args.runs)]
        times = [float(s["ms"]) for s in samples]  # type: ignore[arg-type]
        heavy = ", ".join(samples[0]["heavy"]) or "-"  # type: ignore[arg-type]
        print(f"{name:<22}{statistics.median(times):>10.0f}{min(times):>8.0f}{max(times):>8.0f}  {heavy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
