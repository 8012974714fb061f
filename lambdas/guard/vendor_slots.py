"""At most N calls in flight to one vendor from this Lambda environment (execution.vendor_concurrency).

Each adapter holds a slot for one HTTP request only, never across a retry's wait: a request
waiting out a 429 frees its slot for the others.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from guard.errors import TransientError
from guard.retry import seconds_left

# Longest a request waits for a free slot: the others' requests are bounded by their timeouts.
MAX_SLOT_WAIT_SECONDS = 120.0


class VendorSlots:
    """A bounded semaphore for one vendor's requests, with the most ever held at once (`peak`)."""

    def __init__(self, vendor: str, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"{vendor}: slots must be at least 1, not {slots}")
        self.vendor = vendor
        self.slots = slots
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._held = 0
        self.peak = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """One slot for the block; TransientError when none frees up within the Lambda's budget."""
        wait = max(0.0, min(MAX_SLOT_WAIT_SECONDS, seconds_left()))
        if not self._semaphore.acquire(timeout=wait):
            raise TransientError(f"{self.vendor}: no free call slot within {wait:.0f} s "
                                 f"({self.slots} at once, execution.vendor_concurrency)")
        with self._lock:
            self._held += 1
            self.peak = max(self.peak, self._held)
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
            self._semaphore.release()


@contextmanager
def unlimited() -> Iterator[None]:
    """No cap: the context adapters use when none is configured."""
    yield
