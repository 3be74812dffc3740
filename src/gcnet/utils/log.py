"""gcnet's messages: the ``gcnet`` logger hierarchy (``gcnet.engine.trainer``, ...).

What the engine says (the epoch lines, ``resumed from ...``, warnings) goes through
`get_logger` as plain messages: no time stamps, no level names (the texts say
``warning:`` where they always did).

- The command line calls `setup_logging` once (``--quiet``: warnings and errors,
  ``--verbose`` / ``--debug``: debug): gcnet's console handler on the ``gcnet`` logger
  writes each message to the *current* ``sys.stdout`` (``contextlib.redirect_stdout`` and
  pytest's ``capsys`` see it), errors to ``sys.stderr``.
- Under torchrun every rank but 0 says only warnings and errors (all levels with
  ``--verbose``), each line prefixed ``[rank N]``; the rank is read when a message is
  written: the process group's, else torchrun's ``RANK`` variable.
- As a library, gcnet configures nothing when imported: the ``gcnet`` logger holds a
  `logging.NullHandler` and the root logger is never touched. The first message of
  a gcnet logger installs gcnet's console (level INFO) on the ``gcnet`` logger only if that
  logger has no handler of its own, so a script calling ``gcnet.engine.train`` prints its
  epoch lines as it always has (as `logging.info` calls `logging.basicConfig`).
  An application that wants gcnet's records elsewhere gives the ``gcnet`` logger a handler
  first (any handler, ``logging.NullHandler()`` included, to rely on the root's handlers
  alone), or calls `setup_logging` with its own level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

__all__ = ["get_logger", "setup_logging", "configured", "process_rank", "LOGGER", "ConsoleHandler"]

LOGGER = "gcnet"

_NULL = logging.NullHandler()  # gcnet's own: "nothing configured yet"
logging.getLogger(LOGGER).addHandler(_NULL)


def process_rank() -> int:
    """This process's rank: the process group's, else torchrun's ``RANK`` (0 alone)."""
    if "torch.distributed" in sys.modules:  # else no process group: gcnet --help imports no torch
        from . import distributed as du

        if du.is_dist():
            return du.rank()
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class _RankFilter(logging.Filter):
    """Rank 0 passes everything; another rank passes warnings and errors (every level when
    the ``gcnet`` logger is at DEBUG: ``--verbose``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if process_rank() == 0:
            return True
        verbose = logging.getLogger(LOGGER).getEffectiveLevel() <= logging.DEBUG
        return record.levelno >= (logging.DEBUG if verbose else logging.WARNING)


class _PlainFormatter(logging.Formatter):
    """The message alone; ``[rank N] `` before it on a rank other than 0."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rank = process_rank()
        return f"[rank {rank}] {text}" if rank else text


class ConsoleHandler(logging.Handler):
    """Plain lines to the current ``sys.stdout`` (errors: ``sys.stderr``), flushed at once;
    the stream is looked up per message, never kept."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_PlainFormatter("%(message)s"))
        self.addFilter(_RankFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stderr if record.levelno >= logging.ERROR else sys.stdout
            stream.write(text + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if h is not _NULL]


def setup_logging(level: int = logging.INFO) -> ConsoleHandler:
    """gcnet's console on the ``gcnet`` logger at ``level`` (``logging.WARNING``: quiet,
    ``logging.DEBUG``: verbose), replacing a console set up before; other handlers stay.
    Returns the handler."""
    logger = logging.getLogger(LOGGER)
    for h in logger.handlers:
        if isinstance(h, ConsoleHandler):
            logger.removeHandler(h)
    console = ConsoleHandler()
    logger.addHandler(console)
    logger.setLevel(level)
    return console


@contextlib.contextmanager
def configured(level: int = logging.INFO) -> Iterator[ConsoleHandler]:
    """`setup_logging` for the ``with`` block, then the ``gcnet`` logger's handlers and
    level as they were (a command run in-process leaves the caller's logging as it found it)."""
    logger = logging.getLogger(LOGGER)
    handlers, old_level = list(logger.handlers), logger.level
    try:
        yield setup_logging(level)
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
        for h in handlers:
            logger.addHandler(h)
        logger.setLevel(old_level)


def _ensure_console() -> None:
    """gcnet's console at INFO, when the ``gcnet`` logger has no handler of its own yet."""
    logger = logging.getLogger(LOGGER)
    if not _own_handlers(logger):
        logger.addHandler(ConsoleHandler())
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class _GcnetLogger(logging.LoggerAdapter):
    """A gcnet logger that installs gcnet's console on its first message when nothing is
    configured (see the module's docstring)."""

    def log(self, level: int, msg: object, *args, **kwargs) -> None:
        _ensure_console()
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1  # the caller's line, not this one
        super().log(level, msg, *args, **kwargs)


def get_logger(name: str) -> logging.LoggerAdapter:
    """The logger ``name`` (under ``gcnet``: pass ``__name__``), as gcnet's code uses it."""
    if name != LOGGER and not name.startswith(LOGGER + "."):
        name = f"{LOGGER}.{name}"
    return _GcnetLogger(logging.getLogger(name), {})
