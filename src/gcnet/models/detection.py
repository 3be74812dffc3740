"""Detection and instance segmentation: torchvision's Mask R-CNN / Faster R-CNN on gcnet's
ResNet / ResNeXt backbones (GC at c3-c5, after_1x1, as in the paper) under an FPN.

The backbone is `ResNet` wrapped in torchvision's
``BackboneWithFPN`` (c2..c5 -> P2..P6, 256 channels), with the stem and c2 frozen
(``frozen_stages=1``) and either frozen BatchNorm (``norm="frozen_bn"``, the usual
fine-tuning setting) or synchronised BatchNorm (``norm="syncbn"``, the paper's SyncBN rows).
Everything past the backbone is torchvision's (RPN, RoIAlign, box and mask heads,
``GeneralizedRCNNTransform`` resizing to ``min_size``/``max_size``, 800/1333 by default).

Weights: ``pretrained="torchvision"`` fills the backbone with torchvision's ImageNet weights
(GC blocks fresh: the paper's starting point); a path loads a whole detector saved by
gcnet, or the backbone of a plain / official GCNet / mmdetection checkpoint (through
`gcnet.convert.resnet_from_mmdet`; mmdetection's necks and heads are not mapped:
their layouts differ from torchvision's).
"""

from __future__ import annotations

import difflib
import inspect
from typing import TYPE_CHECKING, Any

from torch import nn

from .features import FeatureInfo
from .registry import create_model, named_model
from .weights import load_checkpoint_file, load_state_dict_checked

if TYPE_CHECKING:
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

__all__ = ["DETECTORS", "create_detector", "resnet_fpn"]

_BACKBONES = {
    "r18": "resnet18",
    "r50": "resnet50",
    "r101": "resnet101",
    "x101_32x4d": "resnext101_32x4d",
}

# name -> dict(kind, backbone arch, plug-in kwargs or None)
DETECTORS: dict[str, dict[str, Any]] = {}
for _kind in ("maskrcnn", "fasterrcnn"):
    for _short, _arch in _BACKBONES.items():
        DETECTORS[f"{_kind}_{_short}_fpn"] = dict(kind=_kind, arch=_arch, gc=None)
        DETECTORS[f"{_kind}_gc_{_short}_fpn"] = dict(kind=_kind, arch=_arch, gc=1 / 16)
        DETECTORS[f"{_kind}_gc_{_short}_fpn_r4"] = dict(kind=_kind, arch=_arch, gc=1 / 4)

_DET_OPTIONS = (
    "num_classes", "norm", "frozen_stages", "ratio", "stages", "position", "min_size", "max_size",
    "backbone_kwargs",
)  # fmt: skip


def resnet_fpn(
    arch: str,
    gc_ratio: Any = 1 / 16,
    norm: str = "frozen_bn",
    frozen_stages: int = 1,
    pretrained: bool | str = False,
    out_channels: int = 256,
    gc: bool | None = None,
    **overrides: Any,
) -> BackboneWithFPN:
    """gcnet ResNet (``arch``) -> torchvision FPN, with GC blocks at c3-c5 when ``gc``.

    ``gc`` (default: ``gc_ratio is not None``, the old spelling of "no GC"): GC blocks of
    ratio ``gc_ratio`` (``None`` with ``gc=True``: the transform is one C->C conv, the
    paper's "w/o ratio" row). ``overrides`` go to `gcnet.create_model` (e.g.
    ``stages``, ``position``, ``pooling``, or ``plugin="nl"`` with its options)."""
    # here, not at the top: the names above (the model registry) need no detection code
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if gc is None:
        gc = gc_ratio is not None
    kw: dict[str, Any] = dict(num_classes=0, norm=norm, frozen_stages=frozen_stages)
    if gc:
        kw.update(plugin="gc", ratio=gc_ratio)
    kw.update(overrides)
    body = create_model(arch, pretrained=pretrained, **kw)
    body.fc = None
    layers = {f"layer{i + 1}": str(i) for i in range(4)}
    fpn = BackboneWithFPN(
        body, layers, list(body.feature_channels), out_channels, extra_blocks=LastLevelMaxPool()
    )
    fpn.strides = (4, 8, 16, 32, 64)
    # timm's feature_info: the ResNet's c2..c5 on the body, the FPN's P2..P6 on the whole
    fpn.body.feature_info = body.feature_info.from_other((1, 2, 3, 4))
    fpn.feature_info = FeatureInfo(
        [
            dict(num_chs=out_channels, reduction=s, module=f"fpn.layer_blocks.{i}")
            for i, s in enumerate(fpn.strides[:4])
        ]
        + [dict(num_chs=out_channels, reduction=64, module="fpn.extra_blocks")]
    )
    return fpn


def create_detector(name: str, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build a registered detector (see `DETECTORS`).

    Overrides: ``num_classes`` (including background, torchvision's convention; default 81 =
    COCO's 80 + 1), ``norm`` (``frozen_bn`` / ``syncbn`` / ``bn``), ``frozen_stages`` (1: stem +
    c2), the GC block's ``ratio`` / ``stages`` / ``position``, ``min_size`` / ``max_size``
    (800 / 1333; a tuple of min sizes = multi-scale training), ``backbone_kwargs`` (more
    `gcnet.create_model` options), and any keyword of torchvision's ``MaskRCNN`` /
    ``FasterRCNN`` (``rpn_batch_size_per_image``, ``box_batch_size_per_image``,
    ``rpn_post_nms_top_n_train``, ``box_detections_per_img``, ...).

    ``ratio=None`` on a GC detector is GC with a single C->C conv as its transform (the
    paper's "w/o ratio" row). The block's other options go in ``backbone_kwargs``
    (``pooling``, ``fusion``, ``indices``, ``block_kwargs={"norm": False, "relu": False}``);
    other blocks on the plain
    detector, e.g. ``backbone_kwargs={"plugin": "nl", "stages": "c4", "indices": {"c4": [-2]},
    "position": "after_add", "sub_sample": "input"}``. A combination the builder cannot honour
    raises instead of building a plain detector.
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    spec = DETECTORS[name]
    cls = MaskRCNN if spec["kind"] == "maskrcnn" else FasterRCNN
    _check_options(name, cls, overrides)
    o = dict(overrides)
    ratio, bb_kw = _gc_options(name, spec, o)
    full_ckpt, backbone_weights = _detector_weights(pretrained)
    backbone = resnet_fpn(
        spec["arch"], ratio, norm=o.pop("norm", "frozen_bn"), frozen_stages=int(o.pop("frozen_stages", 1)),
        pretrained=backbone_weights, gc=spec["gc"] is not None, **bb_kw,
    )  # fmt: skip
    num_classes = int(o.pop("num_classes", 81))
    kw = dict(min_size=o.pop("min_size", 800), max_size=o.pop("max_size", 1333))
    if isinstance(kw["min_size"], list):
        kw["min_size"] = tuple(kw["min_size"])
    kw.update(o)  # torchvision's own options (rpn_*, box_*)
    model = named_model(cls(backbone, num_classes=num_classes, **kw), name, spec["arch"])
    model.num_classes = num_classes
    if full_ckpt is not None:
        load_state_dict_checked(model, full_ckpt, f"checkpoint {pretrained}")
    return model


def _check_options(name: str, cls: type[nn.Module], overrides: dict[str, Any]) -> None:
    """A one-line ValueError for an option that is neither ours nor a keyword of ``cls``."""
    tv_options = set(inspect.signature(cls).parameters) - {"backbone", "num_classes", "min_size", "max_size"}
    unknown = sorted(set(overrides) - set(_DET_OPTIONS) - tv_options)
    if unknown:
        hints = []
        for k in unknown:
            near = difflib.get_close_matches(k, _DET_OPTIONS, 1)
            hints.append(f"{k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise ValueError(
            f"unknown option(s) for model {name!r}: {', '.join(hints)}; expected {_DET_OPTIONS} "
            f"or a torchvision {cls.__name__} argument"
        )


def _gc_options(name: str, spec: dict[str, Any], o: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """(the GC ratio, the backbone's `gcnet.create_model` options), popped from the
    options ``o``: ``ratio``, ``backbone_kwargs``, ``stages``, ``position``; a combination the
    detector cannot honour raises."""
    has_gc = spec["gc"] is not None
    if not has_gc and "ratio" in o:
        raise ValueError(f"{name!r} has no GC blocks; use the maskrcnn_gc_* / fasterrcnn_gc_* names")
    ratio = o.pop("ratio", spec["gc"])  # None: GC with one C->C conv ("w/o ratio")
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0):
        raise ValueError(
            f"ratio of {name!r} must be a positive number or None (one C->C conv), got {ratio!r}"
        )
    bb_kw = dict(o.pop("backbone_kwargs", None) or {})
    for k in ("stages", "position"):
        if k in o:
            bb_kw[k] = o.pop(k)
    if not has_gc and bb_kw and "plugin" not in bb_kw:
        raise ValueError(f"{sorted(bb_kw)} given for {name!r}, which has no context blocks: use a "
                         "maskrcnn_gc_* / fasterrcnn_gc_* name, or backbone_kwargs={'plugin': 'nl', "
                         "...}")  # fmt: skip
    if has_gc and "plugin" in bb_kw:
        raise ValueError(f"backbone_kwargs.plugin given for {name!r}, which has GC blocks already: start "
                         f"from the plain {name.replace('_gc_', '_').removesuffix('_r4')!r}")  # fmt: skip
    return ratio, bb_kw


def _detector_weights(pretrained: bool | str) -> tuple[dict[str, Any] | None, bool | str]:
    """(a whole detector's state dict, or None; what the backbone loads): a checkpoint path
    with detector keys (``roi_heads.``, ``rpn.``, ``backbone.body.``) is a whole detector;
    anything else (``"torchvision[:NAME]"``, ``True``, a backbone's checkpoint) is the
    backbone's."""
    if isinstance(pretrained, str) and pretrained and not pretrained.startswith("torchvision"):
        sd = load_checkpoint_file(pretrained)
        if any(k.startswith(("roi_heads.", "rpn.", "backbone.body.")) for k in sd):
            return sd, False
    return None, pretrained or False
