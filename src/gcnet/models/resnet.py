"""ResNet / ResNeXt (torchvision's architecture and state-dict keys) with pluggable context
blocks, dilation, a deep-stem variant (ResNet-V1c), frozen stages and multi-scale outputs.

The plug-in (`PluginSpec`) puts one block of the family (``gc``, ``nl``, ``snl``,
``se``) into chosen residual blocks of chosen stages (c2..c5), at one position:

- ``after_1x1``: after the last conv + norm, before the residual add (official default);
- ``after_3x3``: after the 3x3 conv + norm + ReLU, on the bottleneck's mid channels;
- ``after_add``: after the residual sum, before the final ReLU.

The plug-in lives at ``layerX.Y.context_block``; every other key is torchvision's, so
``torchvision.models.resnet50`` weights load with only the plug-in keys missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from gcnet.layers import create_block
from gcnet.layers.context import has_hooks
from gcnet.layers.sync_bn import SyncBatchNorm

from .features import FeatureInfo, checkpoint_blocks, take_indices

__all__ = ["BasicBlock", "Bottleneck", "PluginSpec", "ResNet", "STAGES", "POSITIONS"]

STAGES = ("c2", "c3", "c4", "c5")
POSITIONS = ("after_1x1", "after_3x3", "after_add")
NORMS = ("bn", "frozen_bn", "syncbn")


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    """Which block goes where.

    Args:
        block: a `gcnet.layers.create_block` name (``gc``, ``nl``, ``snl``, ``se``).
        kwargs: the block's keyword arguments (e.g. ``ratio``, ``pooling``, ``fusion``).
        stages: stage names among c2..c5 (default c3-c5, as in the paper).
        position: ``after_1x1`` (default), ``after_3x3`` or ``after_add``.
        indices: optional ``{stage: [residual block indices]}``; stages not named get the
            block in every residual block. Negative indices count from the stage's end.
    """

    block: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stages: Sequence[str] = ("c3", "c4", "c5")
    position: str = "after_1x1"
    indices: Mapping[str, Sequence[int]] | None = None

    def __post_init__(self) -> None:
        stages = parse_stages(self.stages)
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        if self.indices is not None:
            bad = [s for s in self.indices if s not in stages]
            if bad:
                raise ValueError(f"indices name stages {bad} that are not in stages {stages}")

    def wants(self, stage: str, index: int, num_blocks: int) -> bool:
        if stage not in self.stages:
            return False
        if self.indices is None or stage not in self.indices:
            return True
        chosen = set()
        for i in self.indices[stage]:
            if not -num_blocks <= i < num_blocks:
                raise ValueError(
                    f"block index {i} is out of range for stage {stage} with {num_blocks} blocks"
                )
            chosen.add(i % num_blocks)
        return index in chosen


def parse_stages(stages: str | Sequence[str]) -> tuple[str, ...]:
    """'c3-c5' / 'c3,c5' / ('c3', 'c4') -> ('c3', 'c4', 'c5') ..."""
    if isinstance(stages, str):
        text = stages.replace(" ", "")
        if "-" in text:
            lo, hi = text.split("-", 1)
            if lo not in STAGES or hi not in STAGES:
                raise ValueError(f"stages range must look like 'c3-c5', got {stages!r}")
            stages = STAGES[STAGES.index(lo) : STAGES.index(hi) + 1]
        else:
            stages = tuple(s for s in text.split(",") if s)
    stages = tuple(stages)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stages {bad}; expected names among {STAGES}")
    return tuple(s for s in STAGES if s in stages)


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1):
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


def _conv1x1(cin: int, cout: int, stride: int = 1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class _PluggableBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the plug-in and the residual tail."""

    context_block: nn.Module | None
    position: str | None
    downsample: nn.Module | None
    relu: nn.Module

    def _init_plugin(self, plugin: PluginSpec | None, mid: int, out: int) -> None:
        self.position = plugin.position if plugin else None
        channels = mid if self.position == "after_3x3" else out
        self.context_block = _make_plugin(plugin, channels) if plugin is not None else None

    def _plug(self, where: str, out: torch.Tensor) -> torch.Tensor:
        return self.context_block(out) if self.position == where else out

    def _residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The identity added into the last norm's (or an after-1x1 plug-in's) output: in place,
        as torchvision does (~3% of a batch-1 ResNet-50 forward), unless that module has a hook
        (Grad-CAM, feature extraction), which then keeps its own output."""
        producer = self._modules[self.last_norm]
        if self.position == "after_1x1" and self.context_block is not None:
            producer = self.context_block
        out = self._plug("after_1x1", out)
        identity = self.downsample(x) if self.downsample is not None else x
        out = out + identity if has_hooks(producer) else out.add_(identity)
        return self.relu(self._plug("after_add", out))


class BasicBlock(_PluggableBlock):
    """torchvision's BasicBlock (two 3x3 convs, ResNet-18 / 34) with a plug-in."""

    expansion = 1
    last_norm = "bn2"  # the module whose output the identity is added to

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        plugin: PluginSpec | None = None,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation=dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, dilation=dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self._init_plugin(plugin, planes, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._plug("after_3x3", self.relu(self.bn1(self.conv1(x))))
        return self._residual(x, self.bn2(self.conv2(out)))


class Bottleneck(_PluggableBlock):
    """torchvision's Bottleneck (ResNet V1.5: stride on the 3x3 conv) with a plug-in."""

    expansion = 4
    last_norm = "bn3"  # the module whose output the identity is added to

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        plugin: PluginSpec | None = None,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = _conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        self._init_plugin(plugin, width, planes * self.expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._plug("after_3x3", self.relu(self.bn2(self.conv2(out))))
        return self._residual(x, self.bn3(self.conv3(out)))


def _make_plugin(plugin: PluginSpec, channels: int) -> nn.Module:
    block = create_block(plugin.block, channels, **plugin.kwargs)
    if hasattr(block, "inplace"):
        # in place only after the residual add, whose sum is a temporary of this block; before
        # it, the block's input is a submodule's output (bn3's, the ReLU's), which a hook may hold
        block.inplace = plugin.position == "after_add"
    return block


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "syncbn":
        return SyncBatchNorm  # torch's, and CPU (gloo) capable
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ResNet(nn.Module):
    """ResNet / ResNeXt backbone and classifier, with timm's model API: ``feature_info``,
    ``forward_features`` (the unpooled c5 map), ``forward_head(x, pre_logits)``,
    ``forward_intermediates``, ``prune_intermediate_layers``, ``set_grad_checkpointing``
    and the ``features_only`` form (`gcnet.models.features.to_features_only`).

    Args:
        block: the residual block type (torchvision's ``BasicBlock`` / ``Bottleneck``).
        layers: the number of blocks per stage (torchvision's).
        num_classes: classifier outputs; 0 drops ``fc`` (``forward`` returns pooled features).
        groups: ResNeXt cardinality.
        width_per_group: ResNeXt width per group.
        output_stride: 32 (default), 16 (dilated c5) or 8 (dilated c4 and c5).
        contract_dilation: the first residual block of a dilated stage uses the previous
            stage's dilation, i.e. half the stage's (default): torchvision's
            ``replace_stride_with_dilation`` and mmsegmentation's ``contract_dilation=True``
            (its D8/D16 ResNetV1c). False dilates every block of the stage alike (mmseg's
            ``ResNet`` default, ``contract_dilation=False``).
        deep_stem: three 3x3 convs (ResNet-V1c, mmsegmentation's ``stem.*`` keys).
        plugin: a `PluginSpec` (or ``None`` for the plain network).
        norm: ``bn``, ``frozen_bn`` or ``syncbn``.
        frozen_stages: -1 none; 0 the stem; k the stem and c2..c(k+1) (mmdet semantics):
            no gradients and BatchNorm kept in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training (detection fine-tuning).
        out_indices: which of (c2, c3, c4, c5) (0..3) ``forward_stages`` returns (the
            segmentors' maps; timm's ``features_only`` indices are
            ``create_model(..., features_only=True, out_indices=...)``'s, 0..4 with the stem).
        zero_init_residual: zero the last BN of every residual block (torchvision option).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        groups: int = 1,
        width_per_group: int = 64,
        output_stride: int = 32,
        contract_dilation: bool = True,
        deep_stem: bool = False,
        stem_width: int = 64,
        plugin: PluginSpec | None = None,
        norm: str = "bn",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        zero_init_residual: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages!r}")
        if any(i not in (0, 1, 2, 3) for i in out_indices) or not out_indices:
            raise ValueError(f"out_indices must be a non-empty subset of (0,1,2,3), got {out_indices!r}")
        norm_layer = _norm_layer(norm)
        self.norm = norm
        self.plugin = plugin
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.out_indices = tuple(out_indices)
        self.output_stride = output_stride
        self.contract_dilation = contract_dilation
        self.deep_stem = deep_stem
        self.inplanes = 64
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self._norm_layer = norm_layer
        self._make_stem(in_chans, stem_width)
        stem_channels = self.inplanes
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._make_stages(block, layers)
        self.num_features = 512 * block.expansion
        self.feature_channels = tuple(c * block.expansion for c in (64, 128, 256, 512))
        self.feature_strides = (4, 8, min(16, output_stride), output_stride)
        #: timm's feature maps: 0 the stem (after its ReLU), 1..4 layer1..layer4 (c2..c5)
        self.feature_info = FeatureInfo(
            [dict(num_chs=stem_channels, reduction=2, module="stem" if deep_stem else "relu")]
            + [dict(num_chs=c, reduction=r, module=f"layer{i + 1}")
               for i, (c, r) in enumerate(zip(self.feature_channels, self.feature_strides))]
        )  # fmt: skip
        self.features_only = False
        self.grad_checkpointing = False
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else None
        self._init_weights(zero_init_residual)
        self._freeze_stages()

    # -- construction ------------------------------------------------------------------------
    def _make_stem(self, in_chans: int, stem_width: int) -> None:
        """torchvision's 7x7 conv + norm + ReLU (``conv1``, ``bn1``, ``relu``), or with
        ``deep_stem`` three 3x3 convs (``stem``, ResNet-V1c) ending at ``stem_width``."""
        norm_layer = self._norm_layer
        if self.deep_stem:
            half = stem_width // 2
            self.stem = nn.Sequential(
                nn.Conv2d(in_chans, half, 3, 2, 1, bias=False), norm_layer(half), nn.ReLU(True),
                nn.Conv2d(half, half, 3, 1, 1, bias=False), norm_layer(half), nn.ReLU(True),
                nn.Conv2d(half, stem_width, 3, 1, 1, bias=False), norm_layer(stem_width),
                nn.ReLU(True),
            )  # fmt: skip
            self.inplanes = stem_width
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
            self.bn1 = norm_layer(64)
            self.relu = nn.ReLU(inplace=True)

    def _make_stages(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int]) -> None:
        """``layer1``..``layer4`` (c2..c5); at output stride 16 / 8 the last one / two dilate
        instead of striding."""
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
        dil = dilate[self.output_stride]
        self.layer1 = self._make_layer(block, 64, layers[0], "c2")
        self.layer2 = self._make_layer(block, 128, layers[1], "c3", stride=2, dilate=dil[0])
        self.layer3 = self._make_layer(block, 256, layers[2], "c4", stride=2, dilate=dil[1])
        self.layer4 = self._make_layer(block, 512, layers[3], "c5", stride=2, dilate=dil[2])

    def _init_weights(self, zero_init_residual: bool) -> None:
        """torchvision's init (Kaiming convs, unit norms; with ``zero_init_residual`` the last
        norm of every residual block zero), then the plug-ins' own (``reset_parameters``, or,
        for a block without one, the state it was built with)."""
        plugs = [
            m.context_block
            for m in self.modules()
            if isinstance(m, _PluggableBlock) and m.context_block is not None
        ]
        built = {id(b): {k: v.clone() for k, v in b.state_dict().items()}
                 for b in plugs if not hasattr(b, "reset_parameters")}  # fmt: skip
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.constant_(m.bn2.weight, 0)
        # the loop above re-initialised the plug-ins' convs: restore their own init
        for b in plugs:
            if id(b) in built:
                b.load_state_dict(built[id(b)])
            else:
                b.reset_parameters()

    def _make_layer(self, block, planes: int, blocks: int, stage: str, stride=1, dilate=False):
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                norm_layer(planes * block.expansion),
            )
        p = self.plugin
        layers = []
        for i in range(blocks):
            layers.append(
                block(
                    self.inplanes,
                    planes,
                    stride if i == 0 else 1,
                    downsample if i == 0 else None,
                    self.groups,
                    self.base_width,
                    previous_dilation if i == 0 and self.contract_dilation else self.dilation,
                    norm_layer,
                    plugin=p if p is not None and p.wants(stage, i, blocks) else None,
                )
            )
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    # -- freezing ----------------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        if self.frozen_stages >= 0:
            mods += [self.stem] if self.deep_stem else [self.conv1, self.bn1]
        for i in range(1, self.frozen_stages + 1):
            mods.append(getattr(self, f"layer{i}"))
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> ResNet:
        super().train(mode)
        if mode:
            self._freeze_stages()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    # -- forward -----------------------------------------------------------------------------
    _output_fmts: tuple[str, ...] = ("NCHW",)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"ResNet expects (N, C, H, W) images, got shape {tuple(x.shape)}")
        cin = self.stem[0].in_channels if self.deep_stem else self.conv1.in_channels
        if x.shape[1] != cin:
            raise ValueError(f"ResNet expects {cin} input channels, got {x.shape[1]}")

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem up to its last ReLU (stride 2, before the max-pool): feature 0."""
        self._check_input(x)
        return self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))

    def _stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``layer{index}``, each residual block checkpointed when
        `set_grad_checkpointing` is on and autograd records."""
        layer = getattr(self, f"layer{index}")
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_blocks(layer, x)
        return layer(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem and the max-pool (stride 4): the input of ``layer1``."""
        return self.maxpool(self._stem(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's ``forward_intermediates``: the maps at ``indices`` among 0 = the stem (after
        its ReLU, stride 2), 1..4 = ``layer1``..``layer4`` (c2..c5) (``None``: all five; an int
        n: the last n; negatives count from the end), and (unless ``intermediates_only``) the
        final features (``forward_features``'s; with ``stop_early`` the last map computed).
        ``norm``: no final norm in a ResNet, accepted and ignored. ``output_fmt``: ``"NCHW"``
        (channels first; a 3D model's maps are (N, C, T, H, W))."""
        if output_fmt not in self._output_fmts:
            raise ValueError(f"output_fmt must be one of {self._output_fmts}, got {output_fmt!r}")
        taken, last = take_indices(len(self.feature_info), indices)
        x = self._stem(x)
        out = [x] if 0 in taken else []
        x = self.maxpool(x)
        for i in range(1, (last if stop_early else 4) + 1):
            x = self._stage(i, x)
            if i in taken:
                out.append(x)
        return out if intermediates_only else (x, out)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] | None = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what the maps at ``indices`` do not need (timm's): the stages past the last
        one (empty ``nn.Sequential``), and with ``prune_head`` (or when stages go) the
        classifier. Returns the absolute indices kept."""
        taken, last = take_indices(len(self.feature_info), indices)
        for i in range(last + 1, 5):
            setattr(self, f"layer{i}", nn.Sequential())
        if last == 0:
            self.maxpool = nn.Identity()
        if last < 4:
            self.num_features = self.feature_info[last]["num_chs"]
        if prune_head or last < 4:
            self.fc = None
            self.num_classes = 0
        return taken

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The multi-scale maps c2..c5 selected by the constructor's ``out_indices`` (0..3),
        what the segmentors read."""
        idx = [i + 1 for i in self.out_indices]
        return self.forward_intermediates(x, idx, stop_early=True, intermediates_only=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map (c5), before pooling (timm's ``forward_features``)."""
        x = self.forward_stem(x)
        for i in range(1, 5):
            x = self._stage(i, x)
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(x), 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and, in a 3D model, dropout) and classify; ``pre_logits``: stop before ``fc``."""
        x = self._pool(x)
        return self.fc(x) if self.fc is not None and not pre_logits else x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            idx = self.feature_info.out_indices
            return self.forward_intermediates(x, idx, stop_early=True, intermediates_only=True)
        return self.forward_head(self.forward_features(x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every residual block (`torch.utils.checkpoint.checkpoint`, non
        reentrant) whenever autograd records: activations inside a block are recomputed in
        backward instead of kept. BatchNorm in train mode then updates its running statistics
        twice per step (forward and recomputation)."""
        self.grad_checkpointing = bool(enable)

    def context_blocks(self) -> dict[str, nn.Module]:
        """Every plugged-in block by its module name (e.g. ``layer3.0.context_block``)."""
        return {
            f"{name}.context_block": m.context_block
            for name, m in self.named_modules()
            if isinstance(m, (BasicBlock, Bottleneck)) and m.context_block is not None
        }
