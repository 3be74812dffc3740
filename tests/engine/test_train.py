"""Training end to end on CPU: resume is bit-for-bit, checkpoints, eval and predict."""

import json
import os

import pytest
import torch

from gcnet.cli import main
from gcnet.config import load_config
from gcnet.engine import train
from gcnet.engine.checkpoint import load_checkpoint

TINY = [
    "model.name=gc_resnet18",
    "data.image_size=32",
    "data.train_size=96",
    "data.val_size=32",
    "data.num_workers=0",
    "train.batch_size=16",
    "train.epochs=3",
    "optim.name=adamw",
    "optim.lr=0.016",
    "sched.warmup_epochs=0.5",
]


def _cfg(out, *extra):
    return load_config(None, [*TINY, f"output.dir={out}", *extra])


def _same_weights(a, b):
    sa, sb = a["model"], b["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_is_bit_for_bit(tmp_path):
    full = train(_cfg(tmp_path / "full", "train.ema=true"), progress=False)
    part = _cfg(tmp_path / "part", "train.ema=true")
    s1 = train(part, stop_after=1, progress=False)
    assert s1["epochs_run"] == 1 and s1["final_weights"] is None
    s2 = train(part, resume="auto", progress=False)
    assert s2["epochs_run"] == 2
    a = load_checkpoint(str(tmp_path / "full" / "last.pth"))
    b = load_checkpoint(str(tmp_path / "part" / "last.pth"))
    assert _same_weights(a, b)
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert [r["train_loss"] for r in full["history"]] == [r["train_loss"] for r in s2["history"]]
    # and an interrupted run is not trivially equal to a different one
    other = train(_cfg(tmp_path / "other", "train.seed=1", "train.ema=true"), progress=False)
    assert not _same_weights(a, load_checkpoint(str(tmp_path / "other" / "last.pth")))
    assert other["history"][0]["train_loss"] != full["history"][0]["train_loss"]


def test_outputs_written(tmp_path):
    s = train(_cfg(tmp_path, "train.epochs=2", "output.plot=true"), progress=False)
    files = set(os.listdir(tmp_path))
    assert {
        "last.pth",
        "best.pth",
        "weights.safetensors",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
    } <= files
    assert not [f for f in files if f.startswith(".tmp")]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_top1" in rows[-1] and "lr" in rows[-1]
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "weights.safetensors"))
    assert "layer3.0.context_block.pool.conv_mask.weight" in w
    assert s["num_classes"] == 3


def test_training_learns_a_separable_set(tmp_path):
    """Loss goes down on the train set: overfit 64 images."""
    cfg = _cfg(tmp_path, "model.name=resnet18", "data.train_size=64", "train.epochs=6",
               "data.augment.hflip=false", "optim.lr=0.03")  # fmt: skip
    s = train(cfg, progress=False)
    losses = [r["train_loss"] for r in s["history"]]
    assert losses[-1] < 0.5 * losses[0], losses


def test_cli_train_eval_predict(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [x for t in TINY for x in ("--set", t)]
    assert main(["train", "--no-progress", *sets, "--set", "train.epochs=1", "-o", str(out)]) == 0
    assert "best val top-1" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out / "best.pth")]) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "opposite_color" in text
    metrics = json.load(open(out / "eval" / "metrics.json"))
    assert metrics["num_samples"] == 32 and len(metrics["confusion_matrix"]) == 3
    assert sum(map(sum, metrics["confusion_matrix"])) == 32
    assert (out / "eval" / "confusion_matrix.png").exists()
    # predict on PNG files
    from PIL import Image

    from gcnet.data import SyntheticContext

    ds = SyntheticContext(2, 32)
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(ds.render(i)[0]).save(p)
        paths.append(str(p))
    assert main(["predict", *paths, "--checkpoint", str(out / "last.pth"), "--json", "--topk", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res) == 2 and len(res[0]["top"]) == 3
    assert abs(sum(t["prob"] for t in res[0]["top"]) - 1) < 0.5
    assert main(["predict", str(tmp_path / "nope.png"), "--checkpoint", str(out / "last.pth")]) == 2
    assert "image not found" in capsys.readouterr().err


def test_bad_training_inputs(tmp_path, capsys):
    assert main(["train", "--set", "optim.lrr=1", "-o", str(tmp_path)]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    assert "image folder not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="smaller than one batch"):
        train(_cfg(tmp_path, "data.train_size=8"), progress=False)
