"""Which functions write which table, derived from their code (a static scan), not from a hand-written list.

1. The stores of each table (`STORES`) are read: a method writes when it calls a DynamoDB write
   (put_item, update_item, delete_item, ...), uses Powertools idempotency (which records the
   delivery), or calls another writing method of its class.
2. From each function's handler module, every `guard`/`handlers` module it imports is followed
   (imports inside functions too), and so are the modules a `runtime.<builder>()` it calls imports
   in that builder's body: the builder decides which service a handler gets.
3. A function writes when any module reached calls a writing store method. Method names such as
   `put_run` say what they are; the generic names of RolloutStore (`put`, `update`), Deliveries
   (`once`) and ClusterRegistry (`put`) also exist on dicts and each other, so they count only on
   a receiver that names the store (`rollouts`, `deliveries`, `registry`).

The scan is per module, so it over-approximates: a function that imports a module with a write
counts as a writer even if it never calls that code path. It can grant too much, never too little.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

LAMBDAS = Path(__file__).resolve().parents[2] / "lambdas"
# table -> module -> class of every store on that table
STORES = {
    "state": {
        "guard.stores.state": "StateStore",
        "guard.stores.failure": "FailureStore",
        "guard.stores.rollouts": "RolloutStore",
        "guard.stores.deliveries": "Deliveries",
    },
    "registry": {"guard.stores.registry": "ClusterRegistry"},
}
STORE_MODULES = {module for stores in STORES.values() for module in stores}
DYNAMODB_WRITES = {"put_item", "update_item", "delete_item", "batch_write_item", "transact_write_items",
                   "batch_writer"}
IDEMPOTENCY_WRITES = {"idempotent_function", "idempotent", "DynamoDBPersistenceLayer"}
# Generic method names counted only on a receiver whose text names the store.
GENERIC_RECEIVERS = {"RolloutStore": "rollout", "Deliveries": "deliver", "ClusterRegistry": "registry"}


def _path(module: str) -> Path | None:
    base = LAMBDAS.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def _tree(module: str) -> ast.Module:
    path = _path(module)
    assert path is not None, module
    return ast.parse(path.read_text(), str(path))


def _called_attributes(node: ast.AST) -> set[str]:
    return {n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


@dataclass(frozen=True)
class WriteMethod:
    table: str
    store: str
    name: str

    @property
    def generic(self) -> bool:
        return "_" not in self.name


@cache
def write_methods() -> frozenset[WriteMethod]:
    """Every method of the stores that writes its table (step 1)."""
    found: set[WriteMethod] = set()
    for table, module, store in ((t, m, c) for t, stores in STORES.items() for m, c in stores.items()):
        cls = next(n for n in _tree(module).body if isinstance(n, ast.ClassDef) and n.name == store)
        methods = {f.name: f for f in cls.body if isinstance(f, ast.FunctionDef)}
        writes = {name for name, f in methods.items()
                  if _called_attributes(f) & DYNAMODB_WRITES or _names(f) & IDEMPOTENCY_WRITES}
        while True:  # a method calling a writing method of its own class writes too
            more = {name for name, f in methods.items() if name not in writes and _called_attributes(f) & writes}
            if not more:
                break
            writes |= more
        found |= {WriteMethod(table, store, name) for name in writes if not name.startswith("__")}
    return frozenset(found)


def _imports(node: ast.AST, package: str) -> set[str]:
    """The guard/handlers modules `node` imports (a `from pkg import name` may name a submodule)."""
    modules: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            modules |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = package.split(".")[: len(package.split(".")) - n.level + 1]
                base = ".".join([*parts, base] if base else parts)
            modules.add(base)
            modules |= {f"{base}.{a.name}" for a in n.names}
    return {m for m in modules if m.split(".")[0] in ("guard", "handlers") and _path(m)}


@cache
def _runtime_builders() -> dict[str, frozenset[str]]:
    """runtime builder -> the modules its body imports (and those of the builders it calls)."""
    functions = {f.name: f for f in _tree("guard.runtime").body if isinstance(f, ast.FunctionDef)}
    direct = {name: _imports(f, "guard") for name, f in functions.items()}
    calls = {name: {c for c in _names(f) if c in functions and c != name} for name, f in functions.items()}
    result = {}
    for name in functions:
        seen, todo, modules = {name}, [name], set()
        while todo:
            current = todo.pop()
            modules |= direct[current]
            for callee in calls[current] - seen:
                seen.add(callee)
                todo.append(callee)
        result[name] = frozenset(modules)
    return result


def _runtime_calls(tree: ast.AST) -> set[str]:
    """Names of `runtime.<builder>(...)` calls in a module."""
    return {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "runtime"}


@dataclass
class Reach:
    """The modules a function's code reaches and the state-table writes they call (step 2 and 3)."""

    modules: set[str] = field(default_factory=set)
    writes: dict[str, set[str]] = field(default_factory=dict)  # table -> {"module: Store.method"}

    def writes_table(self, table: str) -> bool:
        return bool(self.writes.get(table))


def reach(handler: str) -> Reach:
    """What the function whose handler is `handlers.<name>.handler` reaches."""
    start = handler.rsplit(".", 1)[0]
    found = Reach()
    todo = [start]
    builders = _runtime_builders()
    while todo:
        module = todo.pop()
        if module in found.modules:
            continue
        found.modules.add(module)
        tree = _tree(module)
        # The runtime's own imports are lazy, one set per builder: follow only the builders called.
        nxt = _imports(tree, module.rsplit(".", 1)[0]) if module != "guard.runtime" else set()
        for builder in _runtime_calls(tree):
            nxt |= builders.get(builder, frozenset())
        todo += sorted(nxt - found.modules)
    for module in found.modules:
        if module in STORE_MODULES:
            continue  # the stores define the writes; their callers make them
        for n in ast.walk(_tree(module)):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            for method in write_methods():
                if n.func.attr != method.name:
                    continue
                if method.generic and GENERIC_RECEIVERS[method.store] not in ast.unparse(n.func.value).lower():
                    continue
                found.writes.setdefault(method.table, set()).add(f"{module}: {method.store}.{method.name}")
    return found


def calls(handler: str, methods: set[str]) -> set[str]:
    """Which of `methods` the code a function reaches calls, outside the stores ("module: method")."""
    return {f"{module}: {n.func.attr}" for module in reach(handler).modules if module not in STORE_MODULES
            for n in ast.walk(_tree(module))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in methods}
