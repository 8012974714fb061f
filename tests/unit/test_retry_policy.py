"""The one retry policy (guard.retry): what is retried, how long it waits, and when it hands over."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from guard.errors import ExternalServiceError, RateLimited, TransientError
from guard.retry import RetryPolicy, lambda_budget, retry_after_seconds, seconds_left, with_lambda_budget


class Flaky:
    """A call that fails with the given errors, in order, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Context:
    """The part of a Lambda context the budget reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def recording(**overrides: Any) -> tuple[RetryPolicy, list[float]]:
    sleeps: list[float] = []
    return RetryPolicy(sleep=sleeps.append, rng=random.Random(7), **overrides), sleeps


def test_a_transient_failure_is_retried_with_jittered_growing_backoff() -> None:
    # GIVEN a call that fails three times with a 503
    policy, sleeps = recording()
    call = Flaky(*(TransientError("HTTP 503") for _ in range(3)))

    # WHEN it runs under the policy
    answer = policy.call("GitLab commit", call)

    # THEN the fourth attempt answered; each wait is within its doubling cap (full jitter)
    assert answer == "ok" and call.calls == 4
    caps = [policy.base_seconds * 2 ** n for n in range(3)]
    assert len(sleeps) == 3 and all(0 <= wait <= cap for wait, cap in zip(sleeps, caps, strict=True))


def test_the_jitter_spreads_waits_and_never_passes_the_cap() -> None:
    # GIVEN the default policy
    policy = RetryPolicy(rng=random.Random(1))

    # WHEN many backoffs are drawn for a late attempt
    waits = [policy.backoff(10) for _ in range(200)]

    # THEN they are spread (not one fixed number) and capped
    assert max(waits) <= policy.cap_seconds and len({round(w, 3) for w in waits}) > 100


def test_the_vendors_asked_wait_is_used_exactly() -> None:
    # GIVEN a 429 asking for 7 seconds, then success
    policy, sleeps = recording()
    call = Flaky(TransientError("HTTP 429", retry_after=7))

    # WHEN / THEN it waited exactly what was asked
    assert policy.call("Datadog query", call) == "ok"
    assert sleeps == [7]


def test_a_wait_longer_than_the_lambda_should_sleep_is_handed_to_the_state_machine() -> None:
    # GIVEN a rate limit that resets in an hour
    policy, sleeps = recording()
    call = Flaky(TransientError("HTTP 429", retry_after=3600))

    # WHEN it runs under the policy
    with pytest.raises(RateLimited) as raised:
        policy.call("Datadog query", call)

    # THEN nothing slept; the error carries the hour, in a message the state machine can read
    assert sleeps == [] and call.calls == 1
    assert raised.value.retry_after_seconds == 3600
    message = json.loads(str(raised.value))
    assert message["retry_after_seconds"] == 3600 and "Datadog query" in message["reason"]


def test_attempts_that_run_out_leave_as_transient_with_the_count() -> None:
    # GIVEN a vendor failing every time
    policy, sleeps = recording(attempts=3)
    call = Flaky(*(TransientError("HTTP 502") for _ in range(5)))

    # WHEN / THEN the last error propagates, naming the operation and the attempts
    with pytest.raises(TransientError, match=r"^Slack webhook: HTTP 502 \(gave up after 3 attempt\(s\)\)$") as e:
        policy.call("Slack webhook", call)
    assert not isinstance(e.value, RateLimited)
    assert call.calls == 3 and len(sleeps) == 2


def test_a_refusal_is_never_retried() -> None:
    # GIVEN a call the vendor refuses (401)
    policy, sleeps = recording()
    call = Flaky(ExternalServiceError("HTTP 401"))

    # WHEN / THEN it propagates at once
    with pytest.raises(ExternalServiceError):
        policy.call("GitLab read", call)
    assert call.calls == 1 and sleeps == []


def test_no_wait_passes_the_lambdas_remaining_time() -> None:
    # GIVEN a Lambda with 8 s left (5 s of them kept for the answer) and a 429 asking for 4 s
    policy, sleeps = recording()
    call = Flaky(TransientError("HTTP 429", retry_after=4))

    # WHEN the call runs inside the budget
    with lambda_budget(Context(remaining_ms=8_000)):
        assert seconds_left() <= 3
        with pytest.raises(RateLimited) as raised:
            policy.call("Kubernetes pods", call)

    # THEN the wait went to the state machine rather than past the Lambda's timeout
    assert sleeps == [] and raised.value.retry_after_seconds == 4
    assert seconds_left() == float("inf")  # outside the handler, no budget


def test_the_handler_decorator_sets_the_budget_for_the_invocation_only() -> None:
    # GIVEN a handler wrapped in the budget
    seen: list[float] = []

    @with_lambda_budget
    def handler(event: Any, context: Any) -> str:
        seen.append(seconds_left())
        return "done"

    # WHEN it is invoked with 60 s left
    assert handler({}, Context(remaining_ms=60_000)) == "done"

    # THEN inside it the budget was about 55 s; after it, none
    assert 50 < seen[0] <= 55
    assert seconds_left() == float("inf")


@pytest.mark.parametrize(("header", "expected"), [
    ("30", 30.0), ("0", 0.0), ("-5", 0.0), (None, None), ("soon", None),
    ("Wed, 01 Dec 2026 12:01:00 GMT", 60.0),
])
def test_retry_after_reads_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    from datetime import UTC, datetime

    assert retry_after_seconds(header, datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) == expected


def test_a_rate_limit_wait_is_bounded_and_whole_seconds() -> None:
    assert RateLimited.after(0.2, "x").retry_after_seconds == 1
    assert RateLimited.after(12.1, "x").retry_after_seconds == 13
    assert RateLimited.after(10 ** 9, "x").retry_after_seconds == RateLimited.LONGEST_WAIT_SECONDS
