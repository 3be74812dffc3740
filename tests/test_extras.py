"""Missing extras (issue 25): a feature whose optional dependency is not installed stops with
one line naming the package and the ``pip install 'gcnet[EXTRA]'`` that adds it, through the
real code paths; the command line prints it as ``gcnet <cmd>: error: ...`` (exit 2).

A package is made missing in this process only: ``sys.modules[name] = None`` (what Python
does for a blocked import), its loaded submodules set aside, all restored after the test."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from gcnet.utils.extras import MissingExtraError, require


@pytest.fixture
def block(monkeypatch):
    """``block("av", ...)``: importing those packages (and their submodules) fails here."""

    def _block(*names: str) -> None:
        for name in names:
            for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                monkeypatch.delitem(sys.modules, mod)
            monkeypatch.setitem(sys.modules, name, None)

    return _block


def _one_line(excinfo, expected: str) -> None:
    assert isinstance(excinfo.value, ImportError) and not isinstance(excinfo.value, ValueError)
    assert str(excinfo.value) == expected
    assert "\n" not in str(excinfo.value)


# -- the helper ------------------------------------------------------------------------


def test_require_returns_the_module_or_one_line(block):
    import json

    assert require("json", "reading JSON") is json
    block("av")
    with pytest.raises(MissingExtraError) as e:
        require("av", "video decoding")
    _one_line(e, "video decoding needs PyAV: pip install 'gcnet[video]'")
    assert e.value.name == "av"
    with pytest.raises(MissingExtraError, match=r"^x needs gcnet_nopkg: pip install gcnet_nopkg$"):
        require("gcnet_nopkg.sub", "x")


def test_require_says_why_an_installed_package_does_not_import(tmp_path, monkeypatch):
    """Installed but broken (FFmpeg's shared library missing): the line, and the first line of why."""
    (tmp_path / "gcnet_broken_pkg.py").write_text("raise ImportError('libavformat.so: cannot open\\nmore')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as e:
        require("gcnet_broken_pkg", "video decoding", extra="video", alternative="use frame folders")
    _one_line(e, "video decoding needs gcnet_broken_pkg: pip install 'gcnet[video]', or use frame folders "
                 "(importing gcnet_broken_pkg failed: libavformat.so: cannot open)")  # fmt: skip


# -- each extra through a real code path -------------------------------------------------


def test_video_needs_pyav(block, tmp_path):
    from gcnet.data.video_io import VideoReader, write_video

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 64)
    block("av")
    with pytest.raises(MissingExtraError) as e:
        VideoReader(str(video))
    _one_line(e, "video decoding needs PyAV: pip install 'gcnet[video]'")
    with pytest.raises(MissingExtraError) as e:
        write_video(str(tmp_path / "out.mp4"), np.zeros((2, 8, 8, 3), np.uint8))
    _one_line(e, "writing videos needs PyAV: pip install 'gcnet[video]'")


def test_coco_needs_pycocotools(block, tmp_path):
    from gcnet.data.coco import CocoDetection
    from gcnet.tasks.det_eval import coco_evaluate, to_coco_results

    block("pycocotools")
    with pytest.raises(MissingExtraError) as e:
        CocoDetection(str(tmp_path), str(tmp_path / "instances_val.json"))
    _one_line(e, "reading COCO annotations needs pycocotools: pip install 'gcnet[detection]'")
    with pytest.raises(MissingExtraError) as e:
        coco_evaluate(None, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], "bbox")
    _one_line(e, "COCO evaluation needs pycocotools: pip install 'gcnet[detection]'")
    out = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    with pytest.raises(MissingExtraError, match=r"^COCO evaluation needs pycocotools"):
        to_coco_results(out, 1, {})


def test_plots_need_matplotlib(block, tmp_path):
    from gcnet.engine.logger import plot_curves
    from gcnet.tools.visualize import plot_confusion

    block("matplotlib")
    with pytest.raises(MissingExtraError) as e:
        plot_curves({"run": [{"epoch": 1, "train_loss": 1.0, "lr": 0.1}]}, str(tmp_path / "curves.png"))
    _one_line(e, "plotting curves needs matplotlib: pip install 'gcnet[viz]', or --set output.plot=false")
    with pytest.raises(MissingExtraError) as e:
        plot_confusion(torch.eye(2), ["a", "b"], str(tmp_path / "cm.png"))
    _one_line(e, "drawing figures needs matplotlib: pip install 'gcnet[viz]'")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx", "onnxscript"])
def test_onnx_export_needs_the_onnx_extra(block, tmp_path, missing):
    from gcnet.tools.export import export_model

    block(missing)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(MissingExtraError) as e:
        export_model(model, tmp_path / "m.onnx", "onnx", (1, 3, 16, 16))
    _one_line(e, f"ONNX export needs {missing}: pip install 'gcnet[onnx]'")
    assert not (tmp_path / "m.onnx").exists()


def test_timm_models_need_timm(block):
    from gcnet import create_model

    block("timm")
    with pytest.raises(MissingExtraError) as e:
        create_model("timm:resnet18")
    _one_line(e, "a timm:NAME model needs timm: pip install 'gcnet[timm]'")


def test_hub_needs_huggingface_hub(block, tmp_path):
    from gcnet import create_model

    block("huggingface_hub")
    with pytest.raises(MissingExtraError) as e:
        create_model("hf-hub:gcnet/gc_resnet18")
    _one_line(e, "loading from the Hugging Face Hub needs huggingface_hub: pip install 'gcnet[hub]'")


def test_push_to_hub_needs_huggingface_hub(block, tmp_path):
    from gcnet.hub import push_to_hub, save_pretrained

    folder = tmp_path / "saved"
    save_pretrained(_tiny_model(), folder)
    block("huggingface_hub")
    with pytest.raises(MissingExtraError) as e:
        push_to_hub(folder, "org/name")
    _one_line(e, "pushing to the Hugging Face Hub needs huggingface_hub: pip install 'gcnet[hub]'")


def _tiny_model() -> nn.Module:
    from gcnet import create_model

    return create_model("resnet18", num_classes=3)


# -- the command line: one line, exit 2 ---------------------------------------------------


def _cli(argv, capsys) -> tuple[int, list[str]]:
    from gcnet.cli import main

    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


TINY = ["model.name=resnet18", "data.image_size=32", "data.train_size=8", "data.val_size=4",
        "train.batch_size=8", "train.epochs=1", "data.num_workers=0"]  # fmt: skip


def _train_argv(out, plot: bool) -> list[str]:
    sets = [*TINY, f"output.plot={str(plot).lower()}"]
    return ["train", *(a for s in sets for a in ("--set", s)), "-o", str(out), "--no-progress"]


def test_cli_train_without_matplotlib_trains_without_curves(block, tmp_path, capsys):
    """output.plot is on by default: a core install trains, and one line says what the
    curves need (they are a by-product, not the run's purpose)."""
    from gcnet.cli import main

    block("matplotlib")
    assert main(_train_argv(tmp_path / "run", plot=True)) == 0
    out = capsys.readouterr().out
    assert ("note: output.plot (the run's curves.png) needs matplotlib: pip install 'gcnet[viz]', or "
            "--set output.plot=false; training without curves.png") in out  # fmt: skip
    assert (tmp_path / "run" / "last.pth").exists() and not (tmp_path / "run" / "curves.png").exists()


def test_cli_info_of_a_timm_model_without_timm(block, capsys):
    block("timm")
    rc, err = _cli(["info", "timm:resnet18"], capsys)
    assert rc == 2
    assert err == ["gcnet info: error: a timm:NAME model needs timm: pip install 'gcnet[timm]'"]


def test_cli_eval_without_matplotlib_scores_and_skips_the_figure(block, tmp_path, capsys):
    """The classification report's confusion matrix PNG is a by-product: without matplotlib
    the scores and metrics.json stand, and one line says what the figure needs."""
    from gcnet.cli import main

    assert main(_train_argv(tmp_path / "run", plot=False)) == 0
    capsys.readouterr()
    block("matplotlib")
    assert main(["eval", "--checkpoint", str(tmp_path / "run" / "best.pth"), "-o", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "no confusion_matrix.png: drawing figures needs matplotlib: pip install 'gcnet[viz]'" in out
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert not (tmp_path / "ev" / "confusion_matrix.png").exists()
