"""The paths a new user walks in the first hour (issue 23): ``--data`` with every dataset a
recipe, the README or an error message suggests; a run on their own image tree with bad files
(counted exactly, or refused before anything is written); the run folder readable by
colleagues, its config saved and its data root absolute, so ``eval`` works from any folder;
``predict`` over folders into a CSV; an offline CIFAR download in one line."""

import csv
import json
import os
import stat
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from gcnet.cli import main
from gcnet.cli.train import train_config
from gcnet.config import load_config
from gcnet.fileio import atomic_write, write_json
from gcnet.tasks import task_of

from .test_bad_input import _bad_tree

TINY = ["model.name=resnet18", "data.image_size=32", "train.batch_size=4", "data.num_workers=0",
        "output.plot=false"]  # fmt: skip


def _args(config=None, data=None, sets=(), model=None):
    return SimpleNamespace(config=config, data=data, set=list(sets), output=None, model=model,
                           skip_bad_images=False)  # fmt: skip


# (recipe, --set data.dataset=..., the dataset the run reads): every combination the README
# or an error message suggests; None: --data alone
DATA_COMBOS = [
    (None, None, "imagefolder"),
    (None, "imagefolder", "imagefolder"),
    ("demo_synthetic", None, "imagefolder"),
    ("imagenet_gc_resnet50", None, "imagefolder"),
    ("demo_segmentation", None, "custom"),
    ("demo_context", None, "custom"),
    ("demo_segmentation", "custom", "custom"),
    ("demo_segmentation", "voc", "voc"),
    ("demo_segmentation", "cityscapes", "cityscapes"),
    ("demo_segmentation", "ade20k", "ade20k"),
    ("cityscapes_gcnet_r50_d8_40k", None, "cityscapes"),
    ("voc12aug_gcnet_r50_d8_40k", None, "voc"),
    ("demo_detection", None, "coco"),
    ("demo_detection", "coco", "coco"),
    ("coco_maskrcnn_gc_r50_fpn_1x", None, "coco"),
    ("demo_video", None, "video_list"),
    ("demo_video", "video_folder", "video_folder"),
    ("demo_video", "video_list", "video_list"),
    ("demo_video", "kinetics", "kinetics"),
    ("demo_video", "rawframes", "rawframes"),
    ("kinetics400_gc_slowonly_r50_8x8", None, "kinetics"),
]


@pytest.mark.parametrize(
    "recipe, dataset, expected", DATA_COMBOS, ids=[f"{r}-{d}" for r, d, _ in DATA_COMBOS]
)
def test_data_flag_with_every_suggested_dataset(recipe, dataset, expected, tmp_path):
    """``--data ROOT`` is merged with the recipe and ``--set`` before the one validation: the
    config names the root and the dataset and passes the checks a run makes before reading."""
    sets = [f"data.dataset={dataset}"] if dataset else []
    cfg = train_config(_args(recipe, str(tmp_path), sets))
    assert cfg["data"]["dataset"] == expected and cfg["data"]["root"] == str(tmp_path)
    task_of(cfg).check_run(cfg)


def test_dataset_without_root_is_still_named(tmp_path):
    with pytest.raises(ValueError, match="data.root is required for data.dataset=voc"):
        train_config(_args("demo_segmentation", None, ["data.dataset=voc"]))


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_keep_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(str(tmp_path / "a.bin"), lambda p: open(p, "wb").write(b"x"))
        write_json(str(tmp_path / "m.json"), {"a": 1})
        with open(tmp_path / "plain.txt", "w") as f:  # what a plain open gives
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.bin", "m.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """A user's tree with 3 unreadable files, trained for 2 epochs from a relative --data
    with --skip-bad-images under umask 022 (and a warm-up longer than the run)."""
    home = tmp_path_factory.mktemp("home")
    _bad_tree(home / "photos")
    cwd, old = os.getcwd(), os.umask(0o022)
    os.chdir(home)
    try:
        args = [
            "train",
            "--data",
            "photos",
            "-o",
            "run",
            "--no-progress",
            "--skip-bad-images",
            *[a for s in [*TINY, "train.epochs=2", "sched.warmup_epochs=5"] for a in ("--set", s)],
        ]
        import contextlib
        import io

        from .helpers import run_gcnet_here

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            run_gcnet_here(args)
    finally:
        os.chdir(cwd)
        os.umask(old)
    return home, out.getvalue()


def test_bad_files_are_counted_exactly_over_epochs(own_run):
    home, out = own_run
    assert "skipped 3 unreadable image(s) (data.skip_bad_images=true)" in out, out
    assert "(8 train / 8 val images" in out  # 11 train files, 3 left out before training
    ck = torch.load(home / "run" / "last.pth", weights_only=True)
    assert ck["epoch"] == 1


def test_warmup_longer_than_the_run_is_warned(own_run):
    assert "warning: the warm-up (10 steps) is longer than the whole run (4 steps)" in own_run[1]


def test_run_files_are_readable_by_the_group_and_others(own_run):
    home, _ = own_run
    for name in ("last.pth", "best.pth", "weights.safetensors", "config.yaml", "metrics.jsonl"):
        assert stat.S_IMODE(os.stat(home / "run" / name).st_mode) == 0o644, name


def test_config_yaml_is_the_resolved_config(own_run):
    """``config.yaml`` is what the checkpoint holds (data.root absolute) and loads as a recipe."""
    home, _ = own_run
    ck = torch.load(home / "run" / "last.pth", weights_only=True)
    assert ck["config"]["data"]["root"] == str(home / "photos")
    assert load_config(home / "run" / "config.yaml") == ck["config"]


def test_eval_from_another_folder_finds_the_data(own_run, tmp_path, monkeypatch, capsys):
    home, _ = own_run
    monkeypatch.chdir(tmp_path)  # the relative "photos" does not exist here
    assert main(["eval", "--checkpoint", str(home / "run" / "best.pth"), "-o", "ev", "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_samples"] == 8 and metrics["classes"] == ["cat", "dog"]


def test_predict_a_folder_into_csv_skipping_bad_files(own_run, tmp_path, capsys):
    home, _ = own_run
    ckpt = str(home / "run" / "best.pth")
    out = tmp_path / "res.csv"
    assert main(["predict", str(home / "photos" / "train"), "--checkpoint", ckpt, "-o", str(out),
                 "--skip-bad-images", "--topk", "2", "--no-progress"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "skipped 3 unreadable file(s) of 11 (--skip-bad-images)" in err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 and list(rows[0]) == [
        "image",
        "top.1.class",
        "top.1.prob",
        "top.2.class",
        "top.2.prob",
    ]
    # the CSV holds what predict computes: the first row's top class and probability
    assert main(["predict", rows[0]["image"], "--checkpoint", ckpt, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert rows[0]["top.1.class"] == first["class"] and float(rows[0]["top.1.prob"]) == pytest.approx(
        first["prob"]
    )
    # a glob into JSON lines
    assert main(["predict", str(home / "photos" / "val" / "*" / "1.jpg"), "--checkpoint", ckpt, "-o",
                 str(tmp_path / "r.jsonl")]) == 0  # fmt: skip
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(x)["image"].split(os.sep)[-2:] for x in lines] == [["cat", "1.jpg"], ["dog", "1.jpg"]]


def test_cifar_offline_download_is_one_line(tmp_path, monkeypatch, capsys):
    """The recipe's download: true passes the pre-flight; no network is one line that names
    the URL and where to place the file, and leaves no empty folder behind."""

    def offline(*a, **k):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "-c", "cifar10_gc_resnet18", "-o", "o", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (
        "cannot download cifar10 from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (offline)"
        in err
    )
    assert (
        f"place cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/) in {tmp_path}/data/cifar10"
        in err
    )
    assert os.listdir(tmp_path) == []


def test_video_reader_names_an_image(tmp_path):
    from gcnet.data.video_io import BadVideoError, VideoReader

    Image.new("RGB", (32, 24)).save(tmp_path / "frame.jpg")
    with pytest.raises(BadVideoError, match=r"frame.jpg is an image \(JPEG\), not a video"):
        VideoReader(str(tmp_path / "frame.jpg"))


def test_predict_inputs_from_folders_and_globs(tmp_path):
    """A folder gives the task's files (videos for a video model), recursively and sorted; a
    glob its matches; a file given twice is predicted once; nothing found is named."""
    from gcnet.cli.predict import expand_inputs
    from gcnet.tasks import get_task

    for rel in ("a/1.mp4", "a/b/2.MKV", "a/3.jpg", "a/notes.txt", "c.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    video, image = get_task("video").input_extensions, get_task("classification").input_extensions
    assert expand_inputs([str(tmp_path / "a")], video) == [
        str(tmp_path / "a/1.mp4"),
        str(tmp_path / "a/b/2.MKV"),
    ]
    assert expand_inputs([str(tmp_path)], image) == [str(tmp_path / "a/3.jpg"), str(tmp_path / "c.png")]
    assert expand_inputs([str(tmp_path / "**/*.jpg"), str(tmp_path / "a/3.jpg")], image) == [
        str(tmp_path / "a/3.jpg")
    ]
    with pytest.raises(FileNotFoundError, match="no mp4/mkv/webm/avi files under .*a/b/c"):
        (tmp_path / "a/b/c").mkdir()
        expand_inputs([str(tmp_path / "c.png"), str(tmp_path / "a/b/c")], video)
    with pytest.raises(FileNotFoundError, match="video not found: .*nope.mp4"):
        expand_inputs([str(tmp_path / "nope.mp4")], video, "video")
