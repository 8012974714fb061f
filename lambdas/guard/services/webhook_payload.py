"""Reading a GitLab webhook body that anyone holding the secret (or a bug) may have malformed.

Every field the webhook reads goes through here: a missing required field, a field of the wrong
JSON type, text that is not Unicode, or a value too long for a DynamoDB key is InvalidInput
(answered 400), never an AttributeError or a failed DynamoDB call (answered 5xx). Messages name
the field and the JSON type that arrived, and quote no more than a few dozen characters.
"""

from __future__ import annotations

import json
from typing import Any

from guard.core.quote import json_type
from guard.errors import InvalidInput

# A merge request URL becomes part of a DynamoDB partition key (`MR#<url>`, 2,048 bytes at most);
# GitLab's own URLs are far shorter.
URL_MAX_BYTES = 1_024


def json_object(body: str) -> dict[str, Any]:
    """The body parsed as a JSON object."""
    try:
        payload = json.loads(body or "")
    except ValueError as e:
        raise InvalidInput(f"webhook body is not JSON: {e}") from e
    except RecursionError as e:  # nesting deeper than the parser's stack
        raise InvalidInput("webhook body is not JSON: nested too deeply") from e
    if not isinstance(payload, dict):
        raise InvalidInput(f"webhook body is not a JSON object, got {json_type(payload)}")
    return payload


def child(parent: dict[str, Any], key: str, path: str, *, required: bool = False) -> dict[str, Any]:
    """`parent[key]` as an object; {} when absent (or null) and not required."""
    value = parent.get(key)
    if value is None:
        if required:
            raise InvalidInput(f"webhook body has no {path}")
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"webhook body: {path} must be an object, got {json_type(value)}")
    return value


def text(parent: dict[str, Any], key: str, path: str, *, required: bool = False,
         max_bytes: int | None = None) -> str | None:
    """`parent[key]` as a string; None when absent, null or empty and not required."""
    value = parent.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"webhook body has no {path}")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"webhook body: {path} must be a string, got {json_type(value)}")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as e:  # a lone surrogate ("\ud800"), which JSON allows and UTF-8 does not
        raise InvalidInput(f"webhook body: {path} is not valid Unicode text") from e
    if max_bytes is not None and size > max_bytes:
        raise InvalidInput(f"webhook body: {path} is longer than {max_bytes} bytes ({size})")
    return value


def integer(parent: dict[str, Any], key: str, path: str) -> int | None:
    """`parent[key]` as an integer (not a boolean); None when absent or null."""
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"webhook body: {path} must be an integer, got {json_type(value)}")
    return value
