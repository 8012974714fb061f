"""What a person reads when a batch fails: the error name and cause RecordFailure produces."""

import json

from guard.services.finish import explain


def test_lambda_error_json_becomes_its_message_and_type() -> None:
    # GIVEN the Catch output of a Lambda task that raised PrecheckFailed
    error = {"Error": "PrecheckFailed", "Cause": json.dumps(
        {"errorType": "PrecheckFailed", "errorMessage": "eks-test: nodes_ready: 2/3 nodes Ready",
         "stackTrace": ["  File x"]})}

    # WHEN it is explained
    summary = explain("prechecks", error)

    # THEN the cause is the handler's message, without the stack trace
    assert summary.error == "PrecheckFailed"
    assert summary.cause == "eks-test: nodes_ready: 2/3 nodes Ready"


def test_merge_wait_timeout_is_named_and_says_nothing_was_deployed() -> None:
    # GIVEN the States.Timeout of the task-token wait
    summary = explain("merge_timeout", {"Error": "States.Timeout", "Cause": ""})

    # THEN the error names the MR wait and the cause says what it means
    assert summary.error == "MergeRequestTimeout"
    assert "nothing was deployed" in summary.cause


def test_generic_states_error_takes_the_stage_name() -> None:
    # GIVEN a States.TaskFailed with a plain-text cause during the Flux wait
    summary = explain("flux", {"Error": "States.TaskFailed", "Cause": "boom"})

    # THEN the error says which stage failed, and the cause is kept
    assert (summary.error, summary.cause) == ("FluxSyncFailed", "boom")
