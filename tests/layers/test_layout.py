"""Blocks on channels-last maps and token sequences (`gcnet.layers.layout`): parity with the
(N, C, ...) block on permuted inputs, the class token's pass-through against the equations
written out, gradients, keys and errors."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

import gcnet
from gcnet.layers import create_block, list_blocks
from gcnet.layers.layout import LayoutAdapter
from tests.conftest import randomize_

C = 16


def _pair(name: str, layout: str, **kw):
    """(the (N, C, ...) block with random weights, its twin in ``layout`` loaded with them)."""
    ref = randomize_(create_block(name, C, **kw).double(), std=0.3).eval()
    twin = create_block(name, C, layout=layout, **kw).double().eval()
    twin.load_state_dict(ref.state_dict())  # strict: the same keys and shapes
    return ref, twin


def _grads(block) -> dict[str, torch.Tensor]:
    tensors = block.state_dict(keep_vars=True).items()
    return {k: v.grad for k, v in tensors if isinstance(v, torch.nn.Parameter) and v.grad is not None}


BLOCKS = [(n, {}) for n in list_blocks()] + [
    ("gc", {"fusion": ("add", "mul"), "pooling": "avg", "ratio": 1 / 4}),
    ("nl", {"mode": "dot_product", "sub_sample": True}),
]


@pytest.mark.parametrize("name,kw", BLOCKS, ids=[f"{n}{'-' + '-'.join(k) if k else ''}" for n, k in BLOCKS])
def test_nhwc_is_the_nchw_block_on_permuted_inputs(name, kw):
    ref, twin = _pair(name, "nhwc", **kw)
    x = torch.randn(2, C, 6, 4, dtype=torch.float64, requires_grad=True)  # H != W: a swap would show
    xl = x.detach().permute(0, 2, 3, 1).contiguous().requires_grad_()
    want, got = ref(x), twin(xl)
    assert got.shape == (2, 6, 4, C) and got.is_contiguous()
    torch.testing.assert_close(got, want.permute(0, 2, 3, 1), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(want)
    (want * g).sum().backward()
    (got * g.permute(0, 2, 3, 1)).sum().backward()
    torch.testing.assert_close(xl.grad, x.grad.permute(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    assert _grads(ref).keys() == _grads(twin).keys()
    for k, v in _grads(ref).items():
        torch.testing.assert_close(_grads(twin)[k], v, rtol=1e-10, atol=1e-12, msg=k)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, C), (2, 7, C)], ids=["5d", "3d"])
@pytest.mark.parametrize("name", ["gc", "snl", "se"])
def test_nhwc_any_rank_and_nlc_without_prefix(name, shape):
    ref, twin = _pair(name, "nhwc")
    tokens = create_block(name, C, layout="nlc").double()
    tokens.load_state_dict(ref.state_dict())
    x = torch.randn(shape, dtype=torch.float64)
    want = ref(x.movedim(-1, 1)).movedim(1, -1)
    torch.testing.assert_close(twin(x), want, rtol=1e-12, atol=1e-12)
    if len(shape) == 3:
        torch.testing.assert_close(tokens(x), want, rtol=1e-12, atol=1e-12)


def _gc_by_hand(blk, t):
    """The GC block's equations on tokens t (N, L, C) written out: alpha = softmax_j(w_k t_j),
    z_i = t_i + W2 ReLU(LN(W1 sum_j alpha_j t_j + b1)) + b2."""
    wk = blk.pool.conv_mask.weight.reshape(C)
    t_add = blk.transform_add
    w1, b1 = t_add.conv_in.weight.flatten(1), t_add.conv_in.bias
    w2, b2 = t_add.conv_out.weight.flatten(1), t_add.conv_out.bias
    alpha = torch.softmax(t @ wk + blk.pool.conv_mask.bias, dim=1)  # (N, L)
    context = torch.einsum("nl,nlc->nc", alpha, t)
    h = context @ w1.T + b1
    h = F.layer_norm(h, h.shape[-1:], t_add.norm.weight.flatten(), t_add.norm.bias.flatten(), t_add.norm.eps)
    return t + (torch.relu(h) @ w2.T + b2).unsqueeze(1)


def _se_by_hand(blk, t):
    """SE on tokens: z_i = t_i * sigmoid(W2 ReLU(W1 mean_j t_j + b1) + b2)."""
    tm = blk.transform_mul
    w1, b1 = tm.conv_in.weight.flatten(1), tm.conv_in.bias
    w2, b2 = tm.conv_out.weight.flatten(1), tm.conv_out.bias
    return t * torch.sigmoid(torch.relu(t.mean(1) @ w1.T + b1) @ w2.T + b2).unsqueeze(1)


@pytest.mark.parametrize("prefix", [0, 1, 4], ids=["no-cls", "cls", "cls+3-registers"])
@pytest.mark.parametrize("name,by_hand", [("gc", _gc_by_hand), ("se", _se_by_hand)], ids=["gc", "se"])
def test_nlc_prefix_tokens_pass_through_and_stay_out_of_the_context(name, by_hand, prefix):
    blk = randomize_(create_block(name, C, layout="nlc", prefix_tokens=prefix, ratio=1 / 4).double(), std=0.3)
    x = torch.randn(2, prefix + 9, C, dtype=torch.float64)
    y = blk(x)
    assert y.shape == x.shape
    assert torch.equal(y[:, :prefix], x[:, :prefix])  # passed through, bit for bit
    torch.testing.assert_close(y[:, prefix:], by_hand(blk.block, x[:, prefix:]), rtol=1e-12, atol=1e-12)
    # the prefix tokens do not reach the patch tokens: change them, the rest stays
    x2 = x.clone()
    x2[:, :prefix] += 10.0
    assert torch.equal(blk(x2)[:, prefix:], y[:, prefix:])
    if name == "gc":  # the attention map covers the patch tokens only
        assert blk.attention(x).shape == (2, 9)


def test_nlc_gradcheck_with_a_class_token():
    blk = randomize_(create_block("gc", 4, layout="nlc", prefix_tokens=1, ratio=1 / 2).double(), std=0.5)
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,))


def test_adapter_keys_attributes_copies():
    ref, twin = _pair("gc", "nhwc", ratio=1 / 4)
    assert isinstance(twin, LayoutAdapter) and list(twin.state_dict()) == list(ref.state_dict())
    assert twin.channels == C and twin.fusion == ("add",) and twin.layout == "nhwc"  # the block's attributes
    assert "layout='nhwc'" in repr(twin)
    x = torch.randn(1, 5, 5, C, dtype=torch.float64)
    torch.testing.assert_close(twin.attention(x), ref.attention(x.permute(0, 3, 1, 2)))
    buf = io.BytesIO()
    torch.save(twin, buf)
    for clone in (copy.deepcopy(twin), torch.load(io.BytesIO(buf.getvalue()), weights_only=False)):
        assert torch.equal(clone(x), twin(x))
    assert type(create_block("gc", C)) is gcnet.GlobalContextBlock  # nchw: no adapter
    fresh = create_block("gc", C, layout="nhwc")
    assert torch.equal(fresh(x.float()), x.float())  # identity at init, as the (N, C, ...) block


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"layout": "NHWC"}, r"layout must be one of \('nchw', 'nhwc', 'nlc'\)"),
        ({"layout": "nhwc", "prefix_tokens": 1}, r"prefix_tokens=1 needs layout='nlc'"),
        ({"layout": "nlc", "prefix_tokens": -1}, r"prefix_tokens must be a non-negative int"),
        ({"layout": "nlc", "prefix_tokens": True}, r"prefix_tokens must be a non-negative int"),
    ],
)
def test_bad_layout_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        create_block("gc", C, **kw)


@pytest.mark.parametrize(
    "layout,prefix,shape,message",
    [
        ("nhwc", 0, (1, C, 5, 5), r"layout='nhwc'\) expects .* C = 16, got shape \(1, 16, 5, 5\)"),
        ("nhwc", 0, (1, 2, 3, 4, 5, C), r"expects a \(N, L, C\), \(N, H, W, C\) or \(N, T, H, W, C\)"),
        ("nlc", 0, (1, 4, 4, C), r"layout='nlc'\) expects a \(N, L, C\) input"),
        ("nlc", 2, (1, 2, C), r"with more than 2 tokens, got shape \(1, 2, 16\)"),
    ],
)
def test_bad_inputs_name_the_layout_and_the_shape(layout, prefix, shape, message):
    blk = create_block("gc", C, layout=layout, prefix_tokens=prefix)
    with pytest.raises(ValueError, match=message) as e:
        blk(torch.zeros(shape))
    assert "\n" not in str(e.value)
