"""`-o table|json|yaml` for every read command: one data shape, three renderings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

FORMATS = ("table", "json", "yaml")


def emit(data: Any, fmt: str, out: TextIO, table: str | None = None) -> None:
    """Print `data` as JSON or YAML, or print `table` (the human rendering) for `table`."""
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str), file=out)
    elif fmt == "yaml":
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip(), file=out)
    else:
        print(table if table is not None else json.dumps(data, indent=2, default=str), file=out)


def grid(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table (no colours: CI logs read it too)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """`3h 59m`, `12m 30s`, `45s`."""
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
