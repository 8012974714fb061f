"""The LLM failure analyst through the real openai and anthropic SDKs, over HTTP, against the local LLM simulator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from guard.config.models import LlmConfig
from guard.core.evidence import ClusterEvidence, EventInfo, FailureEvidence, PodStatus, SeriesSummary, Violation
from guard.errors import AnalysisUnavailable, ConfigError
from guard.llm.base import Analysis
from guard.llm.factory import build_analyst

from sandbox.sims.llm_sim import DEFAULT_ANSWER, LlmSimulator

KEY = "sk-sim-analyst-key"
# Secrets as they might appear in an istiod log or an event message (fakes, in real shapes).
SECRETS = {
    "gitlab": "glpat-" + "Zx9" * 7,
    "openai": "sk-proj-" + "q1W2e3R4" * 3,
    "aws": "AKIA" + "Q" * 16,
    "aws_temp": "ASIA" + "7" * 16,
    "bearer": "Bearer " + "abc.def-ghi" * 4,
    "eks": "k8s-aws-v1." + "aHR0cHM6Ly9zdHM" * 4,
}


def evidence(log_lines: int = 40) -> FailureEvidence:
    log = "\n".join(f"2025-03-01T09:{i % 60:02d}:00Z info ads Push debounce stable[{i}] 12 for config" for i in
                    range(log_lines))
    log += (f"\nwarn authenticate failed token={SECRETS['gitlab']} header Authorization: {SECRETS['bearer']}"
            f"\nerror aws creds {SECRETS['aws']} / {SECRETS['aws_temp']} key {SECRETS['openai']}"
            f"\ndebug kube token {SECRETS['eks']}\nLAST-LOG-LINE")
    return FailureEvidence(run_id="run-1", batch="prod-canary", target_version="1.21.0", clusters=[ClusterEvidence(
        cluster_id="eks-prod-1", outcome="fail", from_version="1.20.3", to_version="1.21.0",
        summary="eks-prod-1: fail: latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%",
        violations=[Violation(name="latency_p95", outcome="fail", baseline=212.6, current=264.5, threshold=10,
                              explanation="latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%")],
        series=[SeriesSummary(query_name="latency_p95", baseline={"min": 200, "mean": 212.6, "max": 230, "last": 210},
                              current={"min": 250, "mean": 264.5, "max": 290, "last": 270})],
        pods=[PodStatus(namespace="istio-system", name="istiod-abc", phase="Running", ready=True, restarts=3)],
        events=[EventInfo(namespace="istio-system", involved_object="Pod/istiod-abc", reason="BackOff", type="Warning",
                          message=f"Back-off restarting; password={'hunter2' * 2}", count=4)],
        istiod_log=log,
    )])


def config(sim: LlmSimulator, provider: str, **extra: object) -> LlmConfig:
    base_url = f"{sim.url}/v1" if provider == "openai" else sim.url
    return LlmConfig(enabled=True, provider=provider, model="sim-model", base_url=base_url,  # type: ignore[arg-type]
                     timeout_seconds=extra.pop("timeout_seconds", 5), **extra)  # type: ignore[arg-type]


@pytest.fixture
def sim() -> Iterator[LlmSimulator]:
    with LlmSimulator(api_key=KEY) as s:
        yield s


PROVIDERS = ["openai", "anthropic"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_json_answer_becomes_a_validated_analysis(sim, provider):
    # GIVEN an LLM endpoint that answers a well-formed analysis
    analyst = build_analyst(config(sim, provider), KEY)

    # WHEN GUARD asks it about a failed upgrade
    analysis = analyst.analyze(evidence())

    # THEN the analysis is the model's answer, validated
    assert analysis == Analysis.model_validate(DEFAULT_ANSWER)
    # AND one request reached the vendor's endpoint, with the configured model and the violation in the prompt
    assert len(sim.requests) == 1
    request = sim.requests[0]
    assert request.path == ("/v1/chat/completions" if provider == "openai" else "/v1/messages")
    assert request.body["model"] == "sim-model"
    assert "latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%" in request.prompt_text()
    if provider == "openai":
        assert request.body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_secret_reaches_the_llm(sim, provider):
    # GIVEN evidence whose log and events carry tokens and keys
    analyst = build_analyst(config(sim, provider), KEY)

    # WHEN it is analysed
    analyst.analyze(evidence())

    # THEN none of them was sent, and the log lines around them were
    sent = sim.requests[0].prompt_text()
    for name, secret in SECRETS.items():
        assert secret not in sent, name
        assert secret.split(" ")[-1][:20] not in sent, name
    assert "hunter2" not in sent
    assert "[REDACTED]" in sent and "LAST-LOG-LINE" in sent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_prompt_is_capped_cutting_the_log_first_and_keeping_its_tail(sim, provider):
    # GIVEN a huge istiod log and a 4,000-character prompt cap
    analyst = build_analyst(config(sim, provider, max_prompt_chars=4_000), KEY)

    # WHEN it is analysed
    analyst.analyze(evidence(log_lines=5_000))

    # THEN what the endpoint received is within the cap
    sent = sim.requests[0].prompt_text()
    assert len(sent) <= 4_000
    # AND the violations and metric summary survived while the log lost its head, not its tail
    assert "exceeds +10%" in sent and "metric summary" in sent
    assert "LAST-LOG-LINE" in sent and "stable[0]" not in sent
    assert "truncated" in sent


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_garbage_answer_is_analysis_unavailable(sim, provider):
    # GIVEN an endpoint that answers prose instead of JSON
    sim.mode = "garbage"
    analyst = build_analyst(config(sim, provider), KEY)

    # WHEN / THEN the analysis is unavailable, saying why
    with pytest.raises(AnalysisUnavailable, match="not JSON"):
        analyst.analyze(evidence())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_with_the_wrong_fields_is_analysis_unavailable(sim, provider):
    # GIVEN an endpoint that answers JSON without the required fields
    sim.answer = {"summary": "looks bad", "actions": ["roll back"]}
    analyst = build_analyst(config(sim, provider), KEY)

    # WHEN / THEN it is refused, naming the missing field
    with pytest.raises(AnalysisUnavailable, match="root_cause"):
        analyst.analyze(evidence())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hanging_endpoint_times_out_once_without_sdk_retries(sim, provider):
    # GIVEN an endpoint that hangs well past the 0.5 s timeout
    sim.mode, sim.hang_seconds = "hang", 10
    analyst = build_analyst(config(sim, provider, timeout_seconds=0.5), KEY)

    # WHEN it is analysed
    started = time.monotonic()
    with pytest.raises(AnalysisUnavailable, match="timed out"):
        analyst.analyze(evidence())

    # THEN it gave up after about the timeout, with a single attempt
    assert time.monotonic() - started < 3
    assert len(sim.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_500_is_analysis_unavailable_after_the_policys_two_attempts(sim, provider):
    # GIVEN an endpoint in an outage
    sim.mode = "error"
    analyst = build_analyst(config(sim, provider), KEY)

    # WHEN / THEN the reason names the status and the attempts: GUARD's policy tried twice, the SDK never
    with pytest.raises(AnalysisUnavailable, match=r"HTTP 500.*gave up after 2 attempt"):
        analyst.analyze(evidence())
    assert len(sim.requests) == 2


def test_a_wrong_key_is_unavailable_and_the_key_is_not_in_the_reason(sim):
    # GIVEN a revoked key
    analyst = build_analyst(config(sim, "openai"), "sk-revoked-key-0000")

    # WHEN / THEN unavailable with the status only
    with pytest.raises(AnalysisUnavailable) as error:
        analyst.analyze(evidence())
    assert "401" in str(error.value) and "sk-revoked" not in str(error.value)


def test_the_factory_refuses_an_unknown_provider():
    # GIVEN a provider that slipped past the schema (model_construct skips validation)
    cfg = LlmConfig.model_construct(**{**LlmConfig().model_dump(), "provider": "bard"})

    # WHEN / THEN it is refused, not defaulted
    with pytest.raises(ConfigError, match="unknown provider 'bard'"):
        build_analyst(cfg, KEY)
