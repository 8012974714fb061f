"""What a bundle leaves out and the bytecode it ships (infra/slimming.py), offline and in seconds.

The full bundles (sizes, cold import per handler) are measured by benchmarks/cold_imports.py: building
all of them installs every dependency group and takes minutes, too slow for `make test`.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from infra.bundling import bytecode_python
from infra.slimming import (
    KUBERNETES_APIS,
    SlimmingError,
    compile_bytecode,
    imported_modules,
    kubernetes_api_module,
    lazy_kubernetes_init,
    missing_bytecode,
    prune,
)

pytestmark = pytest.mark.infra

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_kept_kubernetes_apis_are_the_ones_the_adapters_use() -> None:
    # GIVEN every `k8s.<Something>Api` the adapters name (k8s is kubernetes.client), and every kubernetes
    # module they import
    used = set()
    for file in (LAMBDAS / "guard").rglob("*.py"):
        tree = ast.parse(file.read_text())
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                 and n.value.id == "k8s" and re.fullmatch(r"[A-Z]\w*Api", n.attr)}
    modules = {m for m in imported_modules([LAMBDAS / "guard", LAMBDAS / "handlers"]) if m.startswith("kubernetes")}
    # WHEN compared with the API groups a bundle keeps THEN none is missing (and none kept for nothing)
    assert modules, "the adapters import nothing from kubernetes: the scan is broken"
    assert used == set(KUBERNETES_APIS)
    # AND they reach no typed API class another way (a module of kubernetes.client.api, or `kubernetes.client`
    # itself, whose attributes are the API classes): they request by path through ApiClient
    assert modules <= {"kubernetes.client.api_client", "kubernetes.client.api_client.ApiClient",
                       "kubernetes.client.configuration", "kubernetes.client.configuration.Configuration",
                       "kubernetes.client.exceptions", "kubernetes.client.exceptions.ApiException"}, modules
    # AND the module names follow kubernetes.client.api's
    assert kubernetes_api_module("AdmissionregistrationV1Api") == "admissionregistration_v1_api"
    assert kubernetes_api_module("CustomObjectsApi") == "custom_objects_api"


# kubernetes/__init__.py as kubernetes 37 ships it (license header shortened).
KUBERNETES_INIT = """# Copyright 2022 The Kubernetes Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");

__project__ = 'kubernetes'
# The version is auto-updated. Please do not edit.
__version__ = "37.0.1"

from . import client
from . import config
from . import watch
"""


def test_kubernetes_init_is_rewritten_to_import_its_submodules_on_first_use(tmp_path: Path) -> None:
    # GIVEN the client's eager __init__ and submodules that record their import
    site = tmp_path / "site"
    _write(site, {"kubernetes/__init__.py": KUBERNETES_INIT,
                  **{f"kubernetes/{sub}/__init__.py": "import builtins\nbuiltins.LOADED.append(__name__)\n"
                     for sub in ("client", "config", "watch")},
                  "kubernetes/client/api_client.py": "class ApiClient: ...\n"})
    # WHEN the bundle's slimming rewrites it
    lazy_kubernetes_init(site / "kubernetes" / "__init__.py")
    lazy_kubernetes_init(site / "kubernetes" / "__init__.py")  # a second run leaves it as it is
    # THEN importing the client loads the client only; the version stays; other submodules load when used
    probe = (f"import builtins, sys; builtins.LOADED = []; sys.path.insert(0, {str(site)!r})\n"
             "import kubernetes\nfrom kubernetes.client.api_client import ApiClient\n"
             "print(kubernetes.__version__, builtins.LOADED)\n"
             "kubernetes.config\nprint(builtins.LOADED, 'watch' in dir(kubernetes))\n"
             "try:\n    kubernetes.nothing\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([bytecode_python(), "-I", "-c", probe], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == ["37.0.1 ['kubernetes.client']", "['kubernetes.client', 'kubernetes.config'] True",
                   "module 'kubernetes' has no attribute 'nothing'"]


def test_a_kubernetes_init_doing_more_than_importing_submodules_fails_the_build(tmp_path: Path) -> None:
    # GIVEN a client release whose __init__ runs code at import
    _write(tmp_path, {"kubernetes/__init__.py": KUBERNETES_INIT + "client.setup()\n"})
    # WHEN / THEN the slimming refuses to drop it, naming the line
    with pytest.raises(SlimmingError, match=r"unexpected line 'client.setup\(\)'"):
        lazy_kubernetes_init(tmp_path / "kubernetes" / "__init__.py")


def test_prune_keeps_the_import_closure_of_what_the_code_imports(tmp_path: Path) -> None:
    # GIVEN an installed generated client: two models used through an API module (one only inside a
    # function, as generated models import each other), one unused API and model, and the asyncio stack
    site, code = tmp_path / "site", tmp_path / "code"
    _write(site, {
        "datadog_api_client/__init__.py": "from datadog_api_client.api_client import ApiClient\n",
        "datadog_api_client/api_client.py": "",
        "datadog_api_client/v2/__init__.py": "",
        "datadog_api_client/v2/api/__init__.py": "",
        "datadog_api_client/v2/api/metrics_api.py": "from datadog_api_client.v2.model.query import Query\n",
        "datadog_api_client/v2/api/logs_api.py": "from datadog_api_client.v2.model.log import Log\n",
        "datadog_api_client/v2/model/__init__.py": "",
        "datadog_api_client/v2/model/query.py": "def types():\n    from .formula import Formula\n",
        "datadog_api_client/v2/model/formula.py": "",
        "datadog_api_client/v2/model/log.py": "",
        "kubernetes/aio/__init__.py": "import aiohttp\n",
        "kubernetes/client/api/__init__.py": "",
        **{f"kubernetes/client/api/{kubernetes_api_module(n)}.py": "" for n in KUBERNETES_APIS},
        "kubernetes/client/api/core_v1_api.py": "",
        "kubernetes/client/api/batch_v1_api.py": "",
        "aiohttp/__init__.py": "",
        "aiohttp-3.0.dist-info/RECORD": "aiohttp/__init__.py,,\naiohttp-3.0.dist-info/RECORD,,\n",
        "yaml/__init__.py": "",
    })
    _write(code, {"guard/metrics.py": "def f():\n    from datadog_api_client.v2.api.metrics_api import MetricsApi\n"})
    # WHEN it is pruned for that code
    prune(site, [code / "guard"])
    kept = {str(p.relative_to(site)) for p in site.rglob("*.py")}
    # THEN what the code reaches stays, following imports inside functions and relative ones
    assert {"datadog_api_client/v2/api/metrics_api.py", "datadog_api_client/v2/model/query.py",
            "datadog_api_client/v2/model/formula.py", "datadog_api_client/api_client.py",
            "yaml/__init__.py"} <= kept
    # AND what nothing reaches is gone: the unused API and model, the asyncio client, aiohttp and its metadata
    assert not kept & {"datadog_api_client/v2/api/logs_api.py", "datadog_api_client/v2/model/log.py",
                       "kubernetes/client/api/batch_v1_api.py", "kubernetes/client/api/core_v1_api.py",
                       "kubernetes/aio/__init__.py", "aiohttp/__init__.py"}
    assert not (site / "aiohttp-3.0.dist-info").exists() and not (site / "aiohttp").exists()


def test_imported_modules_resolves_relative_imports(tmp_path: Path) -> None:
    # GIVEN a package with a relative import WHEN scanned THEN it is named absolutely
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from .b import c\nimport os\n"})
    assert {"pkg.b", "pkg.b.c", "os"} <= imported_modules([tmp_path / "pkg"])


def test_bytecode_is_unchecked_hash_for_the_runtime_and_timestamped_bytecode_is_refused(tmp_path: Path) -> None:
    # GIVEN a module compiled the way bundles are (Python 3.12, unchecked-hash)
    python = bytecode_python()
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/mod.py": "X = 1\n"})
    compile_bytecode(python, tmp_path)
    # THEN no module lacks usable bytecode
    assert missing_bytecode(tmp_path) == []
    # AND the interpreter imports it without reading the source, even with a source newer than the .pyc
    (tmp_path / "pkg" / "mod.py").write_text("X = 2\n")  # not checked: the .pyc is used as it is
    probe = ("import sys; events = []; sys.addaudithook(lambda e, a: events.append(e) if e == 'compile' else None);"
             f"sys.path.insert(0, {str(tmp_path)!r}); import pkg.mod; print(pkg.mod.X, len(events))")
    out = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "0"]
    # WHEN a module has only timestamp bytecode (what plain compileall writes) THEN it counts as missing
    subprocess.run([python, "-m", "compileall", "-q", "-f", "--invalidation-mode", "timestamp", str(tmp_path)],
                   check=True, capture_output=True)
    assert missing_bytecode(tmp_path) == ["pkg/__init__.py", "pkg/mod.py"]


def test_the_staged_slimming_runs_standalone_as_the_docker_fallback_does(tmp_path: Path) -> None:
    # GIVEN an asset with dependencies and code in place, and slimming.py copied out of the repo
    asset = tmp_path / "asset"
    _write(asset, {"kubernetes/aio/__init__.py": "", "guard/__init__.py": "", "handlers/h.py": "import guard\n"})
    script = tmp_path / "slimming.py"
    script.write_text((Path(__file__).resolve().parents[2] / "infra" / "slimming.py").read_text())
    # WHEN the build image's Python would run it (stdlib only, no infra package on the path)
    subprocess.run([bytecode_python(), "-I", str(script), str(asset), "guard", "handlers", "tenant"], check=True,
                   capture_output=True, text=True, timeout=120)
    # THEN the asset is pruned and compiled
    assert not (asset / "kubernetes" / "aio").exists()
    assert missing_bytecode(asset) == []
