"""The one retry policy for every call GUARD makes to GitLab, Datadog, the clusters, DynamoDB, the
LLM and Slack ("retry before you judge").

How it divides the work:
- An adapter maps its vendor's failure to `TransientError` (timeouts, 429, 5xx, connection
  trouble) or `ExternalServiceError` (a refusal a retry will not fix), and, when the vendor
  said how long to wait (`Retry-After`, Datadog's `X-RateLimit-Reset`), puts that on the
  error as `retry_after`.
- `RetryPolicy.call` retries a `TransientError` with capped exponential backoff and full
  jitter, or sleeps exactly as long as the vendor asked. It never sleeps past the Lambda's
  budget (`lambda_budget`), and never more than `max_inline_wait_seconds` in one go.
- A wait longer than that leaves as `RateLimited`, carrying its length: the state machine
  catches it and waits it out with a `Wait` state (statemachines/build.py `wait_out_error`),
  then runs the task again. An hour's Datadog reset is waited out, not turned into a failure.
- When the attempts run out, the last `TransientError` propagates. The caller decides what
  that means: a check becomes *inconclusive* with the reason (never "fail"); a poll reads it as
  "not yet"; a task lets the state machine's own Retry (the same error names) try again.

DynamoDB and the other AWS APIs keep botocore's own retries (`AWS_RETRIES`, standard mode):
botocore already backs off with jitter on throttling and 5xx, and sees the response headers.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from guard.errors import RateLimited, TransientError

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (TransientError,)

# botocore's retry settings for every AWS client GUARD builds (DynamoDB, Step Functions, SNS, STS):
# standard mode retries throttling, 5xx and connection errors with jittered backoff.
AWS_RETRIES: dict[str, Any] = {"mode": "standard", "max_attempts": 5}

# When the current Lambda invocation must have answered (time.monotonic()); None outside Lambda.
_deadline: ContextVar[float | None] = ContextVar("guard_retry_deadline", default=None)

# Left for the task to record its result and answer after the last wait.
_ANSWER_RESERVE_SECONDS = 5.0


def is_transient(error: BaseException) -> bool:
    """Whether `error` is worth trying again later rather than failing the stage now."""
    return isinstance(error, TRANSIENT_ERRORS)


def seconds_left() -> float:
    """Seconds this invocation may still spend waiting (infinite outside a Lambda budget)."""
    deadline = _deadline.get()
    return math.inf if deadline is None else deadline - time.monotonic()


@contextmanager
def lambda_budget(context: Any) -> Iterator[None]:
    """Bounds every retry wait inside the block by the Lambda's remaining time (minus a reserve
    for the answer). `context` is the Lambda context; without `get_remaining_time_in_millis` the
    block is unbounded (a local call)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        yield
        return
    token = _deadline.set(time.monotonic() + remaining() / 1000 - _ANSWER_RESERVE_SECONDS)
    try:
        yield
    finally:
        _deadline.reset(token)


def with_lambda_budget(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Decorator form of `lambda_budget` for a Lambda handler `(event, context)`."""
    from functools import wraps

    @wraps(handler)
    def bounded(event: Any, context: Any) -> T:
        with lambda_budget(context):
            return handler(event, context)

    return bounded


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a call is tried again before its failure is reported.

    `attempts` counts the first call. Backoff before attempt n+1 is uniform in
    [0, min(cap, base · 2^(n-1))] ("full jitter"), unless the vendor asked for a wait.
    """

    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 8.0
    max_inline_wait_seconds: float = 20.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number `attempt` (1-based)."""
        return self.rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """`fn()`, tried again on `TransientError` as the policy says.

        Raises `RateLimited` when the vendor asks for a wait longer than the policy waits inline
        (or longer than the budget left); the last `TransientError`, with the attempt count in
        its message, when the attempts run out; anything else at once.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except RateLimited:
                raise  # already decided by an inner policy
            except TransientError as e:
                asked = e.retry_after
                wait = asked if asked is not None else self.backoff(attempt)
                if asked is not None and (asked > self.max_inline_wait_seconds or asked > seconds_left()):
                    raise RateLimited.after(asked, f"{operation}: {e}") from e
                if attempt == self.attempts or wait > seconds_left():
                    raise e.again(f"{operation}: {e} (gave up after {attempt} attempt(s))") from e
                self.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A `Retry-After` header's wait in seconds: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
    None when absent or unreadable (then the policy backs off on its own)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def policy(sleep: Callable[[float], None] | None = None, **overrides: Any) -> RetryPolicy:
    """The project's policy, sleeping with `sleep` (a clock's, so the rehearsal compresses waits)."""
    return RetryPolicy(sleep=sleep or time.sleep, **overrides)
