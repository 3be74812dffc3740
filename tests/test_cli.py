"""The command line: info, export, blocks, and errors without stack traces."""

import pytest

from gcnet.cli import main


def test_info_reproduces_paper_numbers(capsys):
    assert main(["info", "gc_resnet50"]) == 0
    out = capsys.readouterr().out
    assert "28.079" in out and "25.557" in out and "+2.522" in out
    assert "13 blocks" in out


def test_info_overrides(capsys):
    assert main(["info", "resnet50", "--set", "plugin=gc", "--set", "ratio=0.25"]) == 0
    assert "+10.001" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity(tmp_path, capsys, fmt):
    out = tmp_path / f"m.{fmt}"
    assert main(["export", "gc_resnet18", "--format", fmt, "-o", str(out), "--input", "1x3x64x64"]) == 0
    assert out.exists() and "OK" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_blocks_table(capsys):
    assert main(["blocks", "--shape", "2x64x8x8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "GC r16 (att, add)" in out and "NL (embedded gaussian)" in out


def test_errors_are_one_line(capsys):
    assert main(["info", "gc_resnet5"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gc_resnet5'" in err and "Traceback" not in err
    assert main(["info", "gc_resnet50", "--set", "ratio"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, sets, names",
    [
        ("classification", ["data.train_size=32", "data.val_size=16", "train.batch_size=16", "train.epochs=1",
                            "data.num_workers=0"], ("resnet18", "gc_resnet18")),
        ("detection", ["data.train_size=4", "data.val_size=2", "train.batch_size=2", "train.epochs=1",
                       "model.kwargs.box_detections_per_img=4", "model.kwargs.box_batch_size_per_image=8"],
         ("maskrcnn_r18_fpn", "maskrcnn_gc_r18_fpn")),
        ("video", ["data.train_size=8", "data.val_size=4", "train.batch_size=4", "train.epochs=1",
                   "data.num_workers=0", "data.video.num_clips=1"],
         ("slowonly_tiny", "gc_slowonly_tiny", "nl_slowonly_tiny")),
    ],
)  # fmt: skip
def test_demo_trains_both_models_and_compares(tmp_path, capsys, task, sets, names):
    """`gcnet demo` (the `make demo` job), cut down: both models train on the embedded data and
    land in one table, with the curves PNG and the checkpoints where it says."""
    args = ["demo", "--task", task, "--no-progress", "--seeds", "1", "-o", str(tmp_path)]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model")) + 2
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("| "))
    rows = [line for line in lines[start:end] if not line.startswith("| *")]  # reference rows aside
    assert [r.split("|")[1].strip() for r in rows] == list(names)
    assert (tmp_path / "curves.png").is_file()
    for n in names:
        assert (tmp_path / n / "best.pth").is_file() and f"{tmp_path / n}/best.pth" in out
