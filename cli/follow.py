"""Following a run live: what `guard run` (until the MR is open) and `guard monitor` (until the end) print.

Each poll reads a `RunView` (cli.runs) and prints only what changed: the stage, the MR, each
cluster's precheck and verdict, and while soaking the time left (at each tenth of the soak, so a
4-hour soak writes about ten lines to a CI log). A read that keeps failing (throttling beyond the
retries, a network blip) is reported once and read again later with a longer pause: a follow of
hours must not die of one bad minute.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from guard.errors import ROLLED_BACK_ERRORS, TransientError

from cli.output import duration
from cli.runs import RunView, read_view
from cli.where import Deployment

# The exit codes (docs/cli.md has the one table; `guard --help` prints it).
SUCCEEDED, FAILED, BAD_INPUT, ROLLED_BACK = 0, 1, 2, 3
FOLLOW_TIMEOUT = 124  # --timeout ended the follow; the run goes on
INTERRUPTED = 130  # SIGINT (Ctrl-C) or SIGTERM (a CI job cancelled) ended the follow; the run goes on
EXIT_CODES = {
    SUCCEEDED: "success: the run succeeded (monitor, --wait); the MR is open for review (run); the command did "
               "what it said (status, list, abort, ...)",
    FAILED: "the run failed (prechecks, MR closed or not merged in time, Flux, validation, rollback failed, "
            "stopped); or AWS failed",
    BAD_INPUT: "bad input or config: refused before anything changed (unknown batch, downgrade, loosening input, "
               "no such run)",
    ROLLED_BACK: "rolled back: the upgrade hurt and was undone",
    FOLLOW_TIMEOUT: "--timeout ended the follow; the run goes on (resume with `guard monitor --batch B`)",
    INTERRUPTED: "interrupted (SIGINT/SIGTERM) while following; the run goes on (resume with `guard monitor`)",
}
# Execution errors that mean "the request itself was wrong": nothing started.
BAD_INPUT_ERRORS = {"InvalidInput", "UnknownBatch", "UnknownCluster", "VersionNotAllowed", "ConfigError",
                    "States.Runtime", "NothingToRollBack"}
MAX_READ_PAUSE = 300.0


def exit_code(status: str, error: str | None) -> int:
    """The exit code of an ended execution (a running one: 0, the read succeeded)."""
    if status in ("SUCCEEDED", "RUNNING"):
        return SUCCEEDED
    if error in ROLLED_BACK_ERRORS:
        return ROLLED_BACK
    if error in BAD_INPUT_ERRORS:
        return BAD_INPUT
    return FAILED


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while following."""


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM (what a cancelled CI job sends) raises `Interrupted` like Ctrl-C does."""
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous: list[tuple[signal.Signals, Any]] = []
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous.append((sig, signal.signal(sig, stop)))
    except ValueError:  # not the main thread (a test calling main() from a thread): no handlers
        pass
    try:
        yield
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)


@dataclass
class Follower:
    """Prints the changes between successive views of one run."""

    out: TextIO
    _last: RunView | None = None
    _soak_mark: int = -1

    def show(self, view: RunView) -> None:
        last, lines = self._last, []
        if (last is None or (view.stage, view.status) != (last.stage, last.status)) and \
                (view.status == "RUNNING" or last is None):
            lines.append(f"[{view.batch or '?'}] stage: {_stage(view)}")
        if view.merge_request_url and (last is None or last.merge_request_url != view.merge_request_url):
            lines.append(f"[{view.batch}] merge request: {view.merge_request_url}")
        if view.rollback_merge_request_url and (last is None or
                                                last.rollback_merge_request_url != view.rollback_merge_request_url):
            lines.append(f"[{view.batch}] rollback merge request: {view.rollback_merge_request_url}")
        before = {c.cluster: c for c in last.clusters} if last else {}
        for row in view.clusters:
            old = before.get(row.cluster)
            if old is None or (old.precheck, old.verdict) != (row.precheck, row.verdict):
                if row.precheck == "-" and row.verdict == "-" and old is None and last is not None:
                    continue
                lines.append(f"  {row.cluster}: {row.from_version} → {row.to_version}  precheck {row.precheck}"
                             f"  verdict {row.verdict}" + (f"  ({row.detail})" if row.detail else ""))
        if view.soak_seconds and view.soak_left_seconds is not None:
            mark = int((1 - view.soak_left_seconds / view.soak_seconds) * 10) if view.soak_seconds else 10
            if mark != self._soak_mark:
                self._soak_mark = mark
                lines.append(f"[{view.batch}] soaking: {duration(view.soak_left_seconds)} left of "
                             f"{duration(view.soak_seconds)}")
        for line in lines:
            print(line, file=self.out, flush=True)
        self._last = view


def _stage(view: RunView) -> str:
    if view.stage:
        return view.stage + (f" (failed at {view.failed_stage})" if view.failed_stage else "")
    return "planning" if view.status == "RUNNING" else view.status.lower()


def conclude(view: RunView, out: TextIO) -> int:
    """Print how the run ended and return its exit code."""
    code = exit_code(view.status, view.error)
    if view.status == "SUCCEEDED" and view.outcome == "prechecked":
        passed = sum(c.precheck == "pass" for c in view.clusters)
        print(f"[{view.batch}] dry run: {passed}/{len(view.clusters)} cluster(s) passed every precheck for "
              f"{view.target_version}; no MR was opened and nothing was changed", file=out)
    elif view.status == "SUCCEEDED":
        done = "rolled back as asked" if view.kind == "rollback" else "succeeded"
        print(f"[{view.batch}] {done}: {view.execution_arn}", file=out)
    else:
        print(f"[{view.batch}] {view.status} {view.error or ''}: {view.cause or '(no cause given)'}", file=out)
        if view.execution_input.get("dry_run"):
            print(f"[{view.batch}] dry run: nothing was changed and no MR was opened", file=out)
        if code == ROLLED_BACK:
            print(f"[{view.batch}] the upgrade was rolled back"
                  + (f": {view.rollback_merge_request_url}" if view.rollback_merge_request_url else ""), file=out)
    return code


def follow(deployment: Deployment, arn: str, out: TextIO, *,
           until: Callable[[RunView], bool] = lambda view: False,
           timeout: float | None = None, poll: float = 5.0,
           sleep: Callable[[float], None] = time.sleep,
           on_view: Callable[[RunView], None] | None = None) -> tuple[RunView, int | None]:
    """Print the run's progress until it ends, `until(view)` holds, or `timeout` seconds pass.

    Returns (the last view, the exit code when the follow ended the command, else None for `until`).
    """
    follower = Follower(out)
    started = time.monotonic()
    pause = poll
    view: RunView | None = None
    while True:
        try:
            view = read_view(deployment, arn)
            pause = poll
        except TransientError as e:
            pause = min(MAX_READ_PAUSE, max(pause * 2, poll))
            print(f"  (reading the run failed: {e}; reading again in {pause:g}s)", file=out, flush=True)
            view = None
        if view is not None:
            follower.show(view)
            if on_view is not None:
                on_view(view)
            if view.status != "RUNNING":
                return view, conclude(view, out)
            if until(view):
                return view, None
        if timeout is not None and time.monotonic() - started >= timeout:
            last = view or RunView(execution_arn=arn, run_id=arn.rsplit(":", 1)[-1], status="RUNNING")
            return last, FOLLOW_TIMEOUT
        sleep(pause if timeout is None else max(0.05, min(pause, timeout - (time.monotonic() - started))))
