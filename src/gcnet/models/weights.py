"""Loading pretrained weights into our ResNets: torchvision's, ours, official GCNet/mmdet.

Loading never silently half-succeeds: plug-in blocks may be absent from a *plain* source
(they stay freshly initialised, exactly the identity for add-fused blocks) and a classifier
with another number of classes is skipped; any other missing, unexpected or mis-shaped key
raises a :class:`ValueError` that lists them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

from gcnet.convert import is_mmdet_checkpoint, resnet_from_mmdet

__all__ = ["load_checkpoint_file", "load_pretrained", "load_state_dict_checked"]

log = logging.getLogger(__name__)

# the archs torchvision publishes ImageNet weights for (its names are ours)
TORCHVISION_ARCH = {k: k for k in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                   "resnext50_32x4d", "resnext101_64x4d")}  # fmt: skip


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file loaded
    with ``weights_only=True`` (a checkpoint cannot run code). Unwraps ``state_dict``/``model``
    /``ema`` entries and a DDP ``module.`` prefix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd: dict = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors, truncated files, code-carrying pickles
            raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(sd, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(sd).__name__}, not a state dict")
    for wrapper in ("model_ema", "ema", "state_dict", "model"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load with the rules in the module docstring; raise listing every mismatch."""
    own = model.state_dict()
    sd = dict(state_dict)
    has_plugins = any(".context_block." in k for k in sd)
    allowed_missing = set()
    if not has_plugins:  # a plain backbone: the plug-ins stay fresh
        allowed_missing |= {k for k in own if ".context_block." in k}
    notes = []
    for head in ("fc.weight", "fc.bias"):
        if head in sd and (head not in own or own[head].shape != sd[head].shape):
            sd.pop(head)
            notes.append(head)
        if head not in sd:
            allowed_missing.add(head)
    missing = sorted(k for k in own if k not in sd and k not in allowed_missing)
    # FrozenBatchNorm2d keeps no num_batches_tracked: a BN checkpoint's counters are moot
    unexpected = sorted(k for k in sd if k not in own and not k.endswith("num_batches_tracked"))
    sd = {k: v for k, v in sd.items() if k in own or not k.endswith("num_batches_tracked")}
    shapes = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and own[k].shape != v.shape
    )
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the model:"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", shapes)):  # fmt: skip
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"  {label} ({len(keys)}): {shown}")
        raise ValueError("\n".join(parts))
    model.load_state_dict(sd, strict=False)
    if notes:
        log.info("%s: classifier %s not loaded (different number of classes)", source, notes)
    if not has_plugins and any(".context_block." in k for k in own):
        log.info("%s: plain weights loaded; context blocks freshly initialised", source)


def _torchvision_state_dict(arch: str, weights: str | None) -> dict[str, torch.Tensor]:
    import torchvision

    if arch not in TORCHVISION_ARCH:
        raise ValueError(f"torchvision has no ImageNet weights for {arch!r}")
    enum = torchvision.models.get_model_weights(TORCHVISION_ARCH[arch])
    try:
        w = enum[weights] if weights else enum.DEFAULT
    except KeyError:
        raise ValueError(
            f"unknown torchvision weights {weights!r} for {arch}; expected one of {[m.name for m in enum]}"
        ) from None
    return w.get_state_dict(progress=True)


def load_pretrained(model: nn.Module, source: str | bool, arch: str) -> None:
    """``source``: ``"torchvision"``/``"torchvision:NAME"``/``True`` or a checkpoint path."""
    if source is True or (isinstance(source, str) and source.startswith("torchvision")):
        name = source.split(":", 1)[1] if isinstance(source, str) and ":" in source else None
        sd = _torchvision_state_dict(arch, name)
        load_state_dict_checked(model, sd, f"torchvision {arch} weights")
        return
    sd = load_checkpoint_file(source)
    if is_mmdet_checkpoint(sd):
        sd = resnet_from_mmdet(sd)
    load_state_dict_checked(model, sd, f"checkpoint {source}")
