"""No function may write a table its code never writes: the grants of the synthesized stack against a static scan."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.functions import FUNCTIONS

from .store_access import calls, reach, write_methods
from .test_stack import _actions, _function_id, _role_statements, _table_id

pytestmark = pytest.mark.infra

WRITE_ACTIONS = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
TABLES = {"state": "guard-alpha-state", "registry": "guard-alpha-cluster-registry"}


def _writes_granted(template: Template, construct_id: str, table: str) -> bool:
    """Whether a statement on the function's role allows a write action on `table` (any ARN form of it)."""
    table_id = _table_id(template, TABLES[table])
    for statement in _role_statements(template, construct_id):
        if statement.get("Effect", "Allow") != "Allow" or not WRITE_ACTIONS & set(_actions(statement)):
            continue
        resources: Any = statement["Resource"]
        if table_id in str(resources) or resources == "*":
            return True
    return False


def test_the_scan_finds_the_stores_writes() -> None:
    # GIVEN the stores' code WHEN scanned THEN the writes it derives include the ones everybody knows
    found = {(m.store, m.name) for m in write_methods()}
    assert {("StateStore", "put_run"), ("StateStore", "acquire_lock"), ("StateStore", "release_lock"),
            ("StateStore", "delete_task_token"), ("FailureStore", "put_rollback"), ("RolloutStore", "update"),
            ("Deliveries", "once"), ("ClusterRegistry", "record_observed")} <= found
    # AND no read is taken for a write
    assert not {("StateStore", "get_run"), ("StateStore", "find_run"), ("ClusterRegistry", "get_many")} & found


@pytest.mark.parametrize("spec", FUNCTIONS, ids=[s.id for s in FUNCTIONS])
@pytest.mark.parametrize("table", list(TABLES))
def test_a_function_may_write_a_table_only_if_its_code_writes_it(alpha: Template, spec: Any, table: str) -> None:
    # GIVEN what the function's handler and the modules it reaches call on the table's stores
    reached = reach(spec.handler)
    # WHEN the synthesized grants of its role are read
    granted = _writes_granted(alpha, spec.id, table)
    # THEN a write grant is backed by a write in its code
    if granted:
        assert reached.writes_table(table), f"{spec.id} may write the {table} table but its code never does"
    # AND on the state table (every write there is a store call) each writer has its grant, so the scan
    # also keeps infra/functions.py honest in the other direction
    if table == "state":
        assert granted == reached.writes_table(table), sorted(reached.writes.get(table, set()))


def test_a_function_that_only_reads_the_state_table_is_granted_reads_only(alpha: Template) -> None:
    # GIVEN Notify, whose code only reads runs and failure records
    assert not reach("handlers.notify.handler").writes_table("state")
    # WHEN its grants are read THEN it may read the state table and not write it
    state = _table_id(alpha, TABLES["state"])
    statements = [s for s in _role_statements(alpha, "Notify") if state in str(s["Resource"])]
    actions = {a for s in statements for a in _actions(s)}
    assert "dynamodb:GetItem" in actions and not actions & WRITE_ACTIONS


def test_custom_check_code_runs_in_a_function_without_table_access(alpha: Template) -> None:
    # GIVEN the CustomChecks function, where the tenant's check code runs
    registry, state = (_table_id(alpha, name) for name in TABLES.values())
    statements = _role_statements(alpha, "CustomChecks")
    # WHEN its grants are read THEN it may touch neither table, and Precheck learns its name
    assert not [s for s in statements if registry in str(s["Resource"]) or state in str(s["Resource"])]
    precheck = alpha.find_resources("AWS::Lambda::Function", {"Properties": {"Handler": "handlers.precheck.handler"}})
    env = next(iter(precheck.values()))["Properties"]["Environment"]["Variables"]
    assert env["GUARD_CUSTOM_CHECKS_FUNCTION"] == {"Ref": _function_id(alpha, "CustomChecks")}


# The StateStore methods that Query the watch index.
WATCH_LISTINGS = {"list_task_tokens", "list_unwatched_rollbacks", "watched"}


@pytest.mark.parametrize("spec", FUNCTIONS, ids=[s.id for s in FUNCTIONS])
def test_only_a_function_that_lists_watched_items_may_query_the_watch_index(alpha: Template, spec: Any) -> None:
    # GIVEN whether the function's code lists the tokens or left rollbacks (a Query of the state table's index)
    lists = bool(calls(spec.handler, WATCH_LISTINGS))
    # WHEN the grants of its role on the state table are read
    state = _table_id(alpha, TABLES["state"])
    on_state = [s for s in _role_statements(alpha, spec.id) if state in str(s["Resource"])]
    on_index = [s for s in on_state if "/index/" in str(s["Resource"])]
    # THEN it may Query the watch index, and only that index and only Query, exactly when its code lists
    assert bool(on_index) == lists, (spec.id, on_index)
    for statement in on_index:
        assert _actions(statement) == ["dynamodb:Query"]
        assert "/index/watch-index" in str(statement["Resource"]) and "/index/*" not in str(statement["Resource"])
    # AND no grant on the table's items reaches its indexes (CDK's grant_read_data would add <table>/index/*)
    assert all("index" not in str(s["Resource"]) for s in on_state if s not in on_index), on_state


def test_the_reconciler_is_the_one_function_that_lists_watched_items() -> None:
    # GIVEN the code of every function WHEN scanned for the listings THEN only Reconcile's calls one
    assert [s.id for s in FUNCTIONS if calls(s.handler, WATCH_LISTINGS)] == ["Reconcile"]


@pytest.mark.parametrize("spec", FUNCTIONS, ids=[s.id for s in FUNCTIONS])
def test_only_the_reconciler_may_scan_the_state_table(alpha: Template, spec: Any) -> None:
    # GIVEN whether the function's code indexes the items written before the watch index (a Scan)
    scans = bool(calls(spec.handler, {"index_unindexed_watched_items"}))
    # WHEN the actions its role may take on the state table are read
    state = _table_id(alpha, TABLES["state"])
    actions = {a for s in _role_statements(alpha, spec.id) if state in str(s["Resource"]) for a in _actions(s)}
    # THEN it may Scan the table exactly when its code does: the reconciler (every other read is by key)
    assert ("dynamodb:Scan" in actions) == scans, (spec.id, sorted(actions))
    assert ("dynamodb:Scan" in actions) == (spec.id == "Reconcile")
