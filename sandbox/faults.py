"""Faults for the parts of the rehearsal that have no simulator of their own: the AWS calls the
Lambda code makes (DynamoDB, Step Functions callbacks) and a Lambda that dies after its side effects.

The simulators inject their own faults (`GitLabSimulator.fail_next`, `DatadogSimulator.fail_next`,
`KubernetesSimulator.fail_next`, `LlmSimulator.fail_next`, `SlackRecorder.fail_next`); moto has
no fault injection, and a crash is a property of the Lambda runtime, not of a vendor.

AWS calls: a botocore `before-call.<service>.<Operation>` handler on the boto3 session the handlers
build (`guard.runtime._boto3_session()`). Raising there is what a call looks like once the SDK's
own retries are spent: the handler sees a `ClientError` with the AWS error code, and nothing reaches
moto. Only the Lambda code's clients see the fault; the test's own clients (built by `LocalEngine`)
read the real state.

A crash: Step Functions reports a Lambda that dies without answering (out of memory, a timeout,
the runtime exiting) as the error `Lambda.Unknown` (AWS Step Functions developer guide, "Handle
Lambda service exceptions": "Unhandled errors in Lambda are reported as Lambda.Unknown ... These
include out-of-memory errors and function timeouts"). `LocalEngine` lets the handler finish its
side effects, then answers the invocation like that (`LambdaCrashed`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from guard import runtime

# The botocore event prefix of each service the Lambda code calls (its service id, hyphenated, lower case).
EVENT_SERVICE = {"dynamodb": "dynamodb", "stepfunctions": "sfn"}
# HTTP status AWS answers each error code with (what the ClientError's metadata carries).
STATUS = {"ProvisionedThroughputExceededException": 400, "ThrottlingException": 400, "InternalServerError": 500,
          "ServiceUnavailable": 503, "RequestLimitExceeded": 400, "TaskTimedOut": 400,
          "ServiceUnavailableException": 503}

ParamsPredicate = Callable[[Mapping[str, Any]], bool]


@dataclass
class AwsFault:
    """Fail the next `times` calls of `operation` on `service` whose parameters satisfy `where`."""

    service: str
    operation: str
    code: str
    times: int
    where: ParamsPredicate = lambda params: True  # on the request parameters, in wire format
    served: int = 0


@dataclass
class AwsFaults:
    """Injects AWS error codes into the calls the Lambda handlers make; `install()` after the world opened."""

    faults: list[AwsFault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _session: Any = None

    def install(self) -> AwsFaults:
        """Hook the handlers' boto3 session. Forgets the clients cached so far: the next ones are built
        from the hooked session. botocore copies a session's handlers into each client it creates, so
        one handler per service is registered now, and faults added later are read from `faults`."""
        runtime.reset()
        self._session = runtime._boto3_session()
        for prefix in EVENT_SERVICE.values():
            # `before-call.<service>` receives every operation of the service (botocore's event hierarchy).
            self._session.events.register(f"before-call.{prefix}", self._before_call,
                                          unique_id=f"guard-faults-{prefix}")
        return self

    def fail_next(self, service: str, operation: str, code: str, times: int = 1,
                  where: ParamsPredicate | None = None) -> AwsFault:
        """The next `times` calls of `operation` (e.g. "PutItem") matching `where(params)` raise `code`."""
        if service not in EVENT_SERVICE:
            raise ValueError(f"no fault injection for {service!r}; one of {sorted(EVENT_SERVICE)}")
        fault = AwsFault(service, operation, code, times, where or (lambda params: True))
        with self._lock:
            self.faults.append(fault)
        return fault

    def served(self) -> int:
        """How many calls failed so far."""
        with self._lock:
            return sum(f.served for f in self.faults)

    def _before_call(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        # `params` is the serialized request; the JSON protocols (DynamoDB, Step Functions) carry the
        # operation's parameters, in wire format, as the body.
        try:
            body = json.loads(params.get("body") or b"{}")
        except ValueError:
            body = {}
        with self._lock:
            fault = next((f for f in self.faults if f.operation == model.name and f.served < f.times
                          and EVENT_SERVICE[f.service] == model.service_model.service_id.hyphenize()
                          and f.where(body)), None)
            if fault is None:
                return
            fault.served += 1
        raise ClientError({"Error": {"Code": fault.code, "Message": f"injected by the fault suite ({fault.code})"},
                           "ResponseMetadata": {"HTTPStatusCode": STATUS.get(fault.code, 400)}}, model.name)


def key_starts(attribute: str, prefix: str) -> ParamsPredicate:
    """A DynamoDB request whose key (`Key`, or the `Item` of a PutItem) has `attribute` starting with `prefix`."""

    def matches(params: Mapping[str, Any]) -> bool:
        item = params.get("Key") or params.get("Item") or {}
        value = item.get(attribute, {})
        text = value.get("S", "") if isinstance(value, dict) else str(value)
        return str(text).startswith(prefix)

    return matches


def key_equals(attribute: str, value: str) -> ParamsPredicate:
    """A DynamoDB request whose key has `attribute` equal to `value`."""

    def matches(params: Mapping[str, Any]) -> bool:
        item = params.get("Key") or params.get("Item") or {}
        found = item.get(attribute, {})
        return (found.get("S") if isinstance(found, dict) else found) == value

    return matches


def both(*predicates: ParamsPredicate) -> ParamsPredicate:
    return lambda params: all(p(params) for p in predicates)


class LambdaCrashed(Exception):
    """The function's runtime died after the handler's side effects and before its answer."""


EventPredicate = Callable[[Any], bool]


@dataclass
class Crash:
    """Kill the next `times` invocations of `function` (construct id) whose event satisfies `when`,
    after the handler returned (its side effects happened; its answer is lost)."""

    function: str
    times: int = 1
    when: EventPredicate = lambda event: True
    served: int = 0


class Crashes:
    """The crashes `LocalEngine.invoke` applies; empty outside a fault cell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crashes: list[Crash] = []

    def add(self, crash: Crash) -> Crash:
        with self._lock:
            self._crashes.append(crash)
        return crash

    def clear(self) -> None:
        with self._lock:
            self._crashes.clear()

    def take(self, function: str, event: Any) -> Crash | None:
        """The crash that applies to this invocation (counted as served), or None."""
        with self._lock:
            for crash in self._crashes:
                if crash.function == function and crash.served < crash.times and crash.when(event):
                    crash.served += 1
                    return crash
        return None
