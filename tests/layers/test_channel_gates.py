"""The light channel gates (ECA, ECA-MLP, circular ECA, effective SE, Gather-Excite, GRN, SRM,
GCT): parity with timm in float64 on random weights, the papers' equations written out for
the blocks timm lacks (SRM, GCT, GE's MLP), identity at init, gradients, ranks, bad input."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gcnet.layers import (
    CircularEfficientChannelAttention,
    EffectiveSqueezeExcite,
    EfficientChannelAttention,
    EfficientChannelAttentionMlp,
    GatedChannelTransform,
    GatherExcite,
    GlobalResponseNorm,
    StyleRecalibration,
    create_block,
)
from gcnet.layers.channel_gates import eca_kernel_size
from gcnet.layers.registry import block_info
from tests.conftest import randomize_

timm_layers = pytest.importorskip("timm.layers")
create_attn = timm_layers.create_attn

TOL = {"atol": 1e-9, "rtol": 1e-9}
NAMES = {
    "eca": EfficientChannelAttention,
    "ecam": EfficientChannelAttentionMlp,
    "ceca": CircularEfficientChannelAttention,
    "ese": EffectiveSqueezeExcite,
    "ge": GatherExcite,
    "grn": GlobalResponseNorm,
    "srm": StyleRecalibration,
    "gct": GatedChannelTransform,
}


def _x(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def _timm(name, channels, **kw):
    return randomize_(create_attn(name, channels, **kw)).double().eval()


def _timm_ge(channels, **kw):
    """timm's GatherExcite with its 1.0.31 constructor bug worked around: the MLP and the
    learned gather pass ``*dd`` (the strings 'device', 'dtype') positionally, so ConvMlp and
    create_conv2d raise and BatchNorm2d gets eps='device'. The forward is timm's own."""
    import timm.layers.gather_excite as tge

    def strip(fn):
        return lambda *a, **k: fn(*[v for v in a if not isinstance(v, str)], **k)

    conv, mlp = tge.create_conv2d, tge.ConvMlp
    tge.create_conv2d, tge.ConvMlp = strip(conv), strip(mlp)
    try:
        m = tge.GatherExcite(channels, **kw)
    finally:
        tge.create_conv2d, tge.ConvMlp = conv, mlp
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.eps, bn.momentum = 1e-5, 0.1
    return randomize_(m).double().eval()


# -- parity with timm -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [4, 64, 128, 2048])  # k = 3 (timm's floor), 3, 5, 7
@pytest.mark.parametrize("name", ["eca", "ecam", "ceca"])
def test_eca_family_matches_timm(name, channels):
    tm = _timm(name, channels)
    ours = NAMES[name].from_timm(tm, channels=channels)
    assert type(ours) is NAMES[name]
    k = (tm.conv2 if name == "ecam" else tm.conv).weight.shape[-1]
    assert ours.kernel_size == k == create_block(name, channels).kernel_size
    for shape in [(2, channels, 5, 7), (3, channels, 1, 1)]:
        x = _x(*shape)
        torch.testing.assert_close(ours(x), tm(x), **TOL)


def test_eca_kernel_rule_matches_timm():
    from timm.layers import EcaModule

    for c in [*range(1, 300), *(2**i for i in range(9, 14)), 3 * 1024, 1000]:
        assert eca_kernel_size(c) == EcaModule(c).conv.kernel_size[0], c


def test_ceca_with_timm_bias_and_ecam_width():
    tm = _timm("ceca", 96, act_layer=nn.ReLU)  # timm: act_layer only adds a conv bias
    ours = CircularEfficientChannelAttention.from_timm(tm)
    assert ours.bias and ours.channels is None
    x = _x(2, 96, 4, 5)
    torch.testing.assert_close(ours(x), tm(x), **TOL)
    for c in (8, 96, 200):  # R = make_divisible(C / 8, 8)
        assert create_block("ecam", c).rd_channels == create_attn("ecam", c).conv.out_channels


@pytest.mark.parametrize("add_maxpool", [False, True])
@pytest.mark.parametrize("channels", [16, 96])
def test_ese_matches_timm(channels, add_maxpool):
    tm = _timm("ese", channels, add_maxpool=add_maxpool)
    ours = EffectiveSqueezeExcite.from_timm(tm)
    for shape in [(2, channels, 7, 5), (1, channels, 3, 3)]:
        x = _x(*shape)
        torch.testing.assert_close(ours(x), tm(x), **TOL)


@pytest.mark.parametrize("extent,add_maxpool", [(0, False), (0, True), (2, False), (4, True), (8, False)])
def test_ge_parameter_free_matches_stock_timm(extent, add_maxpool):
    tm = _timm("ge", 24, use_mlp=False, extent=extent, add_maxpool=add_maxpool)
    ours = GatherExcite.from_timm(tm, channels=24)
    for hw in [(16, 16), (7, 9), (5, 5), (3, 12)]:
        x = _x(2, 24, *hw)
        torch.testing.assert_close(ours(x), tm(x), **TOL)


@pytest.mark.parametrize(
    "kw",
    [
        {},  # timm's defaults: global, MLP (= SE with R = round(C / 16))
        {"extent": 2},
        {"extent": 4, "extra_params": True},
        {"extent": 2, "extra_params": True, "use_mlp": False, "norm_layer": None},
        {"extent": 8, "extra_params": True, "rd_ratio": 1 / 8},
    ],
)
def test_ge_with_params_matches_timm_code(kw):
    tm = _timm_ge(32, **kw)
    ours = GatherExcite.from_timm(tm)
    for train in (False, True):
        tm.train(train), ours.train(train)
        for hw in [(16, 16), (7, 9), (5, 6)]:
            x = _x(2, 32, *hw)
            torch.testing.assert_close(ours(x), tm(x), **TOL)


@pytest.mark.parametrize("channels_last", [True, False])
def test_grn_matches_timm(channels_last):
    from timm.layers.grn import GlobalResponseNorm as TimmGRN

    tm = randomize_(TimmGRN(48, channels_last=channels_last)).double()
    ours = GlobalResponseNorm.from_timm(tm)
    for shape in [(2, 48, 5, 7), (1, 48, 1, 1)]:
        x = _x(*shape)
        ref = tm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if channels_last else tm(x)
        torch.testing.assert_close(ours(x), ref, **TOL)


def test_block_from_timm_dispatches_on_config():
    from gcnet.convert import block_from_timm

    for name in ["eca", "ecam", "ceca", "ese"]:
        cls = NAMES[name]
        tm = _timm(name, 64)
        block = block_from_timm(tm)
        assert type(block) is cls
        x = _x(2, 64, 3, 4)
        torch.testing.assert_close(block(x), tm(x), **TOL)


# -- the equations, written out -----------------------------------------------------------------


def _bn_eval(z, bn):
    return (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


@pytest.mark.parametrize("train", [False, True])
def test_srm_equations(train):
    m = randomize_(StyleRecalibration(6), 1.0).double().train(train)
    x = _x(4, 6, 5, 3)
    n, c, length = 4, 6, 15
    xs = x.reshape(n, c, length)
    mean = xs.sum(-1) / length
    std = torch.sqrt(((xs - mean[..., None]) ** 2).sum(-1) / (length - 1))  # Bessel, as the official .std()
    z = m.cfc[:, 0] * mean + m.cfc[:, 1] * std
    if train:
        mu, var = z.mean(0), ((z - z.mean(0)) ** 2).mean(0)
        zh = (z - mu) / torch.sqrt(var + m.bn.eps) * m.bn.weight + m.bn.bias
    else:
        zh = _bn_eval(z, m.bn)
    ref = x * torch.sigmoid(zh)[:, :, None, None]
    torch.testing.assert_close(m(x), ref, **TOL)


@pytest.mark.parametrize("mode,after_relu", [("l2", False), ("l1", False), ("l1", True)])
def test_gct_equations(mode, after_relu):
    m = GatedChannelTransform(7, mode=mode, after_relu=after_relu).double()
    with torch.no_grad():
        for p in (m.alpha, m.gamma, m.beta):
            p.normal_(0, 1.0)
    x = _x(3, 7, 4, 6)
    if after_relu:
        x = x.relu()
    a, g, b = m.alpha.view(1, 7), m.gamma.view(1, 7), m.beta.view(1, 7)
    eps = 1e-5
    if mode == "l2":  # official: s = alpha sqrt(sum x^2 + eps); gamma / sqrt(mean_c s^2 + eps)
        s = a * torch.sqrt((x * x).sum((2, 3)) + eps)
        s_hat = g * s * math.sqrt(7) / torch.sqrt((s * s).sum(1, keepdim=True) + 7 * eps)
    else:
        s = a * x.abs().sum((2, 3))
        s_hat = g * s / (s.abs().sum(1, keepdim=True) / 7 + eps)
    ref = x * (1 + torch.tanh(s_hat + b))[:, :, None, None]
    torch.testing.assert_close(m(x), ref, **TOL)


def _window_mean(x, e):
    """GE-theta-minus by hand: mean over the (2e-1)-wide windows at stride e along every
    spatial axis, clipped at the edges (padding not counted)."""
    sizes = x.shape[2:]
    out = torch.empty(*x.shape[:2], *(-(-s // e) for s in sizes), dtype=x.dtype)
    for idx in itertools.product(*(range(n) for n in out.shape[2:])):
        box = tuple(slice(max(i * e - (e - 1), 0), min(i * e + e, s)) for i, s in zip(idx, sizes))
        out[(..., *idx)] = x[(..., *box)].mean(tuple(range(2, x.dim())))
    return out


def _mlp(m, y):
    """1x1 conv C->R, ReLU, 1x1 conv R->C on every position of (N, C, h, w)."""
    w1, b1 = m.mlp.fc1.weight[:, :, 0, 0], m.mlp.fc1.bias
    w2, b2 = m.mlp.fc2.weight[:, :, 0, 0], m.mlp.fc2.bias
    hid = torch.relu(torch.einsum("rc,nchw->nrhw", w1, y) + b1[:, None, None])
    return torch.einsum("cr,nrhw->nchw", w2, hid) + b2[:, None, None]


@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_ge_theta_plus_by_hand(hw):
    """GE-theta-plus (timm 1.0.31 cannot build it): gather, MLP, sigmoid, nearest upsampling."""
    e, (h, w) = 2, hw
    m = randomize_(GatherExcite(16, extent=e, use_mlp=True, rd_ratio=1 / 4), 0.5).double()
    x = _x(2, 16, h, w)
    g = torch.sigmoid(_mlp(m, _window_mean(x, e)))
    hp, wp = g.shape[2:]
    rows = torch.tensor([(i * hp) // h for i in range(h)])  # nearest: floor(dst * in / out)
    cols = torch.tensor([(j * wp) // w for j in range(w)])
    torch.testing.assert_close(m(x), x * g[:, :, rows][:, :, :, cols], **TOL)


def test_ge_global_learned_gather_by_hand():
    """The paper's global theta: a depthwise conv whose kernel is the whole map (a 1 x 1
    output), BN, the MLP, sigmoid."""
    m = (
        randomize_(GatherExcite(8, extent=0, extra_params=True, feat_size=(5, 6), rd_channels=3))
        .double()
        .eval()
    )
    x = _x(2, 8, 5, 6)
    y = (x * m.gather.conv1.weight[:, 0]).sum((2, 3))
    y = _bn_eval(y, m.gather.norm1)[:, :, None, None]
    ref = x * torch.sigmoid(_mlp(m, y))
    torch.testing.assert_close(m(x), ref, **TOL)
    assert sum(p.numel() for p in m.gather.parameters()) == 8 * 30 + 16


# -- identity at init, gradients, ranks --------------------------------------------------------------


@pytest.mark.parametrize("name", ["grn", "gct"])
def test_identity_at_init(name):
    m = create_block(name, 16)
    assert block_info(name).identity_at_init
    for x in (torch.randn(2, 16, 5, 7), torch.randn(2, 16, 5, 7).to(memory_format=torch.channels_last),
              torch.randn(2, 16, 9), torch.randn(1, 16, 2, 3, 4)):  # fmt: skip
        assert torch.equal(m(x), x)


GRAD_CASES = [
    ("eca", {}),
    ("ecam", {}),
    ("ceca", {}),
    ("ese", {"add_maxpool": True}),
    ("ge", {}),
    ("ge", {"extent": 2, "add_maxpool": True}),
    ("ge", {"extent": 2, "extra_params": True}),
    ("grn", {}),
    ("srm", {}),
    ("gct", {}),
    ("gct", {"mode": "l1"}),
]


@pytest.mark.parametrize("name,kw", GRAD_CASES)
def test_gradcheck(name, kw):
    m = randomize_(create_block(name, 8, **kw), 0.5).double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize("name,kw", [c for c in GRAD_CASES if not c[1].get("extra_params")])
def test_ranks_1d_3d(name, kw):
    """(N, C, L) and (N, C, T, H, W) inputs give what the 2D block gives on the same positions
    laid out as (N, C, L, 1) / (N, C, H, W) with T = 1."""
    m = randomize_(create_block(name, 8, **kw), 0.5).double().eval()
    x1 = _x(2, 8, 11)
    torch.testing.assert_close(m(x1), m(x1[..., None])[..., 0], **TOL)
    x3 = _x(2, 8, 1, 6, 5)
    torch.testing.assert_close(m(x3), m(x3[:, :, 0])[:, :, None], **TOL)
    if kw.get("extent", 0) == 0:  # pooling over all positions: only the set of positions matters
        x3 = _x(2, 8, 3, 4, 5)
        torch.testing.assert_close(m(x3), m(x3.reshape(2, 8, 12, 5)).reshape(x3.shape), **TOL)


def test_grn_keeps_the_input_dtype():
    m = randomize_(GlobalResponseNorm(8))
    x = torch.randn(2, 8, 3, 3, dtype=torch.bfloat16)
    assert m(x).dtype == torch.bfloat16  # timm's promotes to float32


def test_registry_names_and_info():
    for name, cls in NAMES.items():
        assert type(create_block(name, 32)) is cls
        info = block_info(name)
        assert info is cls.info and info.dims == (1, 2, 3) and info.paper
    assert block_info("ecam").timm == ("ecam",) and "CecaModule" in block_info("ceca").timm_classes


# -- bad arguments and inputs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kw,match",
    [
        ("eca", {"kernel_size": 4}, "kernel_size must be an odd positive int"),
        ("eca", {"gamma": 0}, "gamma must be a positive"),
        ("ecam", {"rd_channels": 0}, "rd_channels must be an int >= 1"),
        ("ceca", {"kernel_size": 9}, "kernel_size=9 wraps around 2 channels"),
        ("ese", {"add_maxpool": 1}, "add_maxpool must be a bool"),
        ("ge", {"extent": 3}, "extent must be 0 .* or an even int"),
        ("ge", {"extent": 6, "extra_params": True}, "extent must be a power of two"),
        ("ge", {"extra_params": True}, "feat_size .* is needed"),
        ("ge", {"extra_params": True, "feat_size": (3, 0)}, "feat_size must be"),
        ("ge", {"rd_ratio": -1}, "rd_ratio must be a positive"),
        ("ge", {"extent": 2, "extra_params": True, "add_maxpool": True}, "add_maxpool"),
        ("grn", {"eps": 0}, "eps must be a positive"),
        ("srm", {"momentum": 2}, "momentum must be"),
        ("gct", {"mode": "l3"}, "mode must be one of"),
        ("gct", {"after_relu": "yes"}, "after_relu must be a bool"),
    ],
)
def test_bad_arguments(name, kw, match):
    with pytest.raises(ValueError, match=match):
        create_block(name, 2, **kw)


@pytest.mark.parametrize("name", list(NAMES))
def test_bad_channels_and_ranks(name):
    with pytest.raises(ValueError, match="channels must be a positive int"):
        create_block(name, 0)
    m = create_block(name, 8)
    with pytest.raises(ValueError, match="was built for 8 channels"):
        m(torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match="expects a 3D"):
        m(torch.randn(2, 8))


def test_bad_inputs_specific():
    with pytest.raises(ValueError, match="at least 2 positions"):
        StyleRecalibration(4).eval()(torch.randn(2, 4, 1, 1))
    with pytest.raises(ValueError, match="extra_params takes \\(N, C, H, W\\)"):
        GatherExcite(4, extent=2, extra_params=True)(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="built for feat_size=\\(5, 5\\)"):
        GatherExcite(4, extra_params=True, feat_size=5)(torch.randn(2, 4, 6, 5))


def test_from_timm_errors_and_channels():
    tm = create_attn("eca", 64)
    block = EfficientChannelAttention.from_timm(tm)
    assert block.channels is None and block(torch.randn(1, 32, 2, 2)).shape == (1, 32, 2, 2)  # any C, as timm
    with pytest.raises(ValueError, match="built for 64 channels"):
        EfficientChannelAttention.from_timm(tm, channels=64)(torch.randn(1, 32, 2, 2))
    assert (
        type(EfficientChannelAttentionMlp.from_timm(tm)) is EfficientChannelAttention
    )  # the module's config
    with pytest.raises(ValueError, match="expected timm's EffectiveSEModule"):
        EffectiveSqueezeExcite.from_timm(tm)
    with pytest.raises(ValueError, match="gates with Hardsigmoid"):
        EfficientChannelAttention.from_timm(create_attn("eca", 64, gate_layer="hard_sigmoid"))
    with pytest.raises(ValueError, match="pads its conv"):
        GatherExcite.from_timm(_timm_ge(8, extra_params=True, feat_size=(7, 7)))


def test_ge_3d_window_mean_on_short_clips():
    """avg_pool3d refuses a side shorter than its kernel on the CPU: the separable fallback
    gives what it gives where it works, and handles T = 2 < 3."""
    from gcnet.layers.channel_gates import _avg_pool3d_small

    x = _x(2, 3, 5, 6, 7)
    ref = F.avg_pool3d(x, 3, 2, 1, False, False)
    torch.testing.assert_close(_avg_pool3d_small(x, 3, 2, 1), ref, **TOL)
    m = GatherExcite(3, extent=2, use_mlp=False)
    x = _x(2, 3, 2, 4, 6)  # T = 2 < 3; the gate map is (1, 2, 3): nearest = blocks of 2
    g = torch.sigmoid(_window_mean(x, 2))
    up = g.repeat_interleave(2, 2)[:, :, :2].repeat_interleave(2, 3).repeat_interleave(2, 4)
    torch.testing.assert_close(m(x), x * up, **TOL)
