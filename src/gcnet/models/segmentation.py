"""Semantic segmentation: dilated ResNet backbones with FCN / GCNet / Non-local decode heads
(mmsegmentation's layout), and the seed document's GCNet segmentation network.

- `FCNHead`: ``num_convs`` 3x3 conv+BN+ReLU, optionally concatenated with the head
  input and fused by one more 3x3 conv, dropout, 1x1 classifier. With ``context`` set it
  is mmsegmentation's ``GCHead`` (a GC block, ratio 1/4, att, add) or ``NLHead`` (an
  embedded-Gaussian Non-local block) between its first and second conv; any other block of
  `gcnet.layers.list_blocks` goes there too (``create_block(name, channels)``, its
  defaults), chosen by a model's ``head`` option (``--set model.kwargs.head=eca``).
- `EncoderDecoder`: backbone -> decode head (on c5) [+ auxiliary FCN head on c4]; the
  logits are resized to the input with bilinear interpolation (align_corners=False). In
  training mode with an auxiliary head ``forward`` returns ``{"out": ..., "aux": ...}``;
  otherwise the main logits tensor.
- `TinyBackbone`: a small stride-4 ResNet (two strided 3x3 convs, two of gcnet's
  ``BasicBlock``), the backbone of the ``*_tiny_s4`` models of ``gcnet demo``: its receptive
  field is small enough (at most 32 px from a pixel through an FCN head) that a far-away
  cue is out of its sight.
- `SeedGCNet`: dilated ResNet-50 (output stride 8) -> GC(2048, r16) on c5 ->
  3x3 conv 2048->512 + BN + ReLU -> bilinear upsampling (align_corners=True) -> 3x3
  classifier. The seed upsamples by x8; we upsample to the input size, which is the same
  for sizes that are multiples of 8 and right for the others.

Key names follow mmsegmentation (``decode_head.convs.0.conv.weight``, ``conv_seg``,
``auxiliary_head``) except that the head's block lives at ``decode_head.context_block``
(mmseg: ``gc_block`` / ``nl_block``; `gcnet.convert.segmentor_from_mmseg` maps them).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gcnet.convert import segmentor_from_mmseg
from gcnet.layers import (
    GlobalContextBlock,
    NonLocalBlock,
    SimplifiedNonLocalBlock,
    SqueezeExcitation,
    create_block,
    list_blocks,
)

from .features import FeatureInfo
from .registry import create_model, named_model
from .resnet import BasicBlock, ResNet
from .weights import download_weights, load_checkpoint_file, load_pretrained, load_state_dict_checked

__all__ = [
    "ConvNormAct",
    "FCNHead",
    "EncoderDecoder",
    "SeedGCNet",
    "TinyBackbone",
    "HEAD_CONTEXTS",
    "head_contexts",
    "SegWeights",
    "resolve_seg_weights",
]

#: the head blocks with their own options (``ratio``, ``pooling``, ``fusion``, ``sub_sample``);
#: any other name of `gcnet.layers.list_blocks` is built with its defaults (`head_contexts`)
HEAD_CONTEXTS = ("none", "gc", "nl", "se", "snl")


def head_contexts() -> tuple[str, ...]:
    """What an `FCNHead`'s ``context`` (a segmentor's ``head`` option) takes now: ``none``,
    the blocks with their own options (`HEAD_CONTEXTS`), then every other registered block."""
    return (*HEAD_CONTEXTS, *(b for b in list_blocks() if b not in HEAD_CONTEXTS))


class ConvNormAct(nn.Module):
    """conv (no bias) + norm + ReLU; mmcv ``ConvModule`` keys ``conv`` / ``bn``."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        dilation: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        pad = kernel_size // 2 * dilation
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.bn = norm_layer(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class FCNHead(nn.Module):
    """FCN decode head, and with ``context`` the GCNet (``gc``) or Non-local (``nl``) head.

    Args:
        in_channels: channels of the feature map the head reads.
        channels: the head's width (512 for the decode head, 256 for the auxiliary one).
        num_classes: classifier outputs.
        num_convs: 3x3 convs before the optional concatenation (the context block sits after
            the first one, so a context head needs ``num_convs >= 2``).
        concat_input: concatenate the head input with the convs' output, fuse by a 3x3 conv.
        dropout: Dropout2d before the classifier.
        context: ``none``, ``gc`` (GC block with ``ratio``, ``pooling``, ``fusion``), ``nl``
            (embedded Gaussian, reduction 2, scaled; ``sub_sample`` as
            `NonLocalBlock`'s), ``se`` (SE with ``ratio``), ``snl``, or any other name of
            `gcnet.layers.list_blocks` (``create_block(context, channels)``, its defaults;
            ``ratio`` and the others are not read).
        in_index: which backbone output (``forward_stages`` list index) the head reads.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        num_convs: int = 2,
        kernel_size: int = 3,
        concat_input: bool = True,
        dropout: float = 0.1,
        context: str = "none",
        ratio: float = 1 / 4,
        pooling: str = "att",
        fusion: str | Sequence[str] = "add",
        in_index: int = -1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        sub_sample: bool | str = False,
    ) -> None:
        super().__init__()
        if context not in head_contexts():
            raise ValueError(f"context must be one of {list(head_contexts())}, got {context!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if num_convs < 1 or (context != "none" and num_convs < 2):
            raise ValueError(f"num_convs must be >= 1 (>= 2 with a context block), got {num_convs}")
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.in_index, self.concat_input, self.context = in_index, concat_input, context
        self.convs = nn.Sequential(
            *[ConvNormAct(in_channels if i == 0 else channels, channels, kernel_size, norm_layer=norm_layer)
              for i in range(num_convs)]
        )  # fmt: skip
        if context == "gc":
            self.context_block: nn.Module | None = GlobalContextBlock(
                channels, ratio=ratio, pooling=pooling, fusion=fusion
            )
        elif context == "nl":
            self.context_block = NonLocalBlock(
                channels, mode="embedded_gaussian", reduction=2, use_scale=True, sub_sample=sub_sample
            )
        elif context == "se":
            self.context_block = SqueezeExcitation(channels, ratio=ratio)
        elif context == "snl":
            self.context_block = SimplifiedNonLocalBlock(channels)
        elif context != "none":  # any other registered block, with its defaults
            self.context_block = create_block(context, channels)
        else:
            self.context_block = None
        self.conv_cat = (
            ConvNormAct(in_channels + channels, channels, kernel_size, norm_layer=norm_layer)
            if concat_input
            else None
        )
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)  # mmseg's classifier init
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = feats if isinstance(feats, torch.Tensor) else feats[self.in_index]
        if x.shape[1] != self.in_channels:
            raise ValueError(f"head expects {self.in_channels} input channels, got {x.shape[1]}")
        out = self.convs[0](x)
        if self.context_block is not None:
            out = self.context_block(out)
        for conv in self.convs[1:]:
            out = conv(out)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.conv_seg(self.dropout(out))


class EncoderDecoder(nn.Module):
    """backbone -> decode head (+ auxiliary head), logits resized to the input size.

    Args:
        backbone: a `ResNet` with ``out_indices`` covering the
            heads' ``in_index`` (c4 and c5: ``out_indices=(2, 3)``, heads read -2 / -1).
        decode_head, auxiliary_head: `FCNHead` modules (auxiliary optional).
        align_corners: of the final bilinear resize (mmseg's GCNet configs: False).
    """

    def __init__(
        self,
        backbone: ResNet,
        decode_head: nn.Module,
        auxiliary_head: nn.Module | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head
        self.align_corners = align_corners
        self.num_classes = decode_head.num_classes

    def _resize(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.backbone.forward_stages(x)
        out = self._resize(self.decode_head(feats), size)
        if self.training and self.auxiliary_head is not None:
            return {"out": out, "aux": self._resize(self.auxiliary_head(feats), size)}
        return out

    def context_blocks(self) -> dict[str, nn.Module]:
        blocks = {f"backbone.{k}": v for k, v in self.backbone.context_blocks().items()}
        if getattr(self.decode_head, "context_block", None) is not None:
            blocks["decode_head.context_block"] = self.decode_head.context_block
        return blocks


class TinyBackbone(nn.Module):
    """A small stride-4 ResNet for CPU demos: 3x3 conv (stride 2, ``width // 2``) + BN + ReLU,
    3x3 conv (stride 2, ``width``) + BN + ReLU, ``blocks`` x gcnet's `BasicBlock`.

    Its theoretical receptive field is 7 + 16 * ``blocks`` pixels wide (39 for the default 2
    blocks); an FCN head's two 3x3 convs at stride 4 and the x4 bilinear upsampling widen it:
    an output pixel of ``fcn_tiny_s4`` depends on input pixels at most 32 px away in y and x
    (`gcnet.tools.receptive_field.receptive_field_halfwidth`). ``forward_stages``
    returns ``[c2]`` (one map, stride 4), like a ResNet's with ``out_indices=(0,)``;
    ``forward_features`` that map, ``feature_info`` describes it.
    """

    arch = "tiny"  # no published weights: ``pretrained`` refuses it

    def __init__(self, width: int = 32, blocks: int = 2, norm: str = "bn") -> None:
        super().__init__()
        if width < 2 or width % 2 or blocks < 1:
            raise ValueError(f"TinyBackbone needs an even width >= 2 and blocks >= 1, got {width}, {blocks}")
        if norm not in ("bn", "syncbn"):
            raise ValueError(f"TinyBackbone: norm must be 'bn' or 'syncbn', got {norm!r}")
        from gcnet.layers.sync_bn import SyncBatchNorm

        norm_layer = nn.BatchNorm2d if norm == "bn" else SyncBatchNorm
        half = width // 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, 2, 1, bias=False), norm_layer(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, 2, 1, bias=False), norm_layer(width), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.layer1 = nn.Sequential(*[BasicBlock(width, width, norm_layer=norm_layer) for _ in range(blocks)])
        self.feature_channels = (width,)
        self.feature_strides = (4,)
        self.feature_info = FeatureInfo([dict(num_chs=width, reduction=4, module="layer1")])
        self.num_features = width
        self.deep_stem = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TinyBackbone expects (N, 3, H, W) images, got shape {tuple(x.shape)}")
        return self.layer1(self.stem(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(x)]

    def context_blocks(self) -> dict[str, nn.Module]:
        return {}


class SeedGCNet(nn.Module):
    """The seed document's segmentation network (see the module docstring)."""

    def __init__(
        self, backbone: ResNet, num_classes: int, ratio: float = 1 / 16, channels: int = 512
    ) -> None:
        super().__init__()
        cin = backbone.num_features
        self.backbone = backbone
        self.num_classes = num_classes
        self.context_block = GlobalContextBlock(cin, ratio=ratio, pooling="att", fusion="add")
        # the seed: nn.Conv2d(2048, 512, 3, padding=1) (with bias), BN, ReLU
        self.conv1 = nn.Sequential(
            nn.Conv2d(cin, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.cls_seg = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = self.backbone.forward_features(x)
        out = self.conv1(self.context_block(out))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return self.cls_seg(out)

    def context_blocks(self) -> dict[str, nn.Module]:
        blocks = {f"backbone.{k}": v for k, v in self.backbone.context_blocks().items()}
        blocks["context_block"] = self.context_block
        return blocks


# -- registry ------------------------------------------------------------------------------
# name -> (backbone arch, head, output stride, head widths (decode, aux))
SEGMENTORS: dict[str, dict] = {}
for _depth in (50, 101):
    for _os in (8, 16):
        for _head, _prefix in (("gc", "gcnet"), ("none", "fcn"), ("nl", "nonlocal")):
            SEGMENTORS[f"{_prefix}_r{_depth}_d{_os}"] = dict(
                backbone=f"resnet{_depth}_v1c", head=_head, output_stride=_os, channels=512, aux_channels=256
            )
# CPU-sized variants (plain ResNet-18, torchvision stem) for demos and tests
for _head, _prefix in (("gc", "gcnet"), ("none", "fcn"), ("nl", "nonlocal")):
    SEGMENTORS[f"{_prefix}_r18_d8"] = dict(
        backbone="resnet18", head=_head, output_stride=8, channels=128, aux_channels=64
    )
SEGMENTORS["seed_gcnet_r50"] = dict(backbone="resnet50", head="seed", output_stride=8, channels=512)
# gcnet demo's models: one small stride-4 backbone, the block (or none) in an FCN head of two
# 3x3 convs with no concatenation and no auxiliary head (so the plain receptive field stays
# small); GC and SE both at ratio 1/4, NL sub-sampled as in the paper's tables
for _head, _prefix in (("none", "fcn"), ("gc", "gcnet"), ("se", "se"), ("nl", "nonlocal"), ("snl", "snl")):
    SEGMENTORS[f"{_prefix}_tiny_s4"] = dict(
        backbone="tiny", head=_head, output_stride=4, channels=32, width=32, aux=False, concat_input=False,
        dropout=0.0, **({"sub_sample": "input"} if _head == "nl" else {}),
    )  # fmt: skip

# open-mmlab's ImageNet weights for the deep-stem backbones (what mmseg's configs start from)
OPENMMLAB_V1C = {
    "resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
    "resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth",
}

_SEG_OPTIONS = (
    "num_classes", "output_stride", "norm", "aux", "channels", "aux_channels", "dropout", "ratio",
    "pooling", "fusion", "align_corners", "backbone", "backbone_kwargs", "sub_sample", "width",
    "concat_input", "head",
)  # fmt: skip
# the head options that only a head with that block reads
_HEAD_BLOCK_OPTIONS = {"ratio": ("gc", "se"), "pooling": ("gc",), "fusion": ("gc",), "sub_sample": ("nl",)}


def create_segmentor(name: str, pretrained: bool | str = False, **overrides) -> nn.Module:
    """Build a registered segmentation model (see `SEGMENTORS`).

    Overrides: ``num_classes`` (19), ``output_stride`` (8/16), ``norm`` (``bn``/``syncbn``),
    ``aux`` (auxiliary FCN head on c4, default on), ``channels``/``aux_channels``, ``dropout``
    (0.1), the head's GC block ``ratio`` (1/4; seed model 1/16), ``pooling``, ``fusion``,
    ``align_corners``, ``backbone`` (another ResNet name, e.g. ``gc_resnet50_v1c`` for GC in
    the backbone too), ``backbone_kwargs`` (passed to `gcnet.create_model`) and ``head``: the
    decode head's block, ``none`` or any name of `gcnet.layers.list_blocks` (``fcn_tiny_s4``
    with ``head="eca"``: ECA between the head's convs, built with its defaults; the registered
    block's own options, such as ``nonlocal_*``'s ``sub_sample``, then no longer apply).

    ``pretrained`` (`SegWeights` names its cases): ``False``; ``True`` /
    ``"torchvision[:NAME]"`` (ImageNet weights for torchvision-stem backbones);
    ``"openmmlab"`` (open-mmlab's ImageNet ResNet-V1c weights for the deep-stem backbones,
    downloaded once, as mmseg's recipes start from); a backbone checkpoint path (torchvision /
    mmcv ``resnet50_v1c`` / ours); or a whole-segmentor checkpoint (ours, or mmsegmentation's,
    converted by `gcnet.convert.segmentor_from_mmseg`).
    """
    spec = _segmentor_spec(name, overrides)
    backbone, c4, c5 = _segmentor_backbone(name, spec, overrides)
    model = named_model(_segmentor_heads(spec, backbone, c4, c5), name, backbone.arch)
    weights, state_dict = resolve_seg_weights(pretrained)
    if weights in (SegWeights.SEGMENTOR_FILE, SegWeights.MMSEG_FILE):
        load_state_dict_checked(model, state_dict, f"checkpoint {pretrained}")
    elif weights is SegWeights.OPENMMLAB:
        _load_openmmlab(backbone)
    elif weights is not SegWeights.NONE:  # torchvision's or a backbone checkpoint, into the backbone
        if backbone.arch == "tiny":
            raise ValueError(f"model {name!r}: there are no pretrained weights for the tiny backbone")
        if weights is SegWeights.TORCHVISION and backbone.deep_stem:
            raise ValueError(
                f"torchvision has no ImageNet weights for the deep-stem backbone {backbone.arch!r}: use "
                "pretrained='openmmlab', a V1c checkpoint path, or backbone_kwargs={'deep_stem': False}"
            )
        load_pretrained(backbone, pretrained, arch=backbone.arch.removesuffix("_v1c"))
    return model


def _segmentor_spec(name: str, overrides: dict) -> dict:
    """The registered spec of ``name`` with ``overrides`` (less ``backbone_kwargs``) and an int
    ``num_classes``; an unknown option, or one that no block of the model's head reads, raises."""
    unknown = sorted(set(overrides) - set(_SEG_OPTIONS))
    if unknown:
        hints = []
        for k in unknown:
            near = difflib.get_close_matches(k, _SEG_OPTIONS, 1)
            hints.append(f"{k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise ValueError(f"unknown option(s) for model {name!r}: {', '.join(hints)}; expected {_SEG_OPTIONS}")
    spec = _with_head(name, dict(SEGMENTORS[name]), overrides)
    spec.update({k: v for k, v in overrides.items() if k not in ("backbone_kwargs", "head")})
    spec["num_classes"] = int(spec.get("num_classes", 19))
    head = spec["head"]
    for k, heads in _HEAD_BLOCK_OPTIONS.items():  # an option no block of this head reads
        if k in overrides and head not in heads and not (head == "seed" and k == "ratio"):
            raise ValueError(f"option {k!r} of model {name!r}: its head has "
                             f"{'no context block' if head == 'none' else f'a {head} block'}, "
                             f"and only a {'/'.join(heads)} block reads {k!r}")  # fmt: skip
    return spec


def _with_head(name: str, spec: dict, overrides: dict) -> dict:
    """``spec`` with the ``head`` override (the decode head's block): checked against
    `head_contexts`; another block than the registered one drops the registered block's
    own options (`_HEAD_BLOCK_OPTIONS`: the ``nonlocal_*`` models' ``sub_sample``)."""
    if "head" not in overrides:
        return spec
    head = overrides["head"]
    if spec["head"] == "seed":
        raise ValueError(f"option 'head' of model {name!r}: its head is the seed's fixed GC head; "
                         "'head' picks the block of the FCN-head models (fcn_*, gcnet_*, ...)")  # fmt: skip
    if head not in head_contexts():
        near = difflib.get_close_matches(str(head), head_contexts(), 1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"option 'head' of model {name!r}: unknown block {head!r}{hint}; "
                         f"expected one of {list(head_contexts())}")  # fmt: skip
    if head != spec["head"]:
        spec = {k: v for k, v in spec.items() if k not in _HEAD_BLOCK_OPTIONS}
    return {**spec, "head": head}


def _segmentor_backbone(name: str, spec: dict, overrides: dict) -> tuple[nn.Module, int, int]:
    """(the backbone, the channels of c4, of c5): a `TinyBackbone` (c4 = c5: its one
    map) or a dilated ResNet of `gcnet.create_model`."""
    norm = spec.get("norm", "bn")
    bb_kwargs = dict(overrides.get("backbone_kwargs") or {})
    if spec["backbone"] == "tiny":
        if int(spec["output_stride"]) != 4:
            raise ValueError(
                f"model {name!r}: the tiny backbone has output stride 4, got {spec['output_stride']}"
            )
        backbone = TinyBackbone(int(spec.get("width", 32)), norm=norm, **bb_kwargs)
        return backbone, backbone.num_features, backbone.num_features
    if "width" in overrides:
        raise ValueError(f"option 'width' of model {name!r}: only the tiny backbone has a width")
    backbone = create_model(
        spec["backbone"], num_classes=0, output_stride=int(spec["output_stride"]), norm=norm,
        out_indices=(2, 3), **{"contract_dilation": True, **bb_kwargs},
    )  # fmt: skip
    # contract_dilation: mmseg's ResNetV1c(contract_dilation=True) for the -d8/-d16 models and
    # torchvision's replace_stride_with_dilation for the seed's: the first block of a dilated
    # stage gets half the stage's dilation (layer3[0] 1, layer4[0] 2 at output stride 8)
    return backbone, backbone.feature_channels[2], backbone.feature_channels[3]


def _segmentor_heads(spec: dict, backbone: nn.Module, c4: int, c5: int) -> nn.Module:
    """``backbone`` under the heads of ``spec``: `SeedGCNet`'s, or an
    `EncoderDecoder` with an `FCNHead` decode head (its block: ``spec["head"]``)
    on c5 and, unless ``aux`` is off, an auxiliary FCN head on c4."""
    num_classes = spec["num_classes"]
    if spec["head"] == "seed":
        return SeedGCNet(backbone, num_classes, spec.get("ratio", 1 / 16), channels=int(spec["channels"]))
    if spec.get("norm", "bn") == "syncbn":
        from gcnet.layers.sync_bn import SyncBatchNorm

        norm_layer: Callable[[int], nn.Module] = SyncBatchNorm
    else:
        norm_layer = nn.BatchNorm2d
    dropout = float(spec.get("dropout", 0.1))
    gc_kw = {k: spec[k] for k in ("ratio", "pooling", "fusion", "sub_sample") if k in spec}
    decode = FCNHead(c5, int(spec["channels"]), num_classes, num_convs=2,
                     concat_input=bool(spec.get("concat_input", True)), dropout=dropout, context=spec["head"],
                     norm_layer=norm_layer, **gc_kw)  # fmt: skip
    aux = None
    if spec.get("aux", True):
        aux = FCNHead(c4, int(spec["aux_channels"]), num_classes, num_convs=1, concat_input=False,
                      dropout=dropout, in_index=-2, norm_layer=norm_layer)  # fmt: skip
    return EncoderDecoder(backbone, decode, aux, align_corners=bool(spec.get("align_corners", False)))


class SegWeights(enum.Enum):
    """What ``create_segmentor(pretrained=...)`` loads (`resolve_seg_weights`)."""

    NONE = "no weights"
    TORCHVISION = "torchvision's ImageNet weights, into the backbone"
    OPENMMLAB = "open-mmlab's ImageNet ResNet-V1c weights, into the backbone"
    BACKBONE_FILE = "a backbone checkpoint (torchvision / mmcv ResNet-V1c / ours), into the backbone"
    SEGMENTOR_FILE = "a whole-segmentor checkpoint of ours"
    MMSEG_FILE = "an official mmsegmentation checkpoint, converted to ours"


def resolve_seg_weights(pretrained: bool | str) -> tuple[SegWeights, dict[str, torch.Tensor] | None]:
    """The case ``pretrained`` names, with the state dict to load for a whole segmentor:

    - `NONE`: ``False`` (or any false value);
    - `TORCHVISION`: ``True``, ``"torchvision"`` or ``"torchvision:NAME"``;
    - `OPENMMLAB`: ``"openmmlab"``;
    - another string is a checkpoint path (read here): `SEGMENTOR_FILE`
      when it holds decode-head keys, `MMSEG_FILE` when those are
      mmsegmentation's (``gc_block`` / ``nl_block``; converted), else
      `BACKBONE_FILE`.

    Anything else raises a one-line ValueError."""
    if not pretrained:
        return SegWeights.NONE, None
    if pretrained is True or (isinstance(pretrained, str) and pretrained.startswith("torchvision")):
        return SegWeights.TORCHVISION, None
    if pretrained == "openmmlab":
        return SegWeights.OPENMMLAB, None
    if not isinstance(pretrained, str):
        raise ValueError(f"pretrained={pretrained!r}: expected False, True, 'torchvision[:NAME]', "
                         "'openmmlab' or a checkpoint path (a str)")  # fmt: skip
    sd = load_checkpoint_file(pretrained)
    if not any(k.startswith(("decode_head.", "cls_seg.")) for k in sd):
        return SegWeights.BACKBONE_FILE, None
    if any(".gc_block." in k or ".nl_block." in k for k in sd):
        return SegWeights.MMSEG_FILE, segmentor_from_mmseg(sd)
    return SegWeights.SEGMENTOR_FILE, sd


def _load_openmmlab(backbone: nn.Module) -> None:
    """open-mmlab's ImageNet weights (`OPENMMLAB_V1C`) for the arch of ``backbone``."""
    arch = backbone.arch
    if arch not in OPENMMLAB_V1C:
        raise ValueError(f"no open-mmlab weights for {arch!r}; expected one of {sorted(OPENMMLAB_V1C)}")
    url = OPENMMLAB_V1C[arch]

    def fetch():
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, check_hash=True)

    sd = download_weights(fetch, f"open-mmlab {arch} weights", url)
    load_state_dict_checked(backbone, sd.get("state_dict", sd), f"open-mmlab {arch} weights")
