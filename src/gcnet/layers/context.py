"""The global-context framework: context modeling -> transform -> fusion.

    z = x * sigmoid(delta_mul(c)) + delta_add(c),   c = sum_j alpha_j x_j   (or mean_j x_j)

One module per step, and the blocks of the family (GC, Simplified NL, SE) are configurations
of :class:`GlobalContextBlock`. Everything works on (N, C, L), (N, C, H, W) and
(N, C, T, H, W) inputs: the context is pooled over *all* positions, and the transform acts
on the pooled (N, C) vector, so the spatial rank never matters after pooling.

Parameter shapes follow the official code (mmcv ``ContextBlock``): 1x1 convs are stored as
``nn.Conv2d`` weights and the LayerNorm over ``[P, 1, 1]``, so published checkpoints convert
by renaming keys only (:func:`gcnet.convert.context_block_from_mmcv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import bottleneck_channels, check_channels, check_choice, check_input

__all__ = [
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "SimplifiedNonLocalBlock",
    "POOLING_TYPES",
    "FUSION_TYPES",
]

POOLING_TYPES = ("att", "avg")
FUSION_TYPES = ("add", "mul")


def _attention_logits(xf: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """W_k x for flattened x (N, C, L) -> (N, L) logits in x's dtype.

    The bias of W_k is left out: it shifts every position's logit by the same amount, and
    the softmax over positions is invariant to that, so alpha is exactly the same (the bias
    is kept as a parameter for checkpoint compatibility; its gradient is exactly zero).
    """
    n, c = xf.shape[0], xf.shape[1]
    w = weight.reshape(1, 1, c).to(xf.dtype).expand(n, 1, c)
    return torch.matmul(w, xf).squeeze(1)


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax runs in float32 for half/bfloat16 inputs, in float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def _attention_pool(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention pooling: (context (N, C) in x's dtype, alpha (N, L) in >= float32)."""
    xf = x.flatten(2)  # (N, C, L): a view, for contiguous and channels_last inputs
    attn = torch.softmax(_attention_logits(xf, weight), dim=-1, dtype=_softmax_dtype(xf.dtype))
    # (N, 1, L) @ (N, L, C): streams x once as a GEMV; (N, C, L) @ (N, L, 1) is ~4x slower
    context = torch.bmm(attn.to(xf.dtype).unsqueeze(1), xf.transpose(1, 2)).squeeze(1)
    return context, attn


class _AttentionPool(torch.autograd.Function):
    """Attention pooling with a hand-written backward.

    Autograd's backward of the two batched GEMVs materialises two full-size gradients in
    transposed layouts and then adds them; here the gradient w.r.t. x is one rank-2 update
    grad_x = g (x) alpha + W_k (x) dlogits written in x's own memory layout, in one pass.
    The backward runs in x's dtype (float32 under a bf16 autocast forward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        context, attn = _attention_pool(x, weight)
        ctx.save_for_backward(x, weight, attn)
        return context

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, attn = ctx.saved_tensors
        xf = x.flatten(2)
        n, c = xf.shape[0], xf.shape[1]
        dt = xf.dtype
        g = grad.to(dt)
        # d context / d alpha, then through the softmax (float32, on (N, L) only)
        grad_attn = torch.bmm(g.unsqueeze(1), xf).squeeze(1).to(attn.dtype)
        dlogits = attn * (grad_attn - (attn * grad_attn).sum(-1, keepdim=True))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            u = torch.stack((g, weight.reshape(1, c).to(dt).expand(n, c)), dim=1)  # (N, 2, C)
            v = torch.stack((attn, dlogits), dim=1).to(dt)  # (N, 2, L)
            if xf.stride(1) == 1 and c > 1:  # channels_last: write (N, L, C) memory order
                grad_x = torch.bmm(v.transpose(1, 2), u).transpose(1, 2)
            else:
                grad_x = torch.bmm(u.transpose(1, 2), v)
            grad_x = grad_x.view(x.shape)
        if ctx.needs_input_grad[1]:
            gw = torch.bmm(dlogits.to(dt).unsqueeze(1), xf.transpose(1, 2)).sum(0)
            grad_w = gw.reshape(weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[2]:  # the softmax is shift-invariant: exactly zero
            grad_b = torch.zeros(1, dtype=weight.dtype, device=weight.device)
        return grad_x, grad_w, grad_b


_WIDE = (torch.float32, torch.float64)  # dtypes whose softmax runs in their own precision
# any device's autocast on? ~0.3 us, against ~2 us for torch.is_autocast_enabled(x.device.type)
_autocast_on = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def _pool_transform(x, wk, w1, b1, lnw, lnb, w2, b2, eps: float, relu: bool = True):
    """The add branch of a GC / SNL block up to the fusion: shift (N, C) and what its backward
    needs, in few ops and no module calls (the per-call cost dominates at 14x14 and 7x7).

    Runs in x's dtype (parameters cast when they differ; the softmax in >= float32). Returns
    (shift, xf, attn, context, h, mean, rstd, a): ``attn`` (N, 1, L), None for avg pooling;
    ``h``, ``mean``, ``rstd`` the LayerNorm's input and statistics (None without it); ``a``
    the input of the last conv (the ReLU output; the context for a single C->C conv).
    ``relu=False``: the bottleneck without its ReLU (the paper's "w/o LN and ReLU" rows).
    """
    xf = x.flatten(2)  # (N, C, L): a view, for contiguous and channels_last inputs
    n, c = xf.shape[0], xf.shape[1]
    dt = xf.dtype
    if w2.dtype != dt:
        wk, w1, b1, lnw, lnb, w2, b2 = (
            None if t is None else t.to(dt) for t in (wk, w1, b1, lnw, lnb, w2, b2)
        )
    if wk is None:
        attn = None
        context = xf.mean(-1)
    else:
        # (N, 1, C) @ (N, C, L): the logits without W_k's bias (the softmax over positions is
        # invariant to it), then (N, 1, L) @ (N, L, C): each streams x once as a GEMV
        logits = torch.bmm(wk.view(1, 1, c).expand(n, 1, c), xf)
        if dt in _WIDE:
            attn = torch.softmax(logits, -1)
            context = torch.bmm(attn, xf.transpose(1, 2)).view(n, c)
        else:
            attn = torch.softmax(logits, -1, dtype=torch.float32)
            context = torch.bmm(attn.to(dt), xf.transpose(1, 2)).view(n, c)
    h = mean = rstd = None
    a = context
    if w1 is not None:
        p = w1.shape[0]
        a = torch.addmm(b1, context, w1.view(p, c).t())
        if lnw is not None:
            h = a
            a, mean, rstd = torch.native_layer_norm(h, (p,), lnw.view(p), lnb.view(p), eps)
        if relu:
            a = torch.relu_(a)  # a fresh tensor: the LayerNorm's backward needs only h, mean, rstd
    shift = torch.addmm(b2, a, w2.view(c, -1).t())
    return shift, xf, attn, context, h, mean, rstd, a


class _GlobalContextAdd(torch.autograd.Function):
    """The whole add-fused block, y = x + delta(pool(x)), as one autograd node.

    Autograd through the plain ops records ~15 nodes per block and materialises the
    pooling's gradient of x before adding the pass-through one. This backward reads dy once
    (the shift's gradient: a sum over positions), runs the transform's backward on (N, P) /
    (N, C) vectors, reads x twice (alpha's and W_k's gradients) and writes
    grad x = dy + g (x) alpha + W_k (x) dlogits in dy's own memory layout with two fused
    multiply-adds. Everything runs in x's dtype (the softmax in >= float32).
    """

    @staticmethod
    def forward(ctx, x, wk, bk, w1, b1, lnw, lnb, w2, b2, eps, relu=True):
        shift, _, attn, context, h, mean, rstd, a = _pool_transform(
            x, wk, w1, b1, lnw, lnb, w2, b2, eps, relu
        )
        ctx.save_for_backward(x, wk, bk, w1, lnw, lnb, w2, attn, context, h, mean, rstd, a)
        ctx.relu = relu
        return x + shift.view(shift.shape + (1,) * (x.dim() - 2))

    @staticmethod
    def backward(ctx, gy):
        if _autocast_on() and torch.is_autocast_enabled(gy.device.type):
            with torch.autocast(gy.device.type, enabled=False):
                return (*_add_backward(ctx.needs_input_grad, gy, *ctx.saved_tensors, relu=ctx.relu), None)
        return (*_add_backward(ctx.needs_input_grad, gy, *ctx.saved_tensors, relu=ctx.relu), None)


def _add_backward(need, gy, x, wk, bk, w1, lnw, lnb, w2, attn, context, h, mean, rstd, a, relu=True):
    """The gradients of :class:`_GlobalContextAdd` (inputs x, wk, bk, w1, b1, lnw, lnb, w2, b2)."""
    xf = x.flatten(2)
    n, c, length = xf.shape
    dt = xf.dtype
    pdt = w2.dtype
    if pdt != dt:  # bf16 / fp16 x with float32 parameters: compute in x's dtype
        wk, w1, lnw, lnb, w2 = (None if t is None else t.to(dt) for t in (wk, w1, lnw, lnb, w2))
    gyf = (gy if gy.dtype == dt else gy.to(dt)).flatten(2)
    g_wk = g_bk = g_w1 = g_b1 = g_lnw = g_lnb = g_w2 = g_b2 = grad_x = None
    gs = gyf.sum(-1)  # (N, C): the gradient of the shift
    if need[7]:
        g_w2 = gs.t().mm(a).view(w2.shape)
    if need[8]:
        g_b2 = gs.sum(0)
    g = gs.mm(w2.view(c, -1))  # the gradient of a, the last conv's input
    if w1 is not None:
        if relu:
            g = torch.ops.aten.threshold_backward(g, a, 0)
        if lnw is not None:
            p = w1.shape[0]
            g, g_lnw, g_lnb = torch.ops.aten.native_layer_norm_backward(
                g, h, (p,), mean, rstd, lnw.view(p), lnb.view(p), (True, need[5], need[6])
            )
            g_lnw = None if g_lnw is None else g_lnw.view(lnw.shape)
            g_lnb = None if g_lnb is None else g_lnb.view(lnb.shape)
        if need[3]:
            g_w1 = g.t().mm(context).view(w1.shape)
        if need[4]:
            g_b1 = g.sum(0)
        g = g.mm(w1.view(-1, c))  # the gradient of the context, (N, C)
    if wk is None:  # average pooling
        if need[0]:
            grad_x = gyf + (g / length).unsqueeze(-1)
    else:
        g_attn = torch.bmm(g.unsqueeze(1), xf)  # (N, 1, L)
        sdt = attn.dtype
        if sdt == dt:
            dlogits = torch._softmax_backward_data(g_attn, attn, -1, sdt)
        else:
            dlogits = torch._softmax_backward_data(g_attn.to(sdt), attn, -1, sdt).to(dt)
            attn = attn.to(dt)
        if need[0]:  # dy + g (x) alpha + W_k (x) dlogits, in dy's layout
            grad_x = torch.addcmul(gyf, g.unsqueeze(-1), attn).addcmul_(wk.view(1, c, 1), dlogits)
        if need[1]:
            g_wk = torch.bmm(dlogits, xf.transpose(1, 2)).sum(0).view(wk.shape)
        if need[2]:  # the softmax is shift-invariant: exactly zero
            g_bk = torch.zeros_like(bk)
    if grad_x is not None:
        grad_x = grad_x.reshape(x.shape)
    grads = [g_wk, g_bk, g_w1, g_b1, g_lnw, g_lnb, g_w2, g_b2]
    if pdt != dt:
        grads = [None if t is None else t.to(pdt) for t in grads]
    return (grad_x, *grads, None)


class ContextModeling(nn.Module):
    """Step 1: pool x (N, C, *spatial) into one context vector per image, (N, C).

    ``att``: logits = W_k x + b (a 1x1 conv C->1), alpha = softmax over all positions
    (computed in float32), context = sum_j alpha_j x_j.  ``avg``: the mean over positions.
    """

    def __init__(self, channels: int, pooling: str = "att") -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.pooling = check_choice("pooling", pooling, POOLING_TYPES)
        if pooling == "att":
            self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        else:
            self.register_module("conv_mask", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv_mask is not None:
            # official init: kaiming normal, fan_in, relu gain; bias 0
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map alpha, (N, L) over the flattened positions (>= float32)."""
        if self.conv_mask is None:
            raise ValueError("pooling='avg' has no attention map")
        xf = x.flatten(2)
        logits = _attention_logits(xf, self.conv_mask.weight)
        return torch.softmax(logits, dim=-1, dtype=_softmax_dtype(xf.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_mask is None:
            return x.flatten(2).mean(dim=-1)
        w, b = self.conv_mask.weight, self.conv_mask.bias
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad or b.requires_grad):
            return _AttentionPool.apply(x, w, b)
        return _attention_pool(x, w)[0]

    def extra_repr(self) -> str:
        return f"{self.channels}, pooling={self.pooling!r}"


class ContextTransform(nn.Module):
    """Step 2, delta: the transform applied to the pooled (N, C) context.

    ``hidden=P``: bottleneck conv C->P, LayerNorm([P,1,1]) (or none), ReLU (or none:
    ``relu=False``), conv P->C (GC, and SE without the norm). ``hidden=None``: one conv C->C
    (Simplified NL). All convs have a bias. ``zero_init_last`` zeroes the last conv (weight
    and bias).
    """

    def __init__(
        self,
        channels: int,
        hidden: int | None,
        norm: bool = True,
        ln_eps: float = 1e-5,
        zero_init_last: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.hidden = hidden
        self.zero_init_last = zero_init_last
        self.relu = bool(relu)
        if hidden is None:
            self.conv_in = self.norm = None
            self.conv_out = nn.Conv2d(channels, channels, kernel_size=1)
        else:
            self.conv_in = nn.Conv2d(channels, hidden, kernel_size=1)
            self.norm = nn.LayerNorm([hidden, 1, 1], eps=ln_eps) if norm else None
            self.conv_out = nn.Conv2d(hidden, channels, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv_in, self.conv_out):
            if conv is not None:
                conv.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.zero_init_last:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _linear(c: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return F.linear(c, conv.weight.flatten(1), conv.bias)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.conv_in is not None:
            c = self._linear(c, self.conv_in)
            if self.norm is not None:
                p = self.norm.normalized_shape[0]
                c = F.layer_norm(
                    c, (p,), self.norm.weight.reshape(p), self.norm.bias.reshape(p), self.norm.eps
                )
            if self.relu:
                c = F.relu(c)
        return self._linear(c, self.conv_out)

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.hidden}" + ("" if self.relu else ", relu=False")


def _as_fusion_tuple(fusion: str | Sequence[str]) -> tuple[str, ...]:
    items = (fusion,) if isinstance(fusion, str) else tuple(fusion)
    if not items:
        raise ValueError(f"fusion needs at least one of {FUSION_TYPES}, got {fusion!r}")
    for f in items:
        check_choice("fusion", f, FUSION_TYPES)
    if len(set(items)) != len(items):
        raise ValueError(f"fusion lists a type twice: {fusion!r}")
    return tuple(f for f in FUSION_TYPES if f in items)  # canonical order


class GlobalContextBlock(nn.Module):
    """The GC block (Cao et al., 2019), and the framework it generalises.

    Args:
        channels: C, the input channels.
        ratio: bottleneck ratio, P = int(C * ratio) (1/16 = "r16", 1/4 = "r4").
            ``None`` uses a single C->C conv as the transform (Simplified NL).
        pooling: ``"att"`` (attention pooling) or ``"avg"`` (average pooling).
        fusion: ``"add"``, ``"mul"`` or both (mul is applied first, then add);
            each fusion has its own transform branch.
        norm: LayerNorm in the bottleneck (GC: True; SE: False).
        ln_eps: LayerNorm epsilon (official 1e-5; timm uses 1e-6).
        zero_init_last: zero the last conv of every branch, so an add-fused block is the
            identity at init and a GC backbone starts as the plain pretrained backbone.
        relu: the ReLU of the bottleneck (False with ``norm=False``: the paper's "r16 without
            LN and ReLU" row; ignored for ``ratio=None``, which has no bottleneck).

    Input (N, C, L), (N, C, H, W) or (N, C, T, H, W); output the same shape.
    """

    def __init__(
        self,
        channels: int,
        ratio: float | None = 1.0 / 16,
        pooling: str = "att",
        fusion: str | Sequence[str] = "add",
        norm: bool = True,
        ln_eps: float = 1e-5,
        zero_init_last: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.ratio = ratio
        self.relu = bool(relu)
        hidden = None if ratio is None else bottleneck_channels(channels, ratio)
        self.fusion = _as_fusion_tuple(fusion)
        self.pool = ContextModeling(channels, pooling)
        make = lambda: ContextTransform(channels, hidden, norm, ln_eps, zero_init_last, relu)  # noqa: E731
        self.transform_mul = make() if "mul" in self.fusion else None
        self.transform_add = make() if "add" in self.fusion else None
        # Fuse into x in place when no gradient is recorded. Only for callers that own x
        # (the backbones set it: their block inputs are temporaries); off by default.
        self.inplace = False

    @property
    def pooling(self) -> str:
        return self.pool.pooling

    def reset_parameters(self) -> None:
        for m in (self.pool, self.transform_mul, self.transform_add):
            if m is not None:
                m.reset_parameters()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The query-independent attention map, shaped like x's positions: (N, *spatial)."""
        check_input(type(self).__name__, x, self.channels)
        return self.pool.attention(x).reshape(x.shape[0], *x.shape[2:])

    def _add_params(self) -> tuple:
        """(W_k, b_k, W_1, b_1, LN weight, LN bias, W_2, b_2, LN eps) of the add branch.

        Read from the modules' own ``_modules`` / ``_parameters`` dicts: nn.Module's
        ``__getattr__`` costs ~30 us for these nine on a slow CPU, the dicts ~1 us. Anything
        unusual (a parametrization, a replaced submodule type) falls back to attributes.
        """
        try:
            mods = self._modules
            pool, t = mods["pool"]._modules["conv_mask"], mods["transform_add"]._modules
            conv_in, norm, conv_out = t["conv_in"], t["norm"], t["conv_out"]._parameters
            wk = bk = w1 = b1 = lnw = lnb = None
            eps = 0.0
            if pool is not None:
                wk, bk = pool._parameters["weight"], pool._parameters["bias"]
            if conv_in is not None:
                w1, b1 = conv_in._parameters["weight"], conv_in._parameters["bias"]
            if norm is not None:
                lnw, lnb, eps = norm._parameters["weight"], norm._parameters["bias"], norm.eps
            return wk, bk, w1, b1, lnw, lnb, conv_out["weight"], conv_out["bias"], eps
        except (KeyError, AttributeError):
            pass
        pool, t = self.pool.conv_mask, self.transform_add
        wk, bk = (None, None) if pool is None else (pool.weight, pool.bias)
        w1, b1 = (None, None) if t.conv_in is None else (t.conv_in.weight, t.conv_in.bias)
        norm = t.norm
        lnw, lnb, eps = (None, None, 0.0) if norm is None else (norm.weight, norm.bias, norm.eps)
        return wk, bk, w1, b1, lnw, lnb, t.conv_out.weight, t.conv_out.bias, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not 3 <= x.dim() <= 5 or x.shape[1] != self.channels:
            check_input(type(self).__name__, x, self.channels)  # raises, naming the mismatch
        if self.transform_mul is not None:
            return self._forward_modules(x)
        # add fusion (GC, SNL, avg + add): one fused path, no submodule calls; under autocast
        # the block runs in x's dtype (its parameters cast), as its backward does
        if _autocast_on() and torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_add(x)
        return self._forward_add(x)

    def _forward_add(self, x: torch.Tensor) -> torch.Tensor:
        wk, bk, w1, b1, lnw, lnb, w2, b2, eps = self._add_params()
        if torch.is_grad_enabled():
            return _GlobalContextAdd.apply(x, wk, bk, w1, b1, lnw, lnb, w2, b2, eps, self.relu)
        shift = _pool_transform(x, wk, w1, b1, lnw, lnb, w2, b2, eps, self.relu)[0]
        shift = shift.view(shift.shape + (1,) * (x.dim() - 2))
        return x.add_(shift) if self.inplace else x + shift

    def _forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """mul fusion (SE, GC with mul or add + mul): pooling and transforms as modules."""
        context = self.pool(x)  # (N, C)
        bshape = (x.shape[0], self.channels) + (1,) * (x.dim() - 2)
        inplace = self.inplace and not torch.is_grad_enabled()
        scale = torch.sigmoid(self.transform_mul(context)).reshape(bshape)
        if self.transform_add is None:
            return x.mul_(scale) if inplace else x * scale
        # mul first, then add, in one pass over x: x * scale + shift
        return torch.addcmul(self.transform_add(context).reshape(bshape), x, scale)

    def extra_repr(self) -> str:
        return f"{self.channels}, ratio={self.ratio}, fusion={self.fusion}"


class SimplifiedNonLocalBlock(GlobalContextBlock):
    """Simplified NL (SNL): query-independent attention pooling, one 1x1 conv C->C, add.

    The conv is zero-initialised (``zero_init_last``) so the block starts as the identity.
    """

    def __init__(self, channels: int, zero_init_last: bool = True) -> None:
        super().__init__(channels, ratio=None, pooling="att", fusion="add", zero_init_last=zero_init_last)
