"""Task `AnalyzeFailure`: evidence per failing cluster + LLM analysis; never fails on the analysis.

Input:  {"run_id": str, "enable_llm_analysis": bool | null (optional; default: the run's input)}
Output: {"available": bool, "text": str (summary, or "analysis unavailable: <reason>"),
         "failing_clusters": [str] (the first 10), "failing_count": int, "verdict": "fail" | "inconclusive",
         "needs_decision": bool, "first_violation": str | null}
Evidence and analysis are stored under RUN#<run_id> / EVIDENCE and / ANALYSIS.
"""

from typing import Any

from aws_lambda_powertools import Logger
from guard import runtime
from guard.errors import GuardError
from guard.outbound import redacted_errors, redacting_formatter
from guard.ports import EvidenceConnector
from guard.retry import with_lambda_budget
from guard.services.analysis import AnalysisService
from guard.services.evidence import EvidenceService

logger = Logger(logger_formatter=redacting_formatter())


@logger.inject_lambda_context
@with_lambda_budget
@redacted_errors
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cfg = runtime.config()
    connector: EvidenceConnector | None
    try:
        connector = runtime.evidence_connector()
    except GuardError as e:  # no cluster access still leaves the stored verdicts as evidence
        logger.warning("no Kubernetes evidence", extra={"error": str(e)})
        connector = None
    evidence = EvidenceService(cfg, runtime.registry(), runtime.state(), connector, runtime.clock)
    service = AnalysisService(cfg, runtime.state(), runtime.failure_store(), evidence, runtime.llm_analyst,
                              runtime.clock)
    flag = event.get("enable_llm_analysis")
    outcome = service.analyze(str(event["run_id"]), flag if isinstance(flag, bool) else None)
    logger.info("failure analysed", extra={"available": outcome.available, "verdict": outcome.verdict})
    return outcome.model_dump()
