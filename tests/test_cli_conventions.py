"""One convention across commands (issue 17): ``--set``, ``--input``, ``--model``, ``-c`` by
recipe name, ``--data`` for every task, progress bars, units; a run's checkpoint (or its
final weights) drives ``info`` / ``export`` / ``eval`` / ``predict``; and help for every option."""

import argparse
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from gcnet.cli import build_parser, main
from gcnet.cli._common import config_overrides, parse_image_input, parse_model_overrides
from gcnet.cli.train import train_config
from gcnet.config import list_recipes, load_config
from gcnet.engine import train

from .helpers import ROOT

TINY = ["model.name=gc_resnet18", "data.image_size=32", "data.train_size=24", "data.val_size=12",
        "data.num_workers=0", "train.batch_size=8", "train.epochs=1", "output.plot=false"]  # fmt: skip


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A tiny finished classification run: 3 classes, best.pth and weights.safetensors."""
    out = tmp_path_factory.mktemp("run3")
    summary = train(load_config(None, [*TINY, f"output.dir={out}"]), progress=False)
    return out, summary


def _subcommands():
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_option_has_help():
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in _subcommands().items()
               for a in p._actions if not isinstance(a, argparse._HelpAction) and not a.help]  # fmt: skip
    assert not missing, missing
    assert set(_subcommands()) == {"blocks", "info", "export", "train", "eval", "predict", "analyze", "demo",
                                   "study"}  # fmt: skip


def test_set_means_the_same_everywhere():
    # a dotted key is a config key, a bare key a model option
    assert config_overrides(["optim.lr=0.5", "ratio=0.25", "task=detection"]) == [
        "optim.lr=0.5", "model.kwargs.ratio=0.25", "task=detection"]  # fmt: skip
    assert parse_model_overrides(["ratio=0.25", "model.kwargs.stages=c4"]) == {"ratio": 0.25, "stages": "c4"}
    with pytest.raises(ValueError, match="takes model options"):
        parse_model_overrides(["optim.lr=0.5"])
    cfg = load_config(None, config_overrides(["ratio=0.25"]))
    assert cfg["model"]["kwargs"] == {"ratio": 0.25}


def test_input_shape_forms(capsys):
    assert parse_image_input("3x64x64") == parse_image_input("1x3x64x64") == (1, 3, 64, 64)
    assert parse_image_input("2x3x8x64x64") == (2, 3, 8, 64, 64)  # a batch of clips (video models)
    for bad in ("3x0x224", "64x64", "1x2x1x3x64x64", "ax3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_image_input(bad)
    assert main(["info", "--model", "gc_resnet18", "--input", "3x64x64"]) == 0
    a = capsys.readouterr().out
    assert main(["info", "gc_resnet18", "--input", "1x3x64x64"]) == 0
    assert capsys.readouterr().out == a and "input: 1x3x64x64" in a
    assert main(["info", "gc_resnet18", "--model", "resnet18"]) == 2
    assert "two models" in capsys.readouterr().err


def test_recipes_are_found_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("demo_segmentation.yaml")["task"] == "segmentation"
    assert load_config("demo_detection")["task"] == "detection"
    assert os.path.realpath(ROOT / "configs") == os.path.realpath(ROOT / "src/gcnet/recipes")
    with pytest.raises(FileNotFoundError, match="packaged recipe"):
        load_config("no_such_recipe.yaml")


@pytest.mark.parametrize("recipe", list_recipes())
def test_data_means_the_recipes_dataset_root(recipe):
    """--data is the root of the recipe's own dataset (the COCO recipes used to switch to an
    ImageFolder and fail); a recipe on the embedded set switches to the task's file format."""
    base = load_config(recipe)
    args = argparse.Namespace(config=recipe, set=None, output=None, model=None, skip_bad_images=False,
                              data="/data/x")  # fmt: skip
    cfg = train_config(args)
    assert cfg["data"]["root"] == "/data/x"
    expected = {"classification": "imagefolder", "detection": "coco", "video": "video_list",
                "segmentation": "custom"}.get(base["task"], base["data"]["dataset"])  # fmt: skip
    if base["data"]["dataset"] not in ("synthetic", "synthetic_video", "far_key"):
        expected = base["data"]["dataset"]
    assert cfg["data"]["dataset"] == expected


def test_a_runs_checkpoint_drives_info_and_export(run3, tmp_path, capsys):
    """The checkpoint's own model, classes and input size (defect 5: a fresh 1000-class
    head used to be exported, with parity 'OK')."""
    out, _ = run3
    ck = str(out / "best.pth")
    assert main(["info", "--checkpoint", ck]) == 0
    text = capsys.readouterr().out
    assert "model: gc_resnet18" in text and "input: 1x3x32x32" in text
    onnx = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", ck, "--format", "onnx", "-o", str(onnx)]) == 0
    assert "OK" in capsys.readouterr().out
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx))
    (y,) = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 3)
    assert main(["info", "gc_resnet50", "--checkpoint", ck]) == 2
    assert "holds a gc_resnet18" in capsys.readouterr().err


def test_final_weights_evaluate_like_the_checkpoint(run3, tmp_path, capsys):
    """weights.safetensors carries its run's config: eval and predict take it (one epoch, no
    EMA: the final weights are best.pth's)."""
    out, _ = run3
    res = {}
    for name in ("best.pth", "weights.safetensors"):
        assert (
            main(["eval", "--checkpoint", str(out / name), "-o", str(tmp_path / name), "--no-progress"]) == 0
        )
        res[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert res["best.pth"]["loss"] == pytest.approx(res["weights.safetensors"]["loss"], rel=1e-6)
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, str(bare))
    capsys.readouterr()
    assert main(["predict", str(bare), "--checkpoint", str(bare)]) == 2
    assert "without their run's config" in capsys.readouterr().err


def test_attention_maps_of_same_stem_images_do_not_overwrite(tmp_path, capsys):
    paths = []
    for ext in ("png", "jpg"):
        p = tmp_path / f"a.{ext}"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    out = tmp_path / "att"
    assert (
        main(["analyze", "attention", *paths, "--model", "gc_resnet18", "--input", "3x32x32", "-o", str(out)])
        == 0
    )
    assert sorted(os.listdir(out)) == ["a_jpg_attention.png", "a_png_attention.png"]


def test_detection_batch_too_large_for_any_aspect_group(tmp_path, capsys):
    """Defect 7: with aspect-ratio grouping the condition is that no group fills a batch."""
    sets = ["task=detection", "model.name=fasterrcnn_r18_fpn", "data.image_size=32", "data.train_size=3",
            "data.val_size=1", "data.num_workers=0", "train.batch_size=4", "model.kwargs.min_size=32",
            "model.kwargs.max_size=48"]  # fmt: skip
    args = ["train", "--no-progress", "-o", str(tmp_path)] + [a for s in sets for a in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no aspect-ratio group" in err and "landscape" in err and "Traceback" not in err


def test_progress_bars_stay_out_of_redirected_logs(tmp_path):
    """A log that is not a terminal gets the epoch lines, not tqdm's carriage returns."""
    from .helpers import run_gcnet

    sets = [a for s in TINY for a in ("--set", s)]
    r = run_gcnet(["train", "-o", tmp_path, *sets])
    assert "\r" not in r.stderr and "\r" not in r.stdout
    assert "epoch 1: train loss" in r.stdout and "best val top-1" in r.stdout
