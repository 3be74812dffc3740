"""Model registry: ``create_model(name, pretrained=..., **overrides)`` and ``list_models()``.

Every name is a ResNet/ResNeXt configuration plus an optional plug-in. Overrides:

- any `ResNet` argument (``num_classes``, ``output_stride``,
  ``frozen_stages``, ``norm``, ``norm_eval``, ``out_indices``, ``deep_stem``, ...);
- the plug-in: ``plugin`` (``gc``/``nl``/``snl``/``se``/``None``), ``stages`` (``"c3-c5"``,
  ``("c4",)``), ``position``, ``indices``;
- the block's own arguments (``ratio``, ``pooling``, ``fusion``, ``mode``, ``sub_sample``...),
  and ``block_kwargs={...}`` for those whose names a ResNet argument takes (the GC block's
  LayerNorm switch ``norm``: ``block_kwargs={"norm": False, "relu": False}``).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from torch import nn

from gcnet.layers import GlobalContextBlock, list_blocks
from gcnet.layers.registry import block_factory

from .external import create_external, is_external
from .features import to_features_only
from .plugins import apply_context
from .pretrained import default_pretrained_cfg, is_saved_model, load_saved_model
from .resnet import BasicBlock, Bottleneck, PluginSpec, ResNet
from .weights import TORCHVISION_ARCH, load_pretrained

__all__ = [
    "create_model",
    "did_you_mean_model",
    "has_pretrained",
    "list_models",
    "model_family",
    "register_family",
    "register_model",
    "model_config",
    "named_model",
]

_ARCHS: dict[str, dict[str, Any]] = {
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    "resnet34": dict(block=BasicBlock, layers=(3, 4, 6, 3)),
    "resnet50": dict(block=Bottleneck, layers=(3, 4, 6, 3)),
    "resnet101": dict(block=Bottleneck, layers=(3, 4, 23, 3)),
    "resnet152": dict(block=Bottleneck, layers=(3, 8, 36, 3)),
    "resnext50_32x4d": dict(block=Bottleneck, layers=(3, 4, 6, 3), groups=32, width_per_group=4),
    "resnext101_32x4d": dict(block=Bottleneck, layers=(3, 4, 23, 3), groups=32, width_per_group=4),
    "resnext101_64x4d": dict(block=Bottleneck, layers=(3, 4, 23, 3), groups=64, width_per_group=4),
    "resnet50_v1c": dict(block=Bottleneck, layers=(3, 4, 6, 3), deep_stem=True),
    "resnet101_v1c": dict(block=Bottleneck, layers=(3, 4, 23, 3), deep_stem=True),
}

assert set(TORCHVISION_ARCH) <= set(_ARCHS)

_M = TypeVar("_M", bound=nn.Module)
_MODELS: dict[str, dict[str, Any]] = {}
# families of models built on the ResNets (segmentors, detectors): name -> (specs, builder)
_FAMILIES: dict[str, tuple[Mapping[str, Any], Callable[..., nn.Module]]] = {}
_PLUGIN_KEYS = ("plugin", "stages", "position", "indices")
_RESNET_PARAMS = set(inspect.signature(ResNet).parameters) - {"block", "layers", "plugin"}


def register_model(name: str, arch: str, plugin: str | None = None, **defaults: Any) -> None:
    """Register ``name`` as ``arch`` with an optional plug-in and default overrides."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    if arch not in _ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(_ARCHS)}")
    _MODELS[name] = dict(arch=arch, plugin=plugin, **defaults)


for _arch in _ARCHS:
    register_model(_arch, _arch)
for _arch in ("resnet18", "resnet50", "resnet101", "resnext50_32x4d", "resnext101_32x4d",
              "resnet50_v1c", "resnet101_v1c"):  # fmt: skip
    register_model(f"gc_{_arch}", _arch, "gc", ratio=1 / 16)
    register_model(f"gc_{_arch}_r4", _arch, "gc", ratio=1 / 4)
register_model("snl_resnet50", "resnet50", "snl")
register_model("se_resnet50", "resnet50", "se", stages="c2-c5", ratio=1 / 16)
# Wang et al.: one NL block in c4, before its last residual block (after block 4 of 6)
register_model("nl_resnet50", "resnet50", "nl", stages=("c4",), indices={"c4": [-2]},
               position="after_add")  # fmt: skip
register_model("gc_resnet50_c4", "resnet50", "gc", stages=("c4",), ratio=1 / 16)


def named_model(model: _M, name: str, arch: str) -> _M:
    """``model`` with its registered ``model_name`` and the ``arch`` whose weights it takes
    (a video model: the 2D ResNet it inflates): the two attributes every builder sets, in one
    place (a checkpoint that does not fit names ``model_name`` in its message)."""
    model.model_name = name
    model.arch = arch
    return model


def register_family(family: str, specs: Mapping[str, Any], builder: Callable[..., nn.Module]) -> None:
    """Register the models named by the keys of ``specs`` (a live mapping), all built by
    ``builder(name, pretrained=..., **overrides)``; ``family`` names them (``"segmentor"``)."""
    if family in _FAMILIES or family == "resnet":
        raise ValueError(f"model family {family!r} is already registered")
    _FAMILIES[family] = (specs, builder)


def model_family(name: str) -> str | None:
    """``"resnet"`` for the backbones of this module, the family a builder was registered
    with (``"segmentor"``, ``"detector"``), ``"external"`` for ``tv:NAME`` / ``timm:NAME``
    (checked when built), or None for an unknown name."""
    if is_external(name):
        return "external"
    if name in _MODELS:
        return "resnet"
    return next((fam for fam, (specs, _) in _FAMILIES.items() if name in specs), None)


def did_you_mean_model(name: str) -> str:
    """``"; did you mean ['gc_resnet18', ...]?"`` for a misspelt model name, or ``""``."""
    near = difflib.get_close_matches(str(name), list_models(), n=3)
    return f"; did you mean {near}?" if near else ""


def _patterns(patterns: str | Iterable[str] | None) -> list[str]:
    if not patterns:
        return []
    return [patterns] if isinstance(patterns, str) else [p for p in patterns if p]


def has_pretrained(name: str) -> bool:
    """Whether ``create_model(name, pretrained=True)`` downloads weights for every parameter
    of ``name`` as registered: a plain ResNet / ResNeXt torchvision publishes ImageNet weights
    for (a model with plug-in blocks gets its backbone's weights only, the blocks fresh; the
    video models get inflated ImageNet weights, no Kinetics ones)."""
    spec = _MODELS.get(name)
    return spec is not None and spec["plugin"] is None and spec["arch"] == name and name in TORCHVISION_ARCH


def list_models(
    pattern: str | Iterable[str] = "*", exclude: str | Iterable[str] | None = None, pretrained: bool = False
) -> list[str]:
    """The registered names matching ``pattern`` (an fnmatch pattern or a list of them, any
    one matching; ``""`` / ``None``: all) and none of ``exclude``, sorted; ``pretrained``:
    only those `has_pretrained` (complete downloadable weights) accepts."""
    names = [*_MODELS, *(n for specs, _ in _FAMILIES.values() for n in specs)]
    include, skip = _patterns(pattern) or ["*"], _patterns(exclude)
    return sorted(
        n for n in set(names)
        if any(fnmatch.fnmatch(n, p) for p in include) and not any(fnmatch.fnmatch(n, p) for p in skip)
        and (not pretrained or has_pretrained(n))
    )  # fmt: skip


def _block_params(block: str) -> set[str]:
    """The keyword arguments of the registered block ``block`` (its constructor's, or a
    partial's function's), beside ``channels``; a name the registry lacks: the GC block's
    (the plug-in spec names the unknown block itself)."""
    fn: Callable = block_factory(block) if block in list_blocks() else GlobalContextBlock
    fixed = set(getattr(fn, "keywords", None) or ())  # a partial's bound arguments
    params = inspect.signature(getattr(fn, "func", fn)).parameters
    return {p for p, v in params.items() if v.kind is not v.VAR_KEYWORD} - {"channels", "self"} - fixed


def resolve_config(
    name: str,
    registered: Mapping[str, Any],
    archs: Mapping[str, tuple[dict[str, Any], str]],
    net_params: set[str],
    spec_cls: type[PluginSpec],
    overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """The network kwargs for the registered entry ``registered`` (``arch``, ``plugin`` and
    defaults) with ``overrides``: ``archs[arch]`` gives the base kwargs and the ``_arch`` of
    the weights; keys in ``net_params`` go to the network, the plug-in keys and the block's
    own arguments into a ``spec_cls``; anything else raises a one-line ValueError with the
    nearest valid names. Shared by the 2D registry and the video one."""
    spec = dict(registered)
    if "plugin" in overrides and overrides["plugin"] != spec["plugin"]:
        # another block (or none): the registered block's defaults no longer apply
        spec = {k: v for k, v in spec.items() if k in net_params or k in ("arch", "plugin")}
    spec.update(overrides)
    base, arch = archs[spec.pop("arch")]
    cfg = dict(base)
    plugin_args = {k: spec.pop(k) for k in _PLUGIN_KEYS if k in spec}
    block = plugin_args.pop("plugin", None)
    explicit = spec.pop("block_kwargs", None) or {}
    if explicit and block is None:
        raise ValueError(f"block_kwargs given for model {name!r} without a plug-in block")
    bad = sorted(set(explicit) - _block_params(block)) if block is not None else []
    if bad:
        raise ValueError(f"block_kwargs {bad} are not arguments of the {block!r} block of model {name!r}; "
                         f"expected some of {sorted(_block_params(block))}")  # fmt: skip
    block_kwargs = {}
    for key in list(spec):
        if key in net_params:
            cfg[key] = spec.pop(key)
        elif block is not None and key in _block_params(block):
            block_kwargs[key] = spec.pop(key)
    if spec:
        valid = sorted(net_params | set(_PLUGIN_KEYS) | (_block_params(block) if block else set()))
        msgs = []
        for key in spec:
            near = difflib.get_close_matches(key, valid, n=1)
            msgs.append(f"{key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        extra = "" if block else " (this model has no plug-in block; pass plugin='gc' etc.)"
        raise ValueError(f"unknown option(s) for model {name!r}: {', '.join(msgs)}{extra}")
    if block is not None:
        cfg["plugin"] = spec_cls(block, {**block_kwargs, **explicit}, **plugin_args)
    elif plugin_args:
        raise ValueError(f"{sorted(plugin_args)} given for model {name!r} without a plug-in block")
    cfg["_arch"] = arch
    return cfg


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The resolved ResNet kwargs (with a `PluginSpec`) for ``name`` + overrides."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}{did_you_mean_model(name)} (see gcnet.list_models())")
    archs = {arch: (base, arch) for arch, base in _ARCHS.items()}
    return resolve_config(name, _MODELS[name], archs, _RESNET_PARAMS, PluginSpec, overrides)


def create_model(name: str, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: see `list_models`.
        pretrained: ``False``; ``"torchvision"`` (or ``"torchvision:IMAGENET1K_V1"``) for
            torchvision's ImageNet weights in the plain parts, plug-ins fresh; or a local
            checkpoint path (safetensors, or ``.pth``/``.pt`` loaded with ``weights_only``),
            ours or an official GCNet / mmdetection one.
        **overrides: see the module docstring; ``context={"block": "gc", "after": ...}``
            puts blocks into any model (`gcnet.models.plugins.apply_context`).

    ``tv:NAME`` / ``timm:NAME`` build a torchvision / timm model
    (`gcnet.models.external`).

    ``features_only=True`` (a ResNet / ResNeXt / video backbone): timm's feature extractor,
    the same module whose forward returns the maps at ``out_indices`` (timm's: 0 the stem,
    1..4 c2..c5; default all five), its ``feature_info`` describing them
    (`gcnet.models.features.to_features_only`).

    ``hf-hub:ORG/NAME`` / ``local-dir:PATH``: a model saved by ``gcnet.hub.save_pretrained``,
    with its weights (`gcnet.models.pretrained`). Every model carries
    ``model.pretrained_cfg`` (its preprocessing, classes, task) and ``model.model_args``.
    """
    if is_saved_model(name):
        return load_saved_model(name, create_model, **overrides)
    model = _create_model(name, pretrained, **overrides)
    if getattr(model, "pretrained_cfg", None) is None:  # a timm model keeps timm's (a dict)
        model.pretrained_cfg = default_pretrained_cfg(model, model_family(name), name)
    model.model_args = dict(overrides)
    return model


def _create_model(name: str, pretrained: bool | str = False, **overrides: Any) -> nn.Module:
    if is_external(name):
        return create_external(name, pretrained=pretrained, **overrides)
    context = overrides.pop("context", None)
    features = _pop_features_only(overrides)
    for specs, builder in _FAMILIES.values():
        if name in specs:
            model = builder(name, pretrained=pretrained, **overrides)
            if context:
                apply_context(model, context)
            return to_features_only(model, features[1]) if features[0] else model
    cfg = model_config(name, **overrides)
    arch = cfg.pop("_arch")
    model = named_model(ResNet(**cfg), name, arch)
    if pretrained:
        load_pretrained(model, pretrained, arch=arch)
    if context:
        apply_context(model, context)
    return to_features_only(model, features[1]) if features[0] else model


def _pop_features_only(overrides: dict[str, Any]) -> tuple[bool, Any]:
    """(``features_only``, its ``out_indices``: timm's 0..4, the stem and c2..c5) taken out
    of ``overrides``; without ``features_only`` an ``out_indices`` stays for the network (the
    ResNet argument: 0..3, c2..c5)."""
    if not overrides.pop("features_only", False):
        return False, None
    return True, overrides.pop("out_indices", None)
