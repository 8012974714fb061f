"""The cluster registry: one DynamoDB item per cluster, the document stored as JSON."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from guard.core.models import Cluster, UpgradeRecord
from guard.errors import ConfigError, UnknownCluster
from guard.stores.dynamo import call


def _parse(doc: str, key: Any) -> Cluster:
    """A stored cluster document; ConfigError naming the item and its bad fields.

    The registry is written by people and tools outside GUARD: an item that breaks the model's
    patterns (an endpoint with userinfo, a `*` tag value, ...) refuses the run that reads it.
    """
    try:
        return Cluster.model_validate_json(doc)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'document'}: {err['msg']}"
                           for err in e.errors(include_url=False)[:10])
        raise ConfigError(f"registry item {str(key)[:100]!r} is refused: {fields}") from None


class ClusterRegistry:
    """Read and update registry clusters. `table` is a boto3 DynamoDB Table resource."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def put(self, cluster: Cluster) -> None:
        item = {
            "cluster_id": cluster.cluster_id,
            "batch_id": cluster.batch_id,
            "environment": cluster.environment,
            "current_istio_version": cluster.current_istio_version,
            "doc": cluster.model_dump_json(),
        }
        call("PutItem", lambda: self._table.put_item(Item=item))

    def get(self, cluster_id: str) -> Cluster:
        """The cluster, or UnknownCluster naming it."""
        found = self.get_many([cluster_id])
        if cluster_id not in found:
            raise UnknownCluster(f"cluster '{cluster_id}' is not in the cluster registry")
        return found[cluster_id]

    def get_many(self, cluster_ids: list[str]) -> dict[str, Cluster]:
        """Clusters found among `cluster_ids` (missing ones are simply absent)."""
        result: dict[str, Cluster] = {}
        for cluster_id in dict.fromkeys(cluster_ids):
            response = call("GetItem", lambda cid=cluster_id: self._table.get_item(  # type: ignore[misc]
                Key={"cluster_id": cid}, ConsistentRead=True))
            item = response.get("Item")
            if item:
                result[cluster_id] = _parse(item["doc"], cluster_id)
        return result

    def all(self) -> list[Cluster]:
        """Every cluster, sorted by id (export)."""
        clusters: list[Cluster] = []
        kwargs: dict[str, Any] = {}
        while True:
            page = call("Scan", lambda: self._table.scan(**kwargs))
            clusters += [_parse(i["doc"], i.get("cluster_id")) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(clusters, key=lambda c: c.cluster_id)

    def record_upgrade(self, cluster_id: str, record: UpgradeRecord, new_version: str | None) -> None:
        """Append to the cluster's history; set its current version when `new_version` is given."""
        cluster = self.get(cluster_id)
        if any(h.run_id == record.run_id and h.outcome == record.outcome for h in cluster.upgrade_history):
            return  # a retried task: already recorded
        cluster.upgrade_history.append(record)
        if new_version:
            cluster.current_istio_version = new_version
        self.put(cluster)

    def record_components(self, cluster_id: str, components: dict[str, str]) -> None:
        """Set what each Istio component of the cluster was observed to run (written only when it changed)."""
        cluster = self.get(cluster_id)
        if components and cluster.component_versions != components:
            cluster.component_versions = dict(components)
            self.put(cluster)

    def record_observed(self, cluster_id: str, version: str, record: UpgradeRecord) -> str | None:
        """Set the cluster's version to `version`, as observed on the cluster, with `record` in its
        history saying so. Returns the version the registry held before, or None when it held
        `version` already (then nothing is written: observing twice changes nothing)."""
        cluster = self.get(cluster_id)
        before = cluster.current_istio_version
        if before == version:
            return None
        cluster.current_istio_version = version
        cluster.upgrade_history.append(record)
        self.put(cluster)
        return before
