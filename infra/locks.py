"""Hash-locked dependencies per function: `lambdas/requirements/locks/<groups>.txt`.

The requirement groups (`lambdas/requirements/<group>.txt`) pin only the top-level packages; a
lock pins every package a function installs, transitive ones included, each with the sha256 of
the wheels the Lambda platforms use. Bundling installs a lock with `--require-hashes --no-deps`
(infra/bundling.py), so a package index that serves a changed file, or a dependency that appeared
since the lock was made, fails the build instead of entering a function.

A lock is made by pip's own resolver for the Lambda target (CPython 3.12, manylinux2014 wheels for
arm64 and x86_64) with `pip install --dry-run --report`, the hashes taken from the files it chose.
Its first line records the sha256 of the group files it was made from, so a test notices a lock
that no longer matches its groups. Refresh after changing a group file:

    PYTHONPATH=lambdas:. .venv/bin/python -m infra.locks
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

PYTHON_VERSION = "3.12"
LOCK_PLATFORMS = ("manylinux2014_aarch64", "manylinux2014_x86_64")
INPUTS_PREFIX = "# inputs-sha256: "


class LockError(RuntimeError):
    """pip could not resolve a lock, or a lock is missing or stale."""


def lock_name(groups: Sequence[str]) -> str:
    """The lock file's name for a function's groups (order as the function lists them)."""
    return "+".join(groups) + ".txt"


def lock_path(requirements_dir: Path, groups: Sequence[str]) -> Path:
    return requirements_dir / "locks" / lock_name(groups)


def inputs_digest(requirements_dir: Path, groups: Sequence[str]) -> str:
    """sha256 over the group files a lock is made from."""
    digest = hashlib.sha256(PYTHON_VERSION.encode())
    for group in groups:
        digest.update(group.encode() + b"\0" + (requirements_dir / f"{group}.txt").read_bytes())
    return digest.hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The inputs digest a lock file says it was made from, or None."""
    first = lock.read_text().splitlines()[0] if lock.is_file() else ""
    return first.removeprefix(INPUTS_PREFIX) if first.startswith(INPUTS_PREFIX) else None


def _resolve(files: Sequence[Path], platform_tag: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (version, {sha256}) of what pip installs for `platform_tag` from `files`."""
    with tempfile.TemporaryDirectory(prefix="guard-lock-") as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--disable-pip-version-check", "--report", str(report), "--platform", platform_tag,
                   "--python-version", PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:"]
        for file in files:
            command += ["-r", str(file)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LockError(f"pip could not resolve {', '.join(f.name for f in files)} for {platform_tag}:\n"
                            f"{result.stderr.strip()[-2000:]}")
        installs = json.loads(report.read_text())["install"]
    found: dict[str, tuple[str, set[str]]] = {}
    for item in installs:
        name = item["metadata"]["name"].lower().replace("_", "-")
        hashes = (item["download_info"].get("archive_info") or {}).get("hashes") or {}
        if "sha256" not in hashes:
            raise LockError(f"{name}: pip reported no sha256 for {item['download_info'].get('url')}")
        found[name] = (item["metadata"]["version"], {hashes["sha256"]})
    return found


def render_lock(requirements_dir: Path, groups: Sequence[str]) -> str:
    """The lock file text for `groups`: every package, pinned, with the hashes of both platforms' wheels."""
    merged: dict[str, tuple[str, set[str]]] = {}
    for platform_tag in LOCK_PLATFORMS:
        for name, (version, hashes) in _resolve([requirements_dir / f"{g}.txt" for g in groups],
                                                platform_tag).items():
            if name in merged and merged[name][0] != version:
                raise LockError(f"{name}: {merged[name][0]} on one platform, {version} on {platform_tag}")
            merged.setdefault(name, (version, set()))[1].update(hashes)
    lines = [f"{INPUTS_PREFIX}{inputs_digest(requirements_dir, groups)}",
             f"# Made by `python -m infra.locks` from {', '.join(f'{g}.txt' for g in groups)} for CPython "
             f"{PYTHON_VERSION} on {' and '.join(LOCK_PLATFORMS)}; installed with --require-hashes."]
    for name in sorted(merged):
        version, hashes = merged[name]
        lines.append(f"{name}=={version} \\")
        lines += [f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
                  for i, h in enumerate(sorted(hashes))]
    return "\n".join(lines) + "\n"


def write_locks(requirements_dir: Path, group_sets: Iterable[Sequence[str]]) -> list[Path]:
    """(Re)write the lock of each group set whose inputs changed; returns the files written."""
    written = []
    for groups in dict.fromkeys(tuple(g) for g in group_sets):
        path = lock_path(requirements_dir, groups)
        if recorded_digest(path) == inputs_digest(requirements_dir, groups):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_lock(requirements_dir, groups))
        written.append(path)
    return written


def main() -> int:
    from infra.functions import FUNCTIONS

    requirements = Path(__file__).resolve().parents[1] / "lambdas" / "requirements"
    for path in write_locks(requirements, (spec.groups for spec in FUNCTIONS)):
        print(f"wrote {path.relative_to(requirements.parents[1])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
