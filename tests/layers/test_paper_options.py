"""Block options the paper's ablation rows need: GC without the bottleneck's ReLU (and LN),
NL with phi and g on the max-pooled input (the paper's NL), GC with one C->C conv; each
against a hand computation, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

import gcnet
from gcnet.layers import GlobalContextBlock, NonLocalBlock
from tests.conftest import randomize_


def _gc_by_hand(block, x, relu):
    n, c = x.shape[:2]
    xf = x.flatten(2)
    att = torch.softmax(torch.einsum("c,ncl->nl", block.pool.conv_mask.weight.flatten(), xf), -1)
    ctx = torch.einsum("nl,ncl->nc", att, xf)
    t = block.transform_add
    h = F.linear(ctx, t.conv_in.weight.flatten(1), t.conv_in.bias)
    if t.norm is not None:
        h = F.layer_norm(h, h.shape[1:], t.norm.weight.flatten(), t.norm.bias.flatten(), t.norm.eps)
    if relu:
        h = F.relu(h)
    return x + F.linear(h, t.conv_out.weight.flatten(1), t.conv_out.bias).view(n, c, 1, 1)


@pytest.mark.parametrize("norm, relu", [(False, False), (False, True), (True, False), (True, True)])
def test_gc_bottleneck_with_and_without_ln_and_relu(norm, relu):
    torch.manual_seed(0)
    block = randomize_(GlobalContextBlock(16, ratio=1 / 4, norm=norm, relu=relu)).double()
    assert (block.transform_add.norm is not None) == norm and block.transform_add.relu == relu
    x = torch.randn(2, 16, 5, 6, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(block(x), _gc_by_hand(block, x, relu))
    with torch.no_grad():  # the inference path (no autograd node)
        torch.testing.assert_close(block(x), _gc_by_hand(block, x, relu))
    # the fused backward against autograd through the hand computation
    g = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    got = torch.autograd.grad(block(x), [x, *block.parameters()], g, allow_unused=True)
    want = torch.autograd.grad(_gc_by_hand(block, x, relu), [x, *block.parameters()], g, allow_unused=True)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or not a.abs().any()
        else:
            torch.testing.assert_close(a, b)


def test_nl_sub_sample_input_pools_x_before_phi_and_g():
    torch.manual_seed(0)
    nl = randomize_(NonLocalBlock(8, sub_sample="input")).double().eval()
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    xf, xp = x.flatten(2), F.max_pool2d(x, 2).flatten(2)

    def conv(t, m):
        return torch.einsum("oc,ncl->nol", m.weight.flatten(1), t) + (
            0 if m.bias is None else m.bias[:, None]
        )

    att = torch.softmax(
        torch.einsum("ncq,nck->nqk", conv(xf, nl.theta), conv(xp, nl.phi)) / 2.0, -1
    )  # sqrt(C'=4)
    y = conv(torch.einsum("nck,nqk->ncq", conv(xp, nl.g), att), nl.conv_out)
    want = x + nl.norm(y).reshape(x.shape)
    torch.testing.assert_close(nl(x), want)
    torch.testing.assert_close(nl.attention(x), att)
    with pytest.raises(ValueError, match="sub_sample"):
        NonLocalBlock(8, sub_sample="keys")
    # the paper's cost: theta at full resolution, phi and g on a quarter of the positions
    old = NonLocalBlock(8, sub_sample=True)
    assert nl.attention(x).shape == old.attention(x).shape == (2, 24, 6)


def test_block_kwargs_reach_the_block_through_create_model():
    m = gcnet.create_model("gc_resnet18", block_kwargs={"norm": False, "relu": False})
    blocks = list(m.context_blocks().values())
    assert blocks and all(b.transform_add.norm is None and not b.transform_add.relu for b in blocks)
    assert m.norm == "bn"  # the ResNet's own norm is untouched
    with pytest.raises(ValueError, match="not arguments of the 'gc' block"):
        gcnet.create_model("gc_resnet18", block_kwargs={"mode": "dot_product"})
    with pytest.raises(ValueError, match="without a plug-in block"):
        gcnet.create_model("resnet18", block_kwargs={"norm": False})
