"""The light channel gates of the global-context family: ECA (with timm's ECA-MLP and circular
ECA), effective SE, Gather-Excite, GRN, SRM and GCT.

Every block here is one configuration of the framework of `gcnet.layers.context`,
pooling -> transform -> fusion, and its ``forward`` reads that way:

    c = pool(x)           # a per-channel context: (N, C), (N, C, 2) or a coarse map
    g = transform(c)      # the gate, computed on the small context only
    y = fuse(x, g)        # x * g (scale), or x * g + b for GRN: one pass over x

The pooled context is small, so only ``pool`` and ``fuse`` touch every element of x; the
blocks keep both to one pass each (no full-size gate, no upsampled copy where an exact
broadcast does). Inputs are (N, C, L), (N, C, H, W) or (N, C, T, H, W) (Gather-Excite with
parameters: 2D only), contiguous or channels last; the output has x's shape, memory format
and dtype.

The blocks that timm implements convert with ``from_timm`` (and `gcnet.convert.block_from_timm`)
and match it in float64 on the same weights; parameter names follow timm's (and SRM's / GCT's
official code's), so state dicts load unchanged.
"""

from __future__ import annotations

import math
from typing import ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from ._info import BlockInfo
from ._validate import check_channels
from .context import PointwiseConv, _run

__all__ = [
    "ChannelGate",
    "CircularEfficientChannelAttention",
    "EfficientChannelAttention",
    "EfficientChannelAttentionMlp",
    "EffectiveSqueezeExcite",
    "GCT_MODES",
    "GatedChannelTransform",
    "GatherExcite",
    "GlobalResponseNorm",
    "StyleRecalibration",
    "eca_kernel_size",
]


# -- argument checks (one line each, naming the argument) -------------------------------------


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_odd(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be an odd positive int, got {value!r}")
    return value


def _make_divisible(v: float, divisor: int, round_limit: float) -> int:
    """timm's ``make_divisible``: the nearest multiple of ``divisor`` (at least ``divisor``),
    one more step when rounding down lost more than ``1 - round_limit`` of v."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < round_limit * v else new_v


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA's adaptive kernel: t = int(|log2(C) + b| / gamma), the odd number t or t + 1, at least 3.

    The ECA paper's formula; the floor of 3 is timm's (the official code gives k = 1 below 8
    channels, a gate without any cross-channel interaction). 64 -> 3, 128..1024 -> 5, 2048 -> 7.
    """
    check_channels(channels)
    t = int(abs(math.log(channels, 2) + beta) / gamma)  # math.log(C, 2), bit for bit timm's
    return max(t if t % 2 else t + 1, 3)


def _gate_type(module: nn.Module, what: str, allowed: tuple[str, ...]) -> None:
    gate = getattr(module, "gate", None)
    name = type(gate).__name__
    if name not in allowed:
        raise ValueError(f"from_timm: this timm {what} gates with {name}; the gcnet block uses {allowed[0]}")


_SPATIAL_DIMS = {3: (2,), 4: (2, 3), 5: (2, 3, 4)}


def _device_dtype(module: nn.Module) -> dict:
    p = next(iter(module.parameters()), None)
    return {} if p is None else {"device": p.device, "dtype": p.dtype}


# -- the common skeleton: forward = fuse(x, transform(pool(x))) -------------------------------


class ChannelGate(nn.Module):
    """Base of the channel gates: ``forward(x) = fuse(x, transform(pool(x)))``.

    The default steps are those of a scale gate: ``pool`` averages over all positions
    ((N, C), reductions accumulate in float32 for half inputs), ``fuse`` is x * gate with the
    gate broadcast over the positions (in x's dtype: the output keeps x's dtype and memory
    format). Subclasses set ``info`` and implement ``transform``.

    ``channels`` is None for a block converted from a timm module that does not record its
    channel count (`EcaModule`, `CecaModule`, a parameter-free `GatherExcite`): such a block
    takes any C, as timm's does.
    """

    info: ClassVar[BlockInfo]
    channels: int | None

    def _check(self, x: torch.Tensor) -> None:
        c = self.channels
        if not 3 <= x.dim() <= 5 or (c is not None and x.shape[1] != c):
            name = type(self).__name__
            if not 3 <= x.dim() <= 5:
                raise ValueError(
                    f"{name} expects a 3D (N,C,L), 4D (N,C,H,W) or 5D (N,C,T,H,W) input, "
                    f"got {x.dim()}D input of shape {tuple(x.shape)}"
                )
            raise ValueError(f"{name} was built for {c} channels, got input of shape {tuple(x.shape)}")

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Context modeling: the mean over all positions, (N, C)."""
        return x.flatten(2).mean(-1)

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fuse(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Scale fusion: x * gate, the (N, C) gate broadcast over the positions."""
        if gate.dtype != x.dtype:
            gate = gate.to(x.dtype)
        return x * gate.view(gate.shape[0], gate.shape[1], *(1,) * (x.dim() - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.fuse(x, self.transform(self.pool(x)))


def _pool_avg_max(x: torch.Tensor, add_maxpool: bool) -> torch.Tensor:
    """The mean over positions, or timm's ``add_maxpool`` mix 0.5 * (mean + max)."""
    xf = x.flatten(2)
    if not add_maxpool:
        return xf.mean(-1)
    return 0.5 * xf.mean(-1) + 0.5 * xf.amax(-1)


# -- ECA ------------------------------------------------------------------------------------------


class EfficientChannelAttention(ChannelGate):
    """ECA (Wang et al., ECA-Net, CVPR 2020): a gate from a 1D conv across channels.

    - pooling: c = mean of x over all positions, (N, C).
    - transform: g = sigmoid(conv1d_k(c)), one k-tap conv sliding along the channel axis,
      no bias, zero padding (k - 1) / 2: each channel's gate sees its k neighbours.
    - fusion: scale, y = x * g.

    Params: k (3 for C = 64, 5 for 128..1024, 7 for 2048). k = `eca_kernel_size` (C, gamma,
    beta), the paper's rule with timm's floor of 3 (the official code lets k fall to 1 below
    8 channels); ``kernel_size`` sets it directly. Default init (PyTorch's conv init), as in
    the paper and timm. timm: ``create_attn("eca", C)`` (`EcaModule`); key ``conv.weight``.

    Args:
        channels: C.
        kernel_size: k (odd); None derives it from C.
        gamma: the kernel rule's divisor (2).
        beta: the kernel rule's offset (1).
    """

    info = BlockInfo(
        title="ECA",
        pooling="average over all positions",
        transform="1D conv across channels, k(C) taps (odd, >= 3), no bias, zero padding; sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Wang et al., ECA-Net: Efficient Channel Attention for Deep CNNs, CVPR 2020",
        timm=("eca",),
        timm_classes=("EcaModule",),
        note="k >= 3 as in timm (the official code allows k = 1 for C < 8); from_timm builds "
        "EfficientChannelAttentionMlp for an `ecam` EcaModule",
    )

    def __init__(
        self, channels: int, kernel_size: int | None = None, gamma: float = 2.0, beta: float = 1.0
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        gamma = _check_positive("gamma", gamma)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)):
            raise ValueError(f"beta must be a number, got {beta!r}")
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        self.kernel_size = _check_odd("kernel_size", kernel_size)
        self._build()

    def _build(self) -> None:
        k = self.kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        """sigmoid(conv1d over the channel axis of c), (N, C)."""
        n = c.shape[0]
        y = _run(self._modules["conv"], c.view(n, 1, -1))
        return torch.sigmoid(y).view(n, -1)

    @classmethod
    def from_timm(cls, module: nn.Module, channels: int | None = None) -> Self:
        """The block equivalent to timm's `EcaModule`, its weights loaded: an
        `EfficientChannelAttention` for ``eca``, an `EfficientChannelAttentionMlp` for ``ecam``
        (``use_mlp``), whichever of the two classes it is called on (both list `EcaModule`).
        timm's module does not record C: pass ``channels`` to have the block check it (None:
        any C, as timm's)."""
        if type(module).__name__ != "EcaModule":
            raise ValueError(f"from_timm: expected timm's EcaModule, got {type(module).__name__}")
        _gate_type(module, "EcaModule", ("Sigmoid",))
        if module.conv2 is not None:
            return EfficientChannelAttentionMlp._from_timm_mlp(module, channels)
        k = module.conv.weight.shape[-1]
        if module.conv.bias is not None or module.conv.padding != ((k - 1) // 2,):
            raise ValueError("from_timm: this EcaModule's conv has a bias or non-centred padding")
        block = EfficientChannelAttention(channels or 1, kernel_size=k).to(**_device_dtype(module))
        block.channels = channels
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class EfficientChannelAttentionMlp(EfficientChannelAttention):
    """timm's ECA-MLP (``ecam``; a timm experiment, not in the ECA paper).

    - pooling: c = mean of x over all positions, (N, C).
    - transform: each channel's scalar is lifted to R features by a shared 1x1 conv (1 -> R,
      bias), ReLU, then a k-tap conv across channels (R -> 1, bias, zero padding), sigmoid.
    - fusion: scale, y = x * g.

    Params: 2R + Rk + 1, R = timm's ``make_divisible(C / 8, 8)`` (8 for C <= 95), k as ECA's.
    Keys ``conv.*`` (1 -> R) and ``conv2.*`` (R -> k), as timm's `EcaModule(use_mlp=True)`.

    Args:
        channels: C.
        kernel_size: k, as `EfficientChannelAttention`.
        gamma: as `EfficientChannelAttention`.
        beta: as `EfficientChannelAttention`.
        rd_ratio: R = C * rd_ratio rounded to a multiple of ``rd_divisor`` (timm's rule).
        rd_channels: R directly (instead of ``rd_ratio``).
        rd_divisor: the multiple R is rounded to (8).
    """

    info = BlockInfo(
        title="ECA-MLP (timm)",
        pooling="average over all positions",
        transform="per-channel 1x1 conv 1->R (R = C/8 rounded to 8), ReLU, 1D conv R->1 across channels "
        "with k(C) taps; sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="timm's experiment on ECA (Wang et al., CVPR 2020); not in the paper",
        timm=("ecam",),
        timm_classes=("EcaModule",),
        note="timm's EcaModule(use_mlp=True); from_timm (shared with ECA) follows the module's config",
    )

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        rd_ratio: float = 1.0 / 8,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
    ) -> None:
        check_channels(channels)
        if rd_channels is None:
            rd_ratio = _check_positive("rd_ratio", rd_ratio)
            rd_channels = _make_divisible(channels * rd_ratio, _check_int("rd_divisor", rd_divisor, 1), 0.9)
        self.rd_channels = _check_int("rd_channels", rd_channels, 1)
        super().__init__(channels, kernel_size, gamma, beta)

    def _build(self) -> None:
        k, r = self.kernel_size, self.rd_channels
        self.conv = nn.Conv1d(1, r, kernel_size=1, bias=True)
        self.conv2 = nn.Conv1d(r, 1, kernel_size=k, padding=(k - 1) // 2, bias=True)

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        """sigmoid(conv2(relu(conv(c)))) along the channel axis, (N, C)."""
        n, mods = c.shape[0], self._modules
        h = F.relu(_run(mods["conv"], c.view(n, 1, -1)))
        return torch.sigmoid(_run(mods["conv2"], h)).view(n, -1)

    @classmethod
    def _from_timm_mlp(cls, module: nn.Module, channels: int | None) -> EfficientChannelAttentionMlp:
        if not isinstance(module.act, nn.ReLU):
            raise ValueError(
                f"from_timm: this EcaModule's MLP uses {type(module.act).__name__}; gcnet's a ReLU"
            )
        r, k = module.conv.weight.shape[0], module.conv2.weight.shape[-1]
        if module.conv2.padding != ((k - 1) // 2,) or module.conv.bias is None or module.conv2.bias is None:
            raise ValueError("from_timm: this EcaModule's MLP convs lack a bias or are not centred")
        block = cls(channels or 1, kernel_size=k, rd_channels=r).to(**_device_dtype(module))
        block.channels = channels
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, rd_channels={self.rd_channels}"


class CircularEfficientChannelAttention(EfficientChannelAttention):
    """Circular ECA (timm's ``ceca``, by Chris Ha): ECA whose channel conv wraps around.

    - pooling: c = mean of x over all positions, (N, C).
    - transform: g = sigmoid(conv1d_k(circular_pad(c))): channel 0's neighbours include
      channel C - 1 (channels have no order, so no edge is special).
    - fusion: scale, y = x * g.

    Params: k (+ 1 with ``bias``: timm's `CecaModule` gives its conv a bias when an
    ``act_layer`` is passed, which it then never applies). Needs C >= (k - 1) / 2. Key
    ``conv.weight`` as timm.

    Args:
        channels: C.
        kernel_size: k, as `EfficientChannelAttention`.
        gamma: as `EfficientChannelAttention`.
        beta: as `EfficientChannelAttention`.
        bias: a bias on the conv (timm's ``act_layer`` side effect; False by default).
    """

    info = BlockInfo(
        title="circular ECA",
        pooling="average over all positions",
        transform="1D conv across channels with circular padding, k(C) taps (odd, >= 3), no bias; sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="timm (Chris Ha) on ECA (Wang et al., CVPR 2020)",
        timm=("ceca",),
        timm_classes=("CecaModule",),
        note="timm's act_layer only adds a conv bias: `bias=True`",
    )

    def __init__(
        self,
        channels: int,
        kernel_size: int | None = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        bias: bool = False,
    ) -> None:
        self.bias = _check_bool("bias", bias)
        super().__init__(channels, kernel_size, gamma, beta)
        if (self.kernel_size - 1) // 2 > channels:
            raise ValueError(
                f"kernel_size={self.kernel_size} wraps around {channels} channels more than once; "
                f"need (kernel_size - 1) / 2 <= channels"
            )

    def _build(self) -> None:
        self.conv = nn.Conv1d(1, 1, kernel_size=self.kernel_size, padding=0, bias=self.bias)

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        """sigmoid(conv1d over the circularly padded channel axis of c), (N, C)."""
        n, p = c.shape[0], (self.kernel_size - 1) // 2
        if p > c.shape[1]:
            raise ValueError(
                f"kernel_size={self.kernel_size} wraps around {c.shape[1]} channels more than once"
            )
        y = F.pad(c.view(n, 1, -1), (p, p), mode="circular")
        return torch.sigmoid(_run(self._modules["conv"], y)).view(n, -1)

    @classmethod
    def from_timm(cls, module: nn.Module, channels: int | None = None) -> Self:
        """The block equivalent to timm's `CecaModule`, its weights loaded (``channels``: as
        `EfficientChannelAttention.from_timm`)."""
        if type(module).__name__ != "CecaModule":
            raise ValueError(f"from_timm: expected timm's CecaModule, got {type(module).__name__}")
        _gate_type(module, "CecaModule", ("Sigmoid",))
        k = module.conv.weight.shape[-1]
        if module.padding != (k - 1) // 2 or module.conv.padding != (0,):
            raise ValueError("from_timm: this CecaModule's padding is not the centred circular one")
        bias = module.conv.bias is not None
        block = cls(channels or k, kernel_size=k, bias=bias).to(**_device_dtype(module))
        block.channels = channels
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, circular" + (", bias" if self.bias else "")


# -- effective SE ---------------------------------------------------------------------------------


class EffectiveSqueezeExcite(ChannelGate):
    """Effective SE (Lee & Park, CenterMask / VoVNetV2, CVPR 2020): SE with one FC, no bottleneck.

    - pooling: c = mean of x over all positions, (N, C) (``add_maxpool``: timm's
      0.5 * (mean + max), an experiment).
    - transform: g = hard_sigmoid(W c + b) = relu6(W c + b + 3) / 6, W: C x C with bias.
    - fusion: scale, y = x * g.

    Params: C^2 + C. Key names ``fc.weight`` (C, C, 1, 1) / ``fc.bias``, as timm's
    `EffectiveSEModule` (``create_attn("ese", C)``); default init, as timm.
    """

    info = BlockInfo(
        title="effective SE",
        pooling="average over all positions",
        transform="one FC C->C with bias; hard sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Lee & Park, CenterMask: Real-Time Anchor-Free Instance Segmentation, CVPR 2020",
        timm=("ese",),
        timm_classes=("EffectiveSEModule",),
        note="timm's add_maxpool (0.5 * (avg + max) pooling) is supported",
    )

    def __init__(self, channels: int, add_maxpool: bool = False) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.add_maxpool = _check_bool("add_maxpool", add_maxpool)
        self.fc = PointwiseConv(channels, channels, vectors=True)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return _pool_avg_max(x, self.add_maxpool)

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        """hard_sigmoid(fc(c)), (N, C)."""
        return F.hardsigmoid(_run(self._modules["fc"], c.view(c.shape[0], -1, 1, 1))).flatten(1)

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The block equivalent to timm's `EffectiveSEModule`, its weights loaded."""
        if type(module).__name__ != "EffectiveSEModule":
            raise ValueError(f"from_timm: expected timm's EffectiveSEModule, got {type(module).__name__}")
        _gate_type(module, "EffectiveSEModule", ("Hardsigmoid", "HardSigmoid", "HardSigmoidMe"))
        if module.fc.bias is None:
            raise ValueError("from_timm: this EffectiveSEModule's fc has no bias")
        block = cls(module.fc.weight.shape[1], add_maxpool=bool(module.add_maxpool))
        block = block.to(**_device_dtype(module))
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        return f"{self.channels}" + (", add_maxpool=True" if self.add_maxpool else "")


# -- Gather-Excite --------------------------------------------------------------------------------


class _MapConv(nn.Conv2d):
    """A 1x1 conv (``nn.Conv2d`` parameters) applied to every position of a small map of any
    rank as one batched matrix product: ``baddbmm`` with the weight broadcast over the batch
    (``F.conv2d`` and ``torch.matmul``'s folded ``mm`` cost 3-10x that on the CPU for the
    few positions of a gathered map). Runs in the input's dtype (the weights cast)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight, self.bias
        if w.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            w, b = w.to(x.dtype), b.to(x.dtype)
        n, c, o = x.shape[0], x.shape[1], w.shape[0]
        y = torch.baddbmm(b.view(1, o, 1), w.view(1, o, c).expand(n, o, c), x.flatten(2))
        return y.view(n, o, *x.shape[2:])


class _ConvMlp(nn.Module):
    """The excite MLP of GE-theta-plus: 1x1 conv C->R (bias), ReLU, 1x1 conv R->C (bias), on
    a pooled vector or on every position of a coarse map. Keys ``fc1.*`` / ``fc2.*``, as
    timm's `ConvMlp`."""

    def __init__(self, channels: int, hidden: int, vectors: bool) -> None:
        super().__init__()
        if vectors:
            self.fc1 = PointwiseConv(channels, hidden, vectors=True)
            self.fc2 = PointwiseConv(hidden, channels, vectors=True)
        else:
            self.fc1 = _MapConv(channels, hidden)
            self.fc2 = _MapConv(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._modules
        return _run(mods["fc2"], F.relu(_run(mods["fc1"], x)))


class GatherExcite(ChannelGate):
    """Gather-Excite (Hu et al., NeurIPS 2018): a gate from context gathered over an extent.

    - pooling (gather): extent e = 0 gathers globally, c = mean over all positions; e >= 2
      averages over (2e - 1)-wide windows with stride e and padding e - 1 (padding not
      counted), a map of ceil(S / e) per spatial size S (GE-theta-minus, no params). With
      ``extra_params`` (GE-theta) the gather is learned instead: log2(e) depthwise 3x3 convs
      of stride 2 (no bias), each followed by BN, ReLU between them; e = 0: one depthwise
      conv whose kernel is the whole ``feat_size`` map (no padding: a 1 x 1 output), BN.
    - transform (excite): ``use_mlp`` (GE-theta-plus): 1x1 conv C->R, ReLU, 1x1 conv R->C
      (biases) at every gathered position; then sigmoid; then nearest upsampling to the
      input's size (an exact block broadcast when e divides it: no upsampled copy).
    - fusion: scale, y = x * g.

    Params: none for the parameter-free gather alone; the MLP adds 2RC + R + C (with e = 0
    the block is then SE, R = round(C / 16)); the learned gather adds 9C (+ 2C BN) per conv,
    or C * prod(feat_size) (+ 2C) globally.
    Defaults are timm's (``create_attn("ge", C)``: e = 0, no params, MLP with R =
    round(C * rd_ratio)). Ranks: any without ``extra_params`` (the windows span every
    spatial axis); with it, 2D only. Keys as timm's ``GatherExcite`` (``gather.conv1.*``,
    ``gather.norm1.*``, ``mlp.fc1.*``, ``mlp.fc2.*``).

    Args:
        channels: C.
        extent: e, 0 (global) or an even int >= 2 (a power of two with ``extra_params``).
        extra_params: learned (depthwise conv) gather instead of average pooling.
        use_mlp: the excite MLP (theta-plus); without it the gather feeds the sigmoid.
        rd_ratio: R = max(1, round(C * rd_ratio)) (timm's rule).
        rd_channels: R directly (instead of ``rd_ratio``).
        feat_size: the (H, W) the global learned gather is built for (extent 0 with params).
        norm: the BN after each gather conv.
        add_maxpool: timm's experiment, 0.5 * (avg + max) pooling (parameter-free gather).
    """

    info = BlockInfo(
        title="Gather-Excite",
        pooling="average over all positions (extent 0) or over (2e-1)-wide windows of stride e; "
        "or learned: strided depthwise convs + BN",
        transform="optional 1x1 conv MLP C->C/16->C at each gathered position; sigmoid; nearest upsampling",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Hu et al., Gather-Excite: Exploiting Feature Context in CNNs, NeurIPS 2018",
        timm=("ge",),
        timm_classes=("GatherExcite",),
        note="learned gather: 2D only; its global form (extent 0) is a valid-padded conv "
        "(timm pads it 'same', which is not global); timm 1.0.31 raises building the MLP or "
        "learned gather (positional device/dtype), so only the parameter-free, MLP-free form "
        "converts from a stock timm",
    )

    def __init__(
        self,
        channels: int,
        extent: int = 0,
        extra_params: bool = False,
        use_mlp: bool = True,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        feat_size: int | tuple[int, int] | None = None,
        norm: bool = True,
        add_maxpool: bool = False,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.extent = _check_int("extent", extent, 0)
        if extent == 1 or extent % 2:
            raise ValueError(f"extent must be 0 (global) or an even int >= 2, got {extent!r}")
        self.extra_params = _check_bool("extra_params", extra_params)
        self.use_mlp = _check_bool("use_mlp", use_mlp)
        self.add_maxpool = _check_bool("add_maxpool", add_maxpool)
        _check_bool("norm", norm)
        if add_maxpool and extra_params:
            raise ValueError(
                "add_maxpool mixes max pooling into the parameter-free gather; not with extra_params"
            )
        self.feat_size = None
        self.register_module(
            "gather", self._build_gather(channels, extent, feat_size, norm) if extra_params else None
        )
        if use_mlp:
            if rd_channels is None:
                rd_channels = max(1, int(channels * _check_positive("rd_ratio", rd_ratio) + 0.5))
            self.mlp = _ConvMlp(channels, _check_int("rd_channels", rd_channels, 1), vectors=extent == 0)
        else:
            self.register_module("mlp", None)

    def _build_gather(self, channels: int, extent: int, feat_size, norm: bool) -> nn.Sequential:
        gather = nn.Sequential()
        if extent == 0:
            if feat_size is None:
                raise ValueError("feat_size (H, W) is needed for the global gather with extra_params")
            fs = (feat_size, feat_size) if isinstance(feat_size, int) else tuple(feat_size)
            if len(fs) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in fs):
                raise ValueError(f"feat_size must be an int or (H, W) of positive ints, got {feat_size!r}")
            self.feat_size = fs
            gather.add_module("conv1", nn.Conv2d(channels, channels, fs, groups=channels, bias=False))
            if norm:
                gather.add_module("norm1", nn.BatchNorm2d(channels))
            return gather
        num_conv = int(math.log2(extent))
        if 2**num_conv != extent:
            raise ValueError(f"extent must be a power of two with extra_params (log2(e) convs), got {extent}")
        for i in range(1, num_conv + 1):
            conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
            gather.add_module(f"conv{i}", conv)
            if norm:
                gather.add_module(f"norm{i}", nn.BatchNorm2d(channels))
            if i != num_conv:
                gather.add_module(f"act{i}", nn.ReLU())
        return gather

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = self._modules  # the dict: ~0.06 us a name, the attributes ~0.5-3 us
        if self.extent or mods["gather"] is not None or mods["mlp"] is not None or self.add_maxpool:
            return super().forward(x)
        # the parameter-free global gate, x * sigmoid(mean): three ops, as few Python steps
        c, rank = self.channels, x.dim()
        if not 3 <= rank <= 5 or (c is not None and x.shape[1] != c):
            self._check(x)  # raises, naming the mismatch
        return x * torch.sigmoid(x.mean(_SPATIAL_DIMS[rank], keepdim=True))

    def _check(self, x: torch.Tensor) -> None:
        super()._check(x)
        if self.gather is not None and x.dim() != 4:
            raise ValueError(
                f"GatherExcite with extra_params takes (N, C, H, W) inputs, got shape {tuple(x.shape)}"
            )
        if self.feat_size is not None and tuple(x.shape[2:]) != self.feat_size:
            raise ValueError(
                f"GatherExcite's global gather was built for feat_size={self.feat_size}, "
                f"got input of shape {tuple(x.shape)}"
            )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The gathered context: (N, C) for the global gather, else (N, C, *ceil(S / e))."""
        gather = self._modules["gather"]
        if gather is not None:
            y = gather(x)
            return y.flatten(1) if self.extent == 0 else y
        e = self.extent
        if e == 0:
            return _pool_avg_max(x, self.add_maxpool)
        d = x.dim() - 2
        if d == 3 and min(x.shape[2:]) < 2 * e - 1:
            y = _avg_pool3d_small(x, 2 * e - 1, e, e - 1)
        else:
            avg_pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[d - 1]
            y = avg_pool(
                x, 2 * e - 1, e, e - 1, False, False
            )  # kernel, stride, padding, ceil, count_include_pad
        if self.add_maxpool:
            max_pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[d - 1]
            y = 0.5 * y + 0.5 * max_pool(x, 2 * e - 1, e, e - 1)
        return y

    def transform(self, c: torch.Tensor) -> torch.Tensor:
        """sigmoid(mlp(c)) on the gathered context (its coarse positions kept)."""
        mlp = self._modules["mlp"]
        if mlp is not None:
            c = _run(mlp, c if c.dim() > 2 else c.view(c.shape[0], -1, 1, 1))
        return torch.sigmoid(c.flatten(1) if self.extent == 0 else c)

    def fuse(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """x * nearest_upsample(gate): a broadcast where each size is a multiple of the map's."""
        if gate.dim() == 2:
            return super().fuse(x, gate)
        if gate.dtype != x.dtype:
            gate = gate.to(x.dtype)
        size, coarse = x.shape[2:], gate.shape[2:]
        if all(s % g == 0 for s, g in zip(size, coarse)):  # nearest = block replication, exactly
            split, gshape = [*x.shape[:2]], [*gate.shape[:2]]
            for s, g in zip(size, coarse):
                split += [g, s // g]
                gshape += [g, 1]
            return (x.view(split) * gate.view(gshape)).view(x.shape)
        return x * F.interpolate(gate, size=size, mode="nearest")

    @classmethod
    def from_timm(cls, module: nn.Module, channels: int | None = None) -> Self:
        """The block equivalent to timm's `GatherExcite`, its weights loaded. A module without
        parameters (no MLP, parameter-free gather) does not record C: ``channels`` as
        `EfficientChannelAttention.from_timm`. timm's global learned gather pads its conv
        ('same', not a global gather): a ValueError."""
        if type(module).__name__ != "GatherExcite":
            raise ValueError(f"from_timm: expected timm's GatherExcite, got {type(module).__name__}")
        _gate_type(module, "GatherExcite", ("Sigmoid",))
        kw = _ge_config_from_timm(module)
        c = kw.pop("channels") or channels
        block = cls(c or 1, **kw).to(**_device_dtype(module))
        if c is None:
            block.channels = None
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        mlp = None if self.mlp is None else self.mlp.fc1.out_channels
        return f"{self.channels}, extent={self.extent}, extra_params={self.extra_params}, rd_channels={mlp}"


def _avg_pool3d_small(x: torch.Tensor, k: int, s: int, p: int) -> torch.Tensor:
    """``avg_pool3d(x, k, s, p, count_include_pad=False)`` for a map with a side shorter than k
    (which ``avg_pool3d`` refuses on the CPU, padding notwithstanding): the window mean is
    separable (a clipped window is a box, its count a product), so pool H, W per frame, then T."""
    n, c, t = x.shape[:3]
    y = F.avg_pool2d(x.reshape(n, c * t, *x.shape[3:]), k, s, p, False, False)  # (N, C T, h, w)
    h, w = y.shape[2:]
    y = y.view(n, c, t, h * w).transpose(2, 3).reshape(n, c * h * w, t)
    y = F.avg_pool1d(y, k, s, p, False, False)  # (N, C h w, t')
    return y.view(n, c, h, w, -1).permute(0, 1, 4, 2, 3)


def _ge_config_from_timm(module: nn.Module) -> dict:
    """The `GatherExcite` arguments of a timm GatherExcite (``channels`` None where no
    weight records it); a ValueError for what the gcnet block does not implement."""
    kw: dict = {"channels": None, "extent": int(module.extent), "add_maxpool": bool(module.add_maxpool)}
    mlp = module.mlp
    if type(mlp).__name__ == "Identity":
        kw["use_mlp"] = False
    else:
        if (
            type(mlp).__name__ != "ConvMlp"
            or not isinstance(mlp.act, nn.ReLU)
            or type(mlp.norm).__name__ != "Identity"
        ):
            raise ValueError("from_timm: this GatherExcite's MLP is not ConvMlp(1x1 conv, ReLU, 1x1 conv)")
        if mlp.fc1.bias is None or mlp.fc2.bias is None or mlp.drop.p != 0:
            raise ValueError("from_timm: this GatherExcite's MLP has no biases or a dropout")
        kw.update(channels=mlp.fc1.in_channels, rd_channels=mlp.fc1.out_channels)
    gather = module.gather
    if gather is None:
        return kw
    kw["extra_params"] = True
    convs = [m for m in gather if isinstance(m, nn.Conv2d)]
    acts = [m for m in gather if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    if any(not isinstance(a, nn.ReLU) for a in acts):
        raise ValueError("from_timm: this GatherExcite's gather uses a non-ReLU activation")
    kw["norm"] = any(isinstance(m, nn.BatchNorm2d) for m in gather)
    kw["channels"] = convs[0].in_channels
    if kw["extent"] == 0:
        conv = convs[0]
        if any(p != 0 for p in conv.padding):
            raise ValueError(
                "from_timm: timm's global learned gather pads its conv ('same', an H x W output), "
                "not the paper's global gather (valid, 1 x 1); gcnet's block implements the paper's"
            )
        kw["feat_size"] = tuple(conv.kernel_size)
    for m in gather:
        if isinstance(m, nn.BatchNorm2d) and (m.eps != 1e-5 or not m.affine or not m.track_running_stats):
            raise ValueError(
                f"from_timm: this GatherExcite's BatchNorm is not BatchNorm2d(C) (eps={m.eps!r})"
            )
    return kw


# -- GRN ------------------------------------------------------------------------------------------


class GlobalResponseNorm(ChannelGate):
    """Global Response Normalization (Woo et al., ConvNeXt V2, CVPR 2023).

    - pooling: G_c = ||x_c||_2 over all positions, (N, C).
    - transform: N_c = G_c / (mean over channels of G + eps); the gate 1 + gamma_c * N_c and
      the shift beta_c.
    - fusion: y = gamma * (x * N) + beta + x, computed as x * (1 + gamma N) + beta in one pass.

    Params: 2C (``weight`` = gamma, ``bias`` = beta, zero at init: the identity, exactly).
    eps = 1e-6 (the paper's and timm's). timm's `GlobalResponseNorm` takes channels-last
    (N, H, W, C) maps by default (``channels_last=True``); this block takes (N, C, ...) like
    every block, any rank; its output keeps x's dtype (timm's promotes bf16 x to float32).
    """

    info = BlockInfo(
        title="GRN",
        pooling="L2 norm over all positions",
        transform="divide by the mean over channels (+ eps); gamma, beta per channel",
        fusion="x * (1 + gamma N) + beta",
        identity_at_init=True,
        dims=(1, 2, 3),
        paper="Woo et al., ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders, "
        "CVPR 2023",
        timm=(),
        timm_classes=("GlobalResponseNorm",),
        note="timm's is channels-last (N, H, W, C) by default; this one takes (N, C, ...)",
    )

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.eps = _check_positive("eps", eps)
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """G = ||x_c||_2 over the positions, (N, C) (float32 accumulation for half inputs)."""
        return torch.linalg.vector_norm(x.flatten(2), 2, -1)

    def transform(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma * G / (mean_c G + eps), beta): the scale (N, C) and the shift (C,)."""
        params = self._parameters
        w, b = params["weight"], params["bias"]
        if g.dtype != w.dtype:  # in the parameters' dtype (float32 under autocast)
            g = g.to(w.dtype)
        nx = g / (g.mean(1, keepdim=True) + self.eps)
        return torch.addcmul(torch.ones_like(nx), w, nx), b

    def fuse(self, x: torch.Tensor, gate: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x * scale + shift, one pass over x."""
        scale, shift = gate
        n, c, tail = x.shape[0], x.shape[1], (1,) * (x.dim() - 2)
        return torch.addcmul(shift.to(x.dtype).view(1, c, *tail), x, scale.to(x.dtype).view(n, c, *tail))

    @classmethod
    def from_timm(cls, module: nn.Module) -> Self:
        """The block equivalent to timm's `GlobalResponseNorm` (either ``channels_last``:
        the block takes (N, C, ...) whatever timm's layout), its weights loaded."""
        if type(module).__name__ != "GlobalResponseNorm":
            raise ValueError(f"from_timm: expected timm's GlobalResponseNorm, got {type(module).__name__}")
        block = cls(module.weight.shape[0], eps=float(module.eps)).to(**_device_dtype(module))
        block.load_state_dict(module.state_dict())
        return block

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


# -- SRM ------------------------------------------------------------------------------------------


class StyleRecalibration(ChannelGate):
    """SRM, the style-based recalibration module (Lee, Kim & Nam, ICCV 2019).

    - pooling (style pooling): t_c = [mean_c, std_c] over all positions, (N, C, 2); std is
      the unbiased one (Bessel's correction), as the official code's ``Tensor.std``, so the
      input needs at least 2 positions.
    - transform (style integration): z_c = w_c1 mean_c + w_c2 std_c (channel-wise FC: two
      weights per channel, no mixing across channels, no bias), g = sigmoid(BN(z)).
    - fusion: scale, y = x * g.

    Params: 2C (``cfc``, (C, 2), zero at init as the official code) + 2C BN (+ 2C running
    statistics). Keys ``cfc``, ``bn.*`` as the official ``SRMLayer`` (BN over (N, C, 1, 1),
    ``nn.BatchNorm2d``), so its checkpoints load unchanged. Not in timm.
    """

    info = BlockInfo(
        title="SRM",
        pooling="style pooling: mean and std over all positions",
        transform="channel-wise FC (2 weights per channel, no bias), BatchNorm; sigmoid",
        fusion="scale",
        identity_at_init=False,
        dims=(1, 2, 3),
        paper="Lee, Kim & Nam, SRM: A Style-based Recalibration Module for CNNs, ICCV 2019",
        note="std with Bessel's correction (the official code's): needs >= 2 positions",
    )

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.cfc = nn.Parameter(torch.zeros(channels, 2))
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0 <= momentum <= 1):  # fmt: skip
            raise ValueError(f"momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.bn = nn.BatchNorm2d(channels, eps=_check_positive("eps", eps), momentum=momentum)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.cfc)
        self.bn.reset_parameters()

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """t = [mean, std] over the positions, (N, C, 2)."""
        xf = x.flatten(2)
        if xf.shape[-1] < 2:
            raise ValueError(
                f"StyleRecalibration's std needs at least 2 positions, got input of shape {tuple(x.shape)}"
            )
        std, mean = torch.std_mean(xf, -1)
        return torch.stack((mean, std), -1)

    def transform(self, t: torch.Tensor) -> torch.Tensor:
        """sigmoid(BN(sum_k cfc[c, k] t[n, c, k])), (N, C)."""
        cfc = self._parameters["cfc"]
        if t.dtype != cfc.dtype:  # in the parameters' dtype (float32 under autocast)
            t = t.to(cfc.dtype)
        z = (t * cfc).sum(-1)
        n, c = z.shape
        return torch.sigmoid(_run(self._modules["bn"], z.view(n, c, 1, 1))).view(n, c)

    def extra_repr(self) -> str:
        return f"{self.channels}"


# -- GCT ------------------------------------------------------------------------------------------

GCT_MODES = ("l2", "l1")


class GatedChannelTransform(ChannelGate):
    """GCT, the gated channel transformation (Yang et al., CVPR 2020).

    - pooling (global context embedding): l2 mode, s_c = alpha_c * sqrt(sum_j x_cj^2 + eps);
      l1 mode, s_c = alpha_c * sum_j |x_cj| (``after_relu``: sum_j x_cj, for x >= 0).
    - transform (channel normalisation, gating): s_hat_c = gamma_c * s_c / sqrt(mean_c s_c^2
      + eps) (l1: / (mean_c |s_c| + eps)), i.e. sqrt(C) s_c / sqrt(sum_c s_c^2 + C eps) times
      gamma_c; gate 1 + tanh(s_hat_c + beta_c).
    - fusion: scale, y = x * (1 + tanh(gamma s_hat + beta)).

    Params: 3C (``alpha`` = 1, ``gamma`` = ``beta`` = 0 at init: the identity, exactly),
    stored (1, C, 1, 1) as the official code (keys ``alpha``, ``gamma``, ``beta``), used on
    any rank. eps = 1e-5 inside both square roots, as the official code (so the channel
    normalisation's eps is C times the spec's eps inside the sum). Not in timm.

    Args:
        channels: C.
        eps: the official 1e-5.
        mode: ``"l2"`` (the paper's default) or ``"l1"``.
        after_relu: l1 mode only: skip the absolute value (inputs known to be >= 0).
    """

    info = BlockInfo(
        title="GCT",
        pooling="alpha * L2 norm over all positions (or L1)",
        transform="channel normalisation sqrt(C) s / ||s||; gamma, beta per channel; 1 + tanh",
        fusion="scale",
        identity_at_init=True,
        dims=(1, 2, 3),
        paper="Yang et al., Gated Channel Transformation for Visual Recognition, CVPR 2020",
        note="eps = 1e-5 in both square roots, as the official code; l1 mode too",
    )

    def __init__(self, channels: int, eps: float = 1e-5, mode: str = "l2", after_relu: bool = False) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.eps = _check_positive("eps", eps)
        if mode not in GCT_MODES:
            raise ValueError(f"mode must be one of {GCT_MODES}, got {mode!r}")
        self.mode = mode
        self.after_relu = _check_bool("after_relu", after_relu)
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """The un-weighted embedding: ||x_c||_2 (l2), ||x_c||_1 or sum x_c (l1), (N, C)."""
        xf = x.flatten(2)
        if self.mode == "l2":
            return torch.linalg.vector_norm(xf, 2, -1)
        return xf.sum(-1) if self.after_relu else torch.linalg.vector_norm(xf, 1, -1)

    def transform(self, s: torch.Tensor) -> torch.Tensor:
        """1 + tanh(gamma * s_hat + beta), (N, C), from the pooled norms."""
        params = self._parameters
        alpha, gamma, beta = (params[k].view(1, -1) for k in ("alpha", "gamma", "beta"))
        if s.dtype != alpha.dtype:  # in the parameters' dtype (float32 under autocast)
            s = s.to(alpha.dtype)
        eps = self.eps
        if self.mode == "l2":
            emb = torch.sqrt(s * s + eps) * alpha
            norm = gamma * torch.rsqrt((emb * emb).mean(1, keepdim=True) + eps)
        else:
            emb = s * alpha
            norm = gamma / (emb.abs().mean(1, keepdim=True) + eps)
        return 1.0 + torch.tanh(torch.addcmul(beta, emb, norm))

    def extra_repr(self) -> str:
        relu = ", after_relu=True" if self.after_relu else ""
        return f"{self.channels}, mode={self.mode!r}{relu}"
