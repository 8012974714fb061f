"""Scheduled (every `gitlab.reconcile_minutes`): settle MR waits whose GitLab webhook was lost.

Input: the scheduler's event (ignored). Returns {"checked": int, "settled": [str], "cleaned": [str], "failed": [],
"tended": [str], "indexed": int (items written before the watch index, indexed by this pass)}; raises when a
merge request could not be checked (the others were). Orphan tokens (no run record) are deleted with a
warning, never a failure. Rollback MRs left to a person are followed: once merged and applied, the registry is
set to what the clusters run.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.adapters.step_functions import StepFunctionsCallbacks
from guard.outbound import redacted_errors, redacting_formatter
from guard.retry import with_lambda_budget
from guard.services.decision import DecisionService
from guard.services.gates import MergeGateService
from guard.services.reconcile import ReconcileService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    sfn = StepFunctionsCallbacks(runtime.step_functions())

    def decisions() -> DecisionService:  # built on first use: only a /guard comment needs GitLab
        return runtime.decision_service(sfn)

    repo = runtime.gitops_repo()
    gates = MergeGateService(repo, auto_merge=runtime.config().gitlab.auto_merge, registry=runtime.registry(),
                             state=runtime.state(), failures=runtime.failure_store(), clock=runtime.clock)
    report = ReconcileService(runtime.state(), sfn, repo, decisions, log_warning=logger.warning,
                              registry=runtime.registry(),
                              observer=runtime.registry_observer(logger.warning), gates=gates,
                              clock=runtime.clock).run()
    logger.info("reconciled", extra={"checked": report.checked, "settled": report.settled,
                                     "cleaned": report.cleaned, "tended": report.tended,
                                     "indexed": report.indexed})
    return report.model_dump()
