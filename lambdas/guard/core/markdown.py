"""Putting text GUARD did not write (an LLM's answer) into a GitLab comment or MR description.

Such text must never form a line GitLab or GUARD acts on: GitLab runs quick actions (`/merge`,
`/approve`, ...) found at the start of a line of a note or description, with the rights of the
account that posted it (GUARD's bot), and GUARD reads `/guard proceed` at the start of a line.
So every line becomes a Markdown block quote (`> `), and a `/` that would lead the line anyway
is escaped (`\\/`, which Markdown shows as `/`).
"""

from __future__ import annotations


def quote_block(text: str) -> str:
    """`text` as a block quote, one `> ` per line, no line able to start a command."""
    return "\n".join(f"> {_defuse(line)}".rstrip() for line in (text.splitlines() or [""]))


def one_line(text: str) -> str:
    """`text` flattened to one line (list items, table cells), with a leading `/` escaped."""
    return _defuse(" ".join(text.split()))


def _defuse(line: str) -> str:
    stripped = line.lstrip()
    if stripped.startswith("/"):
        return line[: len(line) - len(stripped)] + "\\" + stripped
    return line
