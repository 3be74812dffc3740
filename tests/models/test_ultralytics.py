"""Context blocks in Ultralytics YOLO models (issue 26): ``preset:ultralytics`` on models built
from Ultralytics' own YAML files (no weights), checked through Ultralytics' own code: its
forward, loss, trainer, ``fuse()``, ``save`` / load and ONNX exporter.

Ultralytics never reaches the network here: ``YOLO_OFFLINE``, its settings in a temporary
folder (with the font its dataset check would download), and every DNS look-up or socket
connect in this module fails and is recorded (none may happen). The process-wide state that
importing and training with Ultralytics changes (print options, threads, the environment) is
put back after the module."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import gcnet
from gcnet.models import ContextPlug, inserted_blocks, remove_context_blocks
from gcnet.models.ultralytics import copy_context_blocks, keep_context_blocks
from tests.conftest import randomize_

from ..helpers import ROOT

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

# the layers each preset must find, read off Ultralytics' YAML files (cfg/models/*/*.yaml)
YOLO11_BACKBONE = ["model.4.cv2", "model.6.cv2", "model.8.cv2", "model.10.cv2"]  # C3k2 P3-P5, C2PSA
YOLO11_NECK = ["model.13.cv2", "model.16.cv2", "model.19.cv2", "model.22.cv2"]  # C3k2 after Concat
WHERE = [
    ("yolo11n.yaml", "backbone", YOLO11_BACKBONE),
    ("yolo11n.yaml", "neck", YOLO11_NECK),
    ("yolo11n.yaml", "all", YOLO11_BACKBONE + YOLO11_NECK),
    ("yolo11n.yaml", "backbone:c2-c5", ["model.2.cv2"] + YOLO11_BACKBONE),  # the P2/4 C3k2 too
    ("yolov8n.yaml", "backbone", ["model.4.cv2", "model.6.cv2", "model.8.cv2"]),  # C2f
    ("yolov8n.yaml", "neck", ["model.12.cv2", "model.15.cv2", "model.18.cv2", "model.21.cv2"]),
    (
        "yolov8n-p2.yaml",
        "neck",
        ["model.12.cv2", "model.15.cv2", "model.21.cv2", "model.24.cv2", "model.27.cv2"],
    ),
    ("yolov5n.yaml", "backbone", ["model.4.cv3", "model.6.cv3", "model.8.cv3"]),  # C3: cv3
    ("yolo12n.yaml", "backbone", ["model.4.cv2", "model.6.cv2", "model.8.cv2"]),  # C3k2, A2C2f
]


@pytest.fixture(scope="module")
def ul(tmp_path_factory):
    """The ``ultralytics`` package, imported offline with its settings in a temporary folder."""
    if "ultralytics" in sys.modules:
        pytest.fail("ultralytics was imported before this module set it up offline")
    cfg = tmp_path_factory.mktemp("ultralytics_config")
    attempts: list[str] = []

    def refuse(what):
        def fail(*args, **kwargs):
            attempts.append(f"{what}{args[:2]}")
            raise OSError(f"network blocked in tests: {what}")

        return fail

    env, threads, np_print = dict(os.environ), torch.get_num_threads(), np.get_printoptions()
    # Ultralytics replaces PIL.Image.open (a HEIF fallback that pip-installs pi-heif on an
    # unreadable file) and torch.save for the whole process on import: restored below
    from PIL import Image

    image_open, torch_save = Image.open, torch.save
    deterministic = torch.are_deterministic_algorithms_enabled()
    with pytest.MonkeyPatch.context() as mp:
        env_vars = dict(
            YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(cfg), YOLO_AUTOINSTALL="false", YOLO_VERBOSE="false"
        )
        for k, v in env_vars.items():
            mp.setenv(k, v)
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        mp.setattr(socket.socket, "connect", refuse("connect"))
        import matplotlib
        import ultralytics
        from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

        assert USER_CONFIG_DIR.is_relative_to(cfg), USER_CONFIG_DIR
        # the dataset check looks for Arial.ttf in the config folder, and downloads it if missing
        shutil.copy(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf", USER_CONFIG_DIR / "Arial.ttf")
        SETTINGS.update(sync=False, runs_dir=str(cfg / "runs"), datasets_dir=str(cfg / "datasets"))
        yield ultralytics
    for key in set(os.environ) - set(env):  # NUMEXPR_MAX_THREADS, TF_CPP_MIN_LOG_LEVEL... set on import
        del os.environ[key]
    os.environ.update(env)
    torch.set_num_threads(threads)
    torch.set_printoptions(profile="default")
    np.set_printoptions(**np_print)
    torch.use_deterministic_algorithms(deterministic)
    Image.open, torch.save = image_open, torch_save
    assert not attempts, f"Ultralytics tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def pristine(ul):
    """``name -> a YOLO(name)`` built once from Ultralytics' YAML (eval mode); deepcopy it."""
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = ul.YOLO(name)
            cache[name].model.eval()
        return cache[name]

    return get


def fresh(pristine, name: str = "yolo11n.yaml") -> nn.Module:
    return copy.deepcopy(pristine(name).model)


def randomize_blocks_(model: nn.Module) -> None:
    """Blocks that are not the identity, so that a path that dropped them would show."""
    for blk in inserted_blocks(model).values():
        randomize_(blk, std=0.1)


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor a forward returns (eval: predictions and the raw head outputs; train: the
    raw head outputs), flattened in order."""
    out, todo = [], [model(x)]
    while todo:
        o = todo.pop(0)
        if isinstance(o, torch.Tensor):
            out.append(o)
        elif isinstance(o, dict):
            todo[:0] = list(o.values())
        elif isinstance(o, (list, tuple)):
            todo[:0] = list(o)
    return out


# -- where the presets put the blocks --------------------------------------------------------


@pytest.mark.parametrize("name, position, expected", WHERE)
def test_presets_put_a_block_after_each_csp_blocks_last_1x1_conv(pristine, name, position, expected):
    model = fresh(pristine, name)
    names = gcnet.add_context_blocks(model, after=f"preset:ultralytics:{position}")
    assert names == [f"{n}.context_block" for n in expected]
    for n in expected:
        layer, child = n.rsplit(".", 1)
        plug, top = model.get_submodule(n), model.get_submodule(layer)
        assert isinstance(plug, ContextPlug) and plug.module.conv.kernel_size == (1, 1)
        assert plug.channels == plug.module.conv.out_channels
        # the top-level layer stays Ultralytics' own, with what _predict_once and fuse() read
        assert not isinstance(top, ContextPlug) and top.type.endswith(type(top).__name__)
        assert isinstance(top.i, int) and top.i == int(layer.split(".")[1]) and hasattr(top, "np")


def test_preset_errors_name_the_fix(pristine):
    yolo = pristine("yolo11n.yaml")
    with pytest.raises(ValueError, match=r"position must be one of \('backbone', 'neck', 'all'\)"):
        gcnet.add_context_blocks(fresh(pristine), after="preset:ultralytics:after_1x1")
    with pytest.raises(ValueError, match=r"pass the network, yolo\.model \(DetectionModel\), not the YOLO"):
        gcnet.add_context_blocks(yolo, after="preset:ultralytics:neck")
    with pytest.raises(ValueError, match=r"preset 'ultralytics' .* does not fit this Sequential"):
        gcnet.add_context_blocks(nn.Sequential(nn.Conv2d(3, 8, 1)), after="preset:ultralytics")
    with pytest.raises(ValueError, match="needs an Ultralytics YOLO object, got DetectionModel"):
        keep_context_blocks(yolo.model)


# -- the model computes what it did, with its keys --------------------------------------------


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolov8n.yaml", "yolo11n-seg.yaml"])
def test_insertion_keeps_outputs_and_state_dict_keys(pristine, name):
    plain = fresh(pristine, name)
    randomize_(plain, std=0.05)  # BN statistics too: the identity must hold for any weights
    model = copy.deepcopy(plain)
    names = gcnet.add_context_blocks(model, after="preset:ultralytics:all")
    assert len(names) >= 7
    sd, plain_sd = model.state_dict(), plain.state_dict()
    assert [k for k in sd if ".context_block." not in k] == list(plain_sd)
    assert all(torch.equal(sd[k], v) for k, v in plain_sd.items())
    # pretrained weights load after insertion: only the blocks' keys are missing
    fresh_gc = fresh(pristine, name)
    gcnet.add_context_blocks(fresh_gc, after="preset:ultralytics:all")
    missing, unexpected = fresh_gc.load_state_dict(plain_sd, strict=False)
    assert not unexpected and missing and all(".context_block." in k for k in missing)
    with torch.no_grad():
        for mode in (False, True):  # eval: predictions + raw maps; train: the raw head outputs
            a, b, c = (_outputs(m.train(mode), X) for m in (plain, model, fresh_gc))
            assert len(a) == len(b) >= 4 and all(torch.isfinite(p).all() for p in a)
            assert all(torch.equal(p, q) for p, q in zip(a, b))
            assert all(torch.equal(p, q) for p, q in zip(a, c))


# -- training: Ultralytics' loss and trainer ---------------------------------------------------


def _batch() -> dict[str, torch.Tensor]:
    """Two images with one box each, in Ultralytics' batch format (normalised xywh)."""
    return {"img": X, "batch_idx": torch.tensor([0.0, 1.0]), "cls": torch.tensor([[0.0], [3.0]]),
            "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.2]])}  # fmt: skip


def test_ultralytics_loss_reaches_the_blocks_and_one_step_moves_them(pristine):
    from ultralytics.cfg import get_cfg

    plain = fresh(pristine).train()
    model = copy.deepcopy(plain)
    gcnet.add_context_blocks(model, after="preset:ultralytics:all")
    plain.args = model.args = get_cfg()  # the loss gains (box, cls, dfl) a trainer would set
    loss, _ = model.loss(_batch())
    assert torch.equal(loss, plain.loss(_batch())[0])  # identity at insertion: the same loss
    loss.sum().backward()
    blocks = inserted_blocks(model)
    assert all(b.transform_add.conv_out.weight.grad.abs().sum() > 0 for b in blocks.values())
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    with torch.no_grad():
        with_blocks = model(X)[0]
        remove_context_blocks(model)
        assert (
            with_blocks - model(X)[0]
        ).abs().max() > 1e-4  # one step: the blocks are no longer the identity


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A 2-class detection dataset in YOLO format: 4 train and 4 val 64x64 images."""
    from PIL import Image

    root = tmp_path_factory.mktemp("yolo_data")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{k}.png"
            )
            (root / "labels" / split / f"{k}.txt").write_text(f"{k % 2} 0.5 0.5 0.4 0.3\n")
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n"
    )
    return root / "data.yaml"


@pytest.mark.parametrize("start", ["pt", "yaml"])
def test_trainer_keeps_the_blocks_in_training_and_in_best_pt(ul, tiny_data, tmp_path, start):
    """``YOLO.train()`` trains a new network built from the model's YAML (a ``.pt`` model's
    weights loaded into it by key); with `keep_context_blocks` that network has the blocks
    (copies, with their weights, before the optimizer and EMA exist), its checkpoints hold them
    and ``yolo.model`` after training has them, trained."""
    yolo = ul.YOLO("yolo11n.yaml")
    if start == "pt":  # fine-tuning a pretrained .pt, the usual path
        yolo.save(tmp_path / "base.pt")
        yolo = ul.YOLO(str(tmp_path / "base.pt"))
    names = gcnet.add_context_blocks(yolo.model, after="preset:ultralytics:backbone")
    randomize_blocks_(yolo.model)
    source, source_sd = yolo.model, copy.deepcopy(yolo.model.state_dict())
    keep_context_blocks(yolo)
    keep_context_blocks(yolo)  # twice: registered once
    seen = {}

    def record(trainer):  # the network the trainer is about to train
        seen["new"] = trainer.model is not source
        seen["names"] = list(inserted_blocks(trainer.model))
        seen["sd"] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        seen["in_optimizer"] = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        seen["block_params"] = [
            id(p) for b in inserted_blocks(trainer.model).values() for p in b.parameters()
        ]

    yolo.add_callback("on_pretrain_routine_end", record)
    args = dict(
        epochs=1, imgsz=64, batch=4, workers=0, plots=False, device="cpu", amp=False, deterministic=False
    )
    yolo.train(data=str(tiny_data), project=str(tmp_path), name="gc", exist_ok=True, verbose=False, **args)
    assert seen["new"] and seen["names"] == names  # a new network, with the blocks
    blocks = [k for k in source_sd if ".context_block." in k]
    assert all(torch.equal(seen["sd"][k], source_sd[k]) for k in blocks)  # ... copied with their weights
    if start == "pt":  # and the .pt's weights (all but the 80-class head's: 2 classes here)
        same = [k for k, v in source_sd.items() if seen["sd"][k].shape == v.shape]
        assert len(same) > 0.95 * len(source_sd)
        assert all(torch.equal(seen["sd"][k], source_sd[k]) for k in same)
    assert set(seen["block_params"]) <= seen["in_optimizer"]
    best = yolo.trainer.best  # after training, yolo.model is best.pt's network
    assert best.is_file() and list(inserted_blocks(yolo.model)) == names
    trained = yolo.model.state_dict()
    assert any(not torch.equal(trained[k], source_sd[k]) for k in blocks)
    reloaded = ul.YOLO(str(best)).model.state_dict()
    assert all(torch.equal(reloaded[k], trained[k]) for k in blocks)


def test_copy_context_blocks_checks_the_target(pristine):
    source, target = fresh(pristine), fresh(pristine, "yolov8n.yaml")
    gcnet.add_context_blocks(source, after="preset:ultralytics:neck")
    with pytest.raises(
        ValueError, match=r"the target has no such module at 'model.13.cv2', where the source"
    ):
        copy_context_blocks(source, target)  # YOLOv8's layer 13 is an Upsample
    target = fresh(pristine)
    assert copy_context_blocks(source, target) == list(inserted_blocks(source))
    with pytest.raises(ValueError, match="'model.13.cv2' of the target already has a context block"):
        copy_context_blocks(source, target)


# -- inference paths: fuse, save / load, ONNX --------------------------------------------------


def test_fuse_folds_the_convs_and_keeps_the_blocks(pristine):
    plain = fresh(pristine)
    model = copy.deepcopy(plain)
    gcnet.add_context_blocks(model, after="preset:ultralytics:all")
    randomize_blocks_(model)
    with torch.no_grad():
        before = model(X)[0]
        fused = copy.deepcopy(model).fuse(verbose=False)
        assert not [m for m in fused.modules() if type(m).__name__ == "Conv" and hasattr(m, "bn")]
        assert list(inserted_blocks(fused)) == list(inserted_blocks(model))
        after = fused(X)[0]
        assert torch.allclose(after, before, rtol=1e-4, atol=1e-4)
        assert (after - plain(X)[0]).abs().max() > 1e-2  # the blocks matter: a dropped one would show


def test_save_reload_and_ultralytics_onnx_export(ul, pristine, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    yolo = ul.YOLO("yolo11n.yaml")
    names = gcnet.add_context_blocks(yolo.model, after="preset:ultralytics:all")
    randomize_blocks_(yolo.model)
    yolo.save(tmp_path / "gc.pt")  # the whole module, in fp16 (as Ultralytics saves)
    reloaded = ul.YOLO(str(tmp_path / "gc.pt"))
    assert list(inserted_blocks(reloaded.model)) == names
    with torch.no_grad():
        expected = copy.deepcopy(yolo.model).half().float().eval()(X)[0]
        assert torch.allclose(reloaded.model.eval()(X)[0], expected, rtol=1e-4, atol=1e-4)
        path = reloaded.export(format="onnx", imgsz=64, batch=2, simplify=False, device="cpu")
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        (out,) = sess.run(None, {sess.get_inputs()[0].name: X.numpy()})
        assert out.shape == tuple(expected.shape)
        assert np.allclose(out, expected.numpy(), rtol=1e-3, atol=1e-3)
        remove_context_blocks(reloaded.model)
        assert np.abs(out - reloaded.model(X)[0].numpy()).max() > 1e-2  # the exported graph has the blocks


def test_gcnet_does_not_import_ultralytics(tmp_path):
    """The preset and the trainer helper work by class names and the object they are given."""
    code = (
        "import sys, torchvision, gcnet\nfrom gcnet.models import ultralytics as u, add_context_blocks\n"
        "from gcnet.models.plugins import _parse_preset\n"
        "_parse_preset('preset:ultralytics:neck')\n"
        "add_context_blocks(torchvision.models.resnet18(), after='preset:resnet')\n"
        "assert 'ultralytics' not in sys.modules, 'ultralytics was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
