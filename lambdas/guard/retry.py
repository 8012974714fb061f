"""The one retry policy for calls to clusters and vendors inside a task.

Owned by the work on faults ("Truth under faults"). Until that lands it keeps the
behaviour GUARD had: inside a poll, a `TransientError` reading one cluster means "not yet"
and the next poll tries again; any other error is a real failure and propagates, so the
state machine's Retry/Catch (which match the same names) decide.
"""

from __future__ import annotations

from guard.errors import TransientError

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (TransientError,)


def is_transient(error: BaseException) -> bool:
    """Whether `error` is worth trying again later rather than failing the stage now."""
    return isinstance(error, TRANSIENT_ERRORS)
