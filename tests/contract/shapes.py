"""Contracts: the fields of a vendor's published payload that GUARD relies on, with their JSON types.

A contract is a list of dotted paths. `[]` steps into every element of a list, `*` into every value of
an object keyed by data (monitor group names). `check(contract, published, actual)` says which paths
`actual` lacks or types differently from the published example: run on the published fixture itself
(the contract is grounded in the vendor's own example) and on what a simulator produced (so it cannot
drift from the real shape).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guard.core.quote import json_type

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """A published example; every fixture names its source in `_source`."""
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert loaded.get("_source"), f"{name} must name its source"
    return loaded


def body_of(loaded: dict[str, Any]) -> Any:
    """The payload without the `_source` / `_headers` notes (`_body` when the payload is not an object)."""
    if "_body" in loaded:
        return loaded["_body"]
    return {k: v for k, v in loaded.items() if not k.startswith("_")}


def values_at(document: Any, path: str) -> list[Any] | None:
    """Every value at `path`; None when a step is missing."""
    found = [document]
    for step in path.split("."):
        nxt: list[Any] = []
        for value in found:
            if step == "[]":
                if not isinstance(value, list):
                    return None
                nxt += value
            elif step == "*":
                if not isinstance(value, dict):
                    return None
                nxt += list(value.values())
            else:
                if not isinstance(value, dict) or step not in value:
                    return None
                nxt.append(value[step])
        found = nxt
    return found


def check(contract: list[str], published: Any, actual: Any, nullable: frozenset[str] = frozenset()) -> list[str]:
    """Problems of `actual` against `contract`, types taken from `published` (null allowed where published
    is null or the path is in `nullable`). Empty lists in `actual` are not errors (nothing to check)."""
    problems = []
    for path in contract:
        expected = values_at(published, path)
        got = values_at(actual, path)
        if not expected:
            problems.append(f"{path}: not in the published example (the contract is wrong)")
            continue
        if got is None:
            problems.append(f"{path}: missing")
            continue
        types = {json_type(v) for v in expected}
        for value in got:
            kind = json_type(value)
            if kind == "null" and ("null" in types or path in nullable):
                continue
            if kind not in types and not (types == {"null"} and path in nullable):
                problems.append(f"{path}: {kind}, published {sorted(types)}")
    return problems
