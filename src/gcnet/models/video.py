"""Slow-only 3D ResNets (SlowFast's slow pathway, mmaction2's ``ResNet3dSlowOnly``) with the
context blocks of the family (GC, NL, SNL, SE) in 3D, and 2D -> 3D weight inflation.

Architecture (``slowonly_r50``, 32.45M parameters with 400 classes, pytorchvideo's slow_r50):

- stem conv 1x7x7, stride (1, 2, 2), padding (0, 3, 3); max-pool 1x3x3, stride (1, 2, 2);
- res2 / res3 bottlenecks: first conv 1x1x1; res4 / res5: first conv 3x1x1 (temporal padding 1);
  the 3x3 conv is 1x3x3 and carries the spatial stride (torchvision's V1.5); no temporal
  down-sampling anywhere;
- head: global average pool over (T, H, W), dropout 0.5 (``dropout=``), fc.

``slowonly_r18`` / ``slowonly_r34`` use BasicBlocks. Choice made here: in res4 / res5 the
*first* conv of each BasicBlock gets the 3 temporal taps (3x3x3, temporal padding 1) and the
second stays 1x3x3, the BasicBlock analogue of the bottleneck's 3x1x1 first conv.
mmaction2's ``BasicBlock3d`` with ``inflate`` makes both convs 3x3x3: pass
``basic_temporal="both"`` for that layout.

The network *is* `ResNet`: it is built by the 2D code (blocks,
plug-in placement, freezing, ``context_blocks``, timm's model API: ``feature_info``,
``forward_intermediates``, ``forward_features`` / ``forward_head``,
``set_grad_checkpointing``, ``features_only``) and its convs, norms and pools are then
swapped for their 3D counterparts under the same names. So the state-dict keys are
torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``) and
2D weights map key by key (`inflate_state_dict`). The plug-in blocks are
the 2D ones, untouched: they pool over all T*H*W positions (their 1x1 convs are stored as
``Conv2d`` weights and applied to the pooled / flattened tensor).

Plug-in positions: the 2D ones (``after_1x1``, ``after_3x3``, ``after_add``) and
``after_block``: after the residual block's final ReLU, where mmaction2 (and Wang et al.'s
code) put the non-local blocks. Named models:

- ``gc_slowonly_r50`` (GC r16 in every block of c3-c5, after_1x1, as ``gc_resnet50``),
  ``gc_slowonly_r50_r4``, ``gc_slowonly_r101``;
- ``nl_slowonly_r50``: +5 NL (embedded Gaussian, ``sub_sample=True``, ``use_scale=False``,
  mmaction2's ``non_local_cfg``) in res3 blocks 0, 2 and res4 blocks 0, 2, 4, after_block;
  ``snl_slowonly_r50`` / ``gc5_slowonly_r50``: +5 SNL / +5 GC r16 at the same places;
- ``se_slowonly_r50``: SE r16 in every block of c2-c5 (as ``se_resnet50``);
- r18 (CPU-sized): ``slowonly_r18``, ``gc_slowonly_r18``, ``se_slowonly_r18`` as above, and
  ``nl_slowonly_r18`` / ``snl_slowonly_r18`` / ``gc5_slowonly_r18`` with the block in every
  other block of res3 and res4 (block 0 of each: 2 blocks);
- tiny (``gcnet demo --task video``, `SlowOnlyTiny`: a 2-conv stride-4 stem, one 32-wide
  BasicBlock per stage, 3x1x1 temporal convs in c4 / c5 only, so a position sees 5 consecutive
  frames): ``slowonly_tiny``, ``gc_slowonly_tiny`` (GC r1/4 in every block of c3-c5,
  after_1x1) and ``nl_slowonly_tiny`` (NL, as ``nl_slowonly_r50``'s, at the same places); the
  blocks' last layers start random (``zero_init_last`` / ``zero_init`` False), as the demo
  trains from scratch.

Overrides are those of the 2D models (``plugin``, ``stages``, ``position``, ``indices``, the
block's ``ratio`` / ``pooling`` / ``fusion`` / ``mode`` / ``sub_sample`` ..., ``num_classes``,
``norm``, ``frozen_stages``, ``norm_eval``, ``out_indices``, ``output_stride``,
``zero_init_residual``, ``in_chans``) plus ``dropout``, ``temporal_stages``,
``temporal_kernel`` and ``basic_temporal``. ``num_classes`` defaults to 400 (Kinetics).

``pretrained=``: ``"torchvision"`` / ``"torchvision:NAME"`` (the 2D arch's ImageNet weights),
or a checkpoint path: a 2D one (ours, safetensors or ``.pth``; an official GCNet /
mmdetection backbone through `gcnet.convert.resnet_from_mmdet`) is inflated, a 3D one
of ours loads as is. The loading rules are `gcnet.models.weights.load_state_dict_checked`'s.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from gcnet.convert import is_mmdet_checkpoint, resnet_from_mmdet

from .features import FeatureInfo
from .registry import named_model, resolve_config
from .resnet import POSITIONS, STAGES, BasicBlock, Bottleneck, PluginSpec, ResNet, parse_stages
from .weights import (
    _torchvision_state_dict,
    load_checkpoint_file,
    load_state_dict_checked,
    trained_model_name,
)

__all__ = [
    "VIDEO_MODELS",
    "VIDEO_POSITIONS",
    "BasicBlock3d",
    "Bottleneck3d",
    "FrozenBatchNorm3d",
    "ResNet3d",
    "SlowOnlyTiny",
    "VideoPluginSpec",
    "create_video_model",
    "plain_video_model",
    "inflate_state_dict",
    "load_video_pretrained",
    "video_model_config",
]

log = logging.getLogger(__name__)

VIDEO_POSITIONS = (*POSITIONS, "after_block")
BASIC_TEMPORAL = ("conv1", "both")


class VideoPluginSpec(PluginSpec):
    """`PluginSpec` that also accepts ``position="after_block"``
    (after the residual block's final ReLU: mmaction2's non-local position)."""

    def __post_init__(self) -> None:
        if self.position not in VIDEO_POSITIONS:
            raise ValueError(f"position must be one of {VIDEO_POSITIONS}, got {self.position!r}")
        if self.position != "after_block":
            super().__post_init__()
            return
        object.__setattr__(self, "position", "after_1x1")  # the 2D checks, on the other fields
        try:
            super().__post_init__()
        finally:
            object.__setattr__(self, "position", "after_block")


class _AfterBlock:
    """The ``after_block`` position: the plug-in on the block's output (after the ReLU)."""

    position: str | None
    context_block: nn.Module | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # type: ignore[misc]
        return self.context_block(out) if self.position == "after_block" else out


class BasicBlock3d(_AfterBlock, BasicBlock):
    """`BasicBlock` (3D once `ResNet3d` swaps its convs)."""


class Bottleneck3d(_AfterBlock, Bottleneck):
    """`Bottleneck` (3D once `ResNet3d` swaps its convs)."""


class FrozenBatchNorm3d(FrozenBatchNorm2d):
    """torchvision's FrozenBatchNorm2d (same keys) for (N, C, T, H, W) inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(shape).to(x.dtype) + bias.view(shape).to(x.dtype)


def _conv3d(conv: nn.Conv2d, t: int) -> nn.Conv3d:
    """A Conv3d with ``conv``'s spatial geometry and ``t`` temporal taps (padding t // 2,
    temporal stride 1), freshly initialised (kaiming normal, fan_out, as the 2D ResNet)."""
    c3 = nn.Conv3d(
        conv.in_channels, conv.out_channels, (t, *conv.kernel_size), stride=(1, *conv.stride),
        padding=(t // 2, *conv.padding), dilation=(1, *conv.dilation), groups=conv.groups,
        bias=conv.bias is not None,
    )  # fmt: skip
    nn.init.kaiming_normal_(c3.weight, mode="fan_out", nonlinearity="relu")
    if c3.bias is not None:
        nn.init.zeros_(c3.bias)
    return c3


def _norm3d(norm: nn.Module) -> nn.Module:
    """BatchNorm2d -> BatchNorm3d and FrozenBatchNorm2d -> FrozenBatchNorm3d (state copied);
    any other norm (gcnet's SyncBatchNorm works on any rank) is kept."""
    if type(norm) is nn.BatchNorm2d:
        out: nn.Module = nn.BatchNorm3d(norm.num_features, norm.eps, norm.momentum, norm.affine,
                                        norm.track_running_stats)  # fmt: skip
    elif type(norm) is FrozenBatchNorm2d:
        out = FrozenBatchNorm3d(norm.weight.shape[0], norm.eps)
    else:
        return norm
    out.load_state_dict(norm.state_dict())
    return out


class ResNet3d(ResNet):
    """Slow-only 3D ResNet: the 2D `ResNet` with 3D convs.

    Args (the 2D ones, see `ResNet`, plus):
        num_classes: 400 by default (Kinetics-400); 0 drops ``fc``.
        dropout: dropout before ``fc`` (0.5, SlowFast / mmaction2).
        temporal_stages: the stages whose residual blocks get a temporal first conv
            (``("c4", "c5")``: slow-only; ``()`` gives a C2D network).
        temporal_kernel: its temporal taps (3; odd, padded by ``temporal_kernel // 2``).
        basic_temporal: BasicBlocks only: ``"conv1"`` (the first conv 3x3x3, the second
            1x3x3) or ``"both"`` (both 3x3x3, mmaction2's ``BasicBlock3d`` with inflate).
        plugin: a `VideoPluginSpec` (or a 2D `PluginSpec`); ``after_block``
            puts the block after the residual block's ReLU.

    Input (N, C, T, H, W); ``forward_stages`` returns the (N, C_i, T, H_i, W_i) maps of
    ``out_indices``, ``forward_intermediates`` those of its ``indices`` (0 the stem, 1..4
    c2..c5), ``forward_features`` the unpooled c5 map; T is never down-sampled.
    ``feature_info`` gives the spatial reductions.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 400,
        dropout: float = 0.5,
        temporal_stages: str | Sequence[str] = ("c4", "c5"),
        temporal_kernel: int = 3,
        basic_temporal: str = "conv1",
        groups: int = 1,
        width_per_group: int = 64,
        output_stride: int = 32,
        contract_dilation: bool = True,
        plugin: PluginSpec | None = None,
        norm: str = "bn",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        zero_init_residual: bool = False,
        in_chans: int = 3,
    ) -> None:
        if isinstance(temporal_kernel, bool) or not isinstance(temporal_kernel, int) or temporal_kernel < 1 \
                or temporal_kernel % 2 == 0:  # fmt: skip
            raise ValueError(f"temporal_kernel must be a positive odd int, got {temporal_kernel!r}")
        if basic_temporal not in BASIC_TEMPORAL:
            raise ValueError(f"basic_temporal must be one of {BASIC_TEMPORAL}, got {basic_temporal!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        temporal = parse_stages(temporal_stages) if temporal_stages else ()
        if getattr(plugin, "position", None) == "after_block" and not isinstance(plugin, VideoPluginSpec):
            raise ValueError("position='after_block' needs a VideoPluginSpec")
        block3d = {BasicBlock: BasicBlock3d, Bottleneck: Bottleneck3d}.get(block, block)
        super().__init__(
            block3d, layers, num_classes, groups=groups, width_per_group=width_per_group,
            output_stride=output_stride, contract_dilation=contract_dilation, plugin=plugin,
            norm=norm, frozen_stages=frozen_stages, norm_eval=norm_eval, out_indices=out_indices,
            zero_init_residual=zero_init_residual, in_chans=in_chans,
        )  # fmt: skip
        self.temporal_stages = temporal
        self.temporal_kernel = temporal_kernel
        self.basic_temporal = basic_temporal
        self.dropout = nn.Dropout(float(dropout))
        self._to_3d()
        self._freeze_stages()  # again: the swapped modules are new

    def _temporal_taps(self, stage: str, block: nn.Module, conv: str) -> int:
        if stage not in self.temporal_stages:
            return 1
        both = isinstance(block, BasicBlock) and self.basic_temporal == "both"
        return self.temporal_kernel if conv == "conv1" or (conv == "conv2" and both) else 1

    def _to_3d(self) -> None:
        self.conv1 = _conv3d(self.conv1, 1)
        self.bn1 = _norm3d(self.bn1)
        self.maxpool = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        for stage, layer in zip(STAGES, (self.layer1, self.layer2, self.layer3, self.layer4)):
            for blk in layer:
                for name, child in list(blk.named_children()):
                    if isinstance(child, nn.Conv2d):
                        setattr(blk, name, _conv3d(child, self._temporal_taps(stage, blk, name)))
                    elif name.startswith("bn"):
                        setattr(blk, name, _norm3d(child))
                if blk.downsample is not None:
                    blk.downsample[0] = _conv3d(blk.downsample[0], 1)
                    blk.downsample[1] = _norm3d(blk.downsample[1])
        self.avgpool = nn.AdaptiveAvgPool3d(1)

    def _apply(self, fn, recurse: bool = True):
        # The plug-in blocks keep their 1x1 convs as 4-D (Conv2d) weights, which have no
        # channels_last_3d layout: ``model.to(memory_format=torch.channels_last_3d)`` would
        # raise on them. A 4-D tensor that conversion refuses goes through as a 5-D view
        # (O, I, 1, 1, 1) and comes back 4-D (for a 1x1 kernel both layouts are the same).
        def convert(t: torch.Tensor) -> torch.Tensor:
            try:
                return fn(t)
            except RuntimeError as e:
                if t.dim() != 4 or "channels_last_3d" not in str(e):
                    raise
                return fn(t.unsqueeze(2)).squeeze(2)

        return super()._apply(convert, recurse)

    def temporal_convs(self) -> dict[str, int]:
        """Every conv with more than one temporal tap, by module name -> taps."""
        return {n: m.kernel_size[0] for n, m in self.named_modules()
                if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1}  # fmt: skip

    # -- forward -----------------------------------------------------------------------------
    _output_fmts = ("NCHW", "NCTHW")  # channels first: (N, C, T, H, W) maps

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5:
            hint = " (a batch of images? add a time axis: x.unsqueeze(2))" if x.dim() == 4 else ""
            raise ValueError(f"{type(self).__name__} expects (N, C, T, H, W) clips, got a {x.dim()}-D "
                             f"input of shape {tuple(x.shape)}{hint}")  # fmt: skip
        if x.shape[1] != self.conv1.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.conv1.in_channels} input channels "
                             f"(N, C, T, H, W), got shape {tuple(x.shape)}")  # fmt: skip

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.flatten(self.avgpool(x), 1))


class SlowOnlyTiny(ResNet3d):
    """``slowonly_tiny``: a slow-only 3D ResNet sized for CPU demos (``gcnet demo --task video``).

    The stem is two 1x3x3 convs of stride (1, 2, 2) (``width // 2`` then ``width`` channels,
    each with norm and ReLU; no max-pool, the stem's map is at stride 4); then one
    `BasicBlock3d` per stage c2..c5 (``layers``), all ``width`` wide at stride 4: no further
    down-sampling, in space or in time. As in slow-only, the early stages have no temporal
    conv: a block of c2 / c3 is two 1x3x3 convs; a block of ``temporal_stages`` (c4, c5)
    has a ``temporal_kernel`` x 1 x 1 first conv (slow-only's 3x1x1) and a 1x3x3 second one.
    Head: global average pool over (T, H, W), dropout (0 by default), fc.

    Receptive field, in time: each temporal conv widens it by ``temporal_kernel - 1``
    frames and nothing else mixes frames, so a position of the last map sees
    ``1 + 2 * (temporal_kernel // 2)`` x (number of temporal blocks) consecutive input frames:
    5 for the default (`temporal_receptive_field`). In space: 2 convs of the stem (3 px either
    side) and one 3x3 conv at stride 4 per conv of the blocks (4 px each; 6 convs):
    27 px either side. A block of the family (``plugin``, e.g. GC in c3-c5) pools over all
    T x H x W positions. Everything else is `ResNet3d`'s (keys ``stem.*``, ``layer1.0.*``,
    ``fc``; ``forward_intermediates``, ``features_only``, ``context_blocks``, freezing).
    There are no published weights (``pretrained`` takes a checkpoint of this model only).
    """

    def __init__(
        self,
        block: type[BasicBlock] = BasicBlock,
        layers: Sequence[int] = (1, 1, 1, 1),
        num_classes: int = 400,
        dropout: float = 0.0,
        width: int = 32,
        temporal_stages: str | Sequence[str] = ("c4", "c5"),
        temporal_kernel: int = 3,
        plugin: PluginSpec | None = None,
        norm: str = "bn",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        zero_init_residual: bool = False,
        in_chans: int = 3,
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 2 or width % 2:
            raise ValueError(f"width must be an even int >= 2, got {width!r}")
        if block is not BasicBlock or len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"SlowOnlyTiny takes BasicBlock and 4 stages of >= 1 block, got {layers}")
        self.width = width
        super().__init__(
            block, layers, num_classes, dropout, temporal_stages, temporal_kernel, plugin=plugin, norm=norm,
            frozen_stages=frozen_stages, norm_eval=norm_eval, out_indices=out_indices,
            zero_init_residual=zero_init_residual, in_chans=in_chans,
        )  # fmt: skip
        self.num_features = width
        self.feature_channels = (width,) * 4
        self.feature_strides = (4,) * 4
        self.feature_info = FeatureInfo(
            [dict(num_chs=width, reduction=4, module="stem")]
            + [dict(num_chs=width, reduction=4, module=f"layer{i}") for i in range(1, 5)]
        )
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else None

    def _make_stem(self, in_chans: int, stem_width: int) -> None:
        norm_layer, half = self._norm_layer, self.width // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, self.width, 3, 2, 1, bias=False), norm_layer(self.width), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.deep_stem = True  # the stem is ``self.stem`` (ResNet's deep-stem code paths)
        self.inplanes = self.width

    def _make_stages(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int]) -> None:
        for i, (stage, n) in enumerate(zip(STAGES, layers), 1):
            setattr(self, f"layer{i}", self._make_layer(block, self.width, n, stage))

    def _to_3d(self) -> None:
        convert = [_conv3d(m, 1) if isinstance(m, nn.Conv2d) else _norm3d(m) for m in self.stem]
        self.stem = nn.Sequential(*convert)
        self.maxpool = nn.Identity()
        k, w = self.temporal_kernel, self.width
        for stage, layer in zip(STAGES, (self.layer1, self.layer2, self.layer3, self.layer4)):
            for blk in layer:
                if stage in self.temporal_stages:
                    blk.conv1 = nn.Conv3d(w, w, (k, 1, 1), padding=(k // 2, 0, 0), bias=False)
                    nn.init.kaiming_normal_(blk.conv1.weight, mode="fan_out", nonlinearity="relu")
                else:
                    blk.conv1 = _conv3d(blk.conv1, 1)
                blk.conv2 = _conv3d(blk.conv2, 1)
                blk.bn1, blk.bn2 = _norm3d(blk.bn1), _norm3d(blk.bn2)
        self.avgpool = nn.AdaptiveAvgPool3d(1)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.stem[0].in_channels:
            raise ValueError(f"{type(self).__name__} expects (N, {self.stem[0].in_channels}, T, H, W) clips, "
                             f"got shape {tuple(x.shape)}")  # fmt: skip

    def temporal_receptive_field(self) -> int:
        """How many consecutive input frames one position of the last map depends on: 1 plus
        ``taps - 1`` for every temporal conv (all of them lie on one path: no temporal stride,
        no dilation)."""
        return 1 + sum(t - 1 for t in self.temporal_convs().values())


# -- registry ---------------------------------------------------------------------------------
# video arch -> (the 2D arch whose weights inflate into it, block, layers)
_VIDEO_ARCHS: dict[str, tuple[str, type, tuple[int, ...]]] = {
    "slowonly_r18": ("resnet18", BasicBlock, (2, 2, 2, 2)),
    "slowonly_r34": ("resnet34", BasicBlock, (3, 4, 6, 3)),
    "slowonly_r50": ("resnet50", Bottleneck, (3, 4, 6, 3)),
    "slowonly_r101": ("resnet101", Bottleneck, (3, 4, 23, 3)),
    "slowonly_tiny": ("tiny", BasicBlock, (1, 1, 1, 1)),  # SlowOnlyTiny: no 2D weights to inflate
}
_ARCH_CLASS: dict[str, type[ResNet3d]] = {"slowonly_tiny": SlowOnlyTiny}  # the others: ResNet3d

#: name -> dict(arch=video arch, plugin=block or None, **default overrides)
VIDEO_MODELS: dict[str, dict[str, Any]] = {}
# +5 NL (Wang et al.; mmaction2's non_local=((0,0,0), (1,0,1,0), (1,0,1,0,1,0), (0,0,0)))
_FIVE = dict(stages=("c3", "c4"), indices={"c3": [0, 2], "c4": [0, 2, 4]}, position="after_block")
_TWO = dict(stages=("c3", "c4"), indices={"c3": [0], "c4": [0]}, position="after_block")  # r18
_NL = dict(mode="embedded_gaussian", sub_sample=True, use_scale=False)  # mmaction2's non_local_cfg


def _register(name: str, arch: str, plugin: str | None = None, **defaults: Any) -> None:
    if name in VIDEO_MODELS:
        raise ValueError(f"video model {name!r} is already registered")
    VIDEO_MODELS[name] = dict(arch=arch, plugin=plugin, **defaults)


for _arch in _VIDEO_ARCHS:
    _register(_arch, _arch)
for _arch in ("slowonly_r18", "slowonly_r50", "slowonly_r101"):
    _register(f"gc_{_arch}", _arch, "gc", ratio=1 / 16)
_register("gc_slowonly_r50_r4", "slowonly_r50", "gc", ratio=1 / 4)
_register("nl_slowonly_r50", "slowonly_r50", "nl", **_FIVE, **_NL)
_register("snl_slowonly_r50", "slowonly_r50", "snl", **_FIVE)
_register("gc5_slowonly_r50", "slowonly_r50", "gc", ratio=1 / 16, **_FIVE)
_register("se_slowonly_r50", "slowonly_r50", "se", stages="c2-c5", ratio=1 / 16)
_register("nl_slowonly_r18", "slowonly_r18", "nl", **_TWO, **_NL)
_register("snl_slowonly_r18", "slowonly_r18", "snl", **_TWO)
_register("gc5_slowonly_r18", "slowonly_r18", "gc", ratio=1 / 16, **_TWO)
_register("se_slowonly_r18", "slowonly_r18", "se", stages="c2-c5", ratio=1 / 16)
# the video demo's (SlowOnlyTiny): the block in every block of c3-c5, after_1x1; trained from
# scratch, so the blocks' last layers start random (zero_init_last / zero_init False: the paper's
# zero init keeps a pretrained network's function at the start, which there is none of here)
_register("gc_slowonly_tiny", "slowonly_tiny", "gc", ratio=1 / 4, zero_init_last=False)
_register("nl_slowonly_tiny", "slowonly_tiny", "nl", **_NL, zero_init=False)


def _net_params(cls: type[ResNet3d]) -> set[str]:
    return set(inspect.signature(cls).parameters) - {"block", "layers", "plugin"}


def _arch_of(name: str, overrides: Mapping[str, Any]) -> str:
    return overrides.get("arch", VIDEO_MODELS[name]["arch"])


def video_model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved `ResNet3d` kwargs (with a `VideoPluginSpec`) for ``name``
    and overrides, plus ``_arch`` (the 2D arch of its weights)."""
    if name not in VIDEO_MODELS:
        near = difflib.get_close_matches(name, list(VIDEO_MODELS), n=3)
        hint = f"; did you mean {near}?" if near else ""
        raise ValueError(f"unknown video model {name!r}{hint} (see gcnet.list_models('*slowonly*'))")
    archs = {
        arch: (dict(block=block, layers=layers), arch2d)
        for arch, (arch2d, block, layers) in _VIDEO_ARCHS.items()
    }
    params = _net_params(_ARCH_CLASS.get(_arch_of(name, overrides), ResNet3d))
    return resolve_config(name, VIDEO_MODELS[name], archs, params, VideoPluginSpec, overrides)


def create_video_model(name: str, pretrained: bool | str = False, **overrides: Any) -> ResNet3d:
    """Build a registered video model (`VIDEO_MODELS`); see the module docstring for
    the overrides and ``pretrained`` (2D weights are inflated, 3D ones load as they are)."""
    cfg = video_model_config(name, **overrides)
    arch2d = cfg.pop("_arch")
    if arch2d == "tiny" and (pretrained is True or str(pretrained).startswith("torchvision")):
        raise ValueError(f"model {name!r}: there are no ImageNet weights for the tiny network; "
                         "give a checkpoint of it (a path) or none")  # fmt: skip
    cls = _ARCH_CLASS.get(_arch_of(name, overrides), ResNet3d)
    model = named_model(cls(**cfg), name, arch2d)  # arch: the 2D one whose weights inflate
    if pretrained:
        load_video_pretrained(model, pretrained, arch=arch2d)
    return model


# -- weights ----------------------------------------------------------------------------------
def inflate_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """``state_dict`` with every 2D conv kernel (O, I, kh, kw) whose key holds a 3D kernel
    (O, I, t, kh, kw) in ``model`` repeated over the t taps and divided by t (so a clip of
    identical frames gives, away from the temporal borders, the 2D features); every other
    entry (BatchNorm, plug-in blocks, 3D kernels already) as it is. A plug-in 1x1x1 conv
    weight stored 5-D by another library is squeezed to our 4-D (Conv2d) layout.

    Keys the model lacks, and a classifier of another size, are left for
    `load_state_dict_checked` to judge; any other shape that does
    not inflate raises a one-line ValueError naming the key."""
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        target = own.get(key)
        if target is None or value.shape == target.shape or key.startswith("fc."):
            out[key] = value
        elif value.dim() == 4 and target.dim() == 5 and value.shape[:2] == target.shape[:2] \
                and value.shape[2:] == target.shape[3:]:  # fmt: skip
            t = target.shape[2]
            out[key] = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        elif ".context_block." in key and value.dim() == target.dim() + 1 and value.shape[2] == 1 \
                and value.squeeze(2).shape == target.shape:  # fmt: skip
            out[key] = value.squeeze(2)
        else:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the video model needs "
                f"{tuple(target.shape)} (neither the same nor a 2D kernel that inflates to it)"
            )
    return out


def load_video_pretrained(model: ResNet3d, source: str | bool, arch: str) -> None:
    """Load ``source`` into a `ResNet3d`: ``True`` / ``"torchvision[:NAME]"``
    (torchvision's ImageNet weights of the 2D ``arch``) or a checkpoint path (2D or 3D; an
    official GCNet / mmdetection backbone converted first), 2D kernels inflated."""
    if source is True or (isinstance(source, str) and source.startswith("torchvision")):
        name = source.split(":", 1)[1] if isinstance(source, str) and ":" in source else None
        sd = _torchvision_state_dict(arch, name)
        what = f"torchvision {arch} weights"
    else:
        sd = load_checkpoint_file(source)
        if is_mmdet_checkpoint(sd):
            sd = resnet_from_mmdet(sd)
        what = f"checkpoint {source}"
    try:
        load_state_dict_checked(model, inflate_state_dict(sd, model, what), what)
    except ValueError as e:
        held = trained_model_name(source) if isinstance(source, str) else None
        wanted = getattr(model, "model_name", None)
        if held in VIDEO_MODELS and wanted and held != wanted:
            raise ValueError(f"{what} holds a {held} (its config says so), not a {wanted}; "
                             f"build {held} or give a {wanted} checkpoint\n{e}") from None  # fmt: skip
        raise


def plain_video_model(name: str, **overrides: Any) -> ResNet3d | None:
    """``name`` with the same options but without its plug-in blocks (``gcnet info``'s
    comparison), or None for a model that has none."""
    cfg = video_model_config(name, **overrides)
    cfg.pop("_arch")
    if cfg.get("plugin") is None:
        return None
    return _ARCH_CLASS.get(_arch_of(name, overrides), ResNet3d)(**{**cfg, "plugin": None})
