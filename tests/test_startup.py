"""Start-up (issue 25): what ``import gcnet``, ``gcnet --help`` and a tiny ``gcnet train`` leave
unimported, each in a fresh process, so that the gain (``benchmarks/bench_startup.py``) cannot
silently come back; and the lazy public names behave as the eager ones did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import gcnet

from .helpers import ROOT

# the optional extras: imported only by the features that use them (gcnet.utils.extras)
EXTRAS = (
    "matplotlib",
    "av",
    "pycocotools",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "timm",
    "huggingface_hub",
    "ultralytics",
)
# torchvision's import takes torch._dynamo with it (torchvision.ops.roi_align), ~1-2 s
HEAVY = ("torchvision", "torchvision.models.detection", "torch._dynamo", *EXTRAS)
MARK = "--modules--"


def _modules_after(code: str, tmp_path) -> set[str]:
    """The modules loaded after ``code`` ran in a fresh interpreter (``src`` on PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("GCNET_DEBUG", None)
    script = f"{code}\nimport json, sys\nprint({MARK!r} + json.dumps(sorted(sys.modules)))\n"
    r = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return set(json.loads(r.stdout.rsplit(MARK, 1)[1]))


def _loaded(modules: set[str], names) -> list[str]:
    return [n for n in names if n in modules]


def test_import_gcnet_imports_no_framework(tmp_path):
    mods = _modules_after("import gcnet", tmp_path)
    assert not _loaded(mods, HEAVY)
    assert "gcnet.models" not in mods and "gcnet.layers" not in mods


def test_help_imports_no_framework(tmp_path):
    """``python -m gcnet --help``: the parser of every command, and no model, task or torch
    extension (``gcnet demo``'s choices are read from the tasks only when checked or shown)."""
    code = (
        "import runpy, sys\nsys.argv = ['gcnet', '--help']\n"
        "try:\n    runpy.run_module('gcnet', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
    )
    mods = _modules_after(code, tmp_path)
    assert not _loaded(mods, HEAVY)
    assert not [m for m in mods if m.startswith(("gcnet.tasks", "gcnet.models", "gcnet.engine"))]


def test_tiny_train_imports_no_extra(tmp_path):
    """A classification run with output.plot off imports none of the extras. (torchvision's own
    ``__init__`` imports ``torchvision.models.detection`` and, through ``torchvision.ops``,
    ``torch._dynamo``: a run that uses torchvision's transforms cannot leave those out.)"""
    sets = ["model.name=resnet18", "data.image_size=32", "data.train_size=8", "data.val_size=4",
            "train.batch_size=8", "train.epochs=1", "data.num_workers=0", "output.plot=false"]  # fmt: skip
    argv = ["train", *(a for s in sets for a in ("--set", s)), "-o", str(tmp_path / "run"), "--no-progress"]
    mods = _modules_after(f"import gcnet.cli\nassert gcnet.cli.main({argv!r}) == 0", tmp_path)
    assert (tmp_path / "run" / "weights.safetensors").is_file()
    assert not _loaded(mods, EXTRAS)


def test_public_names_resolve_lazily():
    """Every name of ``__all__`` is there (``from gcnet import X``), in ``dir()``, and the same
    object as in its subpackage; subpackages are attributes; a wrong name is an AttributeError."""
    from gcnet import layers, models

    for name in gcnet.__all__:
        assert getattr(gcnet, name) is not None
    assert set(gcnet.__all__) <= set(dir(gcnet))
    assert gcnet.create_model is models.create_model and gcnet.GlobalContextBlock is layers.GlobalContextBlock
    assert gcnet.models is models and gcnet.config.__name__ == "gcnet.config"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        gcnet.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from gcnet import no_such_name  # noqa: F401


def test_detectors_are_registered_and_built():
    """The detector names are in the registry from the start (gcnet.models.detection imports
    torchvision's detection classes only in its builders), and build."""
    from gcnet.models import create_model, list_models, model_family

    assert "maskrcnn_gc_r50_fpn" in list_models("maskrcnn_*")
    assert model_family("fasterrcnn_r18_fpn") == "detector"
    model = create_model("fasterrcnn_r18_fpn", num_classes=3, min_size=64, max_size=64)
    assert type(model).__name__ == "FasterRCNN" and model.model_name == "fasterrcnn_r18_fpn"
