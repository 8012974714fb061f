"""What a function asset leaves out, and the bytecode it ships instead of compiling at cold start.

Lambda cannot write `.pyc` files into /var/task, so a bundle without bytecode compiles every module it
imports on every cold start. `compile_bytecode` compiles the asset with the runtime's Python (3.12) in
`unchecked-hash` mode: the asset zip resets file times, so timestamp-checked `.pyc` would be stale on
arrival; unchecked-hash `.pyc` are used as they are (the asset is read-only, its sources never change).

`prune` removes what no function imports, measured (benchmarks/bundles.py, docs/scale.md):
- the asyncio Kubernetes client (`kubernetes/aio`, 41 MB of sources) and the aiohttp stack only it needs;
- the Datadog API modules outside the static import closure of what `guard` imports from
  `datadog_api_client` (every `import` in a model, even inside a function, is followed);
- the Kubernetes client's typed API classes: GUARD calls the API through `ApiClient` by path and reads
  plain JSON (guard/adapters/kubernetes_api.py), so `KUBERNETES_APIS` keeps none (a test holds the adapters
  to this list);
- console scripts (`bin/`).

`lazy_kubernetes_init` replaces `kubernetes/__init__.py`, which imports client, config, dynamic, watch,
stream, utils, leaderelection and informer eagerly (kube_config, jsonschema, websocket... ~150 ms of a cold
start), by one that imports each submodule on first use (PEP 562): `from kubernetes.client.api_client
import ApiClient` then loads only the client. The package is otherwise unchanged, and the adapters work
with the unmodified package too (the dev venv and the tests use it).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

# Where Lambda unpacks the asset: compiled into the bytecode as the file name, so an asset built in any
# directory has the same bytes (and the same CDK asset hash).
TASK_ROOT = "/var/task"
# Distributions no function imports: the asyncio Kubernetes client's HTTP stack. Removed with every file
# their RECORD lists, so importlib.metadata does not report them installed.
UNUSED_DISTRIBUTIONS = ("aiohttp", "aiohttp-retry", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist",
                        "multidict", "propcache", "yarl")
UNUSED_PATHS = ("bin", "kubernetes/aio")
# Packages cut to the import closure of what the function code imports from them (generated API clients
# whose modules import each other explicitly).
# The kubernetes.client API classes the adapters use (guard/adapters/kubernetes_api.py, eks_connector.py):
# none, they request by path through ApiClient; tests/infra/test_slimming.py fails when an adapter uses one.
KUBERNETES_APIS: tuple[str, ...] = ()
# PEP 552: bit 0 = hash-based, bit 1 = check_source; unchecked-hash is 0b01.
UNCHECKED_HASH_FLAGS = 1
CLOSURE_PRUNED = {"datadog_api_client": ("datadog_api_client.v1", "datadog_api_client.v2")}


class SlimmingError(RuntimeError):
    """The bytecode compiler is missing or failed."""


def imported_modules(roots: Iterable[Path]) -> set[str]:
    """Every absolute module name an `import` under `roots` names (any nesting, `from a import b` gives
    `a` and `a.b`)."""
    found: set[str] = set()
    for root in roots:
        for file in sorted(root.rglob("*.py")) if root.is_dir() else []:
            found |= _imports_of(file, _module_name(file, root.parent))
    return found


def prune(site: Path, code_dirs: Iterable[Path]) -> None:
    """Remove from the installed dependencies `site` what no function code in `code_dirs` imports."""
    for name in UNUSED_PATHS:
        if (site / name).exists():
            shutil.rmtree(site / name) if (site / name).is_dir() else (site / name).unlink()
    for dist in UNUSED_DISTRIBUTIONS:
        _remove_distribution(site, dist)
    _prune_kubernetes_apis(site / "kubernetes" / "client" / "api")
    if (site / "kubernetes" / "__init__.py").is_file():
        lazy_kubernetes_init(site / "kubernetes" / "__init__.py")
    wanted = imported_modules(code_dirs)
    for package, prefixes in CLOSURE_PRUNED.items():
        if (site / package).is_dir():
            _prune_to_closure(site, package, prefixes, {m for m in wanted if m.split(".")[0] == package})


def compile_bytecode(python: str, directory: Path, ddir: str = TASK_ROOT) -> None:
    """Compile every module under `directory` for the runtime (`python` must be the runtime's version);
    `ddir` is where `directory` is on Lambda."""
    command = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash",
               "-d", ddir, str(directory)]
    # Deterministic bytecode: no per-run hash seed in the compiler's set/frozenset ordering.
    env = dict(os.environ, PYTHONHASHSEED="0")
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SlimmingError(f"compileall failed in {directory}:\n{(result.stdout + result.stderr)[-2000:]}")


def missing_bytecode(asset: Path, cache_tag: str = "cpython-312") -> list[str]:
    """The modules of `asset` that Lambda would compile at import: no `__pycache__/<name>.<cache_tag>.pyc`
    beside them, or one whose header asks to check the source's time stamp or hash (PEP 552 flags != 1)."""
    missing = []
    for source in sorted(asset.rglob("*.py")):
        compiled = source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"
        try:
            header = compiled.read_bytes()[:8]
        except OSError:
            header = b""
        if len(header) < 8 or int.from_bytes(header[4:8], "little") != UNCHECKED_HASH_FLAGS:
            missing.append(str(source.relative_to(asset)))
    return missing


def unzipped_size(asset: Path) -> int:
    """Bytes of every file in `asset`: what Lambda counts against its 250 MB unzipped limit."""
    return sum(f.stat().st_size for f in asset.rglob("*") if f.is_file() and not f.is_symlink())


def _module_name(file: Path, base: Path) -> str:
    parts = list(file.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_of(file: Path, module: str) -> set[str]:
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except SyntaxError:
        return set()
    package = module if file.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _prune_to_closure(site: Path, package: str, prefixes: tuple[str, ...], roots: set[str]) -> None:
    """Delete the modules under `prefixes` that no module reachable from `roots` (or from the rest of the
    package, which stays) imports."""
    files = {_module_name(f, site): f for f in (site / package).rglob("*.py")}
    prunable = {m for m in files if any(m == p or m.startswith(p + ".") for p in prefixes)}
    keep: set[str] = set()
    queue = [m for m in files if m not in prunable] + sorted(roots)
    while queue:
        module = queue.pop()
        for name in (module, *_parents(module)):
            if name in files and name not in keep:
                keep.add(name)
                queue.extend(_imports_of(files[name], name))
    for module in prunable - keep:
        files[module].unlink()
    for directory in sorted((site / package).rglob("*"), key=lambda p: -len(p.parts)):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def kubernetes_api_module(api_class: str) -> str:
    """CoreV1Api -> core_v1_api: the module of kubernetes.client.api that defines `api_class`."""
    return "".join(f"_{c.lower()}" if c.isupper() and i else c.lower() for i, c in enumerate(api_class))


def _prune_kubernetes_apis(api_dir: Path) -> None:
    if not api_dir.is_dir():
        return
    keep = {kubernetes_api_module(name) for name in KUBERNETES_APIS} | {"__init__"}
    missing = keep - {f.stem for f in api_dir.glob("*.py")}
    if missing:
        raise SlimmingError(f"kubernetes.client.api has no {', '.join(sorted(missing))}: check KUBERNETES_APIS")
    for module in api_dir.glob("*.py"):
        if module.stem not in keep:
            module.unlink()


# What kubernetes/__init__.py may hold for lazy_kubernetes_init to rewrite it: comments, the project and
# version assignments, and `from . import <submodule>` lines. Anything else fails the build (a new client
# release that does more at import must be looked at, not silently dropped).
_KUBERNETES_INIT_LINE = re.compile(r"(#.*|__project__ = .*|__version__ = .*|from \. import (?P<sub>\w+))?")
LAZY_KUBERNETES_INIT = """# Rewritten by GUARD's bundling (infra/slimming.py, lazy_kubernetes_init): the original
# imported every submodule below at `import kubernetes`; this imports each on first use (PEP 562), so a
# function that uses only kubernetes.client does not load kube_config, dynamic, watch, stream...
import importlib as _importlib

{assignments}
_SUBMODULES = {submodules!r}


def __getattr__(name):
    if name in _SUBMODULES:
        return _importlib.import_module("." + name, __name__)
    raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
"""


def lazy_kubernetes_init(init: Path) -> None:
    """Rewrite kubernetes/__init__.py to import its submodules on first use; SlimmingError when it holds
    anything but the lines it is known to hold."""
    text = init.read_text()
    if text.startswith("# Rewritten by GUARD"):
        return
    assignments, submodules = [], []
    for line in text.splitlines():
        match = _KUBERNETES_INIT_LINE.fullmatch(line.strip())
        if match is None:
            raise SlimmingError(f"{init}: unexpected line {line!r}: check lazy_kubernetes_init")
        if match.group("sub"):
            submodules.append(match.group("sub"))
        elif line.startswith("__"):
            assignments.append(line.strip())
    if not submodules:
        raise SlimmingError(f"{init}: no `from . import` line: check lazy_kubernetes_init")
    init.write_text(LAZY_KUBERNETES_INIT.format(assignments="\n".join(assignments), submodules=tuple(submodules)))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _remove_distribution(site: Path, dist: str) -> None:
    normalized = dist.lower().replace("-", "_")
    for info in site.glob("*.dist-info"):
        if info.name.split("-")[0].lower() != normalized:
            continue
        emptied: set[Path] = set()
        record = info / "RECORD"
        for line in record.read_text().splitlines() if record.is_file() else []:
            path = site / line.split(",")[0]
            if path.is_file() and info not in path.parents:
                path.unlink()
                emptied.update(p for p in path.parents if site in p.parents)
        shutil.rmtree(info)
        for directory in sorted(emptied, key=lambda p: -len(p.parts)):
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()


def main(argv: list[str]) -> int:
    """`python slimming.py ASSET CODE_DIR...`: the Docker fallback's slimming and compilation of an asset
    whose dependencies and code are already in place (run by the build image's Python 3.12)."""
    asset, code = Path(argv[0]), argv[1:]
    prune(asset, [asset / name for name in code])
    compile_bytecode(sys.executable, asset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
