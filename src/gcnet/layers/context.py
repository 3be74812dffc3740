"""The global-context framework: context modeling -> transform -> fusion.

    z = x * sigmoid(delta_mul(c)) + delta_add(c),   c = sum_j alpha_j x_j   (or mean_j x_j)

One module per step, and the blocks of the family (GC, Simplified NL, SE) are configurations
of `GlobalContextBlock`. Everything works on (N, C, L), (N, C, H, W) and
(N, C, T, H, W) inputs: the context is pooled over *all* positions, and the transform acts
on the pooled (N, C) vector, so the spatial rank never matters after pooling.

Parameter shapes follow the official code (mmcv ``ContextBlock``): 1x1 convs are stored as
``nn.Conv2d`` weights and the LayerNorm over ``[P, 1, 1]``, so published checkpoints convert
by renaming keys only (`gcnet.convert.context_block_from_mmcv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._info import BlockInfo
from ._validate import bottleneck_channels, check_channels, check_choice, check_input

__all__ = [
    "ContextModeling",
    "ContextTransform",
    "GlobalContextBlock",
    "PointwiseConv",
    "SimplifiedNonLocalBlock",
    "POOLING_TYPES",
    "FUSION_TYPES",
]

POOLING_TYPES = ("att", "avg")
FUSION_TYPES = ("add", "mul")


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """Softmax runs in float32 for half/bfloat16 inputs, in float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


_WIDE = (torch.float32, torch.float64)
_SPATIAL_DIMS = {3: (2,), 4: (2, 3), 5: (2, 3, 4)}  # dtypes whose softmax runs in their own precision


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward / backward hooks of its own (what nn.Module's ``__call__``
    looks at before it takes its own fast path)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)  # fmt: skip


def _run(module: nn.Module, *args):
    """``module(*args)``; without hooks of its own, its ``forward`` directly, which skips
    ``nn.Module.__call__``'s bookkeeping (~3-4 us a call, a sixth of a 14x14 block's fixed
    cost). A hooked submodule is called as usual, so its hooks fire. (Global hooks, from
    ``register_module_forward_hook``, fire for the block itself, not for its submodules.)"""
    return module(*args) if has_hooks(module) else module.forward(*args)


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution applied as a matrix product over every position.

    The parameters are an ``nn.Conv2d``'s (the official shapes: checkpoints load unchanged),
    and the module is called like any other (its hooks fire), but its input may have any
    rank, (N, C, *spatial): the pooled (N, C, 1, 1) context is one ``addmm`` (a 1x1
    ``F.conv2d`` costs ~3x that on the CPU), the attention logits (C -> 1) one GEMV per image
    in x's own layout (contiguous or channels last), and (N, C, L) / (N, C, T, H, W) inputs
    work as they do for 2D ones. Runs in the input's dtype (the weights cast when they differ).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, vectors: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)
        # its inputs are pooled contexts, one position per image (a property of where the conv
        # sits, not of the input's size: a 1x1 feature map must not change the traced graph)
        self.vectors = vectors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the parameters from the module's dict (~0.06 us; attribute lookup ~0.5-3 us), the
        # attributes where they are not there (a parametrization)
        params = self._parameters
        w, b = params.get("weight"), params.get("bias")
        if w is None:
            w, b = self.weight, self.bias
        if w.dtype != x.dtype:
            w, b = w.to(x.dtype), None if b is None else b.to(x.dtype)
        shape = x.shape
        n, c, o = shape[0], shape[1], w.shape[0]
        if self.vectors:  # one position per image (the pooled context): one GEMM
            y = F.linear(x.reshape(n, c), w.view(o, c), b)
        else:
            xf = x.flatten(2)  # (N, C, L): a view, for contiguous and channels_last inputs
            if o == 1:  # (N, 1, C) @ (N, C, L): streams x once as a GEMV
                wv = w.view(1, 1, c).expand(n, 1, c)
                y = torch.bmm(wv, xf)  # the bias on the small (N, 1, L) result: cheaper than baddbmm
                if b is not None:
                    y = y.add_(b) if not y.requires_grad else y + b
            else:
                y = torch.matmul(w.view(o, c), xf)
                if b is not None:
                    y = y + b.view(1, o, 1)
        return y.view(n, o, *shape[2:])


class _AttentionPool(torch.autograd.Function):
    """Attention pooling (the module path: mul fusion with gradients) with a hand-written
    backward.

    Autograd's backward of the two batched GEMVs materialises two full-size gradients in
    transposed layouts and then adds them; here the gradient w.r.t. x is one rank-2 update
    grad_x = g (x) alpha + W_k (x) dlogits written in x's own memory layout, in one pass.
    The backward runs in x's dtype (float32 under a bf16 autocast forward).
    """

    @staticmethod
    def forward(ctx, pool, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        context, attn = pool._pool(x, pool.conv_mask)
        ctx.save_for_backward(x, weight, attn)
        return context

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, attn = ctx.saved_tensors
        xf = x.flatten(2)
        n, c = xf.shape[0], xf.shape[1]
        dt = xf.dtype
        g = grad.to(dt)
        attn = attn.view(n, -1)
        # d context / d alpha, then through the softmax (>= float32, on (N, L) only)
        grad_attn = torch.bmm(g.unsqueeze(1), xf).squeeze(1).to(attn.dtype)
        dlogits = _softmax_backward(grad_attn, attn)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            u = torch.stack((g, weight.reshape(1, c).to(dt).expand(n, c)), dim=1)  # (N, 2, C)
            v = torch.stack((attn, dlogits), dim=1).to(dt)  # (N, 2, L)
            if xf.stride(1) == 1 and c > 1:  # channels_last: write (N, L, C) memory order
                grad_x = torch.bmm(v.transpose(1, 2), u).transpose(1, 2)
            else:
                grad_x = torch.bmm(u.transpose(1, 2), v)
            grad_x = grad_x.view(x.shape)
        if ctx.needs_input_grad[2]:
            gw = torch.bmm(dlogits.to(dt).unsqueeze(1), xf.transpose(1, 2)).sum(0)
            grad_w = gw.reshape(weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[3]:  # the softmax is shift-invariant: exactly zero
            grad_b = torch.zeros(1, dtype=weight.dtype, device=weight.device)
        return None, grad_x, grad_w, grad_b


def _softmax_backward(grad: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The gradient of the logits of p = softmax(logits, -1): p * (grad - <p, grad>).
    ``grad`` is consumed (written in place when it is a fresh tensor of p's dtype)."""
    dot = (grad * p).sum(-1, keepdim=True)
    return grad.sub_(dot).mul_(p)


def _layer_norm_backward(g, h, weight, eps: float, need_w: bool, need_b: bool):
    """LayerNorm's backward over the last dim of (N, P) ``h`` (statistics recomputed: (N, P) is
    small), in >= float32: (grad h, grad weight or None, grad bias or None)."""
    dt = _softmax_dtype(h.dtype)
    if h.dtype != dt or g.dtype != dt or weight.dtype != dt:
        g, h, weight = g.to(dt), h.to(dt), weight.to(dt)
    var, mean = torch.var_mean(h, -1, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    xhat = (h - mean) * rstd
    g_w = (g * xhat).sum(0) if need_w else None
    g_b = g.sum(0) if need_b else None
    gx = g * weight
    m2 = (gx * xhat).mean(-1, keepdim=True)
    gh = torch.addcmul(gx - gx.mean(-1, keepdim=True), xhat, m2, value=-1).mul_(rstd)
    return gh, g_w, g_b


class _GlobalContextAdd(torch.autograd.Function):
    """The whole add-fused block, y = x + delta(pool(x)), as one autograd node.

    The forward calls the block's modules (``pool`` -> ``conv_mask``; ``transform_add`` ->
    ``conv_in``, ``norm``, ``conv_out``), so their forward hooks fire, and keeps what the
    backward needs. Autograd through the plain ops records ~15 nodes per block and
    materialises the pooling's gradient of x before adding the pass-through one. This
    backward reads dy once (the shift's gradient: a sum over positions), runs the transform's
    backward on (N, P) / (N, C) vectors, reads x twice (alpha's and W_k's gradients) and
    writes grad x = dy + g (x) alpha + W_k (x) dlogits in dy's own memory layout with two
    fused multiply-adds. Everything runs in x's dtype (the softmax and the LayerNorm's
    backward in >= float32). Public torch ops only.
    """

    @staticmethod
    def forward(ctx, block, x, wk, bk, w1, b1, lnw, lnb, w2, b2):
        saved: dict = {}
        shift = block._shift(x, saved)
        t = block.transform_add
        ctx.relu = t.relu
        ctx.eps = 0.0 if lnw is None else t.norm.eps
        ctx.save_for_backward(
            x, wk, bk, w1, lnw, lnb, w2, saved.get("attn"), saved["input"], saved.get("hidden"), saved["act"]
        )
        return x + shift

    @staticmethod
    def backward(ctx, gy):
        need = ctx.needs_input_grad[1:]
        if torch.is_autocast_enabled(gy.device.type):
            with torch.autocast(gy.device.type, enabled=False):
                return (None, *_add_backward(need, gy, *ctx.saved_tensors, ctx.relu, ctx.eps))
        return (None, *_add_backward(need, gy, *ctx.saved_tensors, ctx.relu, ctx.eps))


def _direct_shift(x, wk, bk, w1, b1, lnw, lnb, w2, b2, eps: float, relu: bool, saved: dict | None):
    """The add branch's shift, (N, C), as the modules compute it (attention pooling or the
    mean, conv C->P, LayerNorm, ReLU, conv P->C; or one conv C->C) but without their calls;
    ``saved`` receives what the fused backward needs, shaped as the modules save it. The
    logits leave W_k's bias out: the softmax over positions is invariant to it."""
    xf = x.flatten(2)  # (N, C, L): a view, for contiguous and channels_last inputs
    n, c = xf.shape[0], xf.shape[1]
    dt = xf.dtype
    if w2.dtype != dt:  # bf16 / fp16 x with float32 parameters: compute in x's dtype
        wk, w1, b1, lnw, lnb, w2, b2 = (
            None if t is None else t.to(dt) for t in (wk, w1, b1, lnw, lnb, w2, b2)
        )
    attn = None
    if wk is None:
        context = xf.mean(-1)
    else:
        logits = torch.bmm(wk.view(1, 1, c).expand(n, 1, c), xf)  # (N, 1, L)
        attn = torch.softmax(logits, -1) if dt in _WIDE else torch.softmax(logits, -1, dtype=torch.float32)
        context = torch.bmm(attn if dt in _WIDE else attn.to(dt), xf.transpose(1, 2)).view(n, c)
    h, a = None, context
    if w1 is not None:
        p = w1.shape[0]
        a = h = torch.addmm(b1, context, w1.view(p, c).t())
        if lnw is not None:
            a = F.layer_norm(h, (p,), lnw.reshape(p), lnb.reshape(p), eps)
        if relu:
            a = torch.relu(a)
    if saved is not None:
        saved.update(attn=attn, input=context, hidden=h, act=a)
    return torch.addmm(b2, a, w2.view(c, -1).t())


def _add_backward(need, gy, x, wk, bk, w1, lnw, lnb, w2, attn, context, h, a, relu: bool, eps: float):
    """The gradients of `_GlobalContextAdd` (inputs x, wk, bk, w1, b1, lnw, lnb, w2, b2)."""
    xf = x.flatten(2)
    n, c, length = xf.shape
    dt = xf.dtype
    pdt = w2.dtype
    if pdt != dt:  # bf16 / fp16 x with float32 parameters: compute in x's dtype
        wk, w1, w2 = (None if t is None else t.to(dt) for t in (wk, w1, w2))
    gyf = (gy if gy.dtype == dt else gy.to(dt)).flatten(2)
    g_wk = g_bk = g_w1 = g_b1 = g_lnw = g_lnb = g_w2 = g_b2 = grad_x = None
    a = a.reshape(n, -1)  # the last conv's input (the ReLU output; the context for SNL)
    gs = gyf.sum(-1)  # (N, C): the gradient of the shift
    if need[7]:
        g_w2 = gs.t().mm(a).view(w2.shape)
    if need[8]:
        g_b2 = gs.sum(0)
    g = gs.mm(w2.view(c, -1))  # the gradient of a
    if w1 is not None:
        p = w1.shape[0]
        if relu:
            g = g * (a > 0)
        if lnw is not None:
            g, g_lnw, g_lnb = _layer_norm_backward(g, h.reshape(n, p), lnw.reshape(p), eps, need[5], need[6])
            g = g.to(dt)
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
        if attn.dtype == dt:
            dlogits = _softmax_backward(g_attn, attn)
        else:
            dlogits = _softmax_backward(g_attn.to(attn.dtype), attn).to(dt)
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
    return (grad_x, *grads)


class ContextModeling(nn.Module):
    """Step 1: pool x (N, C, *spatial) into one context vector per image, (N, C).

    ``att``: logits = W_k x + b (a 1x1 conv C->1, `PointwiseConv`), alpha = softmax over
    all positions (computed in float32), context = sum_j alpha_j x_j.  ``avg``: the mean over
    positions. ``saved`` (a dict, for the block's fused path): receives alpha as ``"attn"``.
    """

    def __init__(self, channels: int, pooling: str = "att") -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.pooling = check_choice("pooling", pooling, POOLING_TYPES)
        if pooling == "att":
            self.conv_mask = PointwiseConv(channels, 1)
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
        logits = _run(self.conv_mask, x).reshape(x.shape[0], -1)
        return torch.softmax(logits, dim=-1, dtype=_softmax_dtype(x.dtype))

    def _pool(self, x: torch.Tensor, conv_mask: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (N, C) in x's dtype, alpha (N, 1, L) in >= float32)."""
        xf = x.flatten(2)  # (N, C, L): a view, for contiguous and channels_last inputs
        n, c = xf.shape[0], xf.shape[1]
        logits = conv_mask(x).reshape(n, 1, -1)
        if xf.dtype in _WIDE:
            attn = a = torch.softmax(logits, -1)
        else:
            attn = torch.softmax(logits, -1, dtype=torch.float32)
            a = attn.to(xf.dtype)
        # (N, 1, L) @ (N, L, C): streams x once as a GEMV; (N, C, L) @ (N, L, 1) is ~4x slower
        return torch.bmm(a, xf.transpose(1, 2)).view(n, c), attn

    def forward(self, x: torch.Tensor, saved: dict | None = None) -> torch.Tensor:
        conv_mask = self._modules["conv_mask"]  # the dict: ~0.06 us, the attribute ~0.5-3 us
        if conv_mask is None:  # a reduction over the spatial dims in place: cheaper than over flatten(2)
            return x.mean(dim=_SPATIAL_DIMS[x.dim()], keepdim=True).view(x.shape[0], x.shape[1])
        if torch.is_grad_enabled():
            w, b = conv_mask.weight, conv_mask.bias
            if x.requires_grad or w.requires_grad or b.requires_grad:
                return _AttentionPool.apply(self, x, w, b)
        context, attn = self._pool(x, conv_mask)
        if saved is not None:
            saved["attn"] = attn
        return context

    def extra_repr(self) -> str:
        return f"{self.channels}, pooling={self.pooling!r}"


class ContextTransform(nn.Module):
    """Step 2, delta: the transform applied to the pooled (N, C) context.

    ``hidden=P``: bottleneck conv C->P, LayerNorm([P,1,1]) (or none), ReLU (or none:
    ``relu=False``), conv P->C (GC, and SE without the norm). ``hidden=None``: one conv C->C
    (Simplified NL). All convs have a bias (`PointwiseConv`, called on the (N, C, 1, 1)
    context, as in the official code). ``zero_init_last`` zeroes the last conv (weight and
    bias). ``saved`` (a dict, for the block's fused path): receives the input, the first
    conv's output (``"hidden"``) and the last conv's input (``"act"``).
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
            self.conv_out = PointwiseConv(channels, channels, vectors=True)
        else:
            self.conv_in = PointwiseConv(channels, hidden, vectors=True)
            self.norm = nn.LayerNorm([hidden, 1, 1], eps=ln_eps) if norm else None
            self.conv_out = PointwiseConv(hidden, channels, vectors=True)
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

    def forward(self, c: torch.Tensor, saved: dict | None = None) -> torch.Tensor:
        mods = self._modules  # the dict: ~0.06 us per name, the attributes ~0.5-3 us
        a = c.reshape(c.shape[0], -1, 1, 1)
        h = None
        conv_in = mods.get("conv_in")
        if conv_in is not None:
            a = h = _run(conv_in, a)
            norm = mods.get("norm")
            if norm is not None:
                a = _run(norm, a)
            if self.relu:
                a = F.relu(a)
        if saved is not None:
            saved["input"], saved["hidden"], saved["act"] = c, h, a
        return _run(mods["conv_out"], a).flatten(1)

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

    info = BlockInfo(
        title="GC",
        pooling="attention pooling: softmax over all positions of a 1x1 conv C->1",
        transform="1x1 conv C->C/16, LayerNorm, ReLU, 1x1 conv C/16->C (last one zero-initialised)",
        fusion="add",
        identity_at_init=True,
        dims=(1, 2, 3),
        paper="Cao et al., GCNet, ICCVW 2019 / TPAMI 2020",
        timm=("gca", "gc"),
        timm_classes=("GlobalContext",),
        note="timm's `gc` is scale (mul) fusion with r = 1/8; the paper's GC (add fusion) is timm's `gca`",
    )

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
        # Fuse into x in place when no gradient is recorded. Only for callers that own x and
        # whose x is no module's output (a hook may hold it): off by default.
        self.inplace = False
        # The add-fused block as one autograd node with a hand-written backward (its modules'
        # forward hooks fire; a hook that *replaces* a submodule's output is not
        # differentiated through: set False for plain autograd through the modules).
        self.fused = True

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
        """(W_k, b_k, W_1, b_1, LN weight, LN bias, W_2, b_2) of the add branch (None where absent):
        the fused node's inputs, so that autograd knows the parameters it differentiates.

        Read from the modules' own ``_modules`` / ``_parameters`` dicts: nn.Module's
        ``__getattr__`` costs ~0.5-3 us per name, the dicts ~0.06 us. Anything unusual (a
        parametrization, a replaced submodule type) falls back to attributes.
        """
        try:
            mods = self._modules
            pool, t = mods["pool"]._modules["conv_mask"], mods["transform_add"]._modules
            conv_in, norm, conv_out = t["conv_in"], t["norm"], t["conv_out"]._parameters
            wk = bk = w1 = b1 = lnw = lnb = None
            if pool is not None:
                wk, bk = pool._parameters["weight"], pool._parameters["bias"]
            if conv_in is not None:
                w1, b1 = conv_in._parameters["weight"], conv_in._parameters["bias"]
            if norm is not None:
                lnw, lnb = norm._parameters["weight"], norm._parameters["bias"]
            return wk, bk, w1, b1, lnw, lnb, conv_out["weight"], conv_out["bias"]
        except (KeyError, AttributeError):
            pass
        pool, t = self.pool.conv_mask, self.transform_add
        wk, bk = (None, None) if pool is None else (pool.weight, pool.bias)
        w1, b1 = (None, None) if t.conv_in is None else (t.conv_in.weight, t.conv_in.bias)
        lnw, lnb = (None, None) if t.norm is None else (t.norm.weight, t.norm.bias)
        return wk, bk, w1, b1, lnw, lnb, t.conv_out.weight, t.conv_out.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not 3 <= x.dim() <= 5 or x.shape[1] != self.channels:
            check_input(type(self).__name__, x, self.channels)  # raises, naming the mismatch
        if self.transform_mul is not None:
            return self._forward_modules(x)
        # add fusion (GC, SNL, avg + add): under autocast the block runs in x's dtype (its
        # parameters cast), as its backward does
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward_add(x)
        return self._forward_add(x)

    def _hooked(self, branch: str = "transform_add") -> bool:
        """Whether a submodule of the pooling or of a branch has hooks (which must then see its call)."""
        mods = self._modules
        pool, t = mods["pool"], mods[branch]
        subs = (pool, pool._modules.get("conv_mask"), t, *t._modules.values())
        return any(m is not None and has_hooks(m) for m in subs)

    def _shift(self, x: torch.Tensor, saved: dict | None = None) -> torch.Tensor:
        """delta(pool(x)) of the add branch, shaped (N, C, 1, ...) to broadcast over x: through
        the submodules when one of them has hooks, else the same arithmetic in a few direct
        ops (the module calls cost ~8% of a block at 14x14)."""
        mods = self._modules  # the dict: ~0.06 us a name, the attributes ~0.5-3 us
        if self._hooked():
            shift = _run(mods["transform_add"], _run(mods["pool"], x, saved), saved)
        else:
            t = mods["transform_add"]
            eps = t.norm.eps if t.norm is not None else 0.0
            shift = _direct_shift(x, *self._add_params(), eps, t.relu, saved)
        return shift.view(shift.shape + (1,) * (x.dim() - 2))

    def _forward_add(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            if self.fused and not torch.compiler.is_compiling():
                wk, bk, w1, b1, lnw, lnb, w2, b2 = self._add_params()
                return _GlobalContextAdd.apply(self, x, wk, bk, w1, b1, lnw, lnb, w2, b2)
            return x + self._shift(x)  # autograd through the modules (compiled: inductor fuses)
        shift = self._shift(x)
        return x.add_(shift) if self.inplace else x + shift

    def _forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """mul fusion (SE, GC with mul or add + mul): pooling and transforms as modules (each
        called through `_run`: its hooks fire when it has any, else its ``forward`` directly)."""
        mods = self._modules  # the dict: ~0.06 us a name, the attributes ~0.5-3 us
        scale = self._direct_scale(x)
        if scale is not None:  # SE without hooks: the same arithmetic in a few direct ops
            return x.mul_(scale) if self.inplace and not torch.is_grad_enabled() else x * scale
        context = _run(mods["pool"], x)  # (N, C)
        bshape = (x.shape[0], self.channels) + (1,) * (x.dim() - 2)
        scale = torch.sigmoid(_run(mods["transform_mul"], context)).reshape(bshape)
        transform_add = mods.get("transform_add")  # None: a plain attribute, not in the dict
        if transform_add is None:
            return x.mul_(scale) if self.inplace and not torch.is_grad_enabled() else x * scale
        # mul first, then add, in one pass over x: x * scale + shift
        return torch.addcmul(_run(transform_add, context).reshape(bshape), x, scale)

    def _direct_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """sigmoid(delta(mean of x)), shaped (N, C, 1, ...), for an SE-like block (avg pooling, mul
        fusion only, a bottleneck without norm, `PointwiseConv` layers with plain parameters, no
        hooks) in direct ops: the module calls and reshapes cost ~5% of a block at 14x14. None
        for any other configuration (the caller then runs the modules)."""
        mods = self._modules
        pool, t = mods["pool"], mods.get("transform_mul")
        if mods.get("transform_add") is not None or t is None or pool._modules.get("conv_mask") is not None:
            return None
        tm = t._modules
        conv_in, conv_out = tm.get("conv_in"), tm.get("conv_out")
        if (
            tm.get("norm") is not None
            or type(conv_in) is not PointwiseConv
            or type(conv_out) is not PointwiseConv
        ):
            return None
        p1, p2 = conv_in._parameters, conv_out._parameters
        w1, b1, w2, b2 = p1.get("weight"), p1.get("bias"), p2.get("weight"), p2.get("bias")
        if w1 is None or w2 is None or self._hooked("transform_mul"):
            return None
        if w1.dtype != x.dtype:  # as `PointwiseConv`: the weights in x's dtype
            w1, b1 = w1.to(x.dtype), None if b1 is None else b1.to(x.dtype)
        if w2.dtype != x.dtype:
            w2, b2 = w2.to(x.dtype), None if b2 is None else b2.to(x.dtype)
        n, rank = x.shape[0], x.dim()
        h = F.linear(x.mean(dim=_SPATIAL_DIMS[rank]), w1.view(w1.shape[0], -1), b1)
        if t.relu:
            h = F.relu(h)
        g = torch.sigmoid(F.linear(h, w2.view(w2.shape[0], -1), b2))
        return g.view((n, g.shape[1]) + (1,) * (rank - 2))

    def extra_repr(self) -> str:
        return f"{self.channels}, ratio={self.ratio}, fusion={self.fusion}"


class SimplifiedNonLocalBlock(GlobalContextBlock):
    """Simplified NL (SNL): query-independent attention pooling, one 1x1 conv C->C, add.

    The conv is zero-initialised (``zero_init_last``) so the block starts as the identity.
    """

    info = BlockInfo(
        title="Simplified NL",
        pooling="attention pooling: softmax over all positions of a 1x1 conv C->1",
        transform="1x1 conv C->C (zero-initialised)",
        fusion="add",
        identity_at_init=True,
        dims=(1, 2, 3),
        paper="Cao et al., GCNet, ICCVW 2019",
    )

    def __init__(self, channels: int, zero_init_last: bool = True) -> None:
        super().__init__(channels, ratio=None, pooling="att", fusion="add", zero_init_last=zero_init_last)
