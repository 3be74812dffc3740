# ruff: noqa: E501  (a table of cases, one per line)
"""Bad input, as a user types it, gets a named error before any work: every case exits
non-zero with a short message (no traceback) that names the key, file or value, and leaves
nothing in the output folder or the working folder. The cases run through ``gcnet.cli.main``
(the console script's entry point); a few also as real subprocesses."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from gcnet.cli import main
from gcnet.config import load_config
from gcnet.engine import train

from .helpers import ROOT

TINY = ["model.name=resnet18", "data.image_size=32", "data.train_size=8", "data.val_size=4",
        "train.batch_size=8", "train.epochs=1", "data.num_workers=0", "output.plot=false"]  # fmt: skip


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny finished run and broken files of every kind."""
    d = tmp_path_factory.mktemp("inputs")
    train(load_config(None, [*TINY, f"output.dir={d / 'run'}"]), progress=False)
    (d / "garbage.pth").write_bytes(b"not a checkpoint at all")
    with open(d / "evil.pth", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    torch.save({"fc.weight": torch.zeros(3, 512)}, d / "plain.pth")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(d / "bare.safetensors"))
    (d / "text.png").write_text("not an image")
    (d / "empty.jpg").write_bytes(b"")
    (d / "bad.yaml").write_text("train: [1, 2\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(d / "photo.png")
    _bad_tree(d / "tree")
    _video_inputs(d)
    return d


def _bad_tree(root):
    """An ImageFolder tree whose train split holds 3 unreadable files among good ones: an empty
    file, a text file named .png and a JPEG cut short."""
    from PIL import Image

    for split in ("train", "val"):
        for c, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (40, 40), colour).save(root / split / c / f"{i}.jpg")
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dog" / "text.png").write_text("not an image")
    whole = (root / "train" / "dog" / "0.jpg").read_bytes()
    (root / "train" / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])


def _video_inputs(d):
    """Video list roots with a missing clip, a label out of range, a short raw-frame folder
    and a file that is no video."""
    from .data.video_helpers import coded_frames, write_coded, write_frame_folder

    for name, train_list in (("missing", "a.mp4 0\nclips/nope.mp4 1\n"), ("label", "a.mp4 0\na.mp4 7\n"),
                             ("broken", "a.mp4 0\nbroken.mp4 1\n")):  # fmt: skip
        root = d / f"vids_{name}"
        write_coded(root / "a.mp4", n=16)
        (root / "broken.mp4").write_text("not a video")
        (root / "classes.txt").write_text("x\ny\n")
        (root / "train.txt").write_text(train_list)
        (root / "val.txt").write_text("a.mp4 0\n")
    write_frame_folder(d / "frames" / "v0", coded_frames(3), tmpl="img_{:05d}.jpg")
    (d / "frames" / "train.txt").write_text("v0 10 0\n")
    (d / "frames" / "val.txt").write_text("v0 3 0\n")


def S(*sets):  # --set pairs
    return [a for s in sets for a in ("--set", s)]


CKPT = "{d}/run/best.pth"
# (name, argv with {d} = the inputs folder and {o} = an output folder that must stay absent, expected text)
CASES = [
    ("lr not a number", ["train", "-o", "{o}", *S("optim.lr=abc")], "optim.lr must be a number, got 'abc'"),
    ("batch size 0", ["train", "-o", "{o}", *S("train.batch_size=0")], "train.batch_size must be a positive"),
    ("negative epochs", ["train", "-o", "{o}", *S("train.epochs=-1")], "train.epochs must be a positive"),
    ("negative workers", ["train", "-o", "{o}", *S("data.num_workers=-2")], "data.num_workers must be >= 0"),
    ("unknown amp", ["train", "-o", "{o}", *S("train.amp=fp8")], "train.amp must be one of"),
    ("misspelt key", ["train", "-o", "{o}", *S("optim.lrr=1")], "did you mean 'optim.lr'"),
    ("section as value", ["train", "-o", "{o}", *S("optim=3")], "optim is a section"),
    ("mean of 2", ["train", "-o", "{o}", *S("data.mean=[1, 2]")], "data.mean must hold 3 numbers"),
    ("crop scale order", ["train", "-o", "{o}", *S("data.augment.scale=[0.5, 0.1]")], "data.augment.scale"),
    ("ema decay 1.5", ["train", "-o", "{o}", *S("train.ema_decay=1.5")], "train.ema_decay must be in (0, 1)"),
    ("smoothing 1", ["train", "-o", "{o}", *S("train.label_smoothing=1")], "train.label_smoothing must be in"),
    ("tiny images", ["train", "-o", "{o}", *S("data.image_size=4")], "data.image_size must be >= 8"),
    ("unknown schedule", ["train", "-o", "{o}", *S("sched.name=linear")], "sched.name must be one of"),
    ("pretrained 3", ["train", "-o", "{o}", *S("model.pretrained=3")], "model.pretrained must be true or false"),
    ("unknown model", ["train", "-o", "{o}", *S("model.name=gc_resnet5")], "'gc_resnet5' is not a registered"),
    ("model of another task", ["train", "-o", "{o}", *S("task=segmentation")], "task=segmentation needs a"),
    ("unknown task", ["train", "-o", "{o}", *S("task=audio")], "task must be one of"),
    ("video task, image model", ["train", "-o", "{o}", *S("task=video", "data.dataset=synthetic_video")],
     "task=video needs a video model"),
    ("video: missing clip", ["train", "-o", "{o}", "-c", "demo_video", *S("data.dataset=video_list", "data.root={d}/vids_missing")],
     "clips/nope.mp4"),
    ("video: label out of range", ["train", "-o", "{o}", "-c", "demo_video", *S("data.dataset=video_list", "data.root={d}/vids_label")],
     "train.txt:2"),
    ("video: short frame folder", ["train", "-o", "{o}", "-c", "demo_video", *S("data.dataset=rawframes", "data.root={d}/frames", "data.video.filename_tmpl=img_{{:05d}}.jpg")],
     "has 3 frames (img_"),
    ("video: crop over scale", ["train", "-o", "{o}", "-c", "demo_video", *S("data.video.crop_size=96")],
     "data.video.crop_size=96"),
    ("missing data root", ["train", "-o", "{o}", "--data", "{d}/nope"], "nope': folder not found"),
    ("missing recipe", ["train", "-o", "{o}", "-c", "{d}/nope.yaml"], "config file not found"),
    ("broken yaml", ["train", "-o", "{o}", "-c", "{d}/bad.yaml"], "bad.yaml is not valid YAML"),
    ("yaml list", ["train", "-o", "{o}", "-c", "{d}/list.yaml"], "must hold a mapping"),
    ("dataset without root", ["train", "-o", "{o}", *S("task=segmentation", "data.dataset=cityscapes")],
     "data.root is required for data.dataset=cityscapes"),
    ("slide without crop", ["train", "-o", "{o}", *S("task=segmentation", "eval.mode=slide")], "eval.crop_size"),
    ("crop of 1 number", ["train", "-o", "{o}", *S("data.seg.crop_size=[4]")], "data.seg.crop_size must be two"),
    ("override without =", ["train", "-o", "{o}", *S("optim.lr")], "KEY=VALUE"),
    ("batch larger than data", ["train", "-o", "{o}", *S(*TINY, "train.batch_size=16")],
     "smaller than one batch (16)"),
    ("resume from nothing", ["train", "-o", "{o}", *S(*TINY), "--resume", "{d}/nope.pth"], "checkpoint not found"),
    ("resume from a pickle", ["train", "-o", "{o}", *S(*TINY), "--resume", "{d}/evil.pth"],
     "is not a plain checkpoint"),
    ("eval: no checkpoint", ["eval", "--checkpoint", "{d}/nope.pth", "-o", "{o}"], "checkpoint not found"),
    ("eval: garbage", ["eval", "--checkpoint", "{d}/garbage.pth", "-o", "{o}"], "not a PyTorch"),
    ("eval: code in pickle", ["eval", "--checkpoint", "{d}/evil.pth", "-o", "{o}"], "is not a plain checkpoint"),
    ("eval: bare state dict", ["eval", "--checkpoint", "{d}/plain.pth", "-o", "{o}"],
     "not a gcnet training checkpoint"),
    ("eval: safetensors without config", ["eval", "--checkpoint", "{d}/bare.safetensors", "-o", "{o}"],
     "without their run's config"),
    ("eval: missing data", ["eval", "--checkpoint", CKPT, "--data", "{d}/nope", "-o", "{o}"], "folder not found"),
    ("eval: bad override", ["eval", "--checkpoint", CKPT, "-o", "{o}", *S("train.batch_size=0")],
     "train.batch_size must be a positive"),
    ("predict: missing image", ["predict", "{d}/nope.png", "--checkpoint", CKPT], "image not found"),
    ("predict: not an image", ["predict", "{d}/text.png", "--checkpoint", CKPT], "text.png: not an image"),
    ("predict: empty file", ["predict", "{d}/empty.jpg", "--checkpoint", CKPT], "empty.jpg: the file is empty"),
    ("predict: top-0", ["predict", "{d}/text.png", "--checkpoint", CKPT, "--topk", "0"],
     "expected a positive integer, got '0'"),
    ("info: unknown model", ["info", "gc_resnet5"], "unknown model 'gc_resnet5'"),
    ("info: zero size", ["info", "resnet18", "--input", "3x0x224"], "every size must be >= 1"),
    ("info: config key", ["info", "resnet18", *S("optim.lr=1")], "--set optim.lr: this command takes model"),
    ("info: another model's run", ["info", "gc_resnet50", "--checkpoint", CKPT], "holds a resnet18"),
    ("info: option of no block", ["info", "resnet18", *S("ratio=0.25")], "'ratio'"),
    ("export: 2 numbers", ["export", "resnet18", "--input", "2x3", "-o", "{o}/m.onnx"], "[N]xCxHxW"),
    ("blocks: zero channels", ["blocks", "--input", "8x0x4x4"], "every size must be >= 1"),
    ("analyze: no image", ["analyze", "attention", "--model", "gc_resnet18", "-o", "{o}"], "at least one IMAGE"),
    ("analyze: not square", ["analyze", "cosine", "--model", "gc_resnet18", "--input", "3x32x48", "-o", "{o}"],
     "square inputs"),
    ("demo: bad override", ["demo", "-o", "{o}", *S("optim.lr=abc")], "optim.lr must be a number"),
    # the first hour (issue 23)
    ("misspelt --model", ["train", "-o", "{o}", "--model", "gc_resnet81"], "did you mean ['gc_resnet18'"),
    ("resume another model's run", ["train", "-o", "{o}", "--model", "gc_resnet18", *S(*TINY), "--resume", "{d}/run/last.pth"],
     "last.pth holds a resnet18 (its config says so), not a gc_resnet18"),
    ("resume with other options", ["train", "-o", "{o}", *S(*TINY, "plugin=gc"), "--resume", "{d}/run/last.pth"],
     "last.pth does not fit the model resnet18: 48 missing keys (first: layer2.0.context_block."),
    ("resume a weights file", ["train", "-o", "{o}", *S(*TINY), "--resume", "{d}/plain.pth"],
     "plain.pth is not a gcnet training checkpoint"),
    ("eval: text as checkpoint", ["eval", "--checkpoint", "{d}/bad.yaml", "-o", "{o}"],
     "bad.yaml: not a PyTorch checkpoint (13 bytes"),
    ("eval: empty checkpoint", ["eval", "--checkpoint", "{d}/empty.jpg", "-o", "{o}"], "empty.jpg: the file is empty"),
    ("analyze: another model's run", ["analyze", "attention", "{d}/photo.png", "--model", "gc_resnet18", "--checkpoint", CKPT, "-o", "{o}"],
     "best.pth holds a resnet18 (its config says so), not a gc_resnet18"),
    ("analyze: image to a video model", ["analyze", "attention", "{d}/photo.png", "--model", "slowonly_r18", "--input", "1x3x4x32x32", "-o", "{o}"],
     "photo.png is an image (PNG), not a video: this model takes video files"),
    ("predict: video to an image model", ["predict", "{d}/vids_missing/a.mp4", "--checkpoint", CKPT],
     "a.mp4 is a video, not an image"),
    ("predict: empty folder", ["predict", "{d}/frames/nope_dir*", "--checkpoint", CKPT], "no files match"),
    ("predict: a bad file in a folder", ["predict", "{d}/tree/train", "--checkpoint", CKPT, "-o", "{o}/r.csv"],
     "empty.jpg: the file is empty (0 bytes) (and 2 more); --skip-bad-images"),
    ("fp16 on the CPU", ["train", "-o", "{o}", *S(*TINY, "train.amp=fp16")], "use train.amp=bf16 (or none) on the CPU"),
    ("bad images in the tree", ["train", "-o", "{o}", "--data", "{d}/tree", *S(*TINY)],
     "3 unreadable image(s) in {d}/tree/train: cannot read image"),
    ("unknown verify mode", ["train", "-o", "{o}", *S("data.verify_images=some")], "data.verify_images must be one of"),
]  # fmt: skip


def _argv(argv, d, o):
    return [a.format(d=d, o=o) for a in argv]


@pytest.mark.parametrize("name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_error(name, argv, expected, files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    try:
        rc = main(_argv(argv, files, out))
    except SystemExit as e:  # argparse: usage + error line, exit 2
        rc = e.code
    err = capsys.readouterr().err
    assert rc not in (0, None), name
    assert "Traceback" not in err and "weights_only" not in err
    assert expected.format(d=files) in err, err
    assert len(err.strip().splitlines()) <= (3 if "usage:" not in err else 8), err
    assert not out.exists() and os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("index", [0, 29, 39])
def test_a_subprocess_prints_no_traceback(index, files, tmp_path):
    """The console script's view: exit 2, one line on stderr, nothing written."""
    name, argv, expected = CASES[index]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "gcnet", *_argv(argv, files, tmp_path / "out")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and os.listdir(tmp_path) == []
