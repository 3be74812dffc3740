"""Presets for more families (timm ConvNeXt / RegNet / ResNet-D / CSP / MobileNetV4, torchvision
and timm Swin, torchvision MaxViT), the automatic channels-last / token layout, and timm's GC
models with gcnet's blocks (`gcnet.convert.replace_timm_global_context`)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torchvision
from torch import nn

import gcnet
from gcnet.models import ContextPlug, inserted_blocks
from tests.conftest import randomize_

timm = pytest.importorskip("timm")

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _no_drop(model: nn.Module) -> nn.Module:
    """Stochastic depth off: the training pass must reach every block."""
    for m in model.modules():
        if isinstance(m, torchvision.ops.StochasticDepth):
            m.p = 0.0
    return model


def _swin_v2_small() -> nn.Module:
    from torchvision.models import swin_transformer as sw

    return sw.SwinTransformer([4, 4], 16, [1, 1, 2, 1], [1, 2, 2, 4], [2, 2], stochastic_depth_prob=0.0,
                              block=sw.SwinTransformerBlockV2,
                              downsample_layer=sw.PatchMergingV2)  # fmt: skip


def _maxvit_small() -> nn.Module:
    from torchvision.models.maxvit import MaxVit

    return MaxVit((64, 64), 16, 2, [16, 32, 64, 128], [1, 1, 1, 1], head_dim=8, stochastic_depth_prob=0.0)


def _edge_net() -> nn.Module:
    """timm's EdgeBlock (cs3edgenet) behind a stride-8 stem: one c3 block."""
    from timm.models.cspnet import EdgeBlock

    return nn.Sequential(nn.Conv2d(3, 32, 8, stride=8), EdgeBlock(32, 32), nn.AdaptiveAvgPool2d(1))


def _timm_swin_small() -> nn.Module:
    return timm.models.swin_transformer.SwinTransformer(
        img_size=64, window_size=2, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2)
    )


BUILDERS = {
    "timm:convnext_atto": lambda: timm.create_model("convnext_atto", conv_mlp=False),  # channels-last MLP
    "timm:convnext_atto_conv_mlp": lambda: timm.create_model("convnext_atto"),  # atto's default: conv MLP
    "tv:swin_t": lambda: _no_drop(torchvision.models.swin_t()),
    "tv:swin_v2_small": _swin_v2_small,
    "timm:swin_small": _timm_swin_small,
    "tv:maxvit_small": _maxvit_small,
    "timm:regnetx_002": lambda: timm.create_model("regnetx_002"),
    "timm:resnet26d": lambda: timm.create_model("resnet26d"),
    "timm:cspresnet50": lambda: timm.create_model("cspresnet50"),
    "timm:darknet17": lambda: timm.create_model("darknet17"),
    "timm:edge_block": _edge_net,
    "timm:mobilenetv4_conv_small": lambda: timm.create_model("mobilenetv4_conv_small"),
}


@functools.cache
def _pristine(name: str) -> nn.Module:
    return BUILDERS[name]().double().eval()


def fresh(name: str) -> nn.Module:
    return copy.deepcopy(_pristine(name))


# (model, preset, blocks in c3-c5, where: the wrapped modules' name ends with, their parents' class, layout)
CASES = [
    ("timm:convnext_atto", "convnext", 10, ".mlp.fc2", "ConvNeXtBlock", "nhwc"),  # depths 2 | 2, 6, 2
    ("timm:convnext_atto_conv_mlp", "convnext", 10, ".mlp.fc2", "ConvNeXtBlock", "nchw"),
    ("tv:swin_t", "swin", 10, ".mlp.3", "SwinTransformerBlock", "nhwc"),  # depths 2 | 2, 6, 2
    ("tv:swin_v2_small", "swin", 4, ".norm2", "SwinTransformerBlockV2", "nhwc"),
    ("timm:swin_small", "swin", 4, ".mlp.fc2", "SwinTransformerBlock", "nlc"),  # (N, L, C) inside timm's
    ("tv:maxvit_small", "maxvit", 3, ".layers", "MBConv", "nchw"),  # one MaxVitBlock per stage
    ("timm:regnetx_002", "regnet", 12, ".conv3", "Bottleneck", "nchw"),  # depths 1 | 1, 4, 7
    ("timm:resnet26d", "resnet", 6, ".bn3", "Bottleneck", "nchw"),  # ResNet-D, 2 per stage
    ("timm:cspresnet50", "csp", 10, ".conv3", "BottleneckBlock", "nchw"),  # depths 3 | 3, 5, 2
    ("timm:darknet17", "csp", 3, ".conv2", "DarkBlock", "nchw"),  # one DarkBlock per stage
    ("timm:edge_block", "csp", 1, ".conv2", "EdgeBlock", "nchw"),
    ("timm:mobilenetv4_conv_small", "mobilenet", 12, ".pw_proj", "UniversalInvertedResidual", "nchw"),
]
# the first block's module: its stage is c3 (output stride 8), as the preset's default stages say
FIRST = {
    "timm:convnext_atto": "stages.1.blocks.0.mlp.fc2",
    "timm:convnext_atto_conv_mlp": "stages.1.blocks.0.mlp.fc2",
    "tv:swin_t": "features.3.0.mlp.3",  # features.1 = stage 1 (stride 4), .2 = its patch merging
    "tv:swin_v2_small": "features.3.0.norm2",
    "timm:swin_small": "layers.1.blocks.0.mlp.fc2",
    "tv:maxvit_small": "blocks.1.layers.0.layers.MBconv.layers",
    "timm:regnetx_002": "s2.b1.conv3",
    "timm:resnet26d": "layer2.0.bn3",
    "timm:cspresnet50": "stages.1.blocks.0.conv3",
    "timm:darknet17": "stages.2.blocks.0.conv2",  # darknet's stem has stride 1
    "timm:edge_block": "1.conv2",
    "timm:mobilenetv4_conv_small": "blocks.2.0.pw_proj",
}


@pytest.mark.parametrize(
    "name,preset,count,suffix,parent,layout", CASES, ids=[c[0].split(":")[1] for c in CASES]
)
def test_family_presets_put_identity_blocks_where_they_say(name, preset, count, suffix, parent, layout):
    model = fresh(name)
    keys = list(model.state_dict())
    with torch.no_grad():
        ref = model(X)
    names = gcnet.add_context_blocks(model, "gc", f"preset:{preset}", example_input=X, ratio=1 / 4)
    assert len(names) == count and names[0] == FIRST[name] + ".context_block"
    for n in names:
        target = n[: -len(".context_block")]
        plug = model.get_submodule(target)
        assert target.endswith(suffix) and isinstance(plug, ContextPlug) and plug.layout == layout
        owner = model.get_submodule(target[: -len(suffix)])
        assert type(owner).__name__ == parent
    sd = model.state_dict()
    assert list(k for k in sd if ".context_block." not in k) == keys  # the model's keys, in order
    assert all(any(k.startswith(n + ".") for n in names) for k in sd if ".context_block." in k)
    with torch.no_grad():
        assert torch.equal(model(X), ref)  # identity at insertion
    model.train()
    model(X).square().mean().backward()
    assert all(b.transform_add.conv_out.weight.grad.abs().sum() > 0 for b in inserted_blocks(model).values())


@pytest.mark.parametrize("name,preset", [("timm:convnext_atto", "convnext"), ("tv:swin_t", "swin"),
                                         ("timm:swin_small", "swin")])  # fmt: skip
def test_channels_last_blocks_pool_over_positions_of_the_last_dim(name, preset):
    """Non-zero blocks against hooks on an unplugged copy that run the (N, C, ...) block on the
    module's output with its last dim moved to dim 1."""
    model, ref = fresh(name), fresh(name)
    names = gcnet.add_context_blocks(model, "gc", f"preset:{preset}", example_input=X, ratio=1 / 4)
    for n, blk in inserted_blocks(model).items():
        randomize_(blk, std=0.2)
        plain = blk.block  # the LayoutAdapter's (N, C, ...) block
        ref.get_submodule(n[: -len(".context_block")]).register_forward_hook(
            lambda m, args, out, plain=plain: plain(out.movedim(-1, 1)).movedim(1, -1)
        )
    with torch.no_grad():
        got, want, plain_out = model(X), ref(X), fresh(name)(X)
    assert names and not torch.allclose(got, plain_out, atol=1e-6)  # the blocks do something
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# -- the layout, chosen automatically or given ------------------------------------------------


class ChannelsLastNet(nn.Module):
    """A ConvNeXt-like block: a Linear MLP on the (N, H, W, C) map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.mlp(x)
        return self.head(x.mean((1, 2)))


class TokenNet(nn.Module):
    """A ViT-like model: patch tokens led by a class token, (N, 1 + L, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        return t + self.mlp(t)


@pytest.mark.parametrize("after", ["mlp", "mlp.2"], ids=["container", "linear"])
def test_layout_from_the_module_and_the_traced_shape(after):
    x16 = torch.randn(2, 3, 16, 16)  # (N, 4, 4, 8) maps
    m = ChannelsLastNet()
    want = m(x16)
    (name,) = gcnet.add_context_blocks(m, "snl", after, example_input=x16)
    plug = m.get_submodule(after)
    assert plug.layout == "nhwc" and plug.channels == 8 and torch.equal(m(x16), want)
    t = TokenNet()
    gcnet.add_context_blocks(t, "gc", after, example_input=x16, prefix_tokens=1, ratio=1 / 4)
    plug = t.get_submodule(after)
    assert plug.layout == "nlc" and plug.context_block.prefix_tokens == 1
    randomize_(plug.context_block)
    tokens = torch.randn(2, 17, 16 if after == "mlp.2" else 8)  # the Linear's input, or the MLP's
    out, inner = plug(tokens), plug.module(tokens)
    assert torch.equal(out[:, 0], inner[:, 0]) and not torch.allclose(out[:, 1:], inner[:, 1:])


@pytest.mark.parametrize(
    "after,layout,message",
    [
        ("mlp", None, r"module 'mlp' returns a tensor of shape \(1, 8, 8, 8\): its 8 channels may be "
                      r"dim 1 or the last dim; pass layout='nchw' or 'nhwc'"),
        ("mlp.2", "nchw", r"layout='nchw' does not fit module 'mlp.2': a Linear returning"),
        ("stem", "nhwc", r"layout='nhwc' does not fit module 'stem': a Conv2d returning a tensor of shape"),
        ("mlp", "nlc", r"layout='nlc' does not fit module 'mlp'"),
        ("mlp", "chw", r"layout must be one of"),
    ],
)  # fmt: skip
def test_ambiguous_or_wrong_layouts_are_errors(after, layout, message):
    m = ChannelsLastNet()
    x32 = torch.zeros(1, 3, 32, 32)  # (N, 8, 8, 8) maps: 8 channels in dim 1 and the last dim
    with pytest.raises(ValueError, match=message) as e:
        gcnet.add_context_blocks(m, "snl", after=after, example_input=x32, layout=layout)
    assert "\n" not in str(e.value) and not inserted_blocks(m)
    if layout is None:  # said explicitly, it works
        gcnet.add_context_blocks(m, "snl", after=after, example_input=x32, layout="nhwc")
        assert m.mlp.layout == "nhwc"


# -- timm's GC models with gcnet's blocks ------------------------------------------------------


def _gc_pair(build):
    from gcnet.convert import TimmGlobalContext, replace_timm_global_context

    timm_model = randomize_(build().double(), std=0.05).eval()
    ours = copy.deepcopy(timm_model)
    names = replace_timm_global_context(ours)
    assert names and all(isinstance(ours.get_submodule(n), TimmGlobalContext) for n in names)
    return timm_model, ours, names


@pytest.mark.parametrize(
    "build,fusion",
    [
        (lambda: timm.create_model("gcresnext26ts"), ("add",)),  # gca: the paper's add fusion
        (lambda: timm.create_model("resnet10t", block_args={"attn_layer": "gc"}), ("mul",)),  # gc: scale
        (lambda: nn.Sequential(timm.layers.GlobalContext(16, use_attn=False, fuse_add=True, rd_ratio=0.3)),
         ("add", "mul")),  # avg pooling, both fusions, rd = round(4.8) = 5
    ],
    ids=["gcresnext26ts", "resnet10t-gc", "avg-add-mul"],
)  # fmt: skip
def test_timm_gc_models_compute_the_same_with_gcnet_blocks(build, fusion):
    timm_model, ours, names = _gc_pair(build)
    x = X if len(names) > 1 else torch.randn(2, 16, 5, 7, dtype=torch.float64)
    assert ours.get_submodule(names[0]).fusion == fusion
    sd = timm_model.state_dict()
    assert list(ours.state_dict()) == list(sd)  # timm's keys, in order, and shapes
    assert all(torch.equal(v, sd[k]) for k, v in ours.state_dict().items())
    with torch.no_grad():
        want = timm_model(x)
        torch.testing.assert_close(ours(x), want, rtol=1e-10, atol=1e-12 * want.abs().max().item())
    # a timm checkpoint loads (strict) into the swapped model
    again = randomize_(copy.deepcopy(ours), std=0.1)
    again.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(again(x), want, rtol=1e-10, atol=1e-12 * want.abs().max().item())
    # training: the same gradients (gcnet's fused backward vs autograd through timm's module)
    for m in (timm_model, ours):
        m.train()
        m(x).square().mean().backward()
    grads = {k: v.grad for k, v in ours.state_dict(keep_vars=True).items() if isinstance(v, nn.Parameter)}
    for k, v in timm_model.state_dict(keep_vars=True).items():
        if isinstance(v, nn.Parameter):
            torch.testing.assert_close(grads[k], v.grad, rtol=1e-8, atol=1e-12, msg=k)


def test_timm_gc_errors_change_nothing():
    from gcnet.convert import replace_timm_global_context

    silu = nn.Sequential(timm.layers.GlobalContext(16, act_layer=nn.SiLU))  # gc_efficientnetv2_rw_t's
    with pytest.raises(
        ValueError, match=r"timm GlobalContext '0' uses SiLU in its transform; gcnet's block: ReLU"
    ):
        replace_timm_global_context(silu)
    assert type(silu[0]).__name__ == "GlobalContext"
    with pytest.raises(ValueError, match=r"Sequential has no timm GlobalContext .* nothing to replace"):
        replace_timm_global_context(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(
        ValueError, match=r"got a timm GlobalContext itself; for one block use block_from_timm"
    ):
        replace_timm_global_context(silu[0])
