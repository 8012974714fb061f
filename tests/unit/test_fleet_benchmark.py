"""benchmarks/fleet.py's generated ids and where the rehearsal says the largest state is."""

from __future__ import annotations

import json
import re

import pytest
from guard.core.models import NAME_PATTERN

from benchmarks.fleet import cluster_names
from sandbox.rehearsal import largest_payload


def test_ids_of_a_given_length_are_distinct_valid_cluster_ids_of_exactly_that_length():
    # WHEN 2,000 ids of 100 characters are generated
    names = cluster_names(2_000, 100)
    # THEN each is exactly 100 characters, a valid cluster id, and no two are the same
    assert {len(n) for n in names} == {100} and len(set(names)) == 2_000
    assert all(re.match(NAME_PATTERN, n) for n in names)
    # AND without a length they are the usual short ones
    assert cluster_names(2) == ["eks-fleet-0000", "eks-fleet-0001"]


@pytest.mark.parametrize("length", [15, 101])
def test_a_length_the_ids_cannot_have_is_refused_naming_the_bounds(length):
    with pytest.raises(ValueError, match=r"must be 16\.\.100"):
        cluster_names(10, length)


def test_the_largest_payload_is_named_by_its_event_and_state():
    # GIVEN a history where a task's result (no state name on the event) is the largest data
    small, large = json.dumps({"a": 1}), json.dumps({"clusters": ["x" * 100] * 50})
    events = [
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Plan", "input": small}},
        {"type": "TaskSucceeded", "taskSucceededEventDetails": {"output": small}},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Conclude", "input": small}},
        {"type": "TaskSucceeded", "taskSucceededEventDetails": {"output": large}},
        {"type": "TaskStateExited", "stateExitedEventDetails": {"name": "Conclude", "output": small}},
    ]
    # THEN it is named by the event's type and the state last entered
    assert largest_payload(events) == "TaskSucceeded in Conclude"
    assert largest_payload([]) == ""
