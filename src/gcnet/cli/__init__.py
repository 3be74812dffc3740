"""The ``gcnet`` command line, one module per command; each delegates what is task-specific
to the task (`gcnet.tasks`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from . import analyze, blocks, demo, export, info, predict, study, train
from . import eval as eval_

__all__ = ["build_parser", "main"]

COMMANDS = (blocks, info, export, train, eval_, predict, analyze, demo, study)


# options of every command, before it (``gcnet -q train ...``) or after it (``gcnet train -q ...``)
GLOBAL_OPTIONS = (
    (("-v", "--verbose"), "log_verbose", "debug messages too"),
    (("-q", "--quiet"), "log_quiet", "warnings and errors only (no epoch lines; a command's results stay)"),
    (("--debug",), "log_debug", "an error's traceback after its line, and --verbose (or GCNET_DEBUG=1)"),
)


def _add_global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """The global options on ``parser``; on a command's parser (``top`` false) they keep what
    was given before the command unless given again, and give way to the command's own
    option of the same name (``demo --verbose``: its epoch lines on the terminal)."""
    group = parser.add_argument_group("global options")
    for flags, dest, help_ in GLOBAL_OPTIONS:
        if set(flags) & set(parser._option_string_actions):
            continue
        group.add_argument(*flags, dest=dest, action="store_true", help=help_,
                           default=False if top else argparse.SUPPRESS)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gcnet", description="Global Context Networks in PyTorch")
    _add_global_options(ap, top=True)
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    for parser in {id(p): p for p in sub.choices.values()}.values():
        _add_global_options(parser, top=False)
    ap.set_defaults(run_command=main)  # a command that runs others (demo) gets main, not an import
    return ap


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def main(argv: list[str] | None = None) -> int:
    from gcnet.utils.extras import MissingExtraError  # an extra a command needs: one line, not a traceback
    from gcnet.utils.log import configured

    ap = build_parser()
    args = ap.parse_args(argv)
    debug = args.log_debug or _env_flag("GCNET_DEBUG")
    if args.log_quiet and args.log_verbose:
        ap.error("argument -q/--quiet: not allowed with -v/--verbose")
    # --quiet wins over the verbosity --debug implies: tracebacks, but warnings and errors only
    verbose = args.log_verbose or debug
    level = logging.WARNING if args.log_quiet else logging.DEBUG if verbose else logging.INFO
    with configured(level):
        try:
            return args.fn(args)
        except (ValueError, FileNotFoundError, FloatingPointError, MissingExtraError) as e:
            msg = str(e)
            if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the message only
                msg = [line for line in msg.splitlines() if line.strip()][-1]
            print(f"gcnet {args.command}: error: {msg}", file=sys.stderr)
            if debug:  # --debug / GCNET_DEBUG=1: where it came from
                traceback.print_exc(file=sys.stderr)
            return 2
