"""Backbones: torchvision compatibility, plug-in placement, dilation, freezing."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from gcnet import create_model, list_models
from gcnet.layers import GlobalContextBlock, NonLocalBlock, SqueezeExcitation
from gcnet.models import PluginSpec
from gcnet.tools.complexity import count_params
from tests.conftest import randomize_

PLAIN = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
         "resnext101_32x4d", "resnext101_64x4d"]  # fmt: skip


@pytest.mark.parametrize("name", PLAIN)
def test_plain_matches_torchvision_keys_and_params(name):
    ours = create_model(name)
    if name == "resnext101_32x4d":  # torchvision builds it, without a registered name
        from torchvision.models.resnet import Bottleneck, ResNet

        tv = ResNet(Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4)
    else:
        tv = torchvision.models.get_model(name)
    a, b = ours.state_dict(), tv.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d"])
def test_plain_same_function_as_torchvision(name):
    tv = randomize_(torchvision.models.get_model(name), 0.05).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_param_counts_from_the_paper():
    base = count_params(create_model("resnet50"))
    assert base == 25_557_032  # 25.56M
    gc16 = count_params(create_model("gc_resnet50"))
    gc4 = count_params(create_model("gc_resnet50_r4"))
    assert round((gc16 - base) / 1e6, 2) == 2.52 and round(gc16 / 1e6, 2) == 28.08
    assert round((gc4 - base) / 1e6, 2) == 10.00


def test_gc_resnet_with_torchvision_weights_is_the_pretrained_function():
    """Zero-initialised GC blocks: GC-ResNet-50 computes exactly torchvision's ResNet-50."""
    tv = randomize_(torchvision.models.resnet50(), 0.02).eval()
    for name in ("gc_resnet50", "gc_resnet50_r4", "snl_resnet50", "nl_resnet50"):
        ours = create_model(name).eval()
        missing, unexpected = ours.load_state_dict(tv.state_dict(), strict=False)
        assert not unexpected and missing and all(".context_block." in k for k in missing)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(ours(x), tv(x)), name


def test_pretrained_torchvision_path(monkeypatch):
    """pretrained='torchvision' takes torchvision's weights (download stubbed out)."""
    tv = randomize_(torchvision.models.resnet18(), 0.05).eval()
    sd = tv.state_dict()
    calls = []

    def fake_get_state_dict(self, *a, **k):
        calls.append(self.name)
        return sd

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_get_state_dict)
    m = create_model("gc_resnet18", pretrained="torchvision:IMAGENET1K_V1").eval()
    assert calls == ["IMAGENET1K_V1"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), tv(x))
    with pytest.warns(UserWarning, match=r"fc \(1000 classes\) not loaded into a 10-class model"):
        m10 = create_model("gc_resnet18", pretrained="torchvision", num_classes=10)
    torch.testing.assert_close(m10.conv1.weight, tv.conv1.weight)
    assert m10.fc.out_features == 10
    with pytest.raises(ValueError, match="unknown torchvision weights 'V9'"):
        create_model("resnet18", pretrained="torchvision:V9")
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model("resnet50_v1c", pretrained="torchvision")


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_plugin_placement_and_overrides():
    m = create_model("gc_resnet50")
    assert _count(m, GlobalContextBlock) == 4 + 6 + 3
    assert m.layer1[0].context_block is None
    assert m.layer4[0].context_block.channels == 2048
    m = create_model("gc_resnet50", ratio=1 / 4, stages="c4", position="after_3x3",
                     pooling="avg", fusion=("add", "mul"))  # fmt: skip
    blocks = m.context_blocks()
    assert list(blocks) == [f"layer3.{i}.context_block" for i in range(6)]
    b = blocks["layer3.0.context_block"]
    assert b.channels == 256 and b.pooling == "avg" and b.fusion == ("add", "mul")
    assert b.transform_add.hidden == 64
    m = create_model("resnet50", plugin="gc", stages=("c5",), indices={"c5": [0, -1]})
    assert list(m.context_blocks()) == ["layer4.0.context_block", "layer4.2.context_block"]
    nl = create_model("nl_resnet50")
    assert list(nl.context_blocks()) == ["layer3.4.context_block"]
    assert isinstance(nl.layer3[4].context_block, NonLocalBlock)
    se = create_model("se_resnet50")
    assert _count(se, SqueezeExcitation) == 16
    r18 = create_model("gc_resnet18", position="after_add")
    assert r18.layer2[0].context_block.channels == 128


def test_plugin_positions_compute_where_they_say():
    """after_add: block(out + identity) before the ReLU, checked with a probe block."""
    m = create_model("resnet18", plugin="gc", stages="c3", position="after_add").eval()
    randomize_(m, 0.05)
    blk = m.layer2[1]
    x = torch.randn(1, 128, 8, 8)
    with torch.no_grad():
        ref = blk.relu(blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x))))) + x)
        pre = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(x))))) + x
        torch.testing.assert_close(blk(x), blk.relu(blk.context_block(pre)))
        assert not torch.allclose(blk(x), ref)


@pytest.mark.parametrize("bad,match", [
    (dict(ratios=0.25), r"'ratios' \(did you mean 'ratio'\?\)"),
    (dict(stages="c6"), "unknown stages"),
    (dict(position="before"), "position must be one of"),
    (dict(indices={"c2": [0]}), "not in stages"),
    (dict(indices={"c5": [7]}), "out of range"),
    (dict(output_stride=4), "output_stride must be 8, 16 or 32"),
    (dict(norm="ln"), "norm must be one of"),
])  # fmt: skip
def test_bad_overrides(bad, match):
    with pytest.raises(ValueError, match=match):
        create_model("gc_resnet50", **bad)


def test_unknown_model_suggests():
    with pytest.raises(ValueError, match="did you mean.*gc_resnet50"):
        create_model("gc_resnet5")
    assert {"gc_resnet50", "gc_resnet50_r4", "gc_resnet101", "gc_resnext101_32x4d",
            "nl_resnet50", "snl_resnet50", "se_resnet50"} <= set(list_models())  # fmt: skip
    assert list_models("resnext*") == ["resnext101_32x4d", "resnext101_64x4d", "resnext50_32x4d"]


@pytest.mark.parametrize("os_,c5", [(32, 2), (16, 4), (8, 8)])
def test_output_stride_and_features(os_, c5):
    m = create_model("gc_resnet50_v1c", output_stride=os_, num_classes=0).eval()
    with torch.no_grad():
        feats = m.forward_stages(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048] == list(m.feature_channels)
    assert [64 // f.shape[-1] for f in feats] == list(m.feature_strides)
    assert feats[-1].shape[-1] == 64 // os_ == c5
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 2048)
    m2 = create_model("resnet18", out_indices=(1, 3))
    assert [f.shape[1] for f in m2.forward_stages(torch.randn(1, 3, 64, 64))] == [128, 512]


def test_dilation_matches_torchvision():
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    randomize_(tv, 0.02).eval()
    ours = create_model("resnet50", output_stride=8).eval()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_contract_dilation_off_dilates_every_block_alike():
    # mmseg's ResNet(contract_dilation=False): layer3 all 2, layer4 all 4 at output stride 8
    m = create_model("resnet50", output_stride=8, contract_dilation=False, num_classes=0)
    assert [b.conv2.dilation[0] for b in m.layer3] == [2] * 6 and [b.conv2.padding[0] for b in m.layer4] == [
        4
    ] * 3
    assert [b.conv2.dilation[0] for b in m.layer2] == [1] * 4 and m.layer3[0].conv2.stride == (1, 1)


def test_deep_stem_layout():
    m = create_model("resnet50_v1c")
    assert [type(l).__name__ for l in m.stem] == ["Conv2d", "BatchNorm2d", "ReLU"] * 3
    assert m.stem[0].out_channels == 32 and m.stem[6].out_channels == 64
    assert "stem.0.weight" in m.state_dict() and "conv1.weight" not in m.state_dict()


def test_frozen_stages_and_norm_eval():
    m = create_model("gc_resnet50", frozen_stages=1, norm_eval=True)
    m.train()
    assert not any(p.requires_grad for p in m.conv1.parameters())
    assert not any(p.requires_grad for p in m.layer1.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    assert all(not bn.training for bn in m.modules() if isinstance(bn, nn.BatchNorm2d))
    assert m.layer2[0].context_block.training  # only norms are held in eval
    m = create_model("resnet18", frozen_stages=0)
    m.train()
    assert not m.bn1.training and m.layer1[0].bn1.training


def test_norm_choices():
    from torchvision.ops import FrozenBatchNorm2d

    m = create_model("gc_resnet18", norm="frozen_bn")
    assert _count(m, FrozenBatchNorm2d) > 0 and _count(m, nn.BatchNorm2d) == 0
    from gcnet.layers.sync_bn import SyncBatchNorm, convert_sync_batchnorm

    m = create_model("resnet18", norm="syncbn")
    assert _count(m, SyncBatchNorm) == 20
    assert _count(convert_sync_batchnorm(create_model("gc_resnet18")), SyncBatchNorm) == 20
    x = torch.randn(2, 3, 32, 32)
    plain = randomize_(create_model("resnet18"), 0.05)
    synced = convert_sync_batchnorm(create_model("resnet18"))
    synced.load_state_dict(plain.state_dict())
    torch.testing.assert_close(synced(x), plain(x))  # no process group: plain BN maths
    conv = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("gc_resnet18"))
    assert _count(conv, nn.SyncBatchNorm) == 20


def test_bad_input_images():
    m = create_model("resnet18").eval()
    with pytest.raises(ValueError, match="expects 3 input channels, got 1"):
        m(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) images, got shape \(3, 32, 32\)"):
        m(torch.randn(3, 32, 32))


def test_plugin_spec_parses_stage_ranges():
    assert PluginSpec("gc", stages="c2-c4").stages == ("c2", "c3", "c4")
    assert PluginSpec("gc", stages="c5,c3").stages == ("c3", "c5")


def test_channels_last_and_backward():
    m = randomize_(create_model("gc_resnet18", num_classes=5), 0.05)
    x = torch.randn(2, 3, 64, 64)
    y = m(x.to(memory_format=torch.channels_last))
    m.zero_grad()
    y.sum().backward()
    assert m.layer3[0].context_block.pool.conv_mask.weight.grad is not None
    torch.testing.assert_close(y, m(x), rtol=1e-4, atol=1e-4)


class _ReferenceGC(nn.Module):
    """The GC block's formula written out from its parameters, out of place:
    x * sigmoid(T_mul(c)) + T_add(c), c = sum_j softmax(W_k x + b)_j x_j (or the mean)."""

    def __init__(self, blk):
        super().__init__()
        self.blk = blk

    @staticmethod
    def _transform(t, c):
        h = F.conv2d(c, t.conv_in.weight, t.conv_in.bias)
        h = F.relu(F.layer_norm(h, h.shape[1:], t.norm.weight, t.norm.bias, t.norm.eps))
        return F.conv2d(h, t.conv_out.weight, t.conv_out.bias)

    def forward(self, x):
        b, (n, ch) = self.blk, x.shape[:2]
        if b.pool.conv_mask is not None:
            logits = F.conv2d(x, b.pool.conv_mask.weight, b.pool.conv_mask.bias).reshape(n, 1, -1)
            c = torch.bmm(x.reshape(n, ch, -1), logits.softmax(-1).transpose(1, 2)).reshape(n, ch, 1, 1)
        else:
            c = x.mean((2, 3), keepdim=True)
        out = x.clone()
        if b.transform_mul is not None:
            out = out * torch.sigmoid(self._transform(b.transform_mul, c))
        if b.transform_add is not None:
            out = out + self._transform(b.transform_add, c)
        self.change = float((out - x).abs().max() / x.abs().max())
        return out


def _swap_blocks(model, make):
    for name in model.context_blocks():
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        parent.context_block = make(parent.context_block)
    return model


@pytest.mark.parametrize("position", ["after_1x1", "after_add"])
@pytest.mark.parametrize("fusion,pooling", [("add", "att"), ("mul", "avg"), (("add", "mul"), "att")])
def test_inplace_fusion_in_inference_is_exact(fusion, pooling, position):
    """Backbones let their blocks fuse in place without grad (add_, mul_, addcmul) where the
    block's input is the residual sum, a temporary (after_add); before the add (after_1x1)
    the input is bn3's output, which a hook may hold, and the block fuses out of place. Both:
    the same numbers as the block's formula applied out of place."""
    m = create_model("gc_resnet18_r4", fusion=fusion, pooling=pooling, num_classes=4, position=position)
    m = randomize_(m, 0.1).eval()
    assert all(b.inplace == (position == "after_add") for b in m.context_blocks().values())
    ref = _swap_blocks(copy.deepcopy(m), _ReferenceGC)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast, want = m(x), ref(x)
    torch.testing.assert_close(fast, want, rtol=1e-5, atol=1e-5)
    assert min(b.change for b in ref.context_blocks().values()) > 0.05  # no block is the identity
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)  # grad mode: out of place


def test_standalone_block_never_modifies_its_input():
    from gcnet import GlobalContextBlock

    blk = randomize_(GlobalContextBlock(16, 1 / 4), 0.1)
    x = torch.randn(1, 16, 4, 4)
    x0 = x.clone()
    with torch.no_grad():
        blk(x)
    assert torch.equal(x, x0)


@pytest.mark.parametrize("grad", [False, True])
def test_forward_hooks_fire_and_see_unmutated_outputs(grad):
    """Grad-CAM / feature extraction: a forward hook on every submodule of a GC Bottleneck
    fires (the context block's pool conv, transform convs and LayerNorm included, on its fused
    one-node path too), and bn3's hook holds bn3's own output: the residual add and the
    block's fusion do not write into it afterwards (inference and training)."""
    m = randomize_(create_model("gc_resnet50", num_classes=4), 0.1).eval()
    blk = m.layer3[1]
    assert blk.context_block is not None and blk.position == "after_1x1"
    seen: dict[str, tuple] = {}
    names = [n for n, _ in blk.named_modules() if n]
    inner = ["pool.conv_mask", "transform_add.conv_in", "transform_add.norm", "transform_add.conv_out"]
    assert {"bn3", *(f"context_block.{n}" for n in inner)} <= set(names)

    def keep(name):
        def hook(mod, args, out):
            seen.setdefault(name, (args[0].detach().clone(), out))

        return hook

    handles = [blk.get_submodule(n).register_forward_hook(keep(n)) for n in names]
    x = torch.randn(2, 1024, 14, 14).clamp_min(0)  # a ReLU output, as in the network
    with torch.set_grad_enabled(grad):
        y = blk(x.requires_grad_(grad))
    for h in handles:
        h.remove()
    missing = [n for n in names if n not in seen]
    assert not missing, f"forward hooks did not fire: {missing}"
    bn3_in, bn3_out = seen["bn3"]
    with torch.no_grad():
        torch.testing.assert_close(bn3_out.detach(), blk.bn3(bn3_in), rtol=0, atol=0)
        gc_in, gc_out = seen["context_block"]
        torch.testing.assert_close(gc_out.detach(), blk.context_block(gc_in), rtol=0, atol=0)
        assert torch.equal(gc_in, bn3_out)  # the block's input is bn3's, unchanged
    if grad:  # Grad-CAM: the hooked bn3 output is in the graph
        (g,) = torch.autograd.grad(y.sum(), bn3_out)
        assert g.shape == bn3_out.shape and g.abs().sum() > 0
