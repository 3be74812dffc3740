"""gcnet's messages (issue 24): the engine logs through the ``gcnet`` loggers, the command line
sets the level (``--quiet`` / ``--verbose`` / ``--debug``, ``GCNET_DEBUG=1``), only rank 0
says more than warnings, and a library user's root logger is left alone."""

import logging
import os
import subprocess
import sys

import pytest

from gcnet.cli import build_parser, main
from gcnet.config import load_config
from gcnet.engine import train
from gcnet.utils import log

from .helpers import ROOT, run_gcnet_here

TINY = ["model.name=resnet18", "data.image_size=32", "data.train_size=8", "data.val_size=4",
        "train.batch_size=8", "train.epochs=1", "data.num_workers=0", "output.plot=false"]  # fmt: skip
# one step of warm-up-free training would not warn: two warm-up epochs in a one-epoch run do
WARM = "sched.warmup_epochs=2"
WARNING = "warning: the warm-up (2 steps) is longer than the whole run (1 steps)"


def _sets(*extra):
    return [x for t in (*TINY, *extra) for x in ("--set", t)]


@pytest.fixture(autouse=True)
def _gcnet_logging_restored(monkeypatch):
    """Each test starts with gcnet's logging as a library user finds it (only the NullHandler),
    and leaves it as it was."""
    monkeypatch.delenv("GCNET_DEBUG", raising=False)
    logger = logging.getLogger(log.LOGGER)
    handlers, level = list(logger.handlers), logger.level
    for h in handlers:
        if h is not log._NULL:
            logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(level)


def test_the_cli_prints_plain_lines_on_stdout(tmp_path, capsys):
    run_gcnet_here(["train", *_sets(WARM), "-o", tmp_path, "--no-progress"])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(WARNING) and lines[1].startswith("training resnet18 on ")
    assert lines[2].startswith("epoch 1: train loss ") and lines[3].startswith("best val top-1")
    assert "INFO" not in out and "WARNING" not in out and err == ""
    # the command leaves the caller's logging as it found it
    assert logging.getLogger("gcnet").handlers == [log._NULL]


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_keeps_warnings_and_the_result_only(where, tmp_path, capsys):
    args = ["train", *_sets(WARM), "-o", tmp_path, "--no-progress"]
    run_gcnet_here(["-q", *args] if where == "before" else [*args, "--quiet"])
    out = capsys.readouterr().out
    assert WARNING in out and "best val top-1" in out  # a warning, and the command's result
    assert "epoch 1:" not in out and "training resnet18" not in out


def test_quiet_keeps_the_error(tmp_path, capsys):
    assert main(["-q", "train", *_sets("optim.lr=abc"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "gcnet train: error: optim.lr must be a number, got 'abc'"


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["-v", "train", "-q"])
    assert "not allowed with -v/--verbose" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["--debug before", "--debug after", "GCNET_DEBUG=1"])
def test_debug_prints_the_traceback_after_the_one_line_error(how, tmp_path, monkeypatch, capsys):
    args = ["train", *_sets("optim.lr=abc"), "-o", str(tmp_path / "o")]
    if how == "GCNET_DEBUG=1":
        monkeypatch.setenv("GCNET_DEBUG", "1")
    else:
        args = ["--debug", *args] if how.endswith("before") else [*args, "--debug"]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "gcnet train: error: optim.lr must be a number, got 'abc'"
    assert lines[1] == "Traceback (most recent call last):" and len(lines) > 4
    assert "optim.lr must be a number" in lines[-1] and not (tmp_path / "o").exists()


def test_without_debug_the_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GCNET_DEBUG", "0")
    assert main(["train", *_sets("optim.lr=abc"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_means_verbose():
    for argv in (["--debug", "info"], ["info", "--debug"], ["-v", "info"], ["info", "--verbose"]):
        args = build_parser().parse_args(argv)
        assert args.log_verbose or args.log_debug, argv
    args = build_parser().parse_args(["info"])
    assert not (args.log_verbose or args.log_quiet or args.log_debug)
    # demo keeps its own --verbose (its runs' epoch lines on the terminal); -v before it is the global one
    assert build_parser().parse_args(["demo", "--verbose"]).verbose is True
    assert build_parser().parse_args(["-v", "demo"]).log_verbose is True


def test_a_rank_other_than_0_logs_warnings_only_with_its_rank(tmp_path, monkeypatch, capsys):
    """torchrun's RANK=1 before (or without) a process group: no epoch lines, no "training
    ..." line; the warning, prefixed ``[rank 1]``."""
    monkeypatch.setenv("RANK", "1")
    run_gcnet_here(["train", *_sets(WARM), "-o", tmp_path, "--no-progress"])
    out = capsys.readouterr().out
    assert f"[rank 1] {WARNING}" in out
    assert "epoch 1:" not in out and "training resnet18" not in out


def test_rank_1_with_verbose_says_everything(monkeypatch, capsys):
    monkeypatch.setattr(log, "process_rank", lambda: 1)
    with log.configured(logging.DEBUG):
        log.get_logger("gcnet.test").debug("a detail")
    with log.configured(logging.INFO):
        log.get_logger("gcnet.test").info("an epoch line")
        log.get_logger("gcnet.test").error("a failure")
    out, err = capsys.readouterr()
    assert out == "[rank 1] a detail\n" and err == "[rank 1] a failure\n"


def test_library_use_prints_as_before_and_leaves_the_root_logger_alone(tmp_path, capsys):
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    s = train(load_config(None, [*TINY, WARM, f"output.dir={tmp_path}"]), progress=False)
    assert (list(root.handlers), root.level) == before
    out = capsys.readouterr().out
    assert WARNING in out and "epoch 1: train loss" in out and s["epochs_run"] == 1
    gcnet = logging.getLogger("gcnet")
    assert log._NULL in gcnet.handlers and any(isinstance(h, log.ConsoleHandler) for h in gcnet.handlers)


def test_an_application_s_own_handler_takes_gcnet_s_messages(tmp_path, capsys):
    """A handler on the ``gcnet`` logger: gcnet adds no console, the records (with the caller's
    module) go there, and a level set by the application holds."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    gcnet = logging.getLogger("gcnet")
    gcnet.addHandler(handler)
    gcnet.setLevel(logging.INFO)
    train(load_config(None, [*TINY, WARM, f"output.dir={tmp_path}"]), progress=False)
    assert capsys.readouterr().out == "" and gcnet.handlers == [log._NULL, handler]
    by_level = {r.levelno: r for r in records}
    assert by_level[logging.WARNING].getMessage().startswith(WARNING)
    info = [r for r in records if r.getMessage().startswith("epoch 1:")]
    assert info and info[0].name == "gcnet.engine.trainer" and info[0].funcName == "end_epoch"


def test_importing_gcnet_configures_nothing():
    """In a fresh interpreter: only the NullHandler the logging HOWTO asks of a library, no
    level, nothing on the root logger."""
    code = ("import logging, gcnet, gcnet.engine, gcnet.cli; g = logging.getLogger('gcnet'); "
            "print(type(g.handlers[0]).__name__, len(g.handlers), g.level, "
            "len(logging.getLogger().handlers))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["NullHandler", "1", "0", "0"], r.stdout + r.stderr
