"""Segmentation models: the seed's network against a re-typed copy on torchvision's dilated
ResNet-50, the GCNet / NL heads against mmseg's head re-built from mmcv's modules (through
the mmseg converter), shapes for odd input sizes, registry and weight loading."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gcnet
from gcnet.convert import segmentor_from_mmseg
from gcnet.models.segmentation import FCNHead
from tests.conftest import randomize_
from tests.helpers import SeedGlobalContextBlock, num_params, seed_gc_to_ours


class SeedGCNet(nn.Module):
    """The seed document's segmentation network, re-typed (its ResNet: torchvision's
    resnet50 with replace_stride_with_dilation, i.e. output stride 8)."""

    def __init__(self, num_classes):
        super().__init__()
        import torchvision

        self.gc_block = SeedGlobalContextBlock(in_channels=2048, scale=16)
        r = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
        self.backbone = nn.Sequential(*list(r.children())[:-2])
        self.Conv_1 = nn.Sequential(
            nn.Conv2d(2048, 512, 3, padding=1),
            nn.BatchNorm2d(512),
            nn.ReLU(),
            nn.Upsample(scale_factor=8, mode="bilinear", align_corners=True),
        )
        self.cls_seg = nn.Conv2d(512, num_classes, 3, padding=1)

    def forward(self, x):
        return self.cls_seg(self.Conv_1(self.gc_block(self.backbone(x))))


def _seed_to_ours(sd):
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    out = seed_gc_to_ours({k[len("gc_block.") :]: v for k, v in sd.items() if k.startswith("gc_block.")},
                          "context_block.")  # fmt: skip
    for k, v in sd.items():
        if k.startswith("backbone."):
            idx, rest = k[len("backbone.") :].split(".", 1)
            out[f"backbone.{names[int(idx)]}.{rest}"] = v
        elif k.startswith("gc_block."):
            continue
        elif k.startswith("Conv_1."):
            out["conv1." + k[len("Conv_1.") :]] = v
        else:
            out[k] = v
    return out


def test_seed_model_equals_the_seed():
    ref = randomize_(SeedGCNet(num_classes=5), std=0.05).double().eval()
    ours = gcnet.create_model("seed_gcnet_r50", num_classes=5).double().eval()
    ours.load_state_dict(_seed_to_ours(ref.state_dict()), strict=True)
    x = torch.randn(1, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["seed_gcnet_r50", "gcnet_r18_d8", "fcn_r18_d8", "nonlocal_r18_d8"])
@pytest.mark.parametrize("size", [(65, 97), (33, 40)])
def test_output_matches_input_size(name, size):
    m = gcnet.create_model(name, num_classes=3).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, *size))
    assert y.shape == (2, 3, *size)


def test_training_mode_returns_aux_logits_and_eval_does_not():
    m = gcnet.create_model("gcnet_r18_d8", num_classes=4)
    out = m(torch.randn(2, 3, 40, 40))
    assert set(out) == {"out", "aux"} and out["aux"].shape == (2, 4, 40, 40)
    assert isinstance(m.eval()(torch.randn(1, 3, 40, 40)), torch.Tensor)
    no_aux = gcnet.create_model("gcnet_r18_d8", num_classes=4, aux=False)
    assert no_aux.auxiliary_head is None and isinstance(no_aux(torch.randn(2, 3, 40, 40)), torch.Tensor)


# mmsegmentation's ResNetV1c for the -d8 / -d16 models (configs/_base_/models/*_r50-d8.py):
# per-stage strides and dilations, contract_dilation=True
MMSEG_STAGES = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2))}


def _mmseg_conv2(output_stride, depths):
    """Per block (stride, dilation, padding) of the 3x3 conv, by mmseg's ResLayer rule:
    with contract_dilation and dilation > 1 the first block of a stage gets dilation // 2;
    the stride sits on the first block's 3x3 conv (style='pytorch')."""
    strides, dilations = MMSEG_STAGES[output_stride]
    out = []
    for stride, d, n in zip(strides, dilations, depths):
        first = d // 2 if d > 1 else d
        out.append([(stride, first, first)] + [(1, d, d)] * (n - 1))
    return out


def _conv2_layout(backbone):
    layers = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
    return [[(b.conv2.stride[0], b.conv2.dilation[0], b.conv2.padding[0]) for b in layer] for layer in layers]


@pytest.mark.parametrize(
    "name,os_,depths",
    [
        ("gcnet_r50_d8", 8, (3, 4, 6, 3)),
        ("fcn_r50_d16", 16, (3, 4, 6, 3)),
        ("nonlocal_r101_d8", 8, (3, 4, 23, 3)),
    ],
)
def test_backbone_dilation_follows_mmseg_contract_dilation(name, os_, depths):
    bb = gcnet.create_model(name, aux=False, channels=8).backbone
    assert bb.deep_stem and bb.output_stride == os_
    assert _conv2_layout(bb) == _mmseg_conv2(os_, depths)
    # the downsample 1x1 conv carries the stage's stride (1 in a dilated stage)
    layers = (bb.layer1, bb.layer2, bb.layer3, bb.layer4)
    assert [layer[0].downsample[0].stride[0] for layer in layers] == list(MMSEG_STAGES[os_][0])


def test_seed_backbone_is_torchvision_dilated():
    # the seed's network: torchvision's replace_stride_with_dilation=[False, True, True]
    import torchvision

    seed = gcnet.create_model("seed_gcnet_r50").backbone
    tv = torchvision.models.resnet50(replace_stride_with_dilation=[False, True, True])
    assert _conv2_layout(seed) == _conv2_layout(tv)


def test_converted_mmseg_checkpoint_builds_mmseg_dilations(tmp_path):
    """An mmseg GCNet-R50-D8 checkpoint (gc_block keys) goes through segmentor_from_mmseg and
    lands in a model with mmseg's dilations; the weights arrive unchanged."""
    from mmcv.cnn.bricks import ContextBlock

    kw = dict(num_classes=3, channels=16, aux_channels=8)
    src = gcnet.create_model("gcnet_r50_d8", **kw)
    sd = {k: v.to(torch.bfloat16) for k, v in src.state_dict().items() if ".context_block." not in k}
    gc = ContextBlock(16, 1 / 4, pooling_type="att", fusion_types=("channel_add",))
    sd.update(
        {f"decode_head.gc_block.{k}": torch.randn_like(v).bfloat16() for k, v in gc.state_dict().items()}
    )
    path = tmp_path / "gcnet_r50-d8_cityscapes.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    m = gcnet.create_model("gcnet_r50_d8", pretrained=str(path), **kw)
    assert _conv2_layout(m.backbone) == _mmseg_conv2(8, (3, 4, 6, 3))
    got = m.decode_head.context_block.pool.conv_mask.weight
    torch.testing.assert_close(got, sd["decode_head.gc_block.conv_mask.weight"].float())
    torch.testing.assert_close(
        m.backbone.layer4[1].conv2.weight, sd["backbone.layer4.1.conv2.weight"].float()
    )


def _gc_params(c, r):
    h = int(c * r)
    return (c + 1) + (c * h + h) + 2 * h + (h * c + c)


def test_head_parameter_counts_differ_by_the_context_block_only():
    n = {k: num_params(k) for k in ("fcn_r50_d8", "gcnet_r50_d8", "nonlocal_r50_d8")}
    assert n["gcnet_r50_d8"] - n["fcn_r50_d8"] == _gc_params(512, 1 / 4) == 132481
    nl = 3 * (512 * 256 + 256) + 256 * 512 + 2 * 512  # g, theta, phi (bias), W_z (no bias), BN
    assert n["nonlocal_r50_d8"] - n["fcn_r50_d8"] == nl


class MMSegHead(nn.Module):
    """mmseg's GCHead / NLHead forward, built from mmcv modules with mmseg's key names."""

    def __init__(self, cin, ch, k, kind):
        super().__init__()
        from mmcv.cnn import ConvModule, NonLocal2d
        from mmcv.cnn.bricks import ContextBlock

        bn = dict(type="BN")
        self.convs = nn.Sequential(ConvModule(cin, ch, 3, padding=1, norm_cfg=bn),
                                   ConvModule(ch, ch, 3, padding=1, norm_cfg=bn))  # fmt: skip
        if kind == "gc":
            self.gc_block = ContextBlock(ch, 1 / 4, pooling_type="att", fusion_types=("channel_add",))
        else:
            self.nl_block = NonLocal2d(ch, reduction=2, use_scale=True, norm_cfg=bn, mode="embedded_gaussian")
        self.kind = kind
        self.conv_cat = ConvModule(cin + ch, ch, 3, padding=1, norm_cfg=bn)
        self.conv_seg = nn.Conv2d(ch, k, 1)

    def forward(self, x):
        out = self.convs[0](x)
        out = self.gc_block(out) if self.kind == "gc" else self.nl_block(out)
        out = self.convs[1](out)
        return self.conv_seg(self.conv_cat(torch.cat([x, out], 1)))


@pytest.mark.parametrize("kind,name", [("gc", "gcnet_r18_d8"), ("nl", "nonlocal_r18_d8")])
def test_heads_match_mmseg_through_the_converter(kind, name):
    ours = gcnet.create_model(name, num_classes=5, channels=32, aux_channels=16).double().eval()
    ref = randomize_(MMSegHead(512, 32, 5, kind), std=0.05).double().eval()
    sd = {f"decode_head.{k}": v for k, v in ref.state_dict().items()}
    sd.update({f"backbone.{k}": v for k, v in ours.backbone.state_dict().items()})
    sd.update({f"auxiliary_head.{k}": v for k, v in ours.auxiliary_head.state_dict().items()})
    converted = segmentor_from_mmseg({"state_dict": sd})
    assert set(converted) == set(ours.state_dict())
    ours.load_state_dict(converted, strict=True)
    x = torch.randn(2, 512, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours.decode_head([x]), ref(x), rtol=1e-10, atol=1e-10)


def test_fcn_head_equals_direct_formula():
    h = randomize_(FCNHead(16, 8, 3, num_convs=1, concat_input=False, dropout=0.0), std=0.1).double().eval()
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    c, bn = h.convs[0].conv, h.convs[0].bn
    y = F.conv2d(x, c.weight, padding=1)
    y = (y - bn.running_mean.view(1, -1, 1, 1)) / (bn.running_var.view(1, -1, 1, 1) + bn.eps).sqrt()
    y = F.relu(y * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    ref = F.conv2d(y, h.conv_seg.weight, h.conv_seg.bias)
    torch.testing.assert_close(h(x), ref)


def test_registry_names_and_errors():
    names = gcnet.list_models()
    for n in ("gcnet_r50_d8", "gcnet_r101_d8", "fcn_r50_d8", "nonlocal_r50_d8", "seed_gcnet_r50",
              "gcnet_r50_d16"):  # fmt: skip
        assert n in names
    with pytest.raises(ValueError, match="did you mean 'ratio'"):
        gcnet.create_model("gcnet_r18_d8", ratoi=0.5)
    with pytest.raises(ValueError, match="deep-stem"):
        gcnet.create_model("gcnet_r50_d8", pretrained="torchvision")
    with pytest.raises(ValueError, match="context must be one of"):
        FCNHead(8, 8, 2, context="xx")
    with pytest.raises(ValueError, match="expects 512 input channels"):
        gcnet.create_model("fcn_r18_d8").decode_head([torch.randn(1, 64, 4, 4)])


def test_checkpoint_round_trip_and_backbone_only_weights(tmp_path):
    from safetensors.torch import save_file

    a = randomize_(gcnet.create_model("gcnet_r18_d8", num_classes=3), std=0.05).eval()
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, tmp_path / "seg.safetensors")
    b = gcnet.create_model("gcnet_r18_d8", num_classes=3, pretrained=str(tmp_path / "seg.safetensors")).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    # a plain backbone checkpoint (torchvision layout) fills the backbone only
    r = randomize_(gcnet.create_model("resnet18"), std=0.05)
    torch.save(r.state_dict(), tmp_path / "r18.pth")
    c = gcnet.create_model("fcn_r18_d8", num_classes=3, pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(c.backbone.layer3[1].conv2.weight, r.layer3[1].conv2.weight)
    bad = {k: v for k, v in a.state_dict().items() if "conv_seg" not in k}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing keys.*conv_seg"):
        gcnet.create_model("gcnet_r18_d8", num_classes=3, pretrained=str(tmp_path / "bad.pth"))


def test_tiny_demo_segmentors_and_head_options_that_no_block_reads():
    """The demo's *_tiny_s4 models: one backbone, the block (or none) in the head; an option
    only another head's block reads raises instead of being ignored."""
    from gcnet.layers import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation

    kinds = {"fcn": type(None), "gcnet": GlobalContextBlock, "se": SqueezeExcitation,
             "nonlocal": NonLocalBlock, "snl": SimplifiedNonLocalBlock}  # fmt: skip
    for prefix, cls in kinds.items():
        m = gcnet.create_model(f"{prefix}_tiny_s4", num_classes=4).eval()
        assert type(m.decode_head.context_block) is cls and m.auxiliary_head is None
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    assert gcnet.create_model("nonlocal_tiny_s4").decode_head.context_block.sub_sample == "input"
    for name, kw, msg in (("fcn_r18_d8", dict(ratio=0.25), "no context block"),
                          ("nonlocal_tiny_s4", dict(pooling="avg"), "a nl block"),
                          ("gcnet_tiny_s4", dict(sub_sample=True), "only a nl block"),
                          ("fcn_r18_d8", dict(width=16), "only the tiny backbone"),
                          ("fcn_tiny_s4", dict(output_stride=8), "output stride 4")):  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            gcnet.create_model(name, **kw)
    with pytest.raises(ValueError, match="no pretrained weights"):
        gcnet.create_model("fcn_tiny_s4", pretrained="torchvision")


def test_pretrained_resolves_to_one_named_case(tmp_path):
    """create_segmentor's ``pretrained``: each accepted value names one SegWeights case (a
    path is read to tell a backbone, ours and mmseg's apart); anything else is one line."""
    from mmcv.cnn.bricks import ContextBlock

    from gcnet.models.segmentation import SegWeights, resolve_seg_weights

    seg = gcnet.create_model("gcnet_tiny_s4", num_classes=3).state_dict()
    torch.save(seg, tmp_path / "seg.pth")
    torch.save(gcnet.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    mmseg = {k: v for k, v in seg.items() if ".context_block." not in k}
    gc = ContextBlock(32, 1 / 4, pooling_type="att", fusion_types=("channel_add",))
    mmseg.update({f"decode_head.gc_block.{k}": v for k, v in gc.state_dict().items()})
    torch.save({"state_dict": mmseg}, tmp_path / "mmseg.pth")
    W = SegWeights
    cases = ((False, W.NONE), (None, W.NONE), (True, W.TORCHVISION), ("torchvision", W.TORCHVISION),
             ("torchvision:IMAGENET1K_V1", W.TORCHVISION), ("openmmlab", W.OPENMMLAB),
             (str(tmp_path / "r18.pth"), W.BACKBONE_FILE), (str(tmp_path / "seg.pth"), W.SEGMENTOR_FILE),
             (str(tmp_path / "mmseg.pth"), W.MMSEG_FILE))  # fmt: skip
    for value, case in cases:
        assert resolve_seg_weights(value)[0] is case, value
    sd = resolve_seg_weights(str(tmp_path / "mmseg.pth"))[1]
    assert "decode_head.context_block.pool.conv_mask.weight" in sd
    m = gcnet.create_model("gcnet_tiny_s4", num_classes=3, pretrained=str(tmp_path / "mmseg.pth"))
    torch.testing.assert_close(m.decode_head.context_block.pool.conv_mask.weight, gc.conv_mask.weight)
    for bad in (1, tmp_path / "seg.pth"):
        with pytest.raises(ValueError, match=r"^pretrained=.*: expected False, True, 'torchvision\[:NAME\]'"):
            gcnet.create_model("fcn_r18_d8", pretrained=bad)
