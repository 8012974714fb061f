"""Remove secrets from text that leaves GUARD (LLM prompts, chat messages, MR comments).

The patterns cover what GUARD itself handles (GitLab, OpenAI/Anthropic and AWS keys, EKS
bearer tokens, Slack webhook URLs) plus the usual shapes of credentials in logs. Better
to blank an innocent string than to send one real key.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole block.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
    # EKS / aws-iam-authenticator bearer tokens.
    (re.compile(r"k8s-aws-v1\.[A-Za-z0-9_\-.=]+"), REDACTED),
    # Authorization headers and "bearer <token>" wherever they appear.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + REDACTED),
    # GitLab tokens (personal, OAuth, deploy, runner, CI job, feed, agent, ...).
    (re.compile(r"\bgl(?:pat|oas|dt|rt|cbt|ptt|ft|imt|agent|soat|ffct|sa)-[A-Za-z0-9_\-.]{8,}"), REDACTED),
    # OpenAI / Anthropic style secret keys (sk-..., sk-proj-..., sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), REDACTED),
    # AWS access key ids (long-term and temporary).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    # Slack incoming webhooks carry their secret in the path.
    (re.compile(r"https://hooks\.slack(?:-gov)?\.com/\S+"), REDACTED),
    # JWTs (service account tokens, OIDC).
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), REDACTED),
    # Presigned URL signatures and session tokens.
    (re.compile(r"(?i)(X-Amz-(?:Signature|Security-Token|Credential)=)[^&\s\"']+"), r"\1" + REDACTED),
    # Credentials inside URLs: scheme://user:password@host keeps the user, loses the password.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]+:)[^\s@/]+(@)"), r"\1" + REDACTED + r"\2"),
    # Slack tokens (bot, user, app, legacy, refresh).
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{8,}"), REDACTED),
    (re.compile(r"\bxapp-[A-Za-z0-9\-]{8,}"), REDACTED),
    # GitHub tokens (classic ghp_/gho_/ghu_/ghs_/ghr_ and fine-grained github_pat_).
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), REDACTED),
    # Google API keys.
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), REDACTED),
    # Datadog API keys are 32 hex characters. (Application keys are 40, like a git SHA: those are caught by
    # the key-name rules below rather than everywhere, so commit SHAs stay readable.)
    (re.compile(r"(?<![0-9A-Fa-f])[0-9a-f]{32}(?![0-9A-Fa-f])"), REDACTED),
    # Command-line flags that carry a secret: --password X, --token=X, --api-key X.
    (re.compile(r"(?i)(--?(?:password|passwd|pass|token|secret|api[_-]?key|app[_-]?key|access[_-]?key)(?:=|\s+))"
                r"(?!\[REDACTED\])\S+"), r"\1" + REDACTED),
    # key = value / key: value / "key": "value" for names that say secret.
    (re.compile(r"(?i)(\"?\b[\w.\-]*(?:secret|password|passwd|token|api[_-]?key|access[_-]?key|private[_-]?key)"
                r"[\w.\-]*\"?\s*[:=]\s*\"?)([^\s\"',;&}]{4,})"), r"\1" + REDACTED),
    # A high-entropy value right after a word that says secret ("token abc123...", "password is X1y2..."):
    # 16+ characters mixing letters and digits.
    (re.compile(r"(?i)\b((?:key|token|secret|password|passwd)\b(?:\s+is)?[\s:=\"']{1,3})"
                r"(?=[A-Za-z0-9+/_\-]*\d)(?=[A-Za-z0-9+/_\-]*[A-Za-z])[A-Za-z0-9+/_\-]{16,}"), r"\1" + REDACTED),
)


def redact(text: str) -> str:
    """`text` with every secret-looking substring replaced by `[REDACTED]`."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
