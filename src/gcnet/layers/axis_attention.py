"""The light global-context blocks that keep a spatial axis, or add a spatial gate: CBAM, coordinate
attention, ELA, strip attention. Each is the framework's pooling -> transform -> fusion.

The framework's context modeling pools x (N, C, *spatial) over *all* positions into one vector per
image. These blocks generalise it in one of two ways:

- **axis-keeping pooling** (`AxisPooling`, `axis_pool`): pool over every spatial axis but one. For
  (N, C, H, W), keeping H gives one context per row, (N, C, H, 1), keeping W one per column,
  (N, C, 1, W). The transform then acts on these 1D sequences (a 1x1 conv over channels shared by
  every position of the sequence, or a 1D conv along it), and the fusion broadcasts the two gates
  back over x. It is still global context: the context of row h is the mean of the *whole* row,
  so every output position (h, w) sees all of row h and all of column w (W + H - 1 positions, a
  criss-cross; with a k-tap 1D conv along the kept axis, k rows and k columns), against the one
  all-positions vector of GC / SE. What it buys is position: the gate varies along H and W.
  Cost for (N, C, H, W): each pooling reads x once (O(NCHW)); the contexts hold N*C*(H + W)
  values, so the transform costs O((H + W) * C * P) per image instead of O(C * P) for SE; the
  fusion is one pass over x.
- **channel pooling** (CBAM's spatial gate): pool over the channels instead, mean and max, keeping
  every position: (N, 1, H, W) contexts, a k x k conv as the transform, a per-position gate.

None of these starts as the identity: all fuse by scaling (x * gate, gate in (0, 1)).
The parity reference is timm (`timm.layers.create_attn(name, C)`): every block has `from_timm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from ._info import BlockInfo
from ._validate import check_channels, check_choice
from .context import PointwiseConv, _run

__all__ = [
    "ACTIVATIONS",
    "GATES",
    "AxisPooling",
    "CBAM",
    "CoordAttention",
    "EfficientLocalAttention",
    "LightCBAM",
    "SequenceConv",
    "SequenceLinear",
    "SimpleCoordAttention",
    "StripAttention",
    "axis_pool",
    "make_divisible",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "silu": F.silu,
    "hard_swish": F.hardswish,
    "gelu": F.gelu,
}
GATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": F.hardsigmoid,
}
POOL_MODES = ("avg", "max")

# timm's module classes -> our names (timm's own activations and torch's)
_TIMM_ACTS = {
    "ReLU": "relu",
    "SiLU": "silu",
    "Swish": "silu",
    "Hardswish": "hard_swish",
    "HardSwish": "hard_swish",
    "GELU": "gelu",
}
_TIMM_GATES = {"Sigmoid": "sigmoid", "Hardsigmoid": "hard_sigmoid", "HardSigmoid": "hard_sigmoid"}


# ---------------------------------------------------------------------------------------------
# argument checks and small helpers


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's channel rounding: v to the nearest multiple of ``divisor`` (at least ``min_value``,
    default ``divisor``), one step up if that lost more than ``1 - round_limit`` of v."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _odd(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd int >= 1 (the gate keeps the input's size), got {value!r}")
    return value


def _reduced(
    channels: int, rd_ratio: float, rd_channels: int | None, rd_divisor: int, factor: float = 1.0
) -> int:
    """timm's bottleneck width: ``rd_channels`` if given, else make_divisible(C * rd_ratio * factor,
    rd_divisor, round_limit=0)."""
    _number("rd_ratio", rd_ratio)
    _int("rd_divisor", rd_divisor)
    if rd_channels is not None:
        return _int("rd_channels", rd_channels)
    return make_divisible(channels * rd_ratio * factor, rd_divisor, round_limit=0.0)


def _check_2d(block: nn.Module, x: torch.Tensor) -> None:
    """Axis blocks pool along H and along W: (N, C, H, W) inputs only."""
    if x.dim() != 4:
        raise ValueError(
            f"{type(block).__name__} expects a 4D (N, C, H, W) input (it pools along H and along W), "
            f"got {x.dim()}D input of shape {tuple(x.shape)}"
        )
    if x.shape[1] != block.channels:
        raise ValueError(
            f"{type(block).__name__} was built for {block.channels} channels, got input with "
            f"{x.shape[1]} channels (shape {tuple(x.shape)})"
        )


def _timm_name(table: dict[str, str], module: nn.Module, what: str) -> str:
    name = table.get(type(module).__name__)
    if name == "gelu" and getattr(module, "approximate", "none") != "none":
        name = None  # the tanh approximation
    if name is None:
        raise ValueError(
            f"{what}: unsupported timm layer {type(module).__name__} (expected one of {sorted(table)})"
        )
    return name


def _expect_timm(module: nn.Module, block: type) -> None:
    names = block.info.timm_classes
    if type(module).__name__ not in names:
        raise ValueError(
            f"{block.__name__}.from_timm expects a timm {' / '.join(names)}, got {type(module).__name__}"
        )


def _same_bias(*convs: nn.Module) -> bool:
    flags = {c.bias is not None for c in convs}
    if len(flags) != 1:
        raise ValueError("from_timm: the convs mix bias and no bias, which the gcnet block cannot express")
    return flags.pop()


def _depthwise_kernel(conv: nn.Module, axis: int, channels: int) -> int:
    """The kernel length of timm's (k, 1) / (1, k) depthwise conv, checked to be what we build."""
    k = conv.kernel_size[axis]
    shape = [1, 1]
    shape[axis] = k
    pad = [0, 0]
    pad[axis] = k // 2
    if (
        tuple(conv.kernel_size) != tuple(shape)
        or tuple(conv.padding) != tuple(pad)
        or conv.groups != channels
        or tuple(conv.stride) != (1, 1)
        or tuple(conv.dilation) != (1, 1)
        or k % 2 == 0
    ):
        raise ValueError(
            f"from_timm: unsupported axis conv {conv} (expected an odd depthwise ({k}, 1) / (1, {k}))"
        )
    return k


def _copy_norm_config(dst: nn.Module | None, src: nn.Module) -> None:
    """eps / momentum of a timm norm onto ours (the values the parameters do not carry)."""
    if dst is None:
        return
    if getattr(src, "affine", True) is not True or getattr(src, "track_running_stats", True) is not True:
        raise ValueError(f"from_timm: unsupported norm {src} (expected affine with running statistics)")
    dst.eps = src.eps
    if hasattr(dst, "momentum"):
        dst.momentum = src.momentum


def _finish(block: nn.Module, module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """``block`` on ``module``'s device / dtype and mode, with ``state`` loaded (strict)."""
    ref = next(iter(state.values()), None)
    if ref is not None:
        block.to(device=ref.device, dtype=ref.dtype)
    block.load_state_dict(state, strict=True)
    return block.train(module.training)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------
# the pooling: axis-keeping context modeling


def axis_pool(x: torch.Tensor, keep: int, mode: str = "avg") -> torch.Tensor:
    """x (N, C, *spatial) pooled (mean or max) over every spatial axis except ``keep``, dims kept.

    For (N, C, H, W): ``keep=-2`` is one context per row, (N, C, H, 1); ``keep=-1`` one per
    column, (N, C, 1, W). The result broadcasts back over x. A 1D input has nothing else to pool
    (the result is x).
    """
    rank = x.dim()
    axis = keep + rank if keep < 0 else keep
    if not 2 <= axis < rank:
        raise ValueError(
            f"keep must name a spatial axis of the {rank}D input (-{rank - 2}..-1), got {keep!r}"
        )
    dims = tuple(d for d in range(2, rank) if d != axis)
    if not dims:
        return x
    if mode == "max":
        return x.amax(dims, keepdim=True)
    return _mean(x, dims)


def _mean(x: torch.Tensor, dims: tuple[int, ...] | int) -> torch.Tensor:
    """``x.mean(dims, keepdim=True)`` as torch computes it on the CPU (the sum, then divided by the
    count), written so that its gradient is an expanded view of the small one: the mean's backward
    materialises an x-sized quotient, the sum's broadcasts (autograd adds it into x's gradient)."""
    dims = (dims,) if isinstance(dims, int) else dims
    count = 1
    for d in dims:
        count *= x.shape[d]
    return x.sum(dims, keepdim=True).div_(count)


class AxisPooling(nn.Module):
    """The framework's context modeling with one spatial axis kept (no parameters).

    The GC / SE pooling, c = mean_j x_j over all positions j, keeps no axis. Here the sum runs
    over all positions that share a coordinate on the kept axis: for (N, C, H, W) and
    ``keep=-2`` (H), c[n, :, h] = (1/W) sum_w x[n, :, h, w], a context per row; ``keep=-1`` (W):
    one per column. Each context is still global along the pooled axes (the whole row), so a
    block that gates x with the row and the column contexts lets every position see its whole
    row and column. ``mode="max"`` takes the maximum instead of the mean.

    Args:
        keep: the spatial axis to keep, counted from the end (-1: W, -2: H, -3: T).
        mode: ``"avg"`` or ``"max"``.

    Input (N, C, *spatial); output the same rank with the pooled axes of size 1.
    Cost: one read of x; no parameters.
    """

    def __init__(self, keep: int = -1, mode: str = "avg") -> None:
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, int) or keep >= 0:
            raise ValueError(
                f"keep must be a negative int naming a spatial axis (-1: W, -2: H, -3: T), got {keep!r}"
            )
        self.keep = keep
        self.mode = check_choice("mode", mode, POOL_MODES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return axis_pool(x, self.keep, self.mode)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, mode={self.mode!r}"


def _sequence_matmul(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """W (O, C, ...) applied over the channels of x (N, C, L): (N, O, L), as one ``bmm``.

    A 1x1 ``conv2d`` costs ~2x this on the CPU, ``F.linear`` on the transposed (N, L, C) view
    2-7x, and ``torch.matmul`` of a weight that requires grad against a 3D input takes a slower
    unfolded path (~2.5x). A batch is one GEMM over the (C, N L) copy of x (the result an
    (N, O, L) view of the (O, N, L) product): a ``bmm`` of the expanded weight runs N narrow
    GEMMs and its backward materialises an (N, O, C) weight gradient (2-5x slower at N = 32,
    L = 14). Runs in the input's dtype (the autocast dtype under autocast).
    """
    if w.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        w, b = w.to(x.dtype), None if b is None else b.to(x.dtype)
    n, c, o = x.shape[0], x.shape[1], w.shape[0]
    if n == 1:  # one GEMM
        y = torch.mm(w.view(o, c), x[0]).unsqueeze(0)
        return y if b is None else y + b.view(1, o, 1).to(y.dtype)
    length = x.shape[2]
    xt = x.transpose(0, 1).reshape(c, n * length)  # (C, N L)
    if b is None:
        y = torch.mm(w.view(o, c), xt)
    else:
        y = torch.addmm(b.view(o, 1).to(xt.dtype), w.view(o, c), xt)
    return y.view(o, n, length).transpose(0, 1)


class SequenceConv(nn.Conv2d):
    """A 1x1 conv C -> O (an ``nn.Conv2d``'s parameters: timm's shapes) applied to (N, C, L)
    sequences, the axis contexts: (N, O, L), as one batched matmul."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _sequence_matmul(x, self.weight, self.bias)


class SequenceLinear(nn.Linear):
    """A linear layer C -> O (an ``nn.Linear``'s parameters: timm's shapes) applied over the
    channels of (N, C, L) sequences: (N, O, L), as one batched matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _sequence_matmul(x, self.weight, self.bias)


# ---------------------------------------------------------------------------------------------
# the fusions: scale x by gates that vary along H and along W (one pass over x, one allocation)


def _scale_hw_into(out: torch.Tensor, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, skip: bool):
    torch.mul(x, a_h, out=out).mul_(a_w)
    return out.add_(x) if skip else out


class _ScaleHW(torch.autograd.Function):
    """out = x * a_h * a_w (+ x), a_h (N, C, H, 1), a_w (N, C, 1, W), all of x's dtype.

    Autograd through the two products allocates four x-sized tensors in the backward and keeps
    x * a_w alive from the forward; this keeps x and the two small gates, and its backward
    allocates one x-sized buffer: p = g * x, reduced against a_w and a_h (batched GEMVs for a
    contiguous x), then overwritten with grad x = g * a_h * a_w (+ g).
    """

    @staticmethod
    def forward(ctx, x, a_h, a_w, skip: bool):
        ctx.skip = skip
        ctx.save_for_backward(x, a_h, a_w)
        return _scale_hw_into(torch.empty_like(x), x, a_h, a_w, skip)

    @staticmethod
    def backward(ctx, g):
        x, a_h, a_w = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            need_x, need_h, need_w = ctx.needs_input_grad[:3]
            g = g if g.dtype == x.dtype else g.to(x.dtype)
            buf = torch.empty_like(x)
            g_h = g_w = gx = None
            if need_h or need_w:
                torch.mul(g, x, out=buf)  # p = g * x
                if buf.is_contiguous():  # batched GEMVs over the (N, C) planes: no temporary
                    n, c, h, w = buf.shape
                    p = buf.view(n * c, h, w)
                    g_h = torch.bmm(p, a_w.reshape(n * c, w, 1)).view(a_h.shape) if need_h else None
                    g_w = torch.bmm(a_h.reshape(n * c, 1, h), p).view(a_w.shape) if need_w else None
                else:  # channels_last: reduce in place, p recomputed for the second axis
                    if need_h:
                        g_h = buf.mul_(a_w).sum(-1, keepdim=True)
                    if need_w:
                        if need_h:
                            torch.mul(g, x, out=buf)
                        g_w = buf.mul_(a_h).sum(-2, keepdim=True)
            if need_x:
                gx = _scale_hw_into(buf, g, a_h, a_w, ctx.skip)
        return gx, g_h, g_w, None


def scale_hw(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, skip: bool = False) -> torch.Tensor:
    """The fusion of coordinate attention / ELA: x * a_h * a_w (+ x with ``skip``), gates cast to x's
    dtype; one x-sized allocation forward and backward."""
    a_h, a_w = a_h.to(x.dtype), a_w.to(x.dtype)
    if torch.compiler.is_compiling():
        out = x * a_h * a_w
        return out + x if skip else out
    if _needs_grad(x, a_h, a_w):
        return _ScaleHW.apply(x, a_h, a_w, skip)
    return _scale_hw_into(torch.empty_like(x), x, a_h, a_w, skip)


# Large CPU buffers are fresh mmaps (glibc's mmap threshold is at most 32 MiB): the first touch of
# each 4 KiB page faults, which costs more than a pass over x (an out-of-place multiply of a 51 MB
# tensor: 27 ms; in place: 3 ms). Above this size, trade passes over x for allocations.
_BIG_CPU_BYTES = 16 * 2**20


def _big_cpu(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.numel() * x.element_size() >= _BIG_CPU_BYTES


def _sigmoid_sum_into(out: torch.Tensor, z_h: torch.Tensor, z_w: torch.Tensor) -> torch.Tensor:
    return torch.add(z_h, z_w, out=out).sigmoid_()


class _SigmoidSumScale(torch.autograd.Function):
    """out = x * sigmoid(z_h + z_w) (+ x), z_h (N, C, H, 1), z_w (N, C, 1, W), all of x's dtype.

    Keeps x and the small logits (not the x-sized gate); the backward recomputes the gate twice
    in one x-sized buffer (a pass costs less than a fresh allocation on the CPU): first the
    logits' gradient g * x * s * (1 - s), reduced over W and over H, then grad x = g * s (+ g).
    """

    @staticmethod
    def forward(ctx, x, z_h, z_w, skip: bool):
        ctx.skip = skip
        ctx.save_for_backward(x, z_h, z_w)
        out = _sigmoid_sum_into(torch.empty_like(x), z_h, z_w).mul_(x)
        return out.add_(x) if skip else out

    @staticmethod
    def backward(ctx, g):
        x, z_h, z_w = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            need_x, need_h, need_w = ctx.needs_input_grad[:3]
            g = g if g.dtype == x.dtype else g.to(x.dtype)
            buf = torch.empty_like(x)
            g_h = g_w = gx = None
            if need_h or need_w:
                s = _sigmoid_sum_into(buf, z_h, z_w)
                dz = s.addcmul_(s, s, value=-1).mul_(g).mul_(x)  # g * x * s * (1 - s)
                g_h = dz.sum(-1, keepdim=True) if need_h else None
                g_w = dz.sum(-2, keepdim=True) if need_w else None
            if need_x:
                gx = _sigmoid_sum_into(buf, z_h, z_w)
                gx = (gx.add_(1) if ctx.skip else gx).mul_(g)
        return gx, g_h, g_w, None


def gate_sum_scale(x: torch.Tensor, z_h: torch.Tensor, z_w: torch.Tensor, gate: str, skip: bool = False):
    """The fusion of simple coordinate attention / strip attention: x * gate(z_h + z_w) (+ x),
    the logits cast to x's dtype. Without gradients: one x-sized allocation (the output). With:
    for large CPU inputs, one x-sized allocation forward and backward (`_SigmoidSumScale`);
    otherwise autograd through the plain ops (fewer passes)."""
    z_h, z_w = z_h.to(x.dtype), z_w.to(x.dtype)
    if not _needs_grad(x, z_h, z_w) and gate == "sigmoid":
        out = _sigmoid_sum_into(torch.empty_like(x), z_h, z_w).mul_(x)
        return out.add_(x) if skip else out
    if gate == "sigmoid" and _big_cpu(x) and not torch.compiler.is_compiling():
        return _SigmoidSumScale.apply(x, z_h, z_w, skip)
    # autograd through the plain ops: fewer passes over x (what counts on a GPU and for small x)
    out = x * GATES[gate](z_h + z_w)
    return out + x if skip else out


class _AvgMaxPool(torch.autograd.Function):
    """(mean, max) of x over ``dim``, dims kept, with one backward for both.

    The max's gradient is torch's ``amax`` one (split evenly between ties), but the two poolings'
    gradients come back as one x-sized tensor, where(x == max, g_max / ties + g_avg / L, g_avg / L),
    written once; autograd through ``mean`` + ``amax`` writes the mean's x-sized quotient, the
    mask, the masked product and their sum (2.5x slower at (32, 512, 28, 28) on the CPU).
    """

    @staticmethod
    def forward(ctx, x, dim: int):
        avg, mx = _mean(x, dim), x.amax(dim, keepdim=True)
        ctx.set_materialize_grads(False)  # an unused output's gradient is None, not zeros
        ctx.dim = dim
        ctx.save_for_backward(x, mx)
        return avg, mx

    @staticmethod
    def backward(ctx, g_avg, g_max):
        x, mx = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            dim = ctx.dim
            base = None if g_avg is None else g_avg.to(x.dtype) / x.shape[dim]
            if g_max is None:
                return None if base is None else base.expand(x.shape), None
            mask = x == mx
            share = g_max.to(x.dtype) / mask.sum(dim, keepdim=True, dtype=torch.int32)  # int32: fastest
            if base is None:
                return torch.where(mask, share, 0.0), None
            return torch.where(mask, share + base, base), None


def avg_max_pool(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, max) of x over ``dim`` (keepdim), as ``mean`` / ``amax`` (gradients included):
    `_AvgMaxPool` where it writes less (large CPU inputs, accelerators), else autograd through
    the plain ops (cheaper for small CPU inputs, where the op count dominates)."""
    if _needs_grad(x) and not torch.compiler.is_compiling() and (x.device.type != "cpu" or _big_cpu(x)):
        return _AvgMaxPool.apply(x, dim)
    return _mean(x, dim), x.amax(dim, keepdim=True)


# ---------------------------------------------------------------------------------------------
# CBAM


class CBAM(nn.Module):
    """CBAM (Woo, Park, Lee & Kweon, ECCV 2018): a channel gate, then a spatial gate.

    Channel gate (global context with two poolings):

        pool:       a = mean_j x_j,  m = max_j x_j                     (N, C) each, over all positions
        transform:  logits = fc2(act(fc1(a))) + fc2(act(fc1(m)))        shared MLP C -> P -> C
        fuse:       y = x * gate(logits)                                scale per channel

    Spatial gate (pooling over the channels instead):

        pool:       s = [mean_c y_c ; max_c y_c]                        (N, 2, *spatial)
        transform:  BN(conv_kxk(s))                                     2 -> 1 channels, no bias
        fuse:       z = y * gate(.)                                     scale per position

    Args:
        channels: C.
        rd_ratio: P = make_divisible(C * rd_ratio, rd_divisor, round_limit=0), i.e. round(C / 16)
            (at least 1) by default; timm's rounding (the paper: C / 16).
        rd_channels: P itself (overrides ``rd_ratio``).
        rd_divisor: P's divisor (timm: 1).
        spatial_kernel_size: the spatial conv's kernel, odd (7, the paper's choice), or a tuple,
            one odd size per spatial axis (e.g. (1, 7, 7) for video).
        act: the MLP's activation, one of `ACTIVATIONS` (``"relu"``).
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``, for both gates.
        mlp_bias: biases in the MLP (timm: False; the paper's code: True). With a bias, each
            pooled branch adds fc2's bias, as in timm and the paper (2 * b in the logits).
        dims: the spatial rank, 1, 2 (images: the paper, timm) or 3 (video: a k x k x k conv
            by default, or a tuple kernel); the input must be (N, C, *spatial) of that rank.

    Parameters for C channels: 2 C P (MLP, plus P + C with bias) + 2 k^2 (conv) + 2 (BN's affine;
    BN also keeps running statistics). The spatial conv carries a BatchNorm, as in the paper's
    code and timm (BN in train mode normalises over the batch and all positions).
    Not the identity at init (scale fusion). timm: `cbam` (`CbamModule`).
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="CBAM",
        pooling="channel gate: avg and max over all positions; spatial gate: mean and max over channels",
        transform="shared MLP C->C/16->C (ReLU, no bias) on each pooled vector, summed; "
        "kxk conv 2->1 + BN on the channel-pooled maps",
        fusion="scale (channel gate, then spatial gate)",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Woo, Park, Lee & Kweon, CBAM: Convolutional Block Attention Module, ECCV 2018",
        timm=("cbam",),
        timm_classes=("CbamModule",),
        note="timm and the paper are 2D only; dims=1 / 3 use a Conv1d / Conv3d. P = round(C/16) as in "
        "timm (the paper's code: C // 16, with MLP biases).",
    )
    light: ClassVar[bool] = False

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        spatial_kernel_size: int | tuple[int, ...] = 7,
        act: str = "relu",
        gate: str = "sigmoid",
        mlp_bias: bool = False,
        dims: int = 2,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        if dims not in (1, 2, 3) or isinstance(dims, bool):
            raise ValueError(f"dims must be 1, 2 or 3 (the spatial rank), got {dims!r}")
        self.dims = dims
        self.act = check_choice("act", act, ACTIVATIONS)
        self.gate = check_choice("gate", gate, GATES)
        kernel = (
            spatial_kernel_size if isinstance(spatial_kernel_size, tuple) else (spatial_kernel_size,) * dims
        )
        if len(kernel) != dims:
            raise ValueError(
                f"spatial_kernel_size must be an int or {dims} ints, got {spatial_kernel_size!r}"
            )
        kernel = tuple(_odd("spatial_kernel_size", k) for k in kernel)
        hidden = _reduced(channels, rd_ratio, rd_channels, rd_divisor)
        bias = _flag("mlp_bias", mlp_bias)
        # channel gate's transform: the shared MLP, 1x1 convs as in timm (applied to (N, C) vectors)
        self.fc1 = PointwiseConv(channels, hidden, bias=bias, vectors=True)
        self.fc2 = PointwiseConv(hidden, channels, bias=bias, vectors=True)
        # spatial gate's transform: conv k x k over the channel-pooled maps, then BN
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        norm = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1]
        pools = 1 if self.light else 2
        self.spatial_conv = conv(pools, 1, kernel, padding=tuple(k // 2 for k in kernel), bias=False)
        self.spatial_bn = norm(1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != self.dims + 2:
            shape = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, T, H, W)"}[self.dims]
            raise ValueError(
                f"{type(self).__name__} was built with dims={self.dims}: expects a {self.dims + 2}D {shape} "
                f"input, got {x.dim()}D input of shape {tuple(x.shape)} (pass dims={x.dim() - 2} for it)"
            )
        if x.shape[1] != self.channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.channels} channels, got input with "
                f"{x.shape[1]} channels (shape {tuple(x.shape)})"
            )

    def _channel_logits(self, x: torch.Tensor) -> torch.Tensor:
        """pool (avg and max over all positions) -> shared MLP: (N, C) logits."""
        avg, mx = avg_max_pool(x.flatten(2), -1)  # a view, contiguous or channels_last
        avg, mx = avg.squeeze(-1), mx.squeeze(-1)
        act = ACTIVATIONS[self.act]
        if self.light:  # one pooled vector, 0.5 (avg + max)
            return self.fc2(act(self.fc1(0.5 * avg + 0.5 * mx)))
        n = avg.shape[0]  # both vectors through the MLP as one batch; fc2 sums them (each with its bias)
        logits = self.fc2(act(self.fc1(torch.cat((avg, mx)))))
        return logits[:n] + logits[n:]

    def _spatial_logits(self, y: torch.Tensor) -> torch.Tensor:
        """pool (mean and max over channels) -> conv k x k -> BN: (N, 1, *spatial) logits."""
        avg, mx = avg_max_pool(y, 1)
        s = 0.5 * avg + 0.5 * mx if self.light else torch.cat((avg, mx), dim=1)
        return self.spatial_bn(self.spatial_conv(s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        gate = GATES[self.gate]
        n, c = x.shape[:2]
        # channel gate: pool -> transform -> scale
        g_c = gate(self._channel_logits(x)).to(x.dtype).view(n, c, *(1,) * self.dims)
        y = x * g_c
        # spatial gate: pool over channels -> transform -> scale
        g_s = gate(self._spatial_logits(y)).to(x.dtype)
        return y * g_s if y.requires_grad or g_s.requires_grad else y.mul_(g_s)

    def extra_repr(self) -> str:
        hidden = self.fc1.out_channels
        return f"{self.channels}, hidden={hidden}, act={self.act!r}, gate={self.gate!r}, dims={self.dims}"

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The gcnet block equal to a timm `CbamModule` (`LightCbamModule` for `LightCBAM`), with its
        weights, BN statistics, dtype, device and train / eval mode."""
        _expect_timm(module, cls)
        ch, sp = module.channel, module.spatial
        conv, bn = sp.conv.conv, sp.conv.bn
        if (
            type(bn).__name__ != "BatchNormAct2d"
            or type(getattr(bn, "act", None)).__name__ != "Identity"
            or type(getattr(bn, "drop", None)).__name__ != "Identity"
            or conv.bias is not None
            or tuple(conv.stride) != (1, 1)
            or tuple(conv.dilation) != (1, 1)
            or conv.groups != 1
            or tuple(conv.padding) != tuple(k // 2 for k in conv.kernel_size)
        ):
            raise ValueError(f"{cls.__name__}.from_timm: unsupported spatial conv / norm {sp.conv}")
        gate = _timm_name(_TIMM_GATES, sp.gate, "spatial gate")
        if cls.light and gate != "sigmoid":  # timm's light channel gate is always a sigmoid
            raise ValueError(
                f"{cls.__name__}.from_timm: timm's light channel gate is a sigmoid, spatial is {gate}"
            )
        if not cls.light and _timm_name(_TIMM_GATES, ch.gate, "channel gate") != gate:
            raise ValueError(f"{cls.__name__}.from_timm: the channel and spatial gates differ")
        block = cls(
            ch.fc1.in_channels,
            rd_channels=ch.fc1.out_channels,
            spatial_kernel_size=tuple(conv.kernel_size),
            act=_timm_name(_TIMM_ACTS, ch.act, "channel act"),
            gate=gate,
            mlp_bias=_same_bias(ch.fc1, ch.fc2),
        )
        _copy_norm_config(block.spatial_bn, bn)
        names = {"channel.fc1.": "fc1.", "channel.fc2.": "fc2.", "spatial.conv.conv.": "spatial_conv.",
                 "spatial.conv.bn.": "spatial_bn."}  # fmt: skip
        state = {}
        for key, value in module.state_dict().items():
            prefix = next((p for p in names if key.startswith(p)), None)
            if prefix is None:
                raise ValueError(f"{cls.__name__}.from_timm: unexpected timm key {key!r}")
            state[names[prefix] + key[len(prefix) :]] = value
        return _finish(block, module, state)


class LightCBAM(CBAM):
    """Light CBAM (timm's `LightCbamModule`): CBAM with each pair of poolings mixed once.

        channel gate:  pool   c = 0.5 * mean_j x_j + 0.5 * max_j x_j            (N, C)
                       transform  fc2(act(fc1(c)))   fuse  y = x * gate(.)
        spatial gate:  pool   s = 0.5 * mean_c y_c + 0.5 * max_c y_c            (N, 1, *spatial)
                       transform  BN(conv_kxk(s)), 1 -> 1 channel, no bias   fuse  z = y * gate(.)

    One MLP pass instead of two and a 1-channel conv (k^2 weights instead of 2 k^2). Defaults as
    timm: P = round(C / 16) (rd_divisor 1), ReLU, no MLP bias, k = 7, BN after the conv. timm
    always gates with a sigmoid here; ``gate`` is kept for symmetry with `CBAM` (``from_timm``
    gives ``"sigmoid"``). Parameters for C channels: 2 C P + k^2 + 2. Not the identity at init
    (scale fusion). A timm experiment, not from the CBAM paper.
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="Light CBAM",
        pooling="0.5 (avg + max) over all positions; 0.5 (mean + max) over channels",
        transform="MLP C->C/16->C (ReLU, no bias); kxk conv 1->1 + BN",
        fusion="scale (channel gate, then spatial gate)",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="timm's lightweight CBAM variant (Wightman), after Woo et al., ECCV 2018",
        timm=("lcbam",),
        timm_classes=("LightCbamModule",),
        note="timm and the paper are 2D only; dims=1 / 3 use a Conv1d / Conv3d.",
    )
    light: ClassVar[bool] = True


# ---------------------------------------------------------------------------------------------
# coordinate attention


class CoordAttention(nn.Module):
    """Coordinate attention (Hou, Zhou & Feng, CVPR 2021), as timm's `CoordAttn`.

        pool:       c_h = mean over W of x   (N, C, H),   c_w = mean over H of x   (N, C, W)
        transform:  y = act(BN(conv1([c_h, c_w])))   1x1 conv C -> P shared by the H + W positions
                    a_h = gate(conv_h(y_h)),  a_w = gate(conv_w(y_w))   1x1 convs P -> C, one per axis
        fuse:       z = x * a_h * a_w   (+ x with ``has_skip``)

    BN normalises over the batch and the H + W positions together (the two sequences are
    concatenated, as in the paper). Every output position sees its whole row and column.

    Args:
        channels: C.
        rd_ratio: P = make_divisible(C * rd_ratio * se_factor, rd_divisor, round_limit=0):
            timm's defaults 1/16, 2/3, 8 (C = 512: P = 24). The paper's code uses
            P = max(8, C // 32) (C = 512: 16) and biased convs: the paper's block is
            ``CoordAttention(C, rd_channels=max(8, C // 32), bias=True)``.
        se_factor: see `rd_ratio`.
        rd_divisor: see `rd_ratio`.
        rd_channels: P itself (overrides the ratio).
        bias: biases in the three 1x1 convs (timm: False; the paper's code: True).
        act: the bottleneck's activation (``"hard_swish"``, as the paper's h-swish).
        norm: BatchNorm after the first conv.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        has_skip: add x to the output (timm's option; off).

    Parameters for C channels: 3 C P (+ 2 P for BN, + P + 2 C with biases). Input (N, C, H, W)
    only. Not the identity at init (scale fusion). timm: `coord` (`CoordAttn`).
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="Coordinate attention",
        pooling="avg along W (one context per row) and along H (one per column)",
        transform="1x1 conv C->P + BN + h-swish shared over the H+W positions, then a 1x1 conv P->C "
        "per axis, P = make_divisible(C/16 * 2/3, 8)",
        fusion="scale (x * a_h * a_w)",
        identity_at_init=False,
        dims=(2,),
        paper="Hou, Zhou & Feng, Coordinate Attention for Efficient Mobile Network Design, CVPR 2021",
        timm=("coord",),
        timm_classes=("CoordAttn",),
        note="timm's defaults (P from C/16 * 2/3 rounded to 8, no conv biases); the paper's code has "
        "P = max(8, C // 32) and biased convs.",
    )

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        se_factor: float = 2.0 / 3,
        bias: bool = False,
        act: str = "hard_swish",
        norm: bool = True,
        gate: str = "sigmoid",
        has_skip: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        hidden = _reduced(channels, rd_ratio, rd_channels, rd_divisor, _number("se_factor", se_factor))
        self.act = check_choice("act", act, ACTIVATIONS)
        self.gate = check_choice("gate", gate, GATES)
        self.has_skip = _flag("has_skip", has_skip)
        bias = _flag("bias", bias)
        self.pool_h, self.pool_w = AxisPooling(keep=-2), AxisPooling(keep=-1)
        self.conv1 = SequenceConv(channels, hidden, bias=bias)
        self.bn1 = nn.BatchNorm2d(hidden) if _flag("norm", norm) else None
        self.conv_h = SequenceConv(hidden, channels, bias=bias)
        self.conv_w = SequenceConv(hidden, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(self, x)
        n, c, h, w = x.shape
        # pool: a context per row and per column, as one (N, C, H + W) sequence
        ctx = torch.cat((self.pool_h(x).reshape(n, c, h), self.pool_w(x).reshape(n, c, w)), dim=2)
        # transform: shared conv + BN + act, then one conv + gate per axis
        y = self.conv1(ctx)
        if self.bn1 is not None:
            y = self.bn1(y.unsqueeze(-1)).squeeze(-1)
        y = ACTIVATIONS[self.act](y)
        gate = GATES[self.gate]
        a_h = gate(self.conv_h(y[:, :, :h])).view(n, c, h, 1)
        a_w = gate(self.conv_w(y[:, :, h:])).view(n, c, 1, w)
        # fuse: scale along both axes
        return scale_hw(x, a_h, a_w, self.has_skip)

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.conv1.out_channels}, act={self.act!r}, gate={self.gate!r}"

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The gcnet block equal to a timm `CoordAttn`, with its weights, BN statistics, dtype,
        device and mode."""
        _expect_timm(module, cls)
        norm = type(module.bn1).__name__
        if norm not in ("BatchNorm2d", "Identity"):
            raise ValueError(
                f"{cls.__name__}.from_timm: unsupported norm {norm} (expected BatchNorm2d or none)"
            )
        block = cls(
            module.conv1.in_channels,
            rd_channels=module.conv1.out_channels,
            bias=_same_bias(module.conv1, module.conv_h, module.conv_w),
            act=_timm_name(_TIMM_ACTS, module.act, "act"),
            norm=norm == "BatchNorm2d",
            gate=_timm_name(_TIMM_GATES, module.gate, "gate"),
            has_skip=bool(module.has_skip),
        )
        _copy_norm_config(block.bn1, module.bn1)
        return _finish(block, module, module.state_dict())


class SimpleCoordAttention(nn.Module):
    """Simple coordinate attention (timm's `SimpleCoordAttn`): coordinate attention with linear
    layers, no norm, and the two axes' logits added before one gate.

        pool:       c_h = mean over W of x   (N, C, H),   c_w = mean over H of x   (N, C, W)
        transform:  z_h = fc_h(act(fc1(c_h))),  z_w = fc_w(act(fc1(c_w)))   fc1 C -> P shared
        fuse:       out = x * gate(z_h + z_w)   (+ x with ``has_skip``)

    Args:
        channels: C.
        rd_ratio: with `se_factor` and `rd_divisor`, P = make_divisible(C * rd_ratio * se_factor, rd_divisor,
            round_limit=0); timm's defaults 1/4, 2/3, 8 (C = 512: P = 88).
        rd_channels: P itself.
        bias: biases in the linear layers (True).
        act: ``"silu"``.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        has_skip: add x to the output (off).

    Parameters for C channels: 3 C P (+ P + 2 C biases). Input (N, C, H, W) only. Not the
    identity at init (scale fusion). A timm variant (2025), not from the paper. timm: `scoord`.
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="Simple coordinate attention",
        pooling="avg along W (one context per row) and along H (one per column)",
        transform="linear C->P + SiLU shared, then a linear P->C per axis, P = make_divisible(C/4 * 2/3, 8)",
        fusion="scale (x * sigmoid(z_h + z_w))",
        identity_at_init=False,
        dims=(2,),
        paper="timm's simplified coordinate attention (Wightman, 2025), after Hou et al., CVPR 2021",
        timm=("scoord",),
        timm_classes=("SimpleCoordAttn",),
        note="a timm variant, not in the paper: linear layers, no norm, SiLU, the two axes' logits "
        "summed before one sigmoid.",
    )

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        se_factor: float = 2.0 / 3,
        bias: bool = True,
        act: str = "silu",
        gate: str = "sigmoid",
        has_skip: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        hidden = _reduced(channels, rd_ratio, rd_channels, rd_divisor, _number("se_factor", se_factor))
        self.act = check_choice("act", act, ACTIVATIONS)
        self.gate = check_choice("gate", gate, GATES)
        self.has_skip = _flag("has_skip", has_skip)
        bias = _flag("bias", bias)
        self.pool_h, self.pool_w = AxisPooling(keep=-2), AxisPooling(keep=-1)
        self.fc1 = SequenceLinear(channels, hidden, bias=bias)
        self.fc_h = SequenceLinear(hidden, channels, bias=bias)
        self.fc_w = SequenceLinear(hidden, channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(self, x)
        n, c, h, w = x.shape
        # pool: a context per row and per column, as one (N, C, H + W) sequence
        ctx = torch.cat((self.pool_h(x).reshape(n, c, h), self.pool_w(x).reshape(n, c, w)), dim=2)
        # transform: shared linear + act, one linear per axis (over channels, per position)
        y = ACTIVATIONS[self.act](self.fc1(ctx))  # (N, P, H + W)
        z_h = self.fc_h(y[:, :, :h]).unsqueeze(-1)  # (N, C, H, 1)
        z_w = self.fc_w(y[:, :, h:]).unsqueeze(-2)  # (N, C, 1, W)
        # fuse: one gate of the summed logits
        return gate_sum_scale(x, z_h, z_w, self.gate, self.has_skip)

    def extra_repr(self) -> str:
        return f"{self.channels}, hidden={self.fc1.out_features}, act={self.act!r}, gate={self.gate!r}"

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The gcnet block equal to a timm `SimpleCoordAttn`, with its weights, dtype, device and mode."""
        _expect_timm(module, cls)
        block = cls(
            module.fc1.in_features,
            rd_channels=module.fc1.out_features,
            bias=_same_bias(module.fc1, module.fc_h, module.fc_w),
            act=_timm_name(_TIMM_ACTS, module.act, "act"),
            gate=_timm_name(_TIMM_GATES, module.gate, "gate"),
            has_skip=bool(module.has_skip),
        )
        return _finish(block, module, module.state_dict())


# ---------------------------------------------------------------------------------------------
# ELA and strip attention: depthwise 1D convs along the kept axis


def _axis_convs(channels: int, kernel_size: int, bias: bool) -> tuple[nn.Conv2d, nn.Conv2d]:
    """Depthwise (k, 1) and (1, k) convs, zero-padded: a k-tap 1D conv along H / along W per channel."""
    k = kernel_size
    conv_h = nn.Conv2d(channels, channels, (k, 1), padding=(k // 2, 0), groups=channels, bias=bias)
    conv_w = nn.Conv2d(channels, channels, (1, k), padding=(0, k // 2), groups=channels, bias=bias)
    return conv_h, conv_w


class EfficientLocalAttention(nn.Module):
    """ELA, efficient local attention (Xu & Wan, 2024, arXiv:2403.01123), as timm's `EfficientLocalAttn`.

        pool:       c_h = mean over W of x   (N, C, H, 1),   c_w = mean over H of x   (N, C, 1, W)
        transform:  a_h = gate(act(GN_h(conv_h(c_h)))),  a_w = gate(act(GN_w(conv_w(c_w))))
                    conv: depthwise k-tap 1D conv along the kept axis, no bias; GN: GroupNorm
        fuse:       z = x * a_h * a_w   (+ x with ``has_skip``)

    No channel reduction: every channel keeps its own gate. Position (h, w) sees k whole rows and
    k whole columns.

    Args:
        channels: C.
        kernel_size: k, odd (7).
        bias: biases in the depthwise convs (False).
        act: the activation after the norm (timm: ``"silu"``; the paper has none).
        norm_groups: the GroupNorm's groups (timm: 1, normalising each sample's (C, H) sequence
            as a whole; the paper: 16 or 32); ``None``: no norm.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        has_skip: add x to the output (off).

    timm differs from the paper's code, which shares one conv and one GroupNorm between the two
    axes and has no activation before the sigmoid; we follow timm. Parameters for C channels:
    2 C k (+ 2 C biases) + 4 C (the two norms' affine): 18 C by default. Input (N, C, H, W) only.
    Not the identity at init (scale fusion). timm: `ela`.
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="ELA",
        pooling="avg along W (one context per row) and along H (one per column)",
        transform="per axis: depthwise 1D conv (k=7, no bias) + GroupNorm(1 group) + SiLU + sigmoid",
        fusion="scale (x * a_h * a_w)",
        identity_at_init=False,
        dims=(2,),
        paper="Xu & Wan, ELA: Efficient Local Attention for Deep Convolutional Neural Networks, arXiv 2024",
        timm=("ela",),
        timm_classes=("EfficientLocalAttn",),
        note="timm's form (separate conv and GroupNorm(1) per axis, SiLU); the paper's code shares "
        "one conv and GroupNorm(16 or 32 groups) and has no SiLU.",
    )

    def __init__(
        self,
        channels: int,
        kernel_size: int = 7,
        bias: bool = False,
        act: str = "silu",
        norm_groups: int | None = 1,
        gate: str = "sigmoid",
        has_skip: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.act = check_choice("act", act, ACTIVATIONS)
        self.gate = check_choice("gate", gate, GATES)
        self.has_skip = _flag("has_skip", has_skip)
        self.kernel_size = _odd("kernel_size", kernel_size)
        self.pool_h, self.pool_w = AxisPooling(keep=-2), AxisPooling(keep=-1)
        self.conv_h, self.conv_w = _axis_convs(channels, kernel_size, _flag("bias", bias))
        if norm_groups is None:
            self.norm_h = self.norm_w = None
        else:
            if _int("norm_groups", norm_groups) > channels or channels % norm_groups:
                raise ValueError(f"norm_groups must divide channels={channels}, got {norm_groups!r}")
            self.norm_h, self.norm_w = (
                nn.GroupNorm(norm_groups, channels),
                nn.GroupNorm(norm_groups, channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(self, x)
        act, gate = ACTIVATIONS[self.act], GATES[self.gate]
        # pool: a context per row (N, C, H, 1) and per column (N, C, 1, W)
        c_h, c_w = self.pool_h(x), self.pool_w(x)
        # transform: per axis, 1D depthwise conv -> norm -> act -> gate
        y_h, y_w = self.conv_h(c_h), self.conv_w(c_w)
        if self.norm_h is not None:
            y_h, y_w = self.norm_h(y_h), self.norm_w(y_w)
        a_h, a_w = gate(act(y_h)), gate(act(y_w))
        # fuse: scale along both axes
        return scale_hw(x, a_h, a_w, self.has_skip)

    def extra_repr(self) -> str:
        groups = None if self.norm_h is None else self.norm_h.num_groups
        return f"{self.channels}, kernel_size={self.kernel_size}, norm_groups={groups}, act={self.act!r}"

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The gcnet block equal to a timm `EfficientLocalAttn`, with its weights, dtype, device, mode."""
        _expect_timm(module, cls)
        c = module.conv_h.in_channels
        k = _depthwise_kernel(module.conv_h, 0, c)
        if _depthwise_kernel(module.conv_w, 1, c) != k:
            raise ValueError(f"{cls.__name__}.from_timm: conv_h and conv_w have different kernel sizes")
        norms = {type(module.norm_h).__name__, type(module.norm_w).__name__}
        if norms <= {"Identity"}:
            groups = None
        elif isinstance(module.norm_h, nn.GroupNorm) and isinstance(module.norm_w, nn.GroupNorm):
            groups = module.norm_h.num_groups
            if module.norm_w.num_groups != groups or module.norm_w.eps != module.norm_h.eps:
                raise ValueError(f"{cls.__name__}.from_timm: norm_h and norm_w differ")
        else:
            raise ValueError(
                f"{cls.__name__}.from_timm: unsupported norms {sorted(norms)} (expected GroupNorm)"
            )
        block = cls(
            c,
            k,
            bias=_same_bias(module.conv_h, module.conv_w),
            act=_timm_name(_TIMM_ACTS, module.act, "act"),
            norm_groups=groups,
            gate=_timm_name(_TIMM_GATES, module.gate, "gate"),
            has_skip=bool(module.has_skip),
        )
        if groups is not None:
            block.norm_h.eps = block.norm_w.eps = module.norm_h.eps
            if not (module.norm_h.affine and module.norm_w.affine):
                raise ValueError(
                    f"{cls.__name__}.from_timm: GroupNorm without affine parameters is not supported"
                )
        return _finish(block, module, module.state_dict())


class StripAttention(nn.Module):
    """Strip attention (timm's `StripAttn`): strip pooling, an optional depthwise 1D conv per axis,
    one gate of the summed logits.

        pool:       c_h = mean over W of x   (N, C, H, 1),   c_w = mean over H of x   (N, C, 1, W)
        transform:  z_h = conv_h(c_h),  z_w = conv_w(c_w)   depthwise k-tap 1D convs (or none)
        fuse:       out = x * gate(z_h + z_w)   (+ x with ``has_skip``)

    Args:
        channels: C.
        use_conv: the depthwise convs (True); without them the block has no parameters.
        kernel_size: k, odd (3).
        bias: biases in the convs (False).
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        has_skip: add x to the output (off).

    Parameters for C channels: 2 C k (6 C by default; + 2 C biases). Input (N, C, H, W) only. Not
    the identity at init (scale fusion). A timm block (Wightman, 2025) after strip pooling (Hou,
    Zhang, Cheng & Feng, CVPR 2020), which pools the same way. timm: `strip`.
    """

    info: ClassVar[BlockInfo] = BlockInfo(
        title="Strip attention",
        pooling="avg along W (one context per row) and along H (one per column)",
        transform="per axis: depthwise 1D conv (k=3, no bias), optional",
        fusion="scale (x * sigmoid(z_h + z_w))",
        identity_at_init=False,
        dims=(2,),
        paper="timm's minimal strip attention (Wightman, 2025), after strip pooling (Hou et al., CVPR 2020)",
        timm=("strip",),
        timm_classes=("StripAttn",),
        note="use_conv=False has no parameters (sigmoid(mean of the row + mean of the column)).",
    )

    def __init__(
        self,
        channels: int,
        use_conv: bool = True,
        kernel_size: int = 3,
        bias: bool = False,
        gate: str = "sigmoid",
        has_skip: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.gate = check_choice("gate", gate, GATES)
        self.has_skip = _flag("has_skip", has_skip)
        self.kernel_size = _odd("kernel_size", kernel_size)
        bias = _flag("bias", bias)
        self.pool_h, self.pool_w = AxisPooling(keep=-2), AxisPooling(keep=-1)
        if _flag("use_conv", use_conv):
            self.conv_h, self.conv_w = _axis_convs(channels, kernel_size, bias)
        else:
            self.conv_h = self.conv_w = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_2d(self, x)
        mods = self._modules  # the dict: ~0.06 us a name; `_run` skips __call__ for unhooked modules
        # pool: a context per row (N, C, H, 1) and per column (N, C, 1, W)
        z_h, z_w = _run(mods["pool_h"], x), _run(mods["pool_w"], x)
        # transform: per axis, a 1D depthwise conv (optional)
        conv_h, conv_w = mods.get("conv_h"), mods.get("conv_w")
        if conv_h is not None:
            z_h, z_w = _run(conv_h, z_h), _run(conv_w, z_w)
        # fuse: one gate of the summed logits
        return gate_sum_scale(x, z_h, z_w, self.gate, self.has_skip)

    def extra_repr(self) -> str:
        return f"{self.channels}, use_conv={self.conv_h is not None}, kernel_size={self.kernel_size}"

    @classmethod
    def from_timm(cls, module: nn.Module, channels: int | None = None) -> Self:
        """The gcnet block equal to a timm `StripAttn`, with its weights, dtype, device and mode
        (``channels``: only for ``use_conv=False``, which has no weights to read C from)."""
        _expect_timm(module, cls)
        gate = _timm_name(_TIMM_GATES, module.gate, "gate")
        if not module.use_conv:  # no parameters: the channels cannot be read from the module
            if channels is None:
                raise ValueError(f"{cls.__name__}.from_timm: a timm StripAttn without convs needs channels=C")
            return cls(channels, False, gate=gate, has_skip=bool(module.has_skip)).train(module.training)
        c = module.conv_h.in_channels
        k = _depthwise_kernel(module.conv_h, 0, c)
        if _depthwise_kernel(module.conv_w, 1, c) != k:
            raise ValueError(f"{cls.__name__}.from_timm: conv_h and conv_w have different kernel sizes")
        block = cls(c, True, k, bias=_same_bias(module.conv_h, module.conv_w), gate=gate,
                    has_skip=bool(module.has_skip))  # fmt: skip
        return _finish(block, module, module.state_dict())
