"""The webhook abuse table (tests/unit/test_webhook_abuse.py `CASES`) against one moto world per module.

None of these requests may change anything (each case asserts so), so they share one world:
building a moto world per case cost about 0.4 s each.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from guard.stores.state import StateStore, TaskTokenRecord

from tests.unit.test_webhook import MR, NOW, call, deliveries, moto_webhook_world
from tests.unit.test_webhook_abuse import CASES


@pytest.fixture(scope="module")
def shared_waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StateStore, Any]]:
    """An execution paused on MR !42, for the whole table."""
    with pytest.MonkeyPatch.context() as env, \
            moto_webhook_world(env, tmp_path_factory.mktemp("abuse")) as (state, table):
        state.put_task_token(TaskTokenRecord(merge_request_url=MR, task_token="token-42", run_id="run-1"), NOW, 72)
        yield state, table


@pytest.mark.parametrize(("headers", "body", "status", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_abuse_gets_a_4xx_or_a_200_never_a_5xx_and_changes_nothing(shared_waiting, headers, body, status, fragment):
    # GIVEN an execution waiting on MR !42
    state, table = shared_waiting
    # WHEN a forged, malformed, oversized or foreign request arrives
    got, answer = call(headers, body)
    # THEN it gets the expected 2xx/4xx with a short answer naming the problem
    assert got < 500
    assert (got, fragment in answer["message"]) == (status, True), answer["message"][:300]
    assert len(answer["message"]) < 500
    # AND the execution still waits, and no delivery was recorded
    assert state.get_task_token(MR) is not None
    assert deliveries(table) == []


