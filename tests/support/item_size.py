"""A DynamoDB item's size as DynamoDB counts it, for tests that check no item nears the 400 KB limit.

moto (5.2.5) refuses an item over 400 KB as DynamoDB does (ValidationException "Item size has exceeded
the maximum allowed size", on PutItem, BatchWriteItem and UpdateItem); counting here as well lets a
test say how far below the limit the largest item is. The rules, from the DynamoDB developer guide
("Item sizes and formats"): each attribute's name in UTF-8 bytes plus its value; a string its UTF-8
bytes; a number about one byte per two significant digits plus one; binary its bytes; a boolean or
null one byte; a list or map 3 bytes plus one per element, plus its elements (and a map's names).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

ITEM_LIMIT = 400 * 1024
"""DynamoDB's maximum item size in bytes."""


def _value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float | Decimal):
        digits = str(abs(Decimal(str(value)))).replace(".", "").lstrip("0") or "0"
        return (len(digits.rstrip("0") or "0") + 1) // 2 + 1
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, set | frozenset):
        return sum(_value_size(v) for v in value)
    if isinstance(value, list):
        return 3 + sum(1 + _value_size(v) for v in value)
    if isinstance(value, dict):
        return 3 + sum(1 + len(str(k).encode()) + _value_size(v) for k, v in value.items())
    if hasattr(value, "value"):  # boto3's Binary
        return len(value.value)
    raise TypeError(f"no DynamoDB size for a {type(value).__name__}")


def item_size(item: dict[str, Any]) -> int:
    """The size in bytes of `item` (a boto3 resource's item: str, Decimal, bytes, list, dict...)."""
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())
