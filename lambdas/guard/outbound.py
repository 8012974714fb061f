"""Every write that leaves GUARD passes through here: GitLab notes and MR descriptions, Slack,
SNS, the LLM prompt, logs, stored evidence and Step Functions error causes.

Two jobs, in this order:
1. **Redaction** (`guard.redact`), always first, before any cut: a secret cut in half by a
   length limit would no longer match its pattern and half of it would leave.
2. **Untrusted text stays text.** Anyone with a pod can write an event message, a probe's
   output or a log line, and an LLM repeats what it read. Such text must never become a
   GitLab quick action (a line starting with `/`, run with the bot's rights), a mention
   (`@all`), a reference, an image that calls an outside host, raw HTML, or a Slack
   broadcast (`<!channel>`) or disguised link (`<https://evil|text>`).

GUARD's own content (its tables, links, code spans, and mentions of the person it answers) is
composed by GUARD and allowed; only text GUARD did not write goes through the `untrusted_*`
functions, at the point it is put into a message. The channel functions (`gitlab_body`,
`slack_text`, ...) are the last pass before the wire, whatever the caller did.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from guard.redact import redact

T = TypeVar("T")

# U+2060 WORD JOINER: invisible, but it breaks the token GitLab would turn into a mention or reference.
_JOIN = "\u2060"
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`\[\]|])")  # links and images need `[`; code spans; tables
# @user, @all, #123, !12 (MR), ~label, %milestone, $snippet, &epic, [[wiki]] start with these.
_REFERENCE = re.compile(r"([@#!~%$&])(?=[\w\"'\-])")
_LEADING_SLASH = re.compile(r"^(\s*(?:>\s*)*)/", re.M)
_HTML_TAG = re.compile(r"<(?=[A-Za-z/!?])")
# An image calls its host from the reader's browser: only Datadog's graph snapshots (GUARD's own rollback
# graphs, `guard.services.markers`) are let through; any other `![` is defused.
_IMAGE = re.compile(r"!\[(?![^\]\n]*\]\(https://p\.(?:[a-z0-9-]+\.)?(?:datadoghq\.com|datadoghq\.eu|ddog-gov\.com)"
                    r"/snapshot/[^\s()<>]*\))")
_BROADCAST = re.compile(r"(?i)@(all|here|channel|everyone)\b")
_FENCE_RUN = re.compile(r"`+")


def _cut(text: str, limit: int | None) -> str:
    if limit is None or len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + "…"


# ------------------------------------------------------------------ GitLab (Markdown)


def untrusted_inline(text: str, limit: int | None = None) -> str:
    """Text GUARD did not write, as one inert line of GitLab Markdown (a table cell, a list item).

    Redacted, then cut; HTML escaped; Markdown punctuation and `|` backslash-escaped; mentions and
    references broken by an invisible joiner; a leading `/` escaped."""
    flat = " ".join(_cut(redact(text), limit).split())
    # References first: escaping `&` as `&amp;` must not be read as an `&epic` reference afterwards.
    flat = _REFERENCE.sub(lambda m: m.group(1) + _JOIN, flat)
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = _MARKDOWN_PUNCTUATION.sub(r"\\\1", flat)
    return "\\" + flat if flat.startswith(("/", "#")) else flat


def untrusted_block(text: str, limit: int | None = None) -> str:
    """Text GUARD did not write (an LLM's answer, notes), as a Markdown block quote whose every line
    is inert (see `untrusted_inline`); no line can start a command."""
    cut = _cut(redact(text), limit)
    return "\n".join(f"> {untrusted_inline(line)}".rstrip() for line in (cut.splitlines() or [""]))


def untrusted_code(text: str, limit: int | None = None) -> str:
    """Text GUARD did not write (a log tail) as a fenced code block: shown verbatim, never rendered.
    The fence is longer than any run of backticks inside, so the text cannot close it."""
    cut = _cut(redact(text), limit)
    longest = max((len(m.group(0)) for m in _FENCE_RUN.finditer(cut)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{cut}\n{fence}"


# GitLab refuses a description or a note over 1,000,000 characters; GUARD stays well under it.
BODY_LIMIT = 200_000


def gitlab_body(text: str, limit: int = BODY_LIMIT) -> str:
    """The last pass over a note or an MR description before GitLab: redacted, and whatever slipped
    through composition defused: no line starts with `/` (quick actions run with the bot's rights),
    no raw HTML tag, no image (it would call an outside host with the reader's browser) but Datadog's
    graph snapshots, no
    broadcast mention (`@all`). Longer than `limit`, it ends at a line with a note of what was left out."""
    text = redact(text)
    text = _LEADING_SLASH.sub(lambda m: m.group(1) + "\\/", text)
    text = _HTML_TAG.sub("&lt;", text)
    text = _IMAGE.sub("\\![", text)
    return fit_body(_BROADCAST.sub(lambda m: "@" + _JOIN + m.group(1), text), limit)


def fit_body(text: str, limit: int = BODY_LIMIT) -> str:
    """`text` within `limit` characters: whole lines kept from the top (the summary comes first), an open
    code fence closed, and a note saying how much was left out and where the rest is."""
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size, fence = 0, None
    lines = text.split("\n")
    for line in lines:
        if size + len(line) + 1 > limit - 500:  # room for the closing fence and the note
            break
        kept.append(line)
        size += len(line) + 1
        run = _FENCE_RUN.match(line.strip())
        if run and len(run.group(0)) >= 3 and (fence is None or line.strip() == fence):
            fence = run.group(0) if fence is None else None
    left = len(lines) - len(kept)
    if fence is not None:
        kept.append(fence)  # the note must not land inside a code block
    kept += ["", f"_… {left} more lines ({len(text) - size:,} characters) left out to stay within GitLab's "
             "size limit: `guard status <execution>` shows every cluster's result._"]
    return "\n".join(kept)


# ------------------------------------------------------------------ Slack, SNS


def slack_text(text: str) -> str:
    """Text for a Slack message: redacted, and `& < >` escaped as Slack asks, so `<!channel>` or
    `<https://evil|text>` arrive as the characters they are."""
    return redact(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain_text(text: str, limit: int | None = None) -> str:
    """Text for a plain channel (SNS e-mail, logs, stored records): redacted, then cut."""
    return _cut(redact(text), limit)


# ------------------------------------------------------------------ the LLM


def llm_evidence(title: str, text: str) -> str:
    """One section of evidence for the prompt: redacted, inside a fence the text cannot close, so
    the model can tell data from instructions (the system prompt says the data is untrusted)."""
    return f"### {title}\n{untrusted_code(text)}"


# ------------------------------------------------------------------ logs


def redacting_formatter() -> Any:
    """A Powertools log formatter whose every line is redacted (a log line is an outbound write too:
    CloudWatch Logs readers are not the people GUARD's secrets belong to). Use it in each handler's
    `Logger(logger_formatter=redacting_formatter())`."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class Redacting(LambdaPowertoolsFormatter):
        def serialize(self, log: Any) -> str:
            return redact(super().serialize(log))

    return Redacting()


# ------------------------------------------------------------------ Step Functions causes

# Step Functions keeps at most 32,768 characters of an error's cause.
CAUSE_LIMIT = 32_768


def cause(text: str, limit: int = CAUSE_LIMIT) -> str:
    """An error cause for Step Functions (and the run record): redacted, then cut to the limit."""
    return _cut(redact(text), limit)


def redacted_errors(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Decorator for a Lambda handler: an exception leaves with its message redacted and cut to the
    cause limit (the runtime turns it into the Step Functions error's cause), same type, same name."""

    @wraps(handler)
    def guarded(event: Any, context: Any) -> T:
        try:
            return handler(event, context)
        except Exception as e:
            message = str(e)
            safe = cause(message, CAUSE_LIMIT - 2_000)  # room for the runtime's JSON around it
            if safe != message:
                e.args = (safe,)
            raise

    return guarded
