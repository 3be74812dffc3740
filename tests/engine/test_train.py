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


def _png_tree(root, sizes=(("train", 48), ("val", 12))):
    """The synthetic set as a PNG ImageFolder tree (folders named by class)."""
    from PIL import Image

    from gcnet.data import CONTEXT_CLASSES, SyntheticContext

    for split, n in sizes:
        ds = SyntheticContext(n, 32, split)
        for i in range(n):
            img, y = ds.render(i)
            d = root / split / CONTEXT_CLASSES[y]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.png")
        assert len(list((root / split).iterdir())) == 3  # every class has images
    return root


def test_cli_train_eval_predict(tmp_path, capsys):
    """CLI train on an ImageFolder tree; eval's numbers and predict's probabilities agree image
    by image, and both agree with a forward pass written here (checkpoint weights in a fresh
    model, torchvision's resize / centre crop / normalise)."""
    import math

    from PIL import Image
    from torchvision.transforms import v2

    import gcnet

    root = _png_tree(tmp_path / "tree")
    out = tmp_path / "run"
    sets = [x for t in TINY for x in ("--set", t)]
    assert main(["train", "--no-progress", *sets, "--set", "train.epochs=1", "--data", str(root),
                 "-o", str(out)]) == 0  # fmt: skip
    assert "best val top-1" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(out / "best.pth")]) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "opposite_color" in text
    metrics = json.load(open(out / "eval" / "metrics.json"))
    assert metrics["num_samples"] == 12 and len(metrics["confusion_matrix"]) == 3
    assert (out / "eval" / "confusion_matrix.png").exists()
    paths = sorted(root.glob("val/*/*.png"))
    assert main(["predict", *map(str, paths), "--checkpoint", str(out / "best.pth"), "--json",
                 "--topk", "3"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in res] == [str(p) for p in paths]

    ck = load_checkpoint(str(out / "best.pth"))
    classes = ck["classes"]
    assert classes == sorted(classes)  # ImageFolder's order
    model = gcnet.create_model("gc_resnet18", num_classes=3)
    model.load_state_dict(ck["model"])
    model.eval()
    # eval.crop_ratio 0.875: resize the short side to round(32 / 0.875) = 37, centre 32 x 32
    tf = v2.Compose([v2.ToImage(), v2.Resize(37, antialias=True), v2.CenterCrop(32),
                     v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])  # fmt: skip
    cm = [[0] * 3 for _ in range(3)]
    nll = []
    for r, path in zip(res, paths, strict=True):
        with torch.no_grad():
            probs = model(tf(Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
        order = probs.argsort(descending=True).tolist()
        assert [t["class"] for t in r["top"]] == [classes[i] for i in order]
        assert [t["prob"] for t in r["top"]] == pytest.approx(probs[order].tolist(), abs=1e-5)
        true = classes.index(path.parent.name)
        cm[true][classes.index(r["top"][0]["class"])] += 1
        nll.append(-math.log(next(t["prob"] for t in r["top"] if t["class"] == classes[true])))
    assert metrics["confusion_matrix"] == cm
    assert metrics["top1"] == pytest.approx(100 * sum(cm[i][i] for i in range(3)) / 12)
    assert metrics["loss"] == pytest.approx(sum(nll) / 12, rel=1e-4)
    assert main(["predict", str(tmp_path / "nope.png"), "--checkpoint", str(out / "last.pth")]) == 2
    assert "image not found" in capsys.readouterr().err


def test_eval_on_a_tree_labels_images_by_class_name(tmp_path, capsys):
    """A checkpoint of the synthetic set (classes same / adjacent / opposite, not sorted)
    evaluated on the same kind of images as an ImageFolder tree (folders sorted otherwise):
    the true class of each image is its folder's name, so eval must agree with predict's
    named top-1, or refuse."""
    root = _png_tree(tmp_path / "tree", (("val", 12),))
    sets = [x for t in TINY for x in ("--set", t)]
    assert main(["train", "--no-progress", *sets, "--set", "train.max_iters=1", "--set", "data.val_size=12",
                 "-o", str(tmp_path / "run")]) == 0  # fmt: skip
    ck = str(tmp_path / "run" / "last.pth")
    rc = main(["eval", "--checkpoint", ck, "--data", str(root), "-o", str(tmp_path / "ev")])
    if rc != 0:
        assert "class" in capsys.readouterr().err
        return
    m = json.load(open(tmp_path / "ev" / "metrics.json"))
    classes = m["classes"]
    assert classes != sorted(classes)
    paths = sorted(root.glob("val/*/*.png"))
    capsys.readouterr()
    assert main(["predict", *map(str, paths), "--checkpoint", ck, "--json", "--topk", "1"]) == 0
    cm = [[0] * 3 for _ in range(3)]
    for r, path in zip(json.loads(capsys.readouterr().out), paths, strict=True):
        cm[classes.index(path.parent.name)][classes.index(r["top"][0]["class"])] += 1
    assert m["confusion_matrix"] == cm


def test_bad_training_inputs(tmp_path, capsys):
    assert main(["train", "--set", "optim.lrr=1", "-o", str(tmp_path)]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    assert "missing': folder not found" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before anything was written
    with pytest.raises(ValueError, match="smaller than one batch"):
        train(_cfg(tmp_path, "data.train_size=8"), progress=False)


def test_gradient_clipping_scales_the_first_step_to_lr_times_clip(tmp_path):
    """One plain SGD step (momentum 0, no weight decay, constant lr) from known weights: the
    update is -lr * g, and with train.clip_grad=c < |g| it is -lr * c * g / |g| (the global
    norm over every parameter, torch's clip_grad_norm_); a c above |g| changes nothing."""
    import gcnet

    init = gcnet.create_model("resnet18", num_classes=3).state_dict()
    torch.save(init, tmp_path / "init.pth")
    lr = 0.1

    def one_step(name, clip):
        sets = ["model.name=resnet18", f"model.pretrained={tmp_path / 'init.pth'}", "optim.name=sgd",
                f"optim.lr={lr}", "optim.ref_batch_size=16", "optim.momentum=0", "optim.weight_decay=0",
                "sched.name=constant", "sched.warmup_epochs=0", "train.max_iters=1", "train.epochs=1",
                f"train.clip_grad={clip}", "data.train_size=16", "data.val_size=16",
                "output.plot=false"]  # fmt: skip
        train(_cfg(tmp_path / name, *sets), progress=False)
        state = load_checkpoint(str(tmp_path / name / "last.pth"))["model"]
        names = [k for k, _ in gcnet.create_model("resnet18", num_classes=3).named_parameters()]
        return torch.cat([(state[k] - init[k]).flatten().double() for k in names])

    free = one_step("free", "null")
    raw_norm = float(free.norm()) / lr  # |g|
    clip = raw_norm / 10
    clipped = one_step("clipped", clip)
    assert float(clipped.norm()) == pytest.approx(lr * clip, rel=1e-4)
    # element by element, to the float32 rounding of the stored weights (~1e-7)
    torch.testing.assert_close(clipped, free * (clip / raw_norm), rtol=1e-3, atol=2e-7)
    torch.testing.assert_close(one_step("loose", raw_norm * 10), free, rtol=1e-5, atol=2e-7)
