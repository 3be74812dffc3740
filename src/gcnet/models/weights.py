"""Loading pretrained weights into our ResNets: torchvision's, ours, official GCNet/mmdet.

Loading never silently half-succeeds: plug-in blocks may be absent from a *plain* source
(they stay freshly initialised, exactly the identity for add-fused blocks) and a classifier
with another number of classes is skipped, with a one-line ``UserWarning`` (fine-tuning; a
backbone without a classifier skips it quietly); any other missing, unexpected or mis-shaped
key raises a `ValueError` that lists them.
"""

from __future__ import annotations

import http.client
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

from gcnet.convert import is_mmdet_checkpoint, resnet_from_mmdet
from gcnet.fileio import load_torch_file

__all__ = ["download_weights", "load_checkpoint_file", "load_pretrained", "load_state_dict_checked"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def download_weights(fetch: Callable[[], _T], what: str, url: str) -> _T:
    """``fetch()`` (a weights download); a network failure (offline, DNS, refused or reset
    connection, timeout, HTTP error) becomes a one-line `ValueError` naming the
    weights and the URL and saying how to go on without them."""
    try:
        return fetch()
    except (OSError, http.client.HTTPException) as e:  # URLError, ConnectionError, socket timeouts
        reason = getattr(e, "reason", None) or e
        reason = " ".join(str(reason).split()) or type(e).__name__
        raise ValueError(
            f"cannot download {what} from {url} ({reason}): set model.pretrained=false, "
            "or pass a local checkpoint path"
        ) from None


# the archs torchvision publishes ImageNet weights for (its names are ours)
TORCHVISION_ARCH = {k: k for k in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                   "resnext50_32x4d", "resnext101_64x4d")}  # fmt: skip


def load_checkpoint_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` file loaded
    with ``weights_only=True`` (a checkpoint cannot run code). Unwraps ``state_dict``/``model``
    /``ema`` entries (a training checkpoint with an EMA gives the EMA weights, what ``gcnet
    eval`` evaluates), a DDP ``module.`` prefix and an ``AveragedModel`` state dict (EMA)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd: dict = load_file(path)
    else:
        sd = load_torch_file(path)  # weights_only: a checkpoint cannot run code
    if not isinstance(sd, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(sd).__name__}, not a state dict")
    for wrapper in ("model_ema", "ema", "state_dict", "model"):
        if wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # torch.optim.swa_utils.AveragedModel (train.ema): module.* keys plus an n_averaged counter
    if "n_averaged" in sd and any(k.startswith("module.") for k in sd):
        sd.pop("n_averaged")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """How ``state`` fails to fit ``model`` exactly, in a few words (the count and the first key
    of each kind: missing, unexpected, of another shape), or None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    kinds = (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes))
    parts = [f"{len(v)} {what} (first: {v[0]})" for what, v in kinds if v]
    return "; ".join(parts) or None


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
    dropped = None  # (checkpoint classes, model classes or None): a head of another size
    if "fc.weight" in sd and ("fc.weight" not in own or own["fc.weight"].shape != sd["fc.weight"].shape):
        dropped = (sd["fc.weight"].shape[0], own["fc.weight"].shape[0] if "fc.weight" in own else None)
    for head in ("fc.weight", "fc.bias"):
        if dropped and head in sd:
            sd.pop(head)
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
    if dropped and dropped[1] is None:  # a backbone (num_classes=0): the classifier has no place
        log.info("%s: classifier fc (%d classes) not loaded into a backbone", source, dropped[0])
    elif dropped:
        warnings.warn(
            f"{source}: classifier fc ({dropped[0]} classes) not loaded into a {dropped[1]}-class model "
            "(fine-tuning to other classes)",
            UserWarning,
            stacklevel=2,
        )
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
    return download_weights(
        lambda: w.get_state_dict(progress=True), f"torchvision {arch} weights ({w.name})", w.url
    )


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
    try:
        load_state_dict_checked(model, sd, f"checkpoint {source}")
    except ValueError as e:
        held = trained_model_name(source)
        wanted = getattr(model, "model_name", None)
        if held and wanted and held != wanted:
            raise ValueError(f"checkpoint {source} holds a {held} (its config says so), not a {wanted}; "
                             f"build {held} or give a {wanted} checkpoint\n{e}") from None  # fmt: skip
        raise


def trained_model_name(path: str) -> str | None:
    """The model name in a gcnet run's checkpoint (its config), or None."""
    if not isinstance(path, str) or not path.endswith((".pth", ".pt")):
        return None
    try:
        ck = load_torch_file(path)
    except (ValueError, FileNotFoundError):
        return None
    cfg = ck.get("config") if isinstance(ck, Mapping) else None
    return cfg.get("model", {}).get("name") if isinstance(cfg, Mapping) else None
