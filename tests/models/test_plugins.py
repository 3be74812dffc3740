"""gcnet.add_context_blocks on torchvision / timm / gcnet models, the presets, the plug's
state-dict keys, the conversions and wrappers it must survive, tv:/timm: configs."""

from __future__ import annotations

import copy
import functools
import io
import re

import pytest
import torch
import torchvision
from torch import nn

import gcnet
from gcnet.models import ContextPlug, create_model, inserted_blocks, remove_context_blocks
from tests.conftest import randomize_

X64 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@functools.cache
def _pristine(name: str) -> nn.Module:
    if name.startswith("timm:"):
        timm = pytest.importorskip("timm")
        return timm.create_model(name[5:]).eval()
    if name.startswith("gcnet:"):
        return create_model(name[6:]).eval()
    return torchvision.models.get_model(name).eval()


def fresh(name: str) -> nn.Module:
    return copy.deepcopy(_pristine(name))


def _block_grads_nonzero(blocks) -> bool:
    return all(b.transform_add.conv_out.weight.grad.abs().sum() > 0 for b in blocks.values())


# (model, after, blocks): c3-c5 of each = stride 8..32; counts from the architectures' depths
CASES = [
    ("resnet50", "layer[234].*.bn3", 13),  # 4 + 6 + 3 Bottlenecks
    ("mobilenet_v3_large", "preset:mobilenet:after_1x1:c3-c5", 12),  # features.4-15
    ("convnext_tiny", "preset:convnext", 15),  # depths 3, 9, 3
    ("efficientnet_b0", "preset:efficientnet:after_1x1:c3-c5", 13),  # repeats 2 | 3 + 3 | 4 + 1
    ("regnet_y_400mf", "preset:regnet", 15),  # depths 3, 6, 6
    ("timm:efficientnet_b0", "preset:efficientnet", 13),
]


@pytest.mark.parametrize("name,after,count", CASES, ids=[c[0] for c in CASES])
def test_plugged_model_is_the_original_at_init(name, after, count):
    model = fresh(name).double()
    twin = randomize_(fresh(name).double(), std=0.05)  # "pretrained" weights, not the model's own
    keys = list(model.state_dict())
    with torch.no_grad():
        ref, ref_twin = model(X64), twin(X64)
    names = gcnet.add_context_blocks(model, "gc", after, example_input=X64, ratio=1 / 16)
    assert len(names) == count and names == list(inserted_blocks(model))
    sd = model.state_dict()
    assert set(keys) <= set(sd)
    assert sorted(set(sd) - set(keys)) == sorted(k for k in sd if any(k.startswith(n + ".") for n in names))
    with torch.no_grad():
        assert torch.equal(model(X64), ref)
        # weights loaded after the call: only the blocks' keys are missing, outputs are the source's
        res = model.load_state_dict(twin.state_dict(), strict=False)
        assert not res.unexpected_keys and set(res.missing_keys) == set(sd) - set(keys)
        assert torch.equal(model(X64), ref_twin)
    model.float().train()
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    assert _block_grads_nonzero(inserted_blocks(model))


@pytest.mark.parametrize("source", ["resnet50", "timm:resnet50"])
def test_parity_with_gc_resnet50(source):
    gc = randomize_(create_model("gc_resnet50").double().eval(), std=0.05)
    model = fresh(source).double()
    plain_params = sum(p.numel() for p in model.parameters())
    gcnet.add_context_blocks(model, after="layer[234].*.bn3")
    added = sum(p.numel() for p in model.parameters()) - plain_params
    assert added == sum(p.numel() for p in gc.parameters()) - sum(
        p.numel() for p in create_model("resnet50").parameters()
    )
    assert round(added / 1e6, 3) == 2.522  # the paper's +2.52M for GC r16 in c3-c5
    sd = {
        re.sub(r"^(layer\d\.\d+)\.context_block\.", r"\1.bn3.context_block.", k): v
        for k, v in gc.state_dict().items()
    }
    model.load_state_dict(sd)  # strict: every key has its place
    with torch.no_grad():
        out, want = model(X64), gc(X64)
    assert torch.allclose(out, want, rtol=1e-10, atol=1e-12 * want.abs().max().item())
    assert want.std() > 0


@pytest.mark.parametrize(
    "name,after,count",
    [
        ("mobilenet_v3_large", "features.*.block", 15),  # every InvertedResidual
        ("mobilenet_v3_large", "preset:mobilenet:after_1x1:c2-c5", 14),  # + features.2, 3 (stride 4)
        ("mobilenet_v3_large", "preset:mobilenet:after_block:c5", 3),
        ("resnet50", ["preset:resnet::c4", "layer4.0.conv1"], 7),
        ("gcnet:resnet50", "preset:resnet", 13),  # our own ResNet: the same keys as torchvision's
    ],
)
def test_counts(name, after, count):
    model = fresh(name)
    names = gcnet.add_context_blocks(model, after=after, example_input=torch.zeros(1, 3, 64, 64))
    assert len(names) == count
    if "after_block" in str(after):
        assert all(isinstance(model.get_submodule(n[: -len(".context_block")]).module,
                              torchvision.models.mobilenetv3.InvertedResidual) for n in names)  # fmt: skip


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
        self.body = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.body(self.relu(self.bn1(self.conv1(x))))
        return self.head(self.relu(x).mean((2, 3)))


def tiny_plugged(after=("bn1", "body")) -> nn.Module:
    m = randomize_(Tiny()).eval()
    gcnet.add_context_blocks(m, after=list(after), example_input=torch.zeros(1, 3, 16, 16))
    randomize_(m)  # non-zero blocks: a plug that is bypassed would show
    return m


@pytest.mark.parametrize(
    "after,message",
    [
        ("layer9.*", r"after='layer9\.\*' matches no module of Tiny; module names look like: .*conv1"),
        ("head", r"module 'head' returns a tensor of shape \(1, 4\), not an \(N, C, \.\.\.\) feature map"),
        ("relu", r"module 'relu' runs 2 times per forward"),
        ("preset:yolo", r"no preset for 'yolo' .* pass a glob"),
        ("preset:resnet", r"preset 'resnet' .* does not fit this Tiny; pass a glob"),
        ("preset:resnet:after_9x9", r"position must be one of"),
    ],
)
def test_errors_name_the_problem_and_change_nothing(after, message):
    m = Tiny().eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=message) as e:
        gcnet.add_context_blocks(m, after=after, example_input=torch.zeros(1, 3, 16, 16))
    assert "\n" not in str(e.value)
    assert not any(isinstance(x, ContextPlug) for x in m.modules())
    assert m.state_dict().keys() == before.keys()


def test_twice_is_an_error_and_inner_modules_stay_open():
    m = tiny_plugged()
    with pytest.raises(
        ValueError, match=r"module 'body' is already followed by the context block body\.context_block"
    ):
        gcnet.add_context_blocks(m, after="bo*")
    with pytest.raises(ValueError, match="unknown block 'gcc'"):
        gcnet.add_context_blocks(m, "gcc", after="conv1")
    assert gcnet.add_context_blocks(m, "snl", after="body.module.1") == ["body.module.1.context_block"]


def test_plug_keeps_keys_and_survives_copies():
    m = tiny_plugged()
    x = torch.randn(2, 3, 16, 16)
    want = m(x)
    plain_keys = set(Tiny().state_dict())
    sd = m.state_dict()
    assert plain_keys <= set(sd) and all(
        k.startswith(("bn1.context_block.", "body.context_block.")) for k in set(sd) - plain_keys
    )
    twin = tiny_plugged()
    twin.load_state_dict(sd)  # strict round trip
    assert torch.equal(twin(x), want)
    for clone in (copy.deepcopy(m), torch.load(io.BytesIO(_saved(m)), weights_only=False)):
        assert clone.body.context_block is not m.body.context_block
        assert torch.equal(clone(x), want)
    assert m.bn1.num_features == 16 and m.body[0].out_channels == 32  # attributes of the wrapped module
    assert remove_context_blocks(m) == ["bn1.context_block", "body.context_block"]
    assert set(m.state_dict()) == plain_keys


def _saved(m: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(m, buf)
    return buf.getvalue()


@pytest.mark.parametrize("convert", ["gcnet", "torch"])
def test_sync_bn_conversion_keeps_the_blocks(convert):
    from gcnet.layers.sync_bn import convert_sync_batchnorm

    m = tiny_plugged()
    x = torch.randn(2, 3, 16, 16)
    want = m(x)
    m = convert_sync_batchnorm(m) if convert == "gcnet" else nn.SyncBatchNorm.convert_sync_batchnorm(m)
    assert isinstance(m.bn1.module, nn.modules.batchnorm._BatchNorm) and "Sync" in type(m.bn1.module).__name__
    assert torch.equal(m(x), want)


def test_compile_channels_last_autocast_and_ddp():
    import torch.distributed as dist

    m = tiny_plugged()
    x = torch.randn(2, 3, 16, 16)
    want = m(x)
    assert torch.allclose(torch.compile(m, backend="eager", fullgraph=True)(x), want, atol=1e-6)
    cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.contiguous(memory_format=torch.channels_last)), want, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x)
    assert torch.allclose(low.float(), want, rtol=0.1, atol=0.1 * want.abs().max().item())
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(copy.deepcopy(m).train())
        ddp(x).square().mean().backward()
        assert ddp.module.body.context_block.transform_add.conv_out.weight.grad.abs().sum() > 0
    finally:
        dist.destroy_process_group()


def test_onnx_export_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from gcnet.tools.export import export_model

    report = export_model(tiny_plugged(), tmp_path / "tiny.onnx", "onnx", input_shape=(1, 3, 16, 16))
    assert report["ok"], report


def test_tv_config_builds_trains_and_reloads():
    from gcnet.config import ConfigError, load_config
    from gcnet.tasks import get_task, task_for_model

    sets = ["model.name=tv:resnet18", "model.context.after=preset:resnet", "model.context.ratio=0.25"]
    cfg = load_config(None, [*sets, "model.context.example_input=[1, 3, 32, 32]"])
    task = get_task("classification")
    assert task_for_model("tv:resnet18") is task and task.owns_model("timm:resnet18")
    model = task.build_model(cfg, 3)
    blocks = inserted_blocks(model)
    assert len(blocks) == 6 and model.fc.out_features == 3
    assert blocks["layer3.0.bn2.context_block"].transform_add.conv_in.out_channels == 64  # 256 * 0.25
    again = task.build_model(cfg, 3)  # what gcnet eval / predict / info do with a checkpoint
    again.load_state_dict(randomize_(model).state_dict())
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(again.eval()(x), model.eval()(x))
    for bad, message in ((["model.context.after=x", "model.context.block=gcc"], "unknown block 'gcc'"),
                         (["model.context.ratio=0.5"], "model.context.after must be"),
                         (["model.name=tv:resnet5"], "did you mean .*tv:resnet50")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            load_config(None, bad)


def test_external_weights_are_one_line_errors(monkeypatch):
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    # torchvision's builders fetch through WeightsEnum.get_state_dict: never the network here
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        ValueError, match=r"^cannot download torchvision resnet18 weights \(IMAGENET1K_V1\) from https"
    ):
        create_model("tv:resnet18", pretrained=True)
    with pytest.raises(
        ValueError, match=r"unknown torchvision weights 'V9' for tv:resnet18; expected one of"
    ):
        create_model("tv:resnet18", pretrained="V9")
    source = randomize_(torchvision.models.resnet18())
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda *a, **k: source.state_dict())
    with pytest.warns(UserWarning, match="not loaded into a 5-class model"):
        m = create_model("tv:resnet18", pretrained=True, num_classes=5, context={"after": "preset:resnet"})
    assert m.fc.out_features == 5 and torch.equal(m.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
