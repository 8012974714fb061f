"""One poll: the deadline, the result shape and the error handling of every polling loop.

The state machine runs every poll the same way (start → check → done? → Wait → check);
each check is one Lambda call that ends here. A poll supplies only *what to read* (per
cluster, the reasons it is not done yet) and so *when it is done* (no reason left). This
module owns the rest: the deadline carried in the state, the transient-error policy
(`guard.retry`) and the result the state machine reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel

from guard.clock import poll_deadline
from guard.config.models import TenantConfig
from guard.core.models import Cluster
from guard.digest import bounded
from guard.errors import GuardError
from guard.ports import Clock, ClusterConnector
from guard.retry import is_transient
from guard.services.fanout import CLUSTER_READERS, ClusterOutcome, for_each_cluster
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore

if TYPE_CHECKING:
    from guard.services.markers import UpgradeMarkers

ReadOne = Callable[[str, Cluster], list[str]]
"""Reads one cluster: what it still waits on (empty when done)."""


class PollResult(BaseModel):
    """One check of a poll. `expired`: not done and the deadline has passed.

    It is a state's data, so it never grows with the fleet: `waiting_on` holds the first reasons
    only (`guard.digest.FIRST`), `waiting_count` how many there are, `waiting_clusters` how many
    clusters they concern and `waiting_kinds` how many clusters wait for each kind of reason.
    """

    done: bool
    deadline: str
    waiting_on: list[str] = []
    waiting_count: int = 0
    waiting_clusters: int = 0
    waiting_kinds: dict[str, int] = {}
    expired: bool = False
    # Where the run is and the MR a person acts on, so each poll's output in the console says both.
    stage: str | None = None
    merge_request_url: str | None = None

    def describe(self) -> str:
        """What is still awaited, as a digest a cause can quote whatever the fleet's size."""
        if self.waiting_count <= len(self.waiting_on):
            return "; ".join(self.waiting_on)
        kinds = ", ".join(f"{k} {n}" for k, n in self.waiting_kinds.items())
        return (f"{self.waiting_clusters} clusters still waiting ({kinds}); the first: " + "; ".join(self.waiting_on)
                + f"; … and {self.waiting_count - len(self.waiting_on)} more")


class Poll:
    """Checks a set of clusters against a deadline that the first check sets."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def check(self, deadline: str | None, minutes: float, clusters: Mapping[str, Cluster | None],
              read: ReadOne) -> PollResult:
        """Read every cluster once, CLUSTER_READERS at a time; an unreachable or unregistered cluster is
        "still waiting". A cluster whose read raises anything else (a GuardError that waiting cannot help,
        or a crash) ends the poll with that error, the first in the clusters' order; the clusters not
        started by then are left unread."""
        now = self._clock.now()
        due = poll_deadline(deadline, now, minutes)
        registered = {c: cluster for c, cluster in clusters.items() if cluster is not None}

        def ends_the_poll(outcome: ClusterOutcome[list[str]]) -> bool:
            return outcome.error is not None and not (isinstance(outcome.error, GuardError)
                                                      and is_transient(outcome.error))

        outcomes = {o.cluster_id: o for o in for_each_cluster(
            list(registered), lambda c: read(c, registered[c]), max_workers=CLUSTER_READERS, stop=ends_the_poll)}
        ending = next((o.error for o in outcomes.values() if ends_the_poll(o)), None)
        if ending is not None:
            raise ending
        waiting: list[str] = []
        kinds: list[str] = []
        for cluster_id in clusters:
            outcome = outcomes.get(cluster_id)
            if outcome is None:
                waiting.append(f"{cluster_id}: not in the registry")
                kinds.append("not in the registry")
            elif outcome.error is not None:
                waiting.append(f"{cluster_id}: API unreachable ({outcome.error})")
                kinds.append("API unreachable")
            elif outcome.result:
                waiting += outcome.result
                kinds.append("not there yet")
        return PollResult(done=not waiting, deadline=due.isoformat(), waiting_on=bounded(waiting),
                          waiting_count=len(waiting), waiting_clusters=len(kinds),
                          waiting_kinds=dict(Counter(kinds).most_common()), expired=bool(waiting) and now >= due)


class ClusterPoll:
    """Base of the services that poll a run's clusters (Flux sync, sidecar waves, rollback
    verification): they hold what every such poll needs and supply only `read`."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore,
                 connector: ClusterConnector, clock: Clock, markers: UpgradeMarkers | None = None) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._connector = connector
        self._clock = clock
        self._markers = markers  # Datadog events where the upgrade happened (best effort); None: none posted

    def check(self, cluster_ids: list[str], deadline: str | None, minutes: float, read: ReadOne) -> PollResult:
        """One `Poll` over `cluster_ids` as the registry has them."""
        found = self._registry.get_many(cluster_ids)
        return Poll(self._clock).check(deadline, minutes, {c: found.get(c) for c in cluster_ids}, read)
