"""Pure pieces of the failure path: redaction, the prompt cap, `/guard` parsing, branch names, cold imports."""

from __future__ import annotations

import json

import pytest
from guard.config.models import NotificationsConfig
from guard.llm.prompt import TRUNCATED, Section, fit
from guard.redact import redact
from guard.services.change import rollback_branch, short_run_id
from guard.services.decision import parse_command
from pydantic import ValidationError

from tests.unit.test_handler_imports import imported_after


@pytest.mark.parametrize("secret", [
    "glpat-" + "a1B2c3D4e5" * 2, "sk-proj-" + "Ab1" * 8, "sk-ant-api03-" + "x" * 20, "AKIA" + "B" * 16,
    "ASIA" + "C" * 16, "k8s-aws-v1." + "aHR0cHM6" * 5, "https://hooks.slack.com/services/T0/B0/" + "z" * 24,
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0.c2lnbmF0dXJlLXBhcnQ",
])
def test_secrets_are_redacted_and_the_text_around_them_kept(secret):
    # GIVEN a log line carrying a secret; WHEN redacted THEN the secret is gone and the line still reads
    line = f"istiod: upstream rejected {secret} at 09:01"
    assert secret not in redact(line)
    assert redact(line).startswith("istiod: upstream rejected") and redact(line).endswith("at 09:01")


def test_bearer_headers_and_key_values_are_redacted():
    text = 'Authorization: Bearer abcdefgh12345678 password=hunter22 "api_key": "k-123456"'
    out = redact(text)
    assert "abcdefgh12345678" not in out and "hunter22" not in out and "k-123456" not in out
    assert "Bearer [REDACTED]" in out


def test_prompt_cap_cuts_least_important_first_and_keeps_a_log_s_tail():
    # GIVEN the essential verdict, a mid-priority summary and a long log
    parts = [Section("verdict", "latency_p95 exceeds +10%", 0), Section("summary", "s" * 300, 1),
             Section("log", "\n".join(f"line {i}" for i in range(2_000)), 4, keep_tail=True)]

    # WHEN fitted into 1,000 characters
    text = fit(parts, 1_000)

    # THEN it fits, the verdict and the summary are whole, and the log kept its last line, inside its fence
    assert len(text) <= 1_000
    assert "latency_p95 exceeds +10%" in text and "s" * 300 in text
    assert text.endswith("line 1999\n```") and TRUNCATED in text and "line 0\n" not in text
    assert text.count("```text\n") == 3  # every section is fenced: data, not instructions


@pytest.mark.parametrize(("note", "command"), [
    ("/guard proceed", "proceed"), ("  /GUARD Rollback  ", "rollback"), ("LGTM\n/guard proceed\nthanks", "proceed"),
    ("/guard merge-it", "merge-it"), ("please /guard proceed", None), ("looks fine", None), ("", None),
])
def test_guard_commands_are_read_from_their_own_line(note, command):
    assert parse_command(note) == command


def test_rollback_branch_is_deterministic_and_short():
    run_id = "7f3a9c2e-1b4d-4e8f-9a0b-5c6d7e8f9a0b"
    assert rollback_branch("guard/istio-upgrade", "prod", run_id) == rollback_branch("guard/istio-upgrade", "prod",
                                                                                     run_id)
    assert short_run_id(run_id).startswith("7f3a9c2e-") and len(short_run_id(run_id)) == 15
    assert short_run_id("run42") == "run42"


def test_unknown_notification_events_fail_the_config():
    with pytest.raises(ValidationError, match="unknown event"):
        NotificationsConfig(events=["started", "exploded"])


@pytest.mark.parametrize("module", ["handlers.analyze_failure", "handlers.notify", "handlers.open_rollback",
                                    "handlers.await_decision", "handlers.verify_rollback", "handlers.plan_rollback"])
def test_failure_handlers_load_no_llm_sdk_at_cold_start(module):
    # GIVEN a fresh interpreter; WHEN the handler is imported THEN openai/anthropic are not loaded yet
    loaded = set(imported_after(module)["packages"])  # type: ignore[arg-type]
    assert not loaded & {"openai", "anthropic"}


def test_notify_and_webhook_handlers_stay_light():
    for module in ("handlers.notify", "handlers.gitlab_webhook"):
        loaded = set(imported_after(module)["packages"])  # type: ignore[arg-type]
        assert not loaded & {"openai", "anthropic", "kubernetes", "gitlab", "datadog_api_client"}, module


def test_a_rollback_left_for_a_person_counts_the_metric_the_alarm_watches(tmp_path, monkeypatch, capsys):
    # GIVEN the OpenRollback function of tenant "unit", as the stack configures it
    from guard import runtime
    from handlers import open_rollback

    config = {"tenant": "unit", "batches": [{"name": "b", "clusters": ["c"]}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("GUARD_CONFIG_FILE", str(tmp_path / "config.json"))
    runtime.reset()
    try:
        # WHEN the service says a rollback MR needs a person
        open_rollback.needs_person("rollback merge request !8 left open")
    finally:
        runtime.reset()
    # THEN one RollbackNeedsPerson is emitted (EMF) in namespace GUARD with the service and tenant dimensions
    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    directive = emf["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "GUARD" and directive["Metrics"][0]["Name"] == "RollbackNeedsPerson"
    assert sorted(directive["Dimensions"][0]) == ["service", "tenant"]
    assert (emf["service"], emf["tenant"], emf["RollbackNeedsPerson"]) == ("guard", "unit", [1.0])
