"""Tenant custom checks: the seed's example runs as written; a broken check fails only itself."""

from __future__ import annotations

import textwrap
from pathlib import Path

from guard.checks.custom import load_custom_checks, run_custom_checks
from guard.config.models import CustomCheckConfig
from guard.core.models import CheckStatus, Cluster

SEED_CHECKS = Path(__file__).resolve().parents[2] / "config" / "checks"
CLUSTER = Cluster(cluster_id="eks-dev-1", batch_id="dev-1", environment="dev", region="us-east-1",
                  gitlab_project="platform/istio-fleet", flux_config_path="clusters/eks-dev-1/istio/helmrelease.yaml",
                  current_istio_version="1.19.3")


def spec(module: str, cls: str) -> CustomCheckConfig:
    return CustomCheckConfig.model_validate({"module": module, "class": cls})


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


BROKEN = """
    import asyncio

    from guard.checks.base import HealthCheck
    from guard.core.models import CheckStatus, Cluster, HealthCheckResult


    class RaisingCheck(HealthCheck):
        async def run(self, cluster: Cluster) -> HealthCheckResult:
            raise RuntimeError("vault unreachable from " + cluster.cluster_id)


    class SlowCheck(HealthCheck):
        async def run(self, cluster: Cluster) -> HealthCheckResult:
            await asyncio.sleep(30)
            raise AssertionError("never reached")


    class WrongReturnCheck(HealthCheck):
        async def run(self, cluster: Cluster):
            return {"status": "pass"}


    class GoodCheck(HealthCheck):
        async def run(self, cluster: Cluster) -> HealthCheckResult:
            return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="good", status=CheckStatus.PASS,
                                     message="fine")


    class NotACheck:
        pass
"""


def test_seed_custom_database_check_runs_as_written():
    # GIVEN the seed's CustomDatabaseCheck, unmodified, in the example tenant's checks folder
    loaded = load_custom_checks([spec("custom_checks", "CustomDatabaseCheck")], SEED_CHECKS)

    # WHEN it runs against a cluster
    (result,) = run_custom_checks(loaded, CLUSTER)

    # THEN it passes with the seed's numbers
    assert result.status == CheckStatus.PASS, result.message
    assert result.check_name == "database_connectivity"
    assert result.cluster_id == "eks-dev-1"
    assert result.message == "Database connectivity healthy"
    assert result.details == {"query_time_ms": 45, "connection_pool_usage": "23%"}


def test_a_raising_check_is_inconclusive_with_its_message_and_the_others_still_run(tmp_path):
    # GIVEN a tenant module with a check that raises, next to a good one and the seed's
    write_module(tmp_path, "team_checks", BROKEN)
    (tmp_path / "custom_checks.py").write_text((SEED_CHECKS / "custom_checks.py").read_text())
    loaded = load_custom_checks([spec("team_checks", "RaisingCheck"), spec("team_checks", "GoodCheck"),
                                 spec("custom_checks", "CustomDatabaseCheck")], tmp_path)

    # WHEN they run
    results = run_custom_checks(loaded, CLUSTER)

    # THEN the raising one is inconclusive (an error is no answer), saying what it raised; the others
    # pass, in config order
    assert [r.status for r in results] == [CheckStatus.INCONCLUSIVE, CheckStatus.PASS, CheckStatus.PASS]
    assert not results[0].passed
    assert results[0].check_name == "team_checks.RaisingCheck"
    assert "RuntimeError: vault unreachable from eks-dev-1" in results[0].message
    assert results[1].check_name == "good"
    assert results[2].check_name == "database_connectivity"


def test_a_slow_check_times_out_as_inconclusive(tmp_path):
    write_module(tmp_path, "team_checks", BROKEN)
    loaded = load_custom_checks([spec("team_checks", "SlowCheck"), spec("team_checks", "GoodCheck")], tmp_path)
    results = run_custom_checks(loaded, CLUSTER, timeout_seconds=0.2)
    assert results[0].status == CheckStatus.INCONCLUSIVE
    assert "did not finish within 0.2s" in results[0].message
    assert results[1].status == CheckStatus.PASS


def test_a_check_returning_the_wrong_type_fails(tmp_path):
    write_module(tmp_path, "team_checks", BROKEN)
    (result,) = run_custom_checks(load_custom_checks([spec("team_checks", "WrongReturnCheck")], tmp_path), CLUSTER)
    assert result.status == CheckStatus.FAIL
    assert "returned dict, not HealthCheckResult" in result.message


def test_missing_module_is_a_failed_result_naming_it(tmp_path):
    # GIVEN a config naming a module that is not in the checks folder
    write_module(tmp_path, "team_checks", BROKEN)
    # WHEN loaded and run (no exception escapes)
    loaded = load_custom_checks([spec("db_checks", "CustomDatabaseCheck"), spec("team_checks", "GoodCheck")],
                                tmp_path)
    results = run_custom_checks(loaded, CLUSTER)

    # THEN that check fails, naming the module and where it was looked for; the other still runs
    assert results[0].status == CheckStatus.FAIL
    assert results[0].check_name == "db_checks.CustomDatabaseCheck"
    assert "module 'db_checks' not found" in results[0].message
    assert str(tmp_path / "db_checks.py") in results[0].message
    assert results[1].status == CheckStatus.PASS


def test_wrong_class_is_a_failed_result_naming_it(tmp_path):
    # GIVEN a config naming a class the module does not have, and one that is not a HealthCheck
    write_module(tmp_path, "team_checks", BROKEN)
    loaded = load_custom_checks([spec("team_checks", "DatabaseCheck"), spec("team_checks", "NotACheck")], tmp_path)
    results = run_custom_checks(loaded, CLUSTER)

    # THEN both fail, each naming module.class
    assert [r.status for r in results] == [CheckStatus.FAIL, CheckStatus.FAIL]
    assert f"{tmp_path / 'team_checks.py'} defines no class 'DatabaseCheck'" in results[0].message
    assert "team_checks.NotACheck is not a guard.checks.base.HealthCheck" in results[1].message


def test_a_module_that_does_not_import_is_a_failed_result(tmp_path):
    write_module(tmp_path, "syntax_checks", "def broken(:\n")
    (result,) = run_custom_checks(load_custom_checks([spec("syntax_checks", "Check")], tmp_path), CLUSTER)
    assert result.status == CheckStatus.FAIL
    assert "cannot load syntax_checks.Check: SyntaxError" in result.message


def test_two_check_folders_with_the_same_module_name_each_load_their_own(tmp_path):
    # GIVEN two tenants' folders, each with a module called tenant_checks but different checks
    for tenant, status in (("a", "PASS"), ("b", "FAIL")):
        folder = tmp_path / tenant
        folder.mkdir()
        write_module(folder, "tenant_checks", f"""
            from guard.checks.base import HealthCheck
            from guard.core.models import CheckStatus, HealthCheckResult


            class TenantCheck(HealthCheck):
                async def run(self, cluster):
                    return HealthCheckResult(cluster_id=cluster.cluster_id, check_name="tenant-{tenant}",
                                             status=CheckStatus.{status}, message="from {tenant}")
        """)

    # WHEN each folder's check is loaded in the same process
    results = [run_custom_checks(load_custom_checks([spec("tenant_checks", "TenantCheck")], tmp_path / t), CLUSTER)[0]
               for t in ("a", "b")]

    # THEN each runs its own code
    assert [r.check_name for r in results] == ["tenant-a", "tenant-b"]
    assert [r.status for r in results] == [CheckStatus.PASS, CheckStatus.FAIL]


def test_no_custom_checks_means_no_results():
    assert run_custom_checks(load_custom_checks([], SEED_CHECKS), CLUSTER) == []
