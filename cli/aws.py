"""The CLI's AWS access: one boto3 session it can renew, and calls that outlast a long follow.

A `guard monitor` of a 4-hour soak outlives the credentials a CI job starts with (an assumed
role's session lasts one hour by default) and reads the execution history often enough to be
throttled. So every read goes through `Aws.call`:

- `ExpiredToken` & co.: the session is built again (boto3 resolves the credentials anew: the
  environment, the SSO cache, the container's role) and the call is tried again;
- throttling and 5xx: tried again with the project's backoff (guard.retry), on top of
  botocore's own standard-mode retries; when those run out, the follow loop waits and reads
  again rather than failing the command (`TransientError` reaches it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from guard.errors import TransientError
from guard.retry import AWS_RETRIES, RetryPolicy

# Error codes that mean "your credentials expired": build a new session.
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
# Error codes that mean "slow down" or "try again": back off.
THROTTLED_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException",
                             "RequestLimitExceeded", "ProvisionedThroughputExceededException",
                             "ServiceUnavailable", "InternalServerError", "InternalFailure"})


class Aws:
    """boto3 clients of one region (and, for the local stack, one endpoint), renewable.

    `session_factory` builds a boto3 Session; `credentials` (local stack only) are passed to it.
    """

    def __init__(self, region: str | None, endpoint_url: str | None = None,
                 credentials: dict[str, str] | None = None,
                 session_factory: Callable[..., Any] | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._credentials = credentials or {}
        self._factory = session_factory
        self._clients: dict[str, Any] = {}
        self._session: Any = None
        self.renewals = 0
        self.policy = policy or RetryPolicy(attempts=5, base_seconds=1.0, cap_seconds=20.0,
                                            max_inline_wait_seconds=60.0, sleep=time.sleep)

    def _new_session(self) -> Any:
        if self._factory is not None:
            return self._factory(region_name=self.region, **self._credentials)
        import boto3

        return boto3.Session(region_name=self.region, **self._credentials)

    def renew(self) -> None:
        """Forget the session and its clients: the next call resolves credentials again."""
        self._session, self._clients = None, {}
        self.renewals += 1

    def client(self, service: str) -> Any:
        """The (cached) boto3 client of `service`."""
        if service not in self._clients:
            from botocore.config import Config

            if self._session is None:
                self._session = self._new_session()
            self._clients[service] = self._session.client(
                service, endpoint_url=self.endpoint_url, config=Config(retries=AWS_RETRIES))
        return self._clients[service]

    def table(self, name: str) -> Any:
        """A DynamoDB Table resource (reads through it are not wrapped: use `call` around them)."""
        if self._session is None:
            self._session = self._new_session()
        return self._session.resource("dynamodb", endpoint_url=self.endpoint_url).Table(name)

    def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        """`client(service).operation(**kwargs)`, renewing the session on expiry and backing off on throttling."""
        return self.run(f"{service}.{operation}", lambda: getattr(self.client(service), operation)(**kwargs))

    def run(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()` (which uses this object's clients) under the same expiry and throttling rules."""
        from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

        def once() -> Any:
            try:
                return fn()
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if code in EXPIRED_CODES:
                    self.renew()
                    raise TransientError(f"{what}: credentials expired ({code}); resolved them again") from e
                if code in THROTTLED_CODES:
                    raise TransientError(f"{what}: {code}") from e
                raise
            except (EndpointConnectionError, ReadTimeoutError) as e:
                raise TransientError(f"{what}: {e}") from e

        return self.policy.call(what, once)
