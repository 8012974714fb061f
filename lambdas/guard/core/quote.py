"""Quoting a value someone sent inside an error message, at a bounded length.

An error message travels as a Lambda error's cause into the execution's history and state
(256 KB at most), to GitLab and to people: it names the bad value, never copies all of it.
"""

from __future__ import annotations

from typing import Any

LIMIT = 60


def quoted(value: Any, limit: int = LIMIT) -> str:
    """`'1.20'`, or `'dddd…' (200000 characters)` when the text is longer than `limit`."""
    text = str(value)
    if len(text) <= limit:
        return f"'{text}'"
    return f"'{text[:limit]}…' ({len(text)} characters)"


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, boolean, null)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
