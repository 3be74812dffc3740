"""Sharing and loading models the way the field does (issue 25): torch.hub entry points
(``hubconf.py``), the Hugging Face Hub layout (``gcnet.hub.save_pretrained``, ``gcnet export
--format hf``), ``create_model("local-dir:PATH")`` / ``("hf-hub:ORG/NAME")`` through
huggingface_hub's own offline cache, ``push_to_hub`` (its API calls, monkeypatched), and the
pretrained config that makes a model from anywhere preprocess as it was trained. All offline."""

import json
import os
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import gcnet
from gcnet.cli import main
from gcnet.config import load_config
from gcnet.engine import train
from gcnet.hub import load_run, push_to_hub, run_config, save_pretrained
from gcnet.models.pretrained import PretrainedCfg

from .conftest import randomize_
from .helpers import ROOT

TINY = ["model.name=gc_resnet18", "data.image_size=32", "data.train_size=24", "data.val_size=12",
        "data.num_workers=0", "train.batch_size=8", "train.epochs=1", "output.plot=false",
        "data.mean=[0.5,0.4,0.3]", "data.std=[0.2,0.25,0.3]", "data.augment.eval_crop_ratio=0.8"]  # fmt: skip

#: (model, options, example input): one tiny model of every task
MODELS = [
    ("resnet18", dict(num_classes=4), (1, 3, 32, 32)),
    ("gc_resnet18", dict(num_classes=3, ratio=0.25, stages=["c4", "c5"]), (2, 3, 32, 32)),
    ("gcnet_tiny_s4", dict(num_classes=5), (1, 3, 32, 32)),
    ("fasterrcnn_gc_r18_fpn", dict(num_classes=3, min_size=64, max_size=96), (1, 3, 64, 80)),
    ("gc_slowonly_r18", dict(num_classes=4), (1, 3, 4, 32, 32)),
]
TAGS = {"gcnet_tiny_s4": "image-segmentation", "fasterrcnn_gc_r18_fpn": "object-detection",
        "gc_slowonly_r18": "video-classification"}  # fmt: skip


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _outputs(model, x):
    with torch.no_grad():
        y = model(list(x)) if getattr(model, "transform", None) is not None else model(x)
    if isinstance(y, list):  # a detector: one dict of tensors per image
        return [t for d in y for t in d.values()]
    return list(y.values()) if isinstance(y, dict) else [y]


# -- torch.hub -------------------------------------------------------------------------------


def test_hubconf_lists_every_model_and_loads_one(monkeypatch):
    # torch.hub.list reads a GitHub repo's cached checkout: point it at this one
    monkeypatch.setattr(torch.hub, "_get_cache_or_reload", lambda *a, **k: str(ROOT))
    names = torch.hub.list("gcnet/gcnet", trust_repo=True)
    assert set(names) == {*gcnet.list_models(), "from_pretrained"}
    model = torch.hub.load(str(ROOT), "gc_resnet50", source="local", num_classes=7)
    assert model.model_name == "gc_resnet50" and model.fc.out_features == 7
    assert len(model.context_blocks()) == 13  # c3-c5: 4 + 6 + 3 blocks
    hubconf = runpy.run_path(str(ROOT / "hubconf.py"))
    doc = hubconf["gcnet_r50_d8"].__doc__
    assert "gcnet_r50_d8: semantic segmentation" in doc and "pretrained" in doc
    assert hubconf["gc_slowonly_r18"].__name__ == "gc_slowonly_r18"
    assert "video" in hubconf["gc_slowonly_r18"].__doc__
    assert all(d for d in hubconf["dependencies"])


def test_hubconf_imports_nothing_heavy():
    code = ("import runpy, sys; runpy.run_path('hubconf.py'); "
            "print([m for m in ('huggingface_hub', 'timm', 'onnx', 'onnxruntime', 'matplotlib', 'av', "
            "'pycocotools', 'gcnet.tasks', 'gcnet.engine', 'gcnet.hub') if m in sys.modules])")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# -- the pretrained config -----------------------------------------------------------------


def test_create_model_attaches_a_pretrained_cfg():
    p = gcnet.create_model("gc_resnet18", num_classes=10).pretrained_cfg
    assert p.input_size == (3, 224, 224) and p.mean == (0.485, 0.456, 0.406) and p.crop_pct == 0.875
    assert (p.num_classes, p.task, p.architecture, p.interpolation) == (10, "classification", "gc_resnet18",
                                                                        "bilinear")  # fmt: skip
    assert gcnet.create_model("gc_slowonly_r18", num_classes=4).pretrained_cfg.input_size == (3, 8, 224, 224)
    det = gcnet.create_model("fasterrcnn_r18_fpn", num_classes=3, min_size=64, max_size=96)
    assert det.pretrained_cfg.task == "detection" and det.pretrained_cfg.input_size == (3, 64, 96)
    assert gcnet.create_model("gcnet_tiny_s4", num_classes=2).pretrained_cfg.task == "segmentation"
    assert PretrainedCfg.from_dict(p.to_dict()) == p


# -- the Hub layout: local round trips -------------------------------------------------------


@pytest.mark.parametrize("name,kwargs,shape", MODELS, ids=[m[0] for m in MODELS])
def test_local_dir_round_trip(name, kwargs, shape, tmp_path):
    torch.manual_seed(0)
    model = gcnet.create_model(name, **kwargs)
    if getattr(model, "transform", None) is None:  # BN statistics that matter
        randomize_(model, 0.05)
    model.eval()
    x = torch.rand(*shape)
    classes = [f"c{i}" for i in range(kwargs["num_classes"] - (1 if "rcnn" in name else 0))]
    out = tmp_path / "saved"
    assert save_pretrained(model, out, classes=classes) == str(out)
    assert sorted(os.listdir(out)) == ["README.md", "config.json", "model.safetensors"]
    conf = json.loads((out / "config.json").read_text())
    assert conf["architecture"] == name and conf["num_classes"] == kwargs["num_classes"]
    assert conf["model_args"] == {**kwargs, "num_classes": kwargs["num_classes"]}
    assert conf["classes"] == classes and conf["gcnet_version"] == gcnet.__version__
    assert conf["task"] == conf["pretrained_cfg"]["task"] == model.pretrained_cfg.task
    assert conf["pretrained_cfg"]["input_size"] == list(model.pretrained_cfg.input_size)
    meta = _front_matter((out / "README.md").read_text())
    tag = TAGS.get(name, "image-classification")
    assert meta["library_name"] == "gcnet" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == tag and {tag, "gcnet", "global-context"} <= set(meta["tags"])
    assert "arxiv.org/abs/1904.11492" in (out / "README.md").read_text()
    for spec in (f"local-dir:{out}",):
        loaded = gcnet.create_model(spec).eval()
        assert loaded.pretrained_cfg.classes == classes
        for a, b in zip(_outputs(model, x), _outputs(loaded, x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert isinstance(gcnet.hub.load_pretrained_dir(str(out)), type(model))


def test_saved_folder_without_a_run_preprocesses_as_its_config_says(tmp_path):
    """No run config: the gcnet config is made of the pretrained config (what predict /
    eval / export read)."""
    model = gcnet.create_model("gc_resnet18", num_classes=2)
    pcfg = PretrainedCfg(mean=(0.1, 0.2, 0.3), std=(0.3, 0.3, 0.3), input_size=(3, 40, 40), crop_pct=0.8)
    save_pretrained(model, tmp_path, pretrained_cfg=pcfg)
    model, cfg, classes, task = load_run(str(tmp_path))
    assert task.name == "classification" and classes == ["0", "1"]
    d = cfg["data"]
    got = (d["mean"], d["std"], d["image_size"], d["augment"]["eval_crop_ratio"])
    assert got == ([0.1, 0.2, 0.3], [0.3] * 3, 40, 0.8)
    assert cfg["model"] == {"name": "gc_resnet18", "pretrained": False, "context": {}, "kwargs": {}}
    pcfg = {"task": "video", "input_size": [3, 4, 32, 32], "crop_pct": 0.5}
    clip = run_config(
        {"architecture": "gc_slowonly_r18", "model_args": {"num_classes": 4}, "pretrained_cfg": pcfg}
    )
    v = clip["data"]["video"]
    assert (clip["task"], v["clip_len"], v["crop_size"], v["test_scale"]) == ("video", 4, 32, 64)


def test_model_arguments_that_json_cannot_hold_are_refused(tmp_path):
    model = gcnet.create_model("gc_resnet18", num_classes=2)
    model.model_args = {"norm_layer": torch.nn.BatchNorm2d}
    with pytest.raises(ValueError, match="norm_layer"):
        save_pretrained(model, tmp_path)
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        gcnet.create_model(f"local-dir:{tmp_path}")


# -- a run's checkpoint -> export --format hf -> the CLI --------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(load_config(None, [*TINY, f"output.dir={out}"]), progress=False)
    return out


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_export_hf_of_a_run_predicts_and_evaluates_like_its_checkpoint(run_dir, image, tmp_path, capsys):
    ck = str(run_dir / "best.pth")
    out = tmp_path / "hf"
    assert main(["export", "--checkpoint", ck, "--format", "hf", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    conf = json.loads((out / "config.json").read_text())
    p = conf["pretrained_cfg"]
    assert (p["mean"], p["std"], p["input_size"], p["crop_pct"]) == ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3],
                                                                   [3, 32, 32], 0.8)  # fmt: skip
    assert conf["gcnet_config"]["data"]["root"] is None and "output" not in conf["gcnet_config"]
    assert len(conf["classes"]) == 3 and "top1" in conf["metrics"]  # the run's last validation
    meta = _front_matter((out / "README.md").read_text())
    assert meta["metrics"] == ["accuracy"] and meta["model-index"][0]["results"][0]["metrics"]
    preds = {}
    for spec in (ck, str(out), f"local-dir:{out}"):
        assert main(["predict", image, "--checkpoint", spec, "--json", "--topk", "3"]) == 0
        preds[spec] = json.loads(capsys.readouterr().out)
    assert preds[ck] == preds[str(out)] == preds[f"local-dir:{out}"]
    losses = []
    for spec, where in ((ck, tmp_path / "e1"), (str(out), tmp_path / "e2")):
        assert main(["eval", "--checkpoint", spec, "-o", str(where), "--no-progress"]) == 0
        losses.append(json.loads((where / "metrics.json").read_text())["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    capsys.readouterr()
    assert main(["info", "--checkpoint", f"local-dir:{out}"]) == 0
    assert "model: gc_resnet18   input: 1x3x32x32" in capsys.readouterr().out
    assert main(["info", "gc_resnet50", "--checkpoint", str(out)]) == 2
    assert "holds a gc_resnet18" in capsys.readouterr().err


def test_export_hf_of_a_named_model(tmp_path, capsys):
    out = tmp_path / "named"
    assert main(["export", "gc_resnet18", "--format", "hf", "-o", str(out), "--set", "num_classes=6",
                 "--set", "ratio=0.25"]) == 0  # fmt: skip
    conf = json.loads((out / "config.json").read_text())
    assert conf["model_args"] == {"num_classes": 6, "ratio": 0.25} and conf["classes"] is None
    assert gcnet.create_model(f"local-dir:{out}").fc.out_features == 6
    assert main(["export", "gc_resnet18", "--format", "hf", "-o", str(out), "--input", "1x3x32x32"]) == 2
    assert "--input does not apply" in capsys.readouterr().err


# -- hf-hub: through huggingface_hub's offline cache ------------------------------------------


def _lay_into_cache(folder, cache, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """``folder``'s files as huggingface_hub's cache holds a downloaded repo:
    ``models--ORG--NAME/refs/main`` (the commit) and ``snapshots/<commit>/<files>``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "blobs").mkdir()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hf_hub_loads_from_the_offline_cache(offline_cache, tmp_path, image, capsys):
    model = randomize_(gcnet.create_model("gc_resnet18", num_classes=3), 0.05).eval()
    save_pretrained(model, tmp_path / "saved", classes=["cat", "dog", "eel"])
    _lay_into_cache(tmp_path / "saved", offline_cache, "someone/gc-r18")
    loaded = gcnet.create_model("hf-hub:someone/gc-r18").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), loaded(x), rtol=0, atol=0)
    assert loaded.pretrained_cfg.classes == ["cat", "dog", "eel"]
    assert main(["predict", image, "--checkpoint", "hf-hub:someone/gc-r18", "--json"]) == 0
    assert {t["class"] for t in json.loads(capsys.readouterr().out)[0]["top"]} == {"cat", "dog", "eel"}


def test_a_repo_missing_from_the_offline_cache_is_one_line(offline_cache, image, capsys):
    with pytest.raises(FileNotFoundError, match="someone/missing is not in the Hugging Face cache"):
        gcnet.create_model("hf-hub:someone/missing")
    assert main(["predict", image, "--checkpoint", "hf-hub:someone/missing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "someone/missing" in err and "not in the Hugging Face cache" in err and "HF_HUB_OFFLINE" in err
    with pytest.raises(ValueError, match="ORG/NAME"):
        gcnet.create_model("hf-hub:no-org")


def test_without_huggingface_hub_the_error_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError) as e:
        gcnet.create_model("hf-hub:someone/gc-r18")
    assert str(e.value) == "loading from the Hugging Face Hub needs huggingface_hub: pip install 'gcnet[hub]'"
    assert main(["info", "--checkpoint", "hf-hub:someone/gc-r18"]) == 2
    assert capsys.readouterr().err == f"gcnet info: error: {e.value}\n"


# -- push_to_hub -----------------------------------------------------------------------------


class _FakeApi:
    calls: list = []

    def __init__(self, token=None, **kw):
        self.token = token

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        self.calls.append(("upload_folder", repo_id, folder_path, sorted(os.listdir(folder_path)), kw))
        return "commit-info"


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls = []
    model = gcnet.create_model("resnet18", num_classes=2)
    save_pretrained(model, tmp_path / "m")
    assert push_to_hub(str(tmp_path / "m"), "org/name", private=True) == "commit-info"
    (_, repo, kw), (_, repo2, folder, files, up) = _FakeApi.calls
    assert repo == repo2 == "org/name" and kw["exist_ok"] and kw["private"] is True
    assert folder == str(tmp_path / "m") and files == ["README.md", "config.json", "model.safetensors"]
    assert "eval/*" in up["ignore_patterns"] and up["repo_type"] == "model"
    _FakeApi.calls = []
    push_to_hub(model, "org/other", classes=["a", "b"])  # saved to a temporary folder first
    assert _FakeApi.calls[1][3] == ["README.md", "config.json", "model.safetensors"]
    for bad in ("", "a/b/c", "/name"):
        with pytest.raises(ValueError, match="repo_id"):
            push_to_hub(str(tmp_path / "m"), bad)
    with pytest.raises(ValueError, match="not to a saved folder"):
        push_to_hub(str(tmp_path / "m"), "org/name", classes=["a"])
    with pytest.raises(FileNotFoundError):
        push_to_hub(str(tmp_path / "nowhere"), "org/name")


@pytest.mark.parametrize("name", ["tv:resnet18", "timm:resnet18"])
def test_external_models_round_trip(name, tmp_path):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    model = gcnet.create_model(name, num_classes=3).eval()
    save_pretrained(model, tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["architecture"] == name and conf["model_args"] == {"num_classes": 3}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), gcnet.create_model(f"local-dir:{tmp_path}").eval()(x))
