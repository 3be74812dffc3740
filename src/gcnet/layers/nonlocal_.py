"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), 1D / 2D / 3D.

    z_i = x_i + BN(W_z sum_j f(x_i, x_j) / C(x) * g(x_j))

In the framework of `gcnet.layers.context` NL is the query-*dependent* end: its context
modeling computes one attention map per query position (the GC paper's observation is that
these maps are nearly identical, which is what GC exploits). Pairwise functions:

- ``embedded_gaussian``: softmax_j(theta(x_i)^T phi(x_j)) (scaled by 1/sqrt(C') if use_scale)
- ``gaussian``:          softmax_j(x_i^T x_j)
- ``dot_product``:       theta(x_i)^T phi(x_j) / N_j
- ``concatenation``:     ReLU(w^T [theta(x_i); phi(x_j)]) / N_j

``sub_sample`` max-pools by 2 over the spatial dims (never over time for 3D inputs) either the
outputs of phi and g (``True`` / ``"output"``: mmcv's ``NonLocal2d``) or their input
(``"input"``: x is pooled once and phi and g are 1x1 convs on it, as in Wang et al.'s Caffe2
code; the GC paper's NL FLOPs, +0.25 G on ResNet-50 at 224, count this form). W_z is
followed by a BatchNorm whose weight and bias start at zero, so the block is the identity at
init. Key names follow mmcv's ``NonLocal2d`` where they can.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._info import BlockInfo
from ._validate import check_channels, check_choice, check_input
from .context import _softmax_dtype

__all__ = ["NonLocalBlock", "NL_MODES"]

NL_MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")


def _pointwise(xf: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv on a flattened (N, C, L) tensor -> (N, O, L)."""
    w = conv.weight.flatten(1).to(xf.dtype)
    out = torch.matmul(w, xf)
    if conv.bias is not None:
        out = out + conv.bias.to(out.dtype).unsqueeze(-1)
    return out


def _subsample(t: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Max-pool (N, C', L) laid out as (N, C', *spatial) by 2 over space; flatten again."""
    n, c = t.shape[0], t.shape[1]
    t = t.reshape(n, c, *spatial)
    if len(spatial) == 1:
        t = F.max_pool1d(t, 2)
    elif len(spatial) == 2:
        t = F.max_pool2d(t, 2)
    else:
        t = F.max_pool3d(t, (1, 2, 2))
    return t.flatten(2)


class NonLocalBlock(nn.Module):
    """Non-local block with residual (add) fusion.

    Args:
        channels: input channels C.
        mode: pairwise function, one of `NL_MODES`.
        reduction: inter channels C' = C // reduction.
        sub_sample: ``False``; ``True`` / ``"output"``: max-pool phi(x) and g(x) by 2 spatially
            (4x fewer keys); ``"input"``: phi and g on x max-pooled by 2 (also 4x cheaper
            phi and g convs).
        use_scale: divide embedded-gaussian logits by sqrt(C') (mmcv's default).
        norm: BatchNorm after W_z (True, zero-initialised) or none (then W_z is zeroed).
    """

    info = BlockInfo(
        title="Non-local",
        pooling="none: a query-dependent softmax(theta(x_i) . phi(x_j)) per position",
        transform="g: 1x1 conv C->C/2; W_z: 1x1 conv C/2->C, BatchNorm (zero-initialised)",
        fusion="add",
        identity_at_init=True,
        dims=(1, 2, 3),
        paper="Wang et al., Non-local Neural Networks, CVPR 2018",
        note="not a global-context block: its cost grows with (positions)^2",
    )

    def __init__(
        self,
        channels: int,
        mode: str = "embedded_gaussian",
        reduction: int = 2,
        sub_sample: bool | str = False,
        use_scale: bool = True,
        norm: bool = True,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.channels = check_channels(channels)
        self.mode = check_choice("mode", mode, NL_MODES)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction must be a positive int, got {reduction!r}")
        inter = channels // reduction
        if inter < 1:
            raise ValueError(
                f"reduction={reduction} leaves {channels} // {reduction} = 0 inter channels; "
                f"need reduction <= {channels}"
            )
        self.inter_channels = inter
        if sub_sample not in (False, True, "output", "input"):
            raise ValueError(f"sub_sample must be False, True, 'output' or 'input', got {sub_sample!r}")
        self.sub_sample = sub_sample
        self._pool_outputs = sub_sample in (True, "output")
        self.use_scale = use_scale
        self.zero_init = zero_init
        self.g = nn.Conv2d(channels, inter, 1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, inter, 1)
            self.phi = nn.Conv2d(channels, inter, 1)
        else:
            self.theta = self.phi = None
        if mode == "concatenation":
            self.concat_project = nn.Conv2d(2 * inter, 1, 1, bias=False)
        else:
            self.concat_project = None
        # W_z: no bias when a norm follows (as mmcv's ConvModule with a norm)
        self.conv_out = nn.Conv2d(inter, channels, 1, bias=not norm)
        self.norm = nn.BatchNorm1d(channels) if norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.g, self.theta, self.phi):
            if conv is not None:
                nn.init.normal_(conv.weight, std=0.01)
                nn.init.zeros_(conv.bias)
        if self.concat_project is not None:
            nn.init.normal_(self.concat_project.weight, std=0.01)
        nn.init.normal_(self.conv_out.weight, std=0.01)
        if self.conv_out.bias is not None:
            nn.init.zeros_(self.conv_out.bias)
        if self.norm is not None:
            self.norm.reset_parameters()
        if self.zero_init:  # the last layer (the norm, or W_z without one) starts at zero
            last = self.norm if self.norm is not None else self.conv_out
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def _keys_input(self, xf: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
        """What phi and g read: x, or x max-pooled for ``sub_sample="input"``."""
        return _subsample(xf, spatial) if self.sub_sample == "input" else xf

    def _pairwise(
        self, xf: torch.Tensor, spatial: tuple[int, ...], xk: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N, L, L') attention weights of every query i over every key j (``xk``: phi's
        input, `_keys_input`)."""
        xk = self._keys_input(xf, spatial) if xk is None else xk
        if self.mode == "gaussian":
            theta, phi = xf, xk
        else:
            theta, phi = _pointwise(xf, self.theta), _pointwise(xk, self.phi)
        if self._pool_outputs:
            phi = _subsample(phi, spatial)
        if self.mode == "concatenation":
            # w^T [theta_i; phi_j] = w1^T theta_i + w2^T phi_j: no (N, 2C', L, L') tensor
            w = self.concat_project.weight.flatten().to(xf.dtype)
            a = torch.matmul(w[: self.inter_channels], theta)  # (N, L)
            b = torch.matmul(w[self.inter_channels :], phi)  # (N, L')
            return F.relu(a.unsqueeze(-1) + b.unsqueeze(-2)) / phi.shape[-1]
        f = torch.bmm(theta.transpose(1, 2), phi)  # (N, L, L')
        if self.mode == "dot_product":
            return f / phi.shape[-1]
        if self.mode == "embedded_gaussian" and self.use_scale:
            f = f / math.sqrt(theta.shape[1])
        return torch.softmax(f.to(_softmax_dtype(f.dtype)), dim=-1).to(xf.dtype)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-query attention maps, (N, L, L'): row i is query i's map over the keys."""
        check_input(type(self).__name__, x, self.channels)
        return self._pairwise(x.flatten(2), tuple(x.shape[2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(type(self).__name__, x, self.channels)
        spatial = tuple(x.shape[2:])
        xf = x.flatten(2)
        xk = self._keys_input(xf, spatial)
        attn = self._pairwise(xf, spatial, xk)  # (N, L, L')
        g = _pointwise(xk, self.g)
        if self._pool_outputs:
            g = _subsample(g, spatial)
        y = torch.bmm(g, attn.transpose(1, 2))  # (N, C', L)
        y = _pointwise(y, self.conv_out)
        if self.norm is not None:
            y = self.norm(y)
        return x + y.reshape(x.shape)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, mode={self.mode!r}, inter_channels={self.inter_channels}, "
            f"sub_sample={self.sub_sample}"
        )
