"""Non-local block: parity with mmcv's NonLocal2d, a per-query formula, gradients, ranks."""

import math

import pytest
import torch
import torch.nn.functional as F

from gcnet import NonLocalBlock
from gcnet.convert import nonlocal_from_mmcv
from gcnet.layers import NL_MODES
from tests.conftest import randomize_


@pytest.mark.parametrize("mode", NL_MODES)
@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("norm", [True, False])
def test_parity_with_mmcv_nonlocal2d_through_the_converter(mode, sub_sample, norm):
    """mmcv's NonLocal2d (sub_sample wraps g and phi in Sequential(conv, MaxPool2d)), its
    weights mapped by the shipped converter, loaded strictly, same output in float64."""
    from mmcv.cnn import NonLocal2d

    mm = NonLocal2d(
        16, reduction=2, mode=mode, sub_sample=sub_sample, norm_cfg=dict(type="BN") if norm else None
    )
    randomize_(mm, 0.3).double().eval()
    ours = NonLocalBlock(16, mode=mode, sub_sample=sub_sample, norm=norm).double().eval()
    ours.load_state_dict(nonlocal_from_mmcv(mm.state_dict()), strict=True)
    x = torch.randn(2, 16, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), mm(x), rtol=1e-10, atol=1e-10)
        assert not torch.allclose(mm(x), x)  # the block is not the identity


def test_mmcv_nonlocal_without_scale_and_unknown_keys():
    from mmcv.cnn import NonLocal2d

    mm = (
        randomize_(NonLocal2d(8, use_scale=False, sub_sample=True, norm_cfg=dict(type="BN")), 0.3)
        .double()
        .eval()
    )
    ours = NonLocalBlock(8, use_scale=False, sub_sample=True).double().eval()
    ours.load_state_dict(nonlocal_from_mmcv(mm.state_dict()), strict=True)
    x = torch.randn(1, 8, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), mm(x), rtol=1e-10, atol=1e-10)
    gn = NonLocal2d(8, norm_cfg=dict(type="GN", num_groups=2))  # our W_z norm is a BatchNorm
    with pytest.raises(ValueError, match=r"unexpected keys .*conv_out\.gn\.weight"):
        nonlocal_from_mmcv(gn.state_dict())


@pytest.mark.parametrize("mode", NL_MODES)
def test_per_query_formula(mode):
    """z_i = x_i + BN(W_z sum_j f(x_i, x_j) g(x_j) / C(x)) with loops over queries."""
    blk = randomize_(NonLocalBlock(4, mode=mode, reduction=2), 0.5).double().eval()
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64)
    xs = x[0].reshape(4, -1)  # (C, L)
    L = xs.shape[1]

    def conv(c, v):
        return c.weight.flatten(1) @ v + (c.bias[:, None] if c.bias is not None else 0)

    th = conv(blk.theta, xs) if blk.theta is not None else xs
    ph = conv(blk.phi, xs) if blk.phi is not None else xs
    g = conv(blk.g, xs)
    w = blk.concat_project.weight.flatten() if blk.concat_project is not None else None
    bn = blk.norm
    out = torch.empty_like(xs)
    for i in range(L):
        if mode == "concatenation":
            f = torch.stack([F.relu(w @ torch.cat([th[:, i], ph[:, j]])) for j in range(L)]) / L
        else:
            f = torch.stack([th[:, i] @ ph[:, j] for j in range(L)])
            if mode == "embedded_gaussian":
                f = torch.softmax(f / math.sqrt(th.shape[0]), 0)
            elif mode == "gaussian":
                f = torch.softmax(f, 0)
            else:
                f = f / L
        y = (g * f).sum(1)
        z = blk.conv_out.weight.flatten(1) @ y
        z = (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        out[:, i] = xs[:, i] + z
    torch.testing.assert_close(blk(x)[0].reshape(4, -1), out)
    att = blk.attention(x)
    assert att.shape == (1, L, L)


@pytest.mark.parametrize("mode", NL_MODES)
def test_identity_at_init_and_gradcheck(mode):
    blk = NonLocalBlock(8, mode=mode)
    x = torch.randn(2, 8, 4, 4)
    assert torch.equal(blk(x), x)
    blk = randomize_(blk, 0.5).double().eval()
    xd = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (xd,))


def test_no_norm_variant_zeroes_wz():
    blk = NonLocalBlock(8, norm=False)
    assert blk.norm is None and blk.conv_out.bias is not None
    x = torch.randn(1, 8, 3, 3)
    assert torch.equal(blk(x), x)


@pytest.mark.parametrize("mode", NL_MODES)
def test_ranks_agree(mode):
    blk = randomize_(NonLocalBlock(8, mode=mode), 0.3).eval()
    x3 = torch.randn(2, 8, 2, 3, 4)
    y3 = blk(x3)
    torch.testing.assert_close(y3, blk(x3.reshape(2, 8, 6, 4)).reshape(x3.shape))
    torch.testing.assert_close(y3, blk(x3.reshape(2, 8, 24)).reshape(x3.shape))


def test_subsample_3d_keeps_time():
    blk = randomize_(NonLocalBlock(8, sub_sample=True), 0.3).eval()
    x = torch.randn(1, 8, 3, 4, 6)
    assert blk.attention(x).shape == (1, 72, 3 * 2 * 3)
    assert blk(x).shape == x.shape
    assert blk(torch.randn(1, 8, 10)).shape == (1, 8, 10)


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="mode must be one of"):
        NonLocalBlock(8, mode="cosine")
    with pytest.raises(ValueError, match="leaves 8 // 16 = 0"):
        NonLocalBlock(8, reduction=16)
    with pytest.raises(ValueError, match="built for 8 channels, got input with 4"):
        NonLocalBlock(8)(torch.randn(1, 4, 3, 3))
