"""Long runs survive: mid-epoch checkpoints resume bit for bit, SIGTERM stops cleanly, SIGKILL
at any moment leaves a loadable last.pth and the resumed run ends where an uninterrupted one
does, a failed write keeps the previous checkpoint, a non-finite loss stops or is skipped."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gcnet.config import load_config
from gcnet.engine import train
from gcnet.engine.checkpoint import load_checkpoint

from ..helpers import ROOT

TINY = ["model.name=resnet18", "data.image_size=32", "data.train_size=48", "data.val_size=8",
        "train.batch_size=8", "train.epochs=2", "optim.name=adamw", "optim.lr=0.004", "output.plot=false",
        "train.ema=true", "data.augment.mixup=0.2"]  # fmt: skip


SMALL = ("train.ema=false", "data.augment.mixup=0", "data.train_size=16", "data.val_size=8")


def _cfg(out, *extra):
    return load_config(None, [*TINY, f"output.dir={out}", *extra])


def _weights(path):
    ck = load_checkpoint(str(path))
    return {**ck["model"], **{f"ema.{k}": v for k, v in (ck["ema"] or {}).items()}}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, diff[:5]


class Crash(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_inside_an_epoch_is_bit_for_bit(tmp_path, monkeypatch, workers):
    """A crash at step 9 (epoch 2, batch 3) resumes from the step-8 checkpoint written inside
    the epoch: the final weights, EMA and loss curve equal the uninterrupted run's."""
    import gcnet.engine.trainer as trainer

    sets = [f"data.num_workers={workers}", "train.checkpoint_every=4"]
    full = train(_cfg(tmp_path / "full", *sets), progress=False)
    real, calls = trainer.train_step, []

    def crashing(run, *a):
        calls.append(run.step)
        if run.step == 9:
            raise Crash
        return real(run, *a)

    monkeypatch.setattr(trainer, "train_step", crashing)
    with pytest.raises(Crash):
        train(_cfg(tmp_path / "part", *sets), progress=False)
    ck = load_checkpoint(str(tmp_path / "part" / "last.pth"))
    assert ck["step"] == 8 and ck["mid_epoch"]["epoch"] == 1 and ck["mid_epoch"]["batches"] == 2
    monkeypatch.setattr(trainer, "train_step", real)
    resumed = train(_cfg(tmp_path / "part", *sets), resume="auto", progress=False)
    _assert_same(_weights(tmp_path / "full" / "last.pth"), _weights(tmp_path / "part" / "last.pth"))
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in full["history"]]
    # the check can fail: a resume that restarted the epoch, or skipped nothing, differs
    other = train(_cfg(tmp_path / "other", *sets, "train.seed=3", "train.epochs=1"), progress=False)
    assert other["history"][0]["train_loss"] != full["history"][0]["train_loss"]


def test_resume_auto_in_a_fresh_folder_starts_from_scratch(tmp_path, capsys):
    s = train(_cfg(tmp_path, "train.epochs=1"), resume="auto", progress=False)
    assert s["epochs_run"] == 1 and "no " in capsys.readouterr().out


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    import gcnet.engine.checkpoint as checkpoint

    real, n = checkpoint.torch.save, []

    def disk_full(obj, path, *a, **kw):
        n.append(path)
        if len(n) > 1:  # epoch 1's last.pth is written (best.pth links to it), then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, path, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    s = train(_cfg(tmp_path), progress=False)
    out = capsys.readouterr().out
    assert (
        "could not write" in out
        and "No space left on device" in out
        and "previous checkpoint is intact" in out
    )
    assert load_checkpoint(str(tmp_path / "last.pth"))["epoch"] == 0  # epoch 1's, intact
    assert s["epochs_run"] == 2 and not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_checkpoint_every_epochs_writes_last_pth_every_nth_and_the_last_epoch(tmp_path, monkeypatch):
    """last.pth after epochs 2 and 3 of 3 with ``checkpoint_every_epochs: 2``, best.pth on every
    new best, and the stopping epoch of ``stop_after`` (resume needs it) whatever N says."""
    import gcnet.engine.trainer as trainer

    real, saved = trainer.save_checkpoint, []
    monkeypatch.setattr(trainer, "save_checkpoint",
                        lambda state, path: (saved.append((os.path.basename(path), state["epoch"])),
                                             real(state, path)))  # fmt: skip
    cfg = _cfg(tmp_path / "a", "train.epochs=3", "train.checkpoint_every_epochs=2", *SMALL)
    train(cfg, progress=False)
    assert [e for f, e in saved if f == "last.pth"] == [1, 2]
    assert saved.count(("best.pth", 0)) == 1  # epoch 1's metric is a best; it is written though N = 2
    saved.clear()
    cfg = _cfg(tmp_path / "b", "train.epochs=3", "train.checkpoint_every_epochs=5", *SMALL)
    train(cfg, stop_after=1, progress=False)
    assert saved == [("last.pth", 0)]  # best.pth is the same state: a hard link, not a second write
    best, last = tmp_path / "b" / "best.pth", tmp_path / "b" / "last.pth"
    assert os.path.samefile(best, last) and load_checkpoint(str(best))["epoch"] == 0


@pytest.mark.parametrize("skip", [0, 1])
def test_non_finite_loss_stops_or_is_skipped(tmp_path, monkeypatch, skip):
    from gcnet.tasks.classification import ClassificationTask

    real, calls = ClassificationTask.loss, []

    def nan_at_step_7(self, cfg, output, targets):
        calls.append(1)
        loss = real(self, cfg, output, targets)
        return loss * float("nan") if len(calls) == 7 else loss

    monkeypatch.setattr(ClassificationTask, "loss", nan_at_step_7)
    cfg = _cfg(tmp_path, f"train.skip_nonfinite_steps={skip}")
    if not skip:
        with pytest.raises(FloatingPointError, match=r"at step 6; the last good checkpoint is .*last\.pth"):
            train(cfg, progress=False)
        return
    s = train(cfg, progress=False)
    assert s["nonfinite_steps"] == 1 and s["history"][-1]["nonfinite_steps"] == 1
    assert s["history"][-1]["step"] == 11  # 12 batches, one step skipped
    assert all(
        torch.isfinite(v).all() for v in _weights(tmp_path / "last.pth").values() if v.is_floating_point()
    )


def _popen(out, *extra):
    # a checkpoint every step; plain SGD and no EMA keep each write small
    light = ["train.checkpoint_every=1", "train.ema=false", "optim.name=sgd", "optim.momentum=0"]
    sets = [a for s in [*TINY, *light, *extra] for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable,
        "-m",
        "gcnet",
        "train",
        "--no-progress",
        "-o",
        str(out),
        "--resume",
        "auto",
        *sets,
    ]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(p, out, timeout=60):
    """Until the run has written its first checkpoint (it is training)."""
    t0 = time.time()
    while not (out / "last.pth").exists():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def test_sigterm_and_sigkill_leave_a_resumable_run(tmp_path):
    """SIGTERM finishes the step, writes last.pth, says how to resume and exits 0; SIGKILLs at
    random moments (checkpoints are written every step, so some land inside a write) always
    leave a loadable last.pth; the run resumed after all that ends with the uninterrupted
    run's weights."""
    ref = _popen(tmp_path / "ref")
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, out + err
    run = tmp_path / "run"
    p = _popen(run)
    _wait_for_training(p, run)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    assert "stopped by SIGTERM at step" in out and "--resume auto" in out and "Traceback" not in err
    step = int(out.split("stopped by SIGTERM at step ")[1].split()[0])
    assert load_checkpoint(str(run / "last.pth"))["step"] == step
    rng = __import__("random").Random(0)
    for _ in range(2):
        p = _popen(run)
        time.sleep(4.0 + rng.random() * 2.0)  # start-up takes ~3 s; then every step writes
        p.kill()
        p.communicate()
        load_checkpoint(str(run / "last.pth"))  # loadable after every kill
    p = _popen(run)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err
    _assert_same(_weights(tmp_path / "ref" / "last.pth"), _weights(run / "last.pth"))
