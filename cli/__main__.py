"""`python -m cli registry import|export FILE ...`, `python -m cli calibrate ...`: GUARD's operator commands."""

from __future__ import annotations

import argparse
import sys

from cli import calibrate, registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli", description="GUARD operator commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    registry.add_commands(commands)
    calibrate.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 1 AWS/registry failure, 2 bad input or usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else 2
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
