"""The ``gcnet`` command line, one module per command; each delegates what is task-specific
to the task (:mod:`gcnet.tasks`)."""

from __future__ import annotations

import argparse
import sys

from . import analyze, blocks, demo, export, info, predict, train
from . import eval as eval_

__all__ = ["build_parser", "main"]

COMMANDS = (blocks, info, export, train, eval_, predict, analyze, demo)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gcnet", description="Global Context Networks in PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        msg = str(e)
        if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the message only
            msg = [line for line in msg.splitlines() if line.strip()][-1]
        print(f"gcnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
