"""The cluster registry: one DynamoDB item per cluster, the document stored as JSON.

Several tenants may share the registry table. Every key a ClusterRegistry builds carries its
tenant (`<tenant>#<cluster id>`), and the tenant's functions may only touch keys with that prefix
(IAM dynamodb:LeadingKeys, infra/lambda_functions.py): a tenant cannot read or overwrite another's.
"""

from __future__ import annotations

import re
import time
from typing import Any

from boto3.dynamodb.conditions import Key
from pydantic import ValidationError

from guard.core.models import Cluster, UpgradeRecord
from guard.errors import ConfigError, TransientError, UnknownCluster
from guard.stores.dynamo import call
from guard.stores.schema import REGISTRY, REGISTRY_TENANT_INDEX

KEY_SEPARATOR = "#"
_BATCH_GET_KEYS = 100  # DynamoDB BatchGetItem's limit per request
_UNPROCESSED_ROUNDS = 8
_TENANT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def registry_key(tenant: str, cluster_id: str) -> str:
    """The partition key of `cluster_id` in `tenant`'s part of the registry: `<tenant>#<cluster id>`."""
    if not _TENANT.match(tenant):
        raise ValueError(f"tenant {tenant!r} is not a tenant name")
    if not cluster_id or KEY_SEPARATOR in cluster_id:
        # Cluster ids never hold '#' (core.models NAME_PATTERN): a key cannot reach into another tenant.
        raise UnknownCluster(f"cluster id {cluster_id[:100]!r} is not a cluster id")
    return f"{tenant}{KEY_SEPARATOR}{cluster_id}"


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
    """Read and update one tenant's registry clusters. `table` is a boto3 DynamoDB Table resource;
    every key read or written is `tenant`'s (registry_key)."""

    def __init__(self, table: Any, tenant: str) -> None:
        registry_key(tenant, "x")  # refuses a tenant name that could not prefix a key
        self._table = table
        self.tenant = tenant

    @property
    def table(self) -> Any:
        """The boto3 Table (for the one-off migration, guard.stores.registry_migration)."""
        return self._table

    def put(self, cluster: Cluster) -> None:
        item = {
            REGISTRY.partition_key: registry_key(self.tenant, cluster.cluster_id),
            "tenant": self.tenant,
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
        """Clusters found among `cluster_ids` (missing ones are simply absent), in the order asked.

        BatchGetItem, 100 keys a request: a batch of 2,000 clusters is 20 requests, not 2,000 GetItems
        (minutes of a Lambda's time before the MR of such a batch was even opened). Keys DynamoDB
        leaves unprocessed (throttling) are asked again, a bounded number of times."""
        wanted = list(dict.fromkeys(cluster_ids))
        docs: dict[str, str] = {}
        for start in range(0, len(wanted), _BATCH_GET_KEYS):
            docs.update(self._batch_get(wanted[start:start + _BATCH_GET_KEYS]))
        return {cluster_id: _parse(docs[cluster_id], cluster_id) for cluster_id in wanted if cluster_id in docs}

    def _batch_get(self, cluster_ids: list[str]) -> dict[str, str]:
        """The stored documents of at most 100 clusters, by cluster id. The Table's own client takes and
        gives plain values: boto3 (de)serialises DynamoDB types on a resource's client too."""
        client, name, pk = self._table.meta.client, self._table.name, REGISTRY.partition_key
        ids = {registry_key(self.tenant, c): c for c in cluster_ids}
        request: dict[str, Any] = {name: {"Keys": [{pk: k} for k in ids], "ConsistentRead": True,
                                          "ProjectionExpression": "#k, doc", "ExpressionAttributeNames": {"#k": pk}}}
        docs: dict[str, str] = {}
        for attempt in range(_UNPROCESSED_ROUNDS):
            response = call("BatchGetItem", lambda r=request: client.batch_get_item(RequestItems=r))  # type: ignore[misc]
            for item in response.get("Responses", {}).get(name, []):
                docs[ids[item[pk]]] = item["doc"]
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return docs
            time.sleep(min(0.05 * 2 ** attempt, 1.0))
        raise TransientError(f"DynamoDB BatchGetItem: {sum(len(r['Keys']) for r in request.values())} registry "
                             f"key(s) still unprocessed after {_UNPROCESSED_ROUNDS} rounds")

    def all(self) -> list[Cluster]:
        """Every cluster of this tenant, sorted by id (export, list): a Query of the tenant index, never
        a Scan, which would read every tenant's items."""
        clusters: list[Cluster] = []
        kwargs: dict[str, Any] = {"IndexName": REGISTRY_TENANT_INDEX,
                                  "KeyConditionExpression": Key("tenant").eq(self.tenant)}
        while True:
            page = call("Query", lambda: self._table.query(**kwargs))
            clusters += [_parse(i["doc"], i.get(REGISTRY.partition_key)) for i in page.get("Items", [])]
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
