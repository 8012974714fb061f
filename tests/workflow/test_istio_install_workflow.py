"""Rehearsals of the whole Istio install as teams keep it in Git (issue 15): every chart in order and
verified, a gateway left old, postBuild-variable and OCI chartRef fleets with versions-only diffs, a
shared base refused with the clusters it would touch, a missing chart version refused before any MR."""

from __future__ import annotations

from typing import Any

from guard.stores.registry import ClusterRegistry

from sandbox.__main__ import expectation_problems
from sandbox.world import LocalWorld
from tests.workflow.conftest import Rehearse, scenario

PROJECT = "platform/istio-fleet"
OLD, NEW = "1.19.3", "1.20.0"


def _registry(world: LocalWorld) -> ClusterRegistry:
    return ClusterRegistry(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name),
                           world.config.tenant)


def _diff(world: LocalWorld) -> dict[str, list[tuple[str, str]]]:
    """path -> (old line, new line) of every line the merged MR changed on main."""
    before = world._repository_files()
    after = world.gitlab.files(PROJECT)
    changed: dict[str, list[tuple[str, str]]] = {}
    for path, text in after.items():
        # The simulators' URLs differ between the two reads: compare the files the MR could touch.
        if path not in before or "sources" in path:
            continue
        old, new = before[path].splitlines(), text.splitlines()
        assert len(old) == len(new), path
        lines = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
        if lines:
            changed[path] = lines
    return changed


def _versions_only(changed: dict[str, list[tuple[str, str]]]) -> int:
    for path, lines in changed.items():
        for old, new in lines:
            assert new.replace(NEW, OLD) == old, f"{path}: {old!r} -> {new!r} changes more than the version"
    return sum(len(lines) for lines in changed.values())


def test_five_charts_are_upgraded_in_order_and_each_verified(rehearse: Rehearse) -> None:
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["order"] = [name for _, name, version in world.kubernetes.upgrades("eks-dev-1") if version == NEW]
        seen["releases"] = world.kubernetes.release_versions("eks-dev-1")
        seen["crds"] = world.kubernetes.crd_version("eks-dev-1")
        seen["diff"] = _diff(world)
        seen["cluster"] = _registry(world).get("eks-dev-1")

    # GIVEN eks-dev-1 with base, istiod, cni, ztunnel and a gateway (eks-dev-2 without the ambient two)
    # WHEN the batch is rehearsed
    summary, _ = rehearse("whole-install", inspect=inspect)
    # THEN it succeeds; one MR bumped the 5 + 3 charts' version lines and nothing else
    assert expectation_problems(scenario("whole-install"), summary["batches"][0]) == []
    assert _versions_only(seen["diff"]) == 8
    # AND Flux went base -> istiod -> cni/ztunnel -> gateway, the CRDs moved, every release runs NEW
    order = seen["order"]
    assert order[:2] == ["istio-system/istio-base", "istio-system/istiod"]
    assert set(order[2:4]) == {"istio-system/istio-cni", "istio-system/ztunnel"}
    assert order[4] == "istio-system/istio-ingressgateway"
    assert seen["crds"] == NEW and all(v == (NEW, NEW) for v in seen["releases"].values())
    # AND the registry records each component's version
    cluster = seen["cluster"]
    assert cluster.current_istio_version == NEW
    assert cluster.component_versions == {"istiod": NEW, "ztunnel": NEW, "cni": NEW,
                                          "gateway istio-system/istio-ingressgateway": NEW}


def test_a_gateway_left_on_the_old_version_is_not_reported_upgraded(rehearse: Rehearse) -> None:
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["cluster"] = _registry(world).get("eks-test")

    # GIVEN Git holds istiod only, while eks-test also runs a gateway WHEN the batch is rehearsed
    summary, _ = rehearse("gateway-stays-old", inspect=inspect)
    # THEN the Flux wait times out naming the gateway, and the registry does not say NEW
    assert expectation_problems(scenario("gateway-stays-old"), summary["batches"][0]) == []
    cluster = seen["cluster"]
    assert cluster.current_istio_version == OLD
    assert cluster.component_versions["gateway istio-system/istio-ingressgateway"] == OLD


def test_postbuild_and_oci_fleets_upgrade_with_a_versions_only_diff(rehearse: Rehearse) -> None:
    diffs: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for name in ("postbuild-fleet", "oci-fleet"):
        def inspect(world: LocalWorld, summary: dict[str, Any], name: str = name) -> None:
            diffs[name] = _diff(world)

        summary, _ = rehearse(name, inspect=inspect)
        assert expectation_problems(scenario(name), summary["batches"][0]) == []
    # THEN the postBuild fleet's MR changed each batch cluster's variable line only (eks-dev-3 untouched)
    assert sorted(diffs["postbuild-fleet"]) == ["clusters/eks-dev-1/istio.yaml", "clusters/eks-dev-2/istio.yaml"]
    assert _versions_only(diffs["postbuild-fleet"]) == 2
    # AND the OCI fleet's changed the OCIRepositories' ref.tag lines only
    assert _versions_only(diffs["oci-fleet"]) == 2
    assert all("tag:" in new for lines in diffs["oci-fleet"].values() for _, new in lines)


def test_shared_base_and_missing_chart_version_are_refused_before_any_mr(rehearse: Rehearse) -> None:
    for name in ("shared-base-refused", "missing-chart-version"):
        mrs: list[Any] = []

        def inspect(world: LocalWorld, summary: dict[str, Any], mrs: list[Any] = mrs) -> None:
            mrs.extend(world.gitlab.merge_requests(PROJECT))

        summary, _ = rehearse(name, inspect=inspect)
        # THEN the precheck refuses (the shared base naming eks-dev-3 and eks-test), and no MR exists
        assert expectation_problems(scenario(name), summary["batches"][0]) == []
        assert mrs == []


def test_overlay_patches_a_kustomization_chain_and_a_helm_chart_upgrade_with_a_versions_only_diff(
        rehearse: Rehearse) -> None:
    # GIVEN one batch whose clusters keep the version in an overlay's patches, in a chain of Flux Kustomizations,
    # and in a HelmChart a chartRef names
    seen: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        seen["diff"] = _diff(world)
        seen["running"] = {c.cluster: world.kubernetes.helm_release_versions(c.cluster)[1]
                           for c in world.scenario.fleet}

    # WHEN it is rehearsed
    summary, progress = rehearse("layouts-fleet", inspect=inspect)
    # THEN it succeeded, and every cluster runs the target
    assert expectation_problems(scenario("layouts-fleet"), summary["batches"][0]) == [], progress
    assert seen["running"] == {"eks-dev-1": NEW, "eks-dev-2": NEW}
    # AND the MR bumped the overlay's patches (not the shared base) and each chart of the chain (istiod's in its
    # HelmChart): version tokens only
    assert sorted(seen["diff"]) == ["clusters/eks-dev-1/istio/kustomization.yaml",
                                    "clusters/eks-dev-1/istio/versions.yaml",
                                    "clusters/eks-dev-2/istio/base/release.yaml",
                                    "clusters/eks-dev-2/istio/gateways/release.yaml",
                                    "clusters/eks-dev-2/istio/istiod/release.yaml"], seen["diff"]
    assert _versions_only(seen["diff"]) == 6
