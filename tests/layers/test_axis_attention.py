"""CBAM, light CBAM, coordinate attention, simple coordinate attention, ELA, strip attention:
parity with timm (float64, random weights and BN statistics, train and eval), the axis pooling
by hand, CBAM's equations in 1D / 3D, gradients (gradcheck), ranks and bad arguments."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gcnet.layers.axis_attention as axis
from gcnet.layers import create_block
from gcnet.layers.axis_attention import (
    CBAM,
    AxisPooling,
    CoordAttention,
    EfficientLocalAttention,
    LightCBAM,
    SimpleCoordAttention,
    StripAttention,
    axis_pool,
    make_divisible,
)
from tests.conftest import randomize_

BLOCKS = {
    "cbam": CBAM,
    "lcbam": LightCBAM,
    "coord": CoordAttention,
    "scoord": SimpleCoordAttention,
    "ela": EfficientLocalAttention,
    "strip": StripAttention,
}
TOL = {"atol": 1e-9, "rtol": 1e-9}


def _timm(name: str, channels: int, **kwargs) -> nn.Module:
    from timm.layers import create_attn

    return randomize_(create_attn(name, channels, **kwargs)).double()


@pytest.fixture(params=[False, True], ids=["autograd", "fused"])
def fused(request, monkeypatch):
    """``fused``: the one-allocation autograd Functions for every input size (they are used
    for large CPU inputs only), so that the tiny inputs here run them."""
    if request.param:
        monkeypatch.setattr(axis, "_BIG_CPU_BYTES", 0)
    return request.param


def _assert_parity(tm: nn.Module, ours: nn.Module, x: torch.Tensor, train: bool) -> None:
    """Same output, input gradient, parameter gradients and (train) BN statistics."""
    tm.train(train)
    ours.train(train)
    xt, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yt, yo = tm(xt), ours(xo)
    torch.testing.assert_close(yo, yt, **TOL)
    g = torch.randn_like(yt)
    yt.backward(g)
    yo.backward(g)
    torch.testing.assert_close(xo.grad, xt.grad, **TOL)
    pt, po = list(tm.named_parameters()), list(ours.named_parameters())
    assert len(pt) == len(po)
    for (nt, a), (no, b) in zip(pt, po):
        assert a.shape == b.shape, (nt, no)
        torch.testing.assert_close(b.grad, a.grad, **TOL, msg=f"grad of {no} vs timm's {nt}")
    # the running statistics after the step: timm's, converted, equal ours
    state = type(ours).from_timm(tm).state_dict() if list(tm.parameters()) else {}
    for key, value in state.items():
        torch.testing.assert_close(ours.state_dict()[key], value, **TOL)


@pytest.mark.parametrize("shape", [(2, 7, 5), (1, 4, 9)], ids=["2x7x5", "1x4x9"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("channels", [8, 40, 72, 312])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_parity_with_timm_defaults(name, channels, train, shape):
    tm = _timm(name, channels)
    ours = BLOCKS[name].from_timm(tm)
    assert type(ours) is BLOCKS[name] and ours.training == tm.training
    assert all(p.dtype == torch.float64 for p in ours.parameters())
    n, h, w = shape
    _assert_parity(tm, ours, torch.randn(n, channels, h, w, dtype=torch.float64), train)


@pytest.mark.parametrize("channels", [8, 24, 40, 72, 312])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_defaults_build_timms_block(name, channels):
    """``Block(C)`` is ``create_attn(name, C)``: the same widths (rd_ratio / rd_divisor / se_factor
    rounding), kernels, activations and gates."""
    from timm.layers import create_attn

    ours, ref = BLOCKS[name](channels), BLOCKS[name].from_timm(create_attn(name, channels))
    assert repr(ours) == repr(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref.state_dict().items()
    ]
    assert type(create_block(name, channels)) is BLOCKS[name]


OPTIONS = [
    ("cbam", dict(mlp_bias=True, spatial_kernel_size=3, gate_layer="hard_sigmoid", act_layer=nn.SiLU)),
    ("cbam", dict(rd_divisor=8, rd_ratio=1 / 4)),
    ("lcbam", dict(mlp_bias=True, spatial_kernel_size=5, act_layer=nn.Hardswish)),
    ("coord", dict(bias=True, norm_layer=None, has_skip=True, gate_layer="hard_sigmoid")),
    ("coord", dict(act_layer=nn.ReLU, rd_ratio=1 / 4, rd_divisor=4)),
    ("scoord", dict(bias=False, has_skip=True, gate_layer="hard_sigmoid")),
    ("scoord", dict(has_skip=True, act_layer=nn.GELU)),
    ("ela", dict(kernel_size=5, bias=True, norm_layer=None, has_skip=True)),
    ("ela", dict(norm_layer=partial(nn.GroupNorm, 4), gate_layer="hard_sigmoid", act_layer=nn.ReLU)),
    ("strip", dict(kernel_size=5, bias=True, has_skip=True)),
    ("strip", dict(gate_layer="hard_sigmoid")),
]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name,kwargs", OPTIONS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIONS)])
def test_parity_with_timm_options(name, kwargs, train, fused):
    tm = _timm(name, 48, **kwargs)
    _assert_parity(tm, BLOCKS[name].from_timm(tm), torch.randn(2, 48, 5, 6, dtype=torch.float64), train)


def test_strip_without_convs():
    from timm.layers.coord_attn import StripAttn

    tm = StripAttn(16, use_conv=False, has_skip=True)
    with pytest.raises(ValueError, match="needs channels=C"):
        StripAttention.from_timm(tm)
    ours = StripAttention.from_timm(tm, channels=16)
    assert ours.conv_h is None and not list(ours.parameters())
    _assert_parity(tm, ours, torch.randn(2, 16, 5, 3, dtype=torch.float64), True)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_channels_last_and_no_grad(name, fused):
    """channels_last inputs: the same values and gradients as contiguous ones, the layout kept;
    without gradients the input is left untouched (the fusions write into a fresh output)."""
    tm = _timm(name, 24)
    ours = BLOCKS[name].from_timm(tm).train()
    x = torch.randn(2, 24, 6, 5, dtype=torch.float64)
    _assert_parity(tm, ours, x.to(memory_format=torch.channels_last), True)
    xc = x.to(memory_format=torch.channels_last).requires_grad_()
    y = ours.eval()(xc)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.backward(torch.ones_like(y))
    xp = x.clone().requires_grad_()
    ours(xp).backward(torch.ones_like(y))
    torch.testing.assert_close(xc.grad, xp.grad, **TOL)
    kept = x.clone()
    with torch.no_grad():  # the no-grad paths (written into a fresh output, in place there)
        torch.testing.assert_close(ours(x), tm.eval()(x), **TOL)
        torch.testing.assert_close(ours(x.to(memory_format=torch.channels_last)), tm(x), **TOL)
    assert torch.equal(x, kept)


# ---------------------------------------------------------------------------------------------
# the axis pooling


def test_axis_pool_by_hand():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    rows = torch.tensor([[[[sum(x[n, c, h, w].item() for w in range(5)) / 5] for h in range(4)]
                          for c in range(3)] for n in range(2)], dtype=torch.float64)  # fmt: skip
    cols = torch.tensor([[[[max(x[n, c, h, w].item() for h in range(4)) for w in range(5)]]
                          for c in range(3)] for n in range(2)], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(axis_pool(x, keep=-2), rows, atol=1e-14, rtol=0)
    torch.testing.assert_close(AxisPooling(keep=-2)(x), rows, atol=1e-14, rtol=0)
    torch.testing.assert_close(axis_pool(x, keep=-1, mode="max"), cols, atol=0, rtol=0)
    torch.testing.assert_close(AxisPooling(keep=-1, mode="max")(x), cols, atol=0, rtol=0)
    # video: keeping W pools over T and H; a 1D input has nothing else to pool
    v = torch.randn(1, 2, 3, 4, 5, dtype=torch.float64)
    by_hand = torch.tensor([[[[[sum(v[0, c, t, h, w].item() for t in range(3) for h in range(4)) / 12
                                for w in range(5)]]] for c in range(2)]], dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(axis_pool(v, keep=-1), by_hand, atol=1e-14, rtol=0)
    s = torch.randn(2, 3, 7)
    assert axis_pool(s, keep=-1) is s


def test_axis_pool_bad_arguments():
    with pytest.raises(ValueError, match="keep must be a negative int"):
        AxisPooling(keep=2)
    with pytest.raises(ValueError, match="keep must be a negative int"):
        AxisPooling(keep=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        AxisPooling(mode="sum")
    with pytest.raises(ValueError, match=r"keep must name a spatial axis of the 4D input \(-2..-1\), got -3"):
        AxisPooling(keep=-3)(torch.randn(1, 2, 3, 4))


# ---------------------------------------------------------------------------------------------
# CBAM beyond timm: its equations in 3D, and the 1D / 3D forms reducing to the 2D one


def test_cbam_3d_equations():
    """z = y * sigmoid(BN(conv3d([mean_c y; max_c y]))), y = x * sigmoid(MLP(avg x) + MLP(max x))."""
    blk = randomize_(CBAM(16, dims=3, spatial_kernel_size=3)).double().eval()
    x = torch.randn(2, 16, 3, 4, 5, dtype=torch.float64)
    w1, w2 = blk.fc1.weight.view(1, 16), blk.fc2.weight.view(16, 1)
    mlp = lambda v: F.relu(v @ w1.t()) @ w2.t()  # noqa: E731
    gc = torch.sigmoid(mlp(x.mean((2, 3, 4))) + mlp(x.amax((2, 3, 4))))
    y = x * gc.view(2, 16, 1, 1, 1)
    s = torch.cat((y.mean(1, keepdim=True), y.amax(1, keepdim=True)), 1)
    bn = blk.spatial_bn
    logits = F.conv3d(s, blk.spatial_conv.weight, padding=1)
    logits = (logits - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(blk(x), y * torch.sigmoid(logits), **TOL)


@pytest.mark.parametrize("cls", [CBAM, LightCBAM])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_cbam_1d_and_3d_reduce_to_2d(cls, train):
    """dims=3 with a (1, k, k) kernel on (N, C, 1, H, W) and dims=1 on (N, C, L) are dims=2 on
    (N, C, H, W) and on (N, C, 1, L) (kernel (1, k)), with the same weights."""
    two = randomize_(cls(24, spatial_kernel_size=(3, 5))).double().train(train)
    three = cls(24, dims=3, spatial_kernel_size=(1, 3, 5)).double().train(train)
    sd = two.state_dict()
    three.load_state_dict({**sd, "spatial_conv.weight": sd["spatial_conv.weight"].unsqueeze(2)})
    x = torch.randn(2, 24, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(three(x.unsqueeze(2)).squeeze(2), two(x), **TOL)
    flat = randomize_(cls(24, spatial_kernel_size=(1, 5))).double().train(train)
    one = cls(24, dims=1, spatial_kernel_size=5).double().train(train)
    sd = flat.state_dict()
    one.load_state_dict({**sd, "spatial_conv.weight": sd["spatial_conv.weight"].squeeze(2)})
    s = torch.randn(2, 24, 9, dtype=torch.float64)
    torch.testing.assert_close(one(s), flat(s.unsqueeze(2)).squeeze(2), **TOL)


# ---------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("skip", [False, True], ids=["scale", "skip"])
def test_fusion_functions_gradcheck(channels_last, skip):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    a_h = torch.rand(2, 3, 4, 1, dtype=torch.float64, requires_grad=True)
    a_w = torch.rand(2, 3, 1, 5, dtype=torch.float64, requires_grad=True)
    z_h, z_w = (torch.randn_like(a, requires_grad=True) for a in (a_h, a_w))
    assert torch.autograd.gradcheck(lambda *t: axis._ScaleHW.apply(*t, skip), (x, a_h, a_w))
    assert torch.autograd.gradcheck(lambda *t: axis._SigmoidSumScale.apply(*t, skip), (x, z_h, z_w))
    assert torch.autograd.gradcheck(lambda t: axis._AvgMaxPool.apply(t, 1), (x,))
    assert torch.autograd.gradcheck(lambda t: axis._AvgMaxPool.apply(t.flatten(2), -1), (x,))


@pytest.mark.parametrize("dim", [1, -1])
def test_avg_max_pool_ties_split_like_amax(dim):
    """At ties the max's gradient is split evenly, as torch's ``amax`` does (and timm's CBAM)."""
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64).flatten(2)
    x[:, 1] = x[:, 0]  # ties along the channels
    x[:, :, 4] = x[:, :, 0]  # ties along the positions
    ga, gm = torch.randn_like(x.mean(dim, keepdim=True)), torch.randn_like(x.mean(dim, keepdim=True))
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    avg, mx = axis._AvgMaxPool.apply(xa, dim)
    torch.autograd.backward((avg, mx), (ga, gm))
    torch.autograd.backward((xb.mean(dim, keepdim=True), xb.amax(dim, keepdim=True)), (ga, gm))
    torch.testing.assert_close(xa.grad, xb.grad, **TOL)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(BLOCKS))
def test_blocks_gradcheck(name, train, fused):
    blk = randomize_(BLOCKS[name](8, **({"rd_channels": 2} if "coord" in name else {}))).double()
    blk.train(train)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,))


# ---------------------------------------------------------------------------------------------
# what each block declares, ranks, bad arguments


@pytest.mark.parametrize("name", list(BLOCKS))
def test_info_matches_timm_and_scale_fusion(name):
    from timm.layers import create_attn

    cls = BLOCKS[name]
    assert cls.info.timm == (name,)
    assert type(create_attn(name, 16)).__name__ in cls.info.timm_classes
    assert cls.info.identity_at_init is False and "scale" in cls.info.fusion
    x = torch.randn(2, 16, 5, 4)
    with torch.no_grad():
        assert not torch.allclose(cls(16).eval()(x), x)  # scale fusion: not the identity at init


@pytest.mark.parametrize("name", ["coord", "scoord", "ela", "strip"])
@pytest.mark.parametrize("shape", [(2, 8, 5), (2, 8, 3, 4, 5)], ids=["3D", "5D"])
def test_axis_blocks_need_4d(name, shape):
    with pytest.raises(ValueError, match=rf"{BLOCKS[name].__name__} expects a 4D \(N, C, H, W\) input"):
        BLOCKS[name](8)(torch.randn(shape))
    with pytest.raises(ValueError, match="built for 8 channels, got input with 6"):
        BLOCKS[name](8)(torch.randn(2, 6, 3, 4))


def test_cbam_rank_follows_dims():
    with pytest.raises(ValueError, match=r"CBAM was built with dims=2: expects a 4D .*pass dims=3"):
        CBAM(8)(torch.randn(2, 8, 3, 4, 5))
    with pytest.raises(ValueError, match=r"LightCBAM was built with dims=3: expects a 5D"):
        LightCBAM(8, dims=3)(torch.randn(2, 8, 4, 5))
    with pytest.raises(ValueError, match="built for 8 channels"):
        CBAM(8)(torch.randn(2, 4, 3, 3))


BAD = [
    (CBAM, dict(channels=0), "channels must be a positive int"),
    (CBAM, dict(rd_ratio=-1.0), "rd_ratio must be a positive number"),
    (CBAM, dict(rd_channels=0), "rd_channels must be an int >= 1"),
    (CBAM, dict(rd_divisor=0), "rd_divisor must be an int >= 1"),
    (CBAM, dict(spatial_kernel_size=4), "spatial_kernel_size must be an odd int"),
    (CBAM, dict(spatial_kernel_size=(7, 7), dims=3), "spatial_kernel_size must be an int or 3 ints"),
    (CBAM, dict(dims=4), "dims must be 1, 2 or 3"),
    (LightCBAM, dict(act="tanh"), "act must be one of"),
    (LightCBAM, dict(mlp_bias=1), "mlp_bias must be True or False"),
    (CoordAttention, dict(gate="relu"), "gate must be one of"),
    (CoordAttention, dict(se_factor=0), "se_factor must be a positive number"),
    (CoordAttention, dict(norm="bn"), "norm must be True or False"),
    (SimpleCoordAttention, dict(has_skip="yes"), "has_skip must be True or False"),
    (SimpleCoordAttention, dict(rd_ratio="1/4"), "rd_ratio must be a positive number"),
    (EfficientLocalAttention, dict(kernel_size=4), "kernel_size must be an odd int"),
    (EfficientLocalAttention, dict(norm_groups=3), "norm_groups must divide channels=16"),
    (EfficientLocalAttention, dict(norm_groups=0), "norm_groups must be an int >= 1"),
    (StripAttention, dict(use_conv=None), "use_conv must be True or False"),
    (StripAttention, dict(kernel_size=0), "kernel_size must be an odd int"),
]


@pytest.mark.parametrize("cls,kwargs,match", BAD, ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in BAD])
def test_bad_arguments(cls, kwargs, match):
    kwargs = {"channels": 16, **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_create_block_bad_keyword():
    with pytest.raises(ValueError, match="bad arguments for block 'coord'"):
        create_block("coord", 16, reduction=32)


def test_from_timm_refuses_what_it_cannot_express():
    with pytest.raises(ValueError, match="CBAM.from_timm expects a timm CbamModule, got CoordAttn"):
        CBAM.from_timm(_timm("coord", 16))
    with pytest.raises(ValueError, match="LightCBAM.from_timm expects a timm LightCbamModule"):
        LightCBAM.from_timm(_timm("cbam", 16))
    with pytest.raises(ValueError, match="unsupported timm layer ReLU6"):
        CBAM.from_timm(_timm("cbam", 16, act_layer=nn.ReLU6))
    with pytest.raises(ValueError, match="unsupported timm layer GELU"):  # the tanh approximation
        CoordAttention.from_timm(_timm("coord", 16, act_layer=partial(nn.GELU, approximate="tanh")))
    with pytest.raises(ValueError, match="unsupported norms"):
        EfficientLocalAttention.from_timm(_timm("ela", 16, norm_layer=nn.BatchNorm2d))
    with pytest.raises(ValueError, match="unsupported norm LayerNorm"):
        tm = _timm("coord", 16)
        tm.bn1 = nn.LayerNorm(8)
        CoordAttention.from_timm(tm)


def test_make_divisible_is_timms():
    from timm.layers import make_divisible as timm_make_divisible

    for v in [0.3, 1.0, 1.5, 2.5, 7.9, 8.0, 12.0, 13.3, 85.3, 100.0, 511.0]:
        for divisor in (1, 4, 8):
            for limit in (0.0, 0.9):
                assert make_divisible(v, divisor, round_limit=limit) == timm_make_divisible(
                    v, divisor, round_limit=limit
                )


@pytest.mark.parametrize(
    "name,expected",
    [
        ("cbam", 2 * 64 * 4 + 2 * 49 + 2),  # 2 C P + 2 k^2 + BN's affine, P = round(64 / 16)
        ("lcbam", 2 * 64 * 4 + 49 + 2),  # 2 C P + k^2 + 2
        ("coord", 3 * 64 * 8 + 2 * 8),  # 3 C P + BN, P = make_divisible(64 / 24, 8) = 8
        ("scoord", 3 * 64 * 8 + 8 + 2 * 64),  # 3 C P + biases, P = make_divisible(64 / 6, 8) = 8
        ("ela", 18 * 64),  # 2 C k + 4 C, k = 7
        ("strip", 6 * 64),  # 2 C k, k = 3
    ],
)
def test_parameter_counts_as_documented(name, expected):
    assert sum(p.numel() for p in BLOCKS[name](64).parameters()) == expected
