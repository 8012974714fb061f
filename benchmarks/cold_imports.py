"""Bundle sizes and cold import per handler, measured on the bundles the packaging code builds.

    PYTHONPATH=lambdas:. python benchmarks/cold_imports.py [--runs 7] [--json out.json]
    make bench-cold

It builds every function's asset with the same code as `cdk synth` (infra/bundling.py: hash-locked
pip install, slimming, bytecode compiled by Python 3.12), for THIS machine's architecture so the
native wheels (pydantic-core, PyYAML) load here; the deployed assets are the arm64 twins of the same
files. Then, per bundle: its unzipped size (Lambda's limit is 250 MiB unzipped; GUARD's goal 100 MiB)
and whether every module has bytecode Lambda uses as is. Per handler, in a fresh Python 3.12 per sample
(`-I`, PYTHONDONTWRITEBYTECODE unset), with the asset first on sys.path as /var/task is on Lambda:

- `module`: importing the handler module, what Lambda's init phase does;
- `+ first call`: that plus every module the first invocation imports lazily. These are found, not
  listed by hand: (1) the `guard.runtime` builders the handler calls (`runtime.cluster_connector()`...),
  followed through the builders they call, give the modules those builders import; (2) every
  function-level import in the `guard` modules reached; (3) the SDK modules that building each SDK's
  client imports on first use (a boto3 DynamoDB resource and client, a Kubernetes ApiClient sending one
  request by path as the adapter does, a Datadog ApiClient with its MetricsApi/MonitorsApi, a python-gitlab client,
  the configured LLM client), read from sys.modules in a discovery process. Only one LLM SDK counts:
  the tenant's `llm.provider` (`--llm-provider`).

Before the clock starts, the probe imports the standard modules the Lambda runtime client has already
imported when it loads a handler (awslambdaric's bootstrap: json, logging, http.client, decimal,
traceback...), so they are not charged to the handler; `--no-runtime-preamble` charges them too.
boto3 comes with the Lambda runtime, not the asset: a stand-in of the pinned version (requirements.txt)
is installed and compiled under the build dir and put after the asset on sys.path.

Bytecode use is checked, not assumed: a sample with an audit hook counts the `.py` files the import
machinery opens and compiles under the asset and the runtime stand-in (both must be 0: every module came
from its `.pyc`), and the asset's file list is compared before and after all samples (no new `.pyc`).
A package that reads its own source on purpose (anyio's lazy importer calls inspect.getsource on its
`__init__`) is listed apart: that is why the bundles keep their sources next to the bytecode.
Each handler's `floor` is measured the same way with no GUARD code: pydantic and Powertools' Logger, then every
SDK the handler's first call uses, imported and its client built as the adapters do (FLOOR_BASE, FIRST_USE). No
handler using those SDKs can be faster; `GUARD` (total - floor) is the share GUARD's own code adds.
Exit 1 when a bundle exceeds 100 MiB, lacks bytecode, or an import reads or compiles source;
`--check-goal` also fails on a median over 150 ms.
Figures: docs/scale.md, "Cold start and bundle size".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas"), str(ROOT)]

from guard.config.loader import load_config  # noqa: E402

from infra.bundling import LocalPipBundler, bytecode_python, stage_source  # noqa: E402
from infra.functions import FUNCTIONS, FunctionSpec  # noqa: E402
from infra.handler_imports import LLM_MODULES, lazy_modules  # noqa: E402
from infra.locks import PYTHON_VERSION  # noqa: E402
from infra.naming import deployed_config  # noqa: E402
from infra.slimming import missing_bytecode, unzipped_size  # noqa: E402

MIB = 2**20
SIZE_GOAL_MIB = 100
LAMBDA_LIMIT_MIB = 250
COLD_GOAL_MS = 150
# What awslambdaric's bootstrap (the python3.12 runtime's client) imports before the handler module.
RUNTIME_PREAMBLE = ("importlib", "json", "logging", "os", "sys", "time", "traceback", "decimal", "math",
                    "datetime", "enum", "http", "http.client")
# The environment the stack gives every function (infra/lambda_functions.py) that modules read at import.
FUNCTION_ENV = {"GUARD_TENANT": "bench", "GUARD_CONFIG_FILE": "tenant/config.json",
                "GUARD_CHECKS_DIR": "tenant/checks", "GUARD_REGISTRY_TABLE": "registry",
                "GUARD_STATE_TABLE": "state", "POWERTOOLS_SERVICE_NAME": "guard",
                "POWERTOOLS_METRICS_NAMESPACE": "GUARD", "POWERTOOLS_LOG_LEVEL": "INFO",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
# Building each SDK's client the way the adapters do, offline: what it imports on first use.
FIRST_USE = {
    "boto3": "import boto3\ns = boto3.session.Session(region_name='us-east-1')\n"
             "s.resource('dynamodb'); s.client('dynamodb'); s.client('secretsmanager')",
    # The adapter requests by path through ApiClient (no typed API class): one request, refused by a closed
    # port, imports what sending and failing import.
    "kubernetes": "from kubernetes.client.api_client import ApiClient\n"
                  "from kubernetes.client.configuration import Configuration\n"
                  "c = ApiClient(Configuration(host='https://127.0.0.1:9', retries=0))\n"
                  "try:\n    c.call_api(*c.param_serialize('GET', '/api/v1/nodes', query_params=[('limit', 500)], "
                  "header_params={'Accept': 'application/json'}, auth_settings=['BearerToken']), _request_timeout=1)\n"
                  "except Exception:\n    pass",
    "datadog_api_client": "from datadog_api_client import ApiClient, Configuration\n"
                          "from datadog_api_client.v1.api.monitors_api import MonitorsApi\n"
                          "from datadog_api_client.v2.api.metrics_api import MetricsApi\n"
                          "c = ApiClient(Configuration()); MonitorsApi(c); MetricsApi(c)",
    "gitlab": "import gitlab\ngitlab.Gitlab('https://127.0.0.1', private_token='x')",
    "openai": "import openai\nopenai.OpenAI(api_key='x', base_url='http://127.0.0.1')",
    "anthropic": "import anthropic\nanthropic.Anthropic(api_key='x', base_url='http://127.0.0.1')",
}

# The floor under a handler, with no GUARD code: what the required packages cost before GUARD does anything. Every
# handler imports pydantic (every GUARD model is one) and Powertools' Logger (DESIGN.md's logging); one that reads a
# table or a secret adds the runtime's boto3/botocore as the stores use them, and each vendor SDK it calls adds that
# SDK's import and client (FIRST_USE). A handler cannot start faster than the floor of its SDKs with these packages,
# so `total - floor` is GUARD's own share, the part GUARD's code can change.
FLOOR_BASE = ["pydantic.main", "aws_lambda_powertools.logging.logger"]
FLOOR_IMPORTS = {"boto3": ["boto3", "boto3.dynamodb.conditions"]}

# Imports every name; `from a.b import C` names a.b.C, an attribute, anything else missing is a module the
# bundle lacks.
IMPORT_ALL = """
def import_all(names):
    missing = []
    for m in names:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            parent, _, attr = m.rpartition('.')
            if e.name != m or not hasattr(sys.modules.get(parent), attr):
                missing.append(m)
    return missing
"""

DISCOVER = """
import importlib, json, sys
sys.path[:0] = {paths!r}
""" + IMPORT_ALL + """
assert not import_all({modules!r})
before = set(sys.modules)
sdks = sorted(p for p in {first_use!r} if p in sys.modules)
for package, code in {first_use!r}.items():
    if package in sys.modules:
        exec(code, {{}})
print(json.dumps({{"modules": sorted(set(sys.modules) - before), "sdks": sdks}}))
"""

PROBE = """
import sys
{preamble}
import importlib, json, time
sys.path[:0] = {paths!r}
""" + IMPORT_ALL + """
audit = {audit!r}
roots = tuple(sys.path[:{n_paths}])
reads, compiles, by_package = [], [], []
def by_import_system():
    # The innermost frames are the import machinery's own (a .pyc it could not use), or else a package's
    # code reading its source on purpose (anyio's lazy importer runs inspect.getsource on itself).
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith('<frozen importlib'):
        if frame.f_code.co_name in ('get_data', 'get_code', 'source_to_code'):
            return True
        frame = frame.f_back
    return False
if audit:
    def hook(event, args):
        if event == 'open' and isinstance(args[0], str) and args[0].endswith('.py') and args[0].startswith(roots):
            (reads if by_import_system() else by_package).append(args[0])
        elif event == 'compile' and isinstance(args[1], str) and args[1].startswith(roots):
            (compiles if by_import_system() else by_package).append(args[1])
    sys.addaudithook(hook)
start, cpu_start = time.perf_counter(), time.process_time()
importlib.import_module({handler!r})
cpu_module = time.process_time()
missing = import_all({lazy!r})
done, cpu_done = time.perf_counter(), time.process_time()
print(json.dumps({{"module_ms": (cpu_module - cpu_start) * 1000, "total_ms": (cpu_done - cpu_start) * 1000,
                   "wall_ms": (done - start) * 1000,
                   "py_reads": reads[:5], "n_py_reads": len(reads), "compiles": compiles[:5],
                   "n_compiles": len(compiles), "missing": missing,
                   "read_by_package": sorted(set(f[len(roots[0]) + 1:] for f in by_package))}}))
"""


# ------------------------------------------------------------------ building


def build_assets(build: Path, tenant_file: Path, arch: str) -> dict[tuple[str, ...], Path]:
    config = load_config(tenant_file)
    source = stage_source(lambdas_dir=ROOT / "lambdas",
                          tenant_config=deployed_config(config, "123456789012").model_dump(mode="json",
                                                                                          by_alias=True),
                          checks_dir=tenant_file.parent / config.custom_checks_path, dest=build / "src")
    assets = {}
    for groups in sorted({spec.groups for spec in FUNCTIONS}):
        out = build / "assets" / "+".join(groups)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        LocalPipBundler(source_dir=source, groups=groups, architecture=arch,
                        cache_dir=ROOT / ".build" / "deps").try_bundle(str(out))
        assets[groups] = out
    return assets


def runtime_standin(build: Path, python: str, arch: str) -> Path:
    """boto3 as the Lambda runtime has it (outside the asset), pinned as requirements.txt pins it, compiled."""
    pin = next(line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("boto3=="))
    target = build / f"runtime-{pin}-{arch}"
    if not target.is_dir():
        scratch = Path(tempfile.mkdtemp(dir=build, prefix=".runtime-"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-compile", "-t", str(scratch), "--platform", f"manylinux2014_{arch}",
                        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:", pin],
                       check=True, timeout=600)
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
                        str(scratch)], check=True, capture_output=True, timeout=600)
        scratch.rename(target)
    return target


# ------------------------------------------------------------------ measuring


def _run(python: str, code: str, cwd: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(FUNCTION_ENV, LAMBDA_TASK_ROOT=str(cwd))
    out = subprocess.run([python, "-I", "-c", code], env=env, cwd=cwd, check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(python: str, spec: FunctionSpec, asset: Path, runtime: Path, runs: int, preamble: bool,
            llm_provider: str) -> dict[str, Any]:
    module = spec.handler.rpartition(".")[0]
    paths = [str(asset), str(runtime)]
    lazy = lazy_modules(module, ROOT / "lambdas", llm_provider)
    first_use = {p: c for p, c in FIRST_USE.items() if p not in LLM_MODULES or p == llm_provider}
    discovered = _run(python, DISCOVER.format(paths=paths, modules=[module, *lazy], first_use=first_use), asset)
    to_import = [*lazy, *discovered["modules"]]
    probe = PROBE.format(preamble="import " + ", ".join(RUNTIME_PREAMBLE) if preamble else "", paths=paths,
                         n_paths=len(paths), handler=module, lazy=to_import, audit=True)
    audited = _run(python, probe, asset)
    samples = [_run(python, probe.replace("audit = True", "audit = False"), asset) for _ in range(runs)]
    return {"function": spec.id, "handler": module, "lazy_modules": len(to_import),
            "module_ms": statistics.median(s["module_ms"] for s in samples),
            "total_ms": statistics.median(s["total_ms"] for s in samples),
            "total_min_ms": min(s["total_ms"] for s in samples), "total_max_ms": max(s["total_ms"] for s in samples),
            "wall_ms": statistics.median(s["wall_ms"] for s in samples),
            "py_reads": audited["n_py_reads"], "compiles": audited["n_compiles"], "missing": audited["missing"],
            "read_by_package": audited["read_by_package"],
            "examples": audited["py_reads"] + audited["compiles"],
            "sdks": discovered["sdks"]}


def measure_floor(python: str, asset: Path, runtime: Path, runs: int, preamble: bool,
                  sdks: tuple[str, ...]) -> dict[str, Any]:
    """The floor of a set of SDKs (FLOOR_BASE, then each SDK's imports and first use) in an asset that has them,
    measured as a handler is."""
    paths = [str(asset), str(runtime)]
    imports = [*FLOOR_BASE, *(m for sdk in sdks for m in FLOOR_IMPORTS.get(sdk, [sdk]))]
    discovered = _run(python, DISCOVER.format(paths=paths, modules=imports,
                                              first_use={sdk: FIRST_USE[sdk] for sdk in sdks}), asset)
    probe = PROBE.format(preamble="import " + ", ".join(RUNTIME_PREAMBLE) if preamble else "", paths=paths,
                         n_paths=len(paths), handler=imports[0], lazy=[*imports[1:], *discovered["modules"]],
                         audit=False)
    samples = [_run(python, probe, asset) for _ in range(runs)]
    return {"sdks": list(sdks), "total_ms": statistics.median(s["total_ms"] for s in samples),
            "total_min_ms": min(s["total_ms"] for s in samples), "total_max_ms": max(s["total_ms"] for s in samples)}


def breakdown(python: str, spec: FunctionSpec, asset: Path, runtime: Path,
              llm_provider: str) -> list[tuple[str, float]]:
    """Self import time per top-level package (ms, under `-X importtime`) of the handler's first call."""
    module = spec.handler.rpartition(".")[0]
    paths = [str(asset), str(runtime)]
    lazy = lazy_modules(module, ROOT / "lambdas", llm_provider)
    first_use = {p: c for p, c in FIRST_USE.items() if p not in LLM_MODULES or p == llm_provider}
    discovered = _run(python, DISCOVER.format(paths=paths, modules=[module, *lazy], first_use=first_use), asset)
    probe = PROBE.format(preamble="import " + ", ".join(RUNTIME_PREAMBLE), paths=paths, n_paths=len(paths),
                         handler=module, lazy=[*lazy, *discovered["modules"]], audit=False)
    # The preamble's modules are imported before the marker and not counted.
    probe = probe.replace("start, cpu_start =", "print('--start--', file=sys.stderr)\nstart, cpu_start =")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(FUNCTION_ENV, LAMBDA_TASK_ROOT=str(asset))
    err = subprocess.run([python, "-I", "-X", "importtime", "-c", probe], env=env, cwd=asset, check=True,
                         capture_output=True, text=True, timeout=120).stderr
    totals: dict[str, float] = {}
    for line in err.split("--start--", 1)[1].splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) == 3 and fields[0].strip().isdigit():
            package = fields[2].strip().split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(fields[0]) / 1000
    return sorted(totals.items(), key=lambda kv: -kv[1])


def _files(tree: Path) -> set[str]:
    return {str(p.relative_to(tree)) for p in tree.rglob("*")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="samples per handler (fresh interpreter each)")
    parser.add_argument("--tenant", type=Path, default=ROOT / "config" / "example.yaml")
    parser.add_argument("--llm-provider", choices=sorted(LLM_MODULES), default="openai")
    parser.add_argument("--no-runtime-preamble", action="store_true",
                        help="charge the runtime client's standard imports to the handler too")
    parser.add_argument("--only", nargs="*", help="function ids to measure (default: all)")
    parser.add_argument("--check-goal", action="store_true", help=f"exit 1 when a median exceeds {COLD_GOAL_MS} ms")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--breakdown", nargs="*", default=[], metavar="FUNCTION",
                        help="also print where these functions' import time goes, per package (-X importtime)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine().lower()]
    build = ROOT / ".build" / "bench-cold"
    build.mkdir(parents=True, exist_ok=True)
    python = bytecode_python()
    assets = build_assets(build, args.tenant, arch)
    runtime = runtime_standin(build, python, "aarch64" if arch == "arm64" else arch)
    failures: list[str] = []

    print(f"Bundles ({arch}, bytecode by {python}); limits: Lambda {LAMBDA_LIMIT_MIB} MiB unzipped, goal "
          f"{SIZE_GOAL_MIB} MiB")
    print(f"{'groups':<28}{'MiB':>7}{'files':>8}{'no .pyc':>9}  functions")
    bundles = []
    for groups, asset in assets.items():
        size, missing = unzipped_size(asset) / MIB, missing_bytecode(asset)
        users = [s.id for s in FUNCTIONS if s.groups == groups]
        bundles.append({"groups": "+".join(groups), "mib": round(size, 1), "missing_bytecode": len(missing),
                        "functions": users})
        print(f"{'+'.join(groups):<28}{size:>7.1f}{sum(1 for _ in asset.rglob('*')):>8}{len(missing):>9}  "
              f"{', '.join(users)}")
        if size > SIZE_GOAL_MIB:
            failures.append(f"{'+'.join(groups)}: {size:.1f} MiB > {SIZE_GOAL_MIB}")
        if missing:
            failures.append(f"{'+'.join(groups)}: no bytecode for {missing[:3]}")

    before = {groups: _files(asset) for groups, asset in assets.items()}
    print(f"\nCold import, Python {PYTHON_VERSION}: CPU ms, median of {args.runs} fresh interpreters (wall: median "
          f"elapsed, inflated on a busy machine); runtime preamble "
          f"{'charged' if args.no_runtime_preamble else 'excluded'}; goal {COLD_GOAL_MS} ms")
    print(f"{'function':<20}{'module':>8}{'+first call':>12}{'min':>7}{'max':>7}{'wall':>7}{'floor':>7}{'GUARD':>7}"
          f"{'lazy':>6}{'.py read':>9}{'compiled':>9}  SDKs")
    handlers = []
    floors: dict[tuple[str, ...], dict[str, Any]] = {}
    for spec in FUNCTIONS:
        if args.only and spec.id not in args.only:
            continue
        row = measure(python, spec, assets[spec.groups], runtime, args.runs, not args.no_runtime_preamble,
                      args.llm_provider)
        sdks = tuple(row["sdks"])
        if sdks not in floors:
            floors[sdks] = measure_floor(python, assets[spec.groups], runtime, args.runs,
                                         not args.no_runtime_preamble, sdks)
        row["floor_ms"] = floors[sdks]["total_ms"]
        row["guard_ms"] = row["total_ms"] - row["floor_ms"]
        handlers.append(row)
        flag = " *" if row["total_ms"] > COLD_GOAL_MS else ""
        print(f"{spec.id:<20}{row['module_ms']:>8.0f}{row['total_ms']:>12.0f}{row['total_min_ms']:>7.0f}"
              f"{row['total_max_ms']:>7.0f}{row['wall_ms']:>7.0f}{row['floor_ms']:>7.0f}{row['guard_ms']:>7.0f}"
              f"{row['lazy_modules']:>6}{row['py_reads']:>9}"
              f"{row['compiles']:>9}  "
              f"{', '.join(row['sdks']) or '-'}{flag}")
        if row["read_by_package"]:
            print(f"{'':<20}(a package reads its own source on purpose: {', '.join(row['read_by_package'])})")
        if row["missing"]:
            failures.append(f"{spec.id}: not importable from its bundle: {row['missing'][:5]}")
        if row["py_reads"] or row["compiles"]:
            failures.append(f"{spec.id}: imports read or compiled source: {row['examples']}")
        if args.check_goal and row["total_ms"] > COLD_GOAL_MS:
            failures.append(f"{spec.id}: {row['total_ms']:.0f} ms > {COLD_GOAL_MS} ms")
    print(f"\nFloor per SDK set (pydantic and Powertools' Logger, then each SDK imported and its client built as the "
          f"adapters do; no GUARD code): CPU ms, median of {args.runs}")
    for sdks, floor in sorted(floors.items(), key=lambda kv: kv[1]["total_ms"]):
        flag = " *" if floor["total_ms"] > COLD_GOAL_MS else ""
        print(f"  {', '.join(sdks) or '(none)':<40}{floor['total_ms']:>6.0f}  (min {floor['total_min_ms']:.0f}, "
              f"max {floor['total_max_ms']:.0f}){flag}")
    for groups, asset in assets.items():
        written = _files(asset) - before[groups]
        if written:
            failures.append(f"{'+'.join(groups)}: the imports wrote {sorted(written)[:3]}")
    for function_id in args.breakdown:
        spec = next(s for s in FUNCTIONS if s.id == function_id)
        parts = breakdown(python, spec, assets[spec.groups], runtime, args.llm_provider)
        print(f"\n{function_id}: self import time per package under -X importtime (ms; total "
              f"{sum(ms for _, ms in parts):.0f})")
        print("  " + ", ".join(f"{name} {ms:.0f}" for name, ms in parts[:14]))
    print(f"\n* over the {COLD_GOAL_MS} ms goal. No new file in any asset after the samples: "
          f"{'yes' if not any('wrote' in f for f in failures) else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"arch": arch, "python": python, "runs": args.runs,
                                         "runtime_preamble_excluded": not args.no_runtime_preamble,
                                         "bundles": bundles, "handlers": handlers,
                                         "floors": [{**f, "sdks": list(k)} for k, f in floors.items()]},
                                        indent=2) + "\n")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
