"""What a handler imports, found statically: at module import, and lazily on its first call.

Used by benchmarks/cold_imports.py (to import the first call's modules when timing a cold start) and by
tests/infra/test_bundling.py (every package a function's code imports is in its dependency lock).
The first call's lazy imports are the `guard.runtime` builders the handler calls (followed through the
builders they call) and every function-level import of the `guard` modules reached; only the configured
LLM provider's analyst counts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

LLM_MODULES = {"openai": "guard.llm.openai_analyst", "anthropic": "guard.llm.anthropic_analyst"}
CODE_PACKAGES = ("guard", "handlers")



def _imports(nodes: Iterable[ast.AST], package: str) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _walk(node: ast.AST) -> Iterable[ast.AST]:
    """ast.walk without the bodies of `if TYPE_CHECKING:` (never run)."""
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            continue
        yield child
        yield from _walk(child)


@cache
def _parsed(file: Path) -> ast.Module:
    return ast.parse(file.read_text(), str(file))


def _module_file(module: str, base: Path) -> Path | None:
    path = base.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def lazy_modules(handler_module: str, code: Path, llm_provider: str) -> list[str]:
    """What the handler's first call imports beyond its module import (see the module docstring)."""
    runtime_tree = _parsed(code / "guard" / "runtime.py")
    builders = {f.name: f for f in runtime_tree.body if isinstance(f, ast.FunctionDef)}
    handler_file = _module_file(handler_module, code)
    assert handler_file is not None, handler_module
    tree = _parsed(handler_file)
    called = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
              and n.value.id == "runtime" and n.attr in builders}
    seen: set[str] = set()
    while called - seen:
        name = (called - seen).pop()
        seen.add(name)
        called |= {n.id for n in ast.walk(builders[name]) if isinstance(n, ast.Name) and n.id in builders}
    lazy = set().union(*(_imports(_walk(builders[b]), "guard") for b in seen)) if seen else set()
    # Function-level imports of every guard module reached, to a fixed point.
    other_llm = {m for p, m in LLM_MODULES.items() if p != llm_provider}
    done: set[str] = set()
    todo = {handler_module} | lazy
    while todo:
        module = todo.pop()
        done.add(module)
        file = _module_file(module, code) if module.split(".")[0] in ("guard", "handlers") else None
        if file is None or module == "guard.runtime":
            continue
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        module_tree = _parsed(file)
        top = _imports((n for n in module_tree.body if not _is_type_checking(n)), package)
        inner = _imports((n for f in module_tree.body if isinstance(f, (ast.FunctionDef, ast.ClassDef))
                          for n in _walk(f)), package) - other_llm
        lazy |= inner
        todo |= {m for m in top | inner if _module_file(m, code) is not None} - done
    return sorted(m for m in lazy - other_llm if m.split(".")[0] not in ("guard", "handlers")
                  or _module_file(m, code) is not None)


def reachable_imports(handler_module: str, code: Path, llm_provider: str) -> set[str]:
    """Every module name the handler's import and its first call import: guard's, the SDKs', the stdlib's."""
    other_llm = {m for p, m in LLM_MODULES.items() if p != llm_provider}
    names = {handler_module, *lazy_modules(handler_module, code, llm_provider)}
    done: set[str] = set()
    todo = set(names)
    while todo:
        module = todo.pop()
        done.add(module)
        file = _module_file(module, code) if module.split(".")[0] in CODE_PACKAGES else None
        if file is None:
            continue
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        tree = _parsed(file)
        if module == "guard.runtime":  # its builders' imports count only when called (lazy_modules)
            statements: Iterable[ast.AST] = (n for stmt in tree.body
                                             if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
                                             and not _is_type_checking(stmt) for n in [stmt, *_walk(stmt)])
        else:
            statements = _walk(tree)
        found = _imports(statements, package) - other_llm
        names |= found
        todo |= {m for m in found if _module_file(m, code) is not None} - done
    return names - other_llm
