"""Pretrained configs (timm's ``pretrained_cfg``) and models saved in the Hugging Face layout.

Every model `gcnet.create_model` builds carries ``model.pretrained_cfg``, a
`PretrainedCfg`: how its input is prepared (mean, std, input size, crop, interpolation),
its classes and task; ImageNet's values and the family's input size unless the model comes from
a saved folder, whose ``config.json`` holds the values it was trained with.

A saved folder (written by `gcnet.hub.save_pretrained`) holds ``config.json`` (the
registered ``architecture``, its ``model_args``, ``num_classes``, ``classes``, ``task`` and the
``pretrained_cfg``) and ``model.safetensors``. ``create_model("local-dir:PATH")`` builds it
from a folder, ``create_model("hf-hub:ORG/NAME[@REVISION]")`` from a Hugging Face Hub repo
through ``huggingface_hub`` (its cache, ``HF_HUB_CACHE``, and ``HF_HUB_OFFLINE`` honoured).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "HF_PREFIX",
    "LOCAL_PREFIX",
    "WEIGHTS_NAME",
    "PretrainedCfg",
    "default_pretrained_cfg",
    "is_saved_model",
    "load_saved_model",
    "read_saved_config",
    "require_hf",
    "resolve_saved",
]

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: a family's task, default input size (C, H, W) or (C, T, H, W), and centre-crop fraction
_FAMILY_DEFAULTS: dict[str, tuple[str, tuple[int, ...], float]] = {
    "resnet": ("classification", (3, 224, 224), 0.875),
    "external": ("classification", (3, 224, 224), 0.875),
    "segmentor": ("segmentation", (3, 512, 512), 1.0),
    "detector": ("detection", (3, 800, 1333), 1.0),
    "video": ("video", (3, 8, 224, 224), 0.875),
}


@dataclass
class PretrainedCfg:
    """How a model's weights expect their input, and what their outputs mean (timm's
    ``pretrained_cfg``): ``input_size`` is (C, H, W), or (C, T, H, W) for a clip; the eval
    resize is ``H / crop_pct`` on the short side, then a centre crop of ``H``."""

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, ...] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    num_classes: int | None = None
    classes: list[str] | None = None
    task: str = "classification"
    architecture: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mean=list(self.mean), std=list(self.std), input_size=list(self.input_size))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PretrainedCfg:
        """From ``config.json``'s ``pretrained_cfg``; unknown keys go to ``extra``."""
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        for key in ("mean", "std", "input_size"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if kw.get("classes") is not None:
            kw["classes"] = [str(c) for c in kw["classes"]]
        extra = {**d.get("extra", {}), **{k: v for k, v in d.items() if k not in names and k != "extra"}}
        return cls(**kw, extra=extra)


def default_pretrained_cfg(model: nn.Module, family: str | None, name: str) -> PretrainedCfg:
    """ImageNet's normalisation and the family's input size (a torchvision detector's own
    normalisation and sizes), with the model's number of outputs."""
    task, size, crop = _FAMILY_DEFAULTS.get(family or "resnet", _FAMILY_DEFAULTS["resnet"])
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    tf = getattr(model, "transform", None)  # torchvision's R-CNNs normalise inside the model
    if tf is not None and hasattr(tf, "image_mean"):
        mean, std = tuple(float(v) for v in tf.image_mean), tuple(float(v) for v in tf.image_std)
        size = (3, int(tf.min_size[0]), int(tf.max_size))
    n = getattr(model, "num_classes", None)
    return PretrainedCfg(mean=mean, std=std, input_size=size, crop_pct=crop, task=task,
                         num_classes=n if isinstance(n, int) else None, architecture=name)  # fmt: skip


def is_saved_model(name: Any) -> bool:
    """Whether ``name`` names a saved model: ``hf-hub:ORG/NAME`` or ``local-dir:PATH``."""
    return isinstance(name, str) and name.startswith((HF_PREFIX, LOCAL_PREFIX))


def require_hf(feature: str = "loading from the Hugging Face Hub"):
    """``huggingface_hub`` (the ``[hub]`` extra), or an ImportError of one line: ``loading
    from the Hugging Face Hub needs huggingface_hub: pip install 'gcnet[hub]'``."""
    from gcnet.utils.extras import require

    return require("huggingface_hub", feature, "hub")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hf_download(repo_ref: str) -> str:
    """The local snapshot folder of ``ORG/NAME[@REVISION]`` holding its config and weights,
    downloaded into the Hugging Face cache unless there already; every failure is one line."""
    hf = require_hf()
    from huggingface_hub import constants
    from huggingface_hub.utils import (  # (huggingface_hub.errors since 0.25)
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = repo_ref.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{HF_PREFIX}{repo_ref}: expected {HF_PREFIX}ORG/NAME[@REVISION]")
    # read at each call (huggingface_hub reads them once, at import)
    offline = _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    kw = dict(repo_id=repo_id, revision=revision or None, cache_dir=cache, local_files_only=offline,
              library_name="gcnet")  # fmt: skip
    name = f"{HF_PREFIX}{repo_ref}"
    try:
        path = hf.hf_hub_download(filename=CONFIG_NAME, **kw)
        hf.hf_hub_download(filename=WEIGHTS_NAME, **kw)
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        raise FileNotFoundError(f"{name}: the repo {repo_id} is not in the Hugging Face cache ({cache}) "
                                f"with {CONFIG_NAME} and {WEIGHTS_NAME}, and {why}") from None  # fmt: skip
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{name}: no such repo on the Hugging Face Hub (or it is private: "
                                "log in with `hf auth login`)") from None  # fmt: skip
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{name}: the repo {repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{name}: the repo {repo_id} holds no {CONFIG_NAME} / {WEIGHTS_NAME} "
                                "(not saved by gcnet.hub.save_pretrained?)") from None  # fmt: skip
    except HfHubHTTPError as e:
        raise ValueError(f"{name}: {str(e).splitlines()[0]}") from None
    return os.path.dirname(path)


def resolve_saved(spec: str) -> str:
    """The local folder of ``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a plain folder path,
    checked to hold ``config.json`` and ``model.safetensors``."""
    if spec.startswith(HF_PREFIX):
        return _hf_download(spec[len(HF_PREFIX) :])
    path = spec[len(LOCAL_PREFIX) :] if spec.startswith(LOCAL_PREFIX) else spec
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{spec}: no such folder")
    missing = [f for f in (CONFIG_NAME, WEIGHTS_NAME) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(f"{spec}: the folder holds no {' / '.join(missing)} (write one with "
                                "gcnet.hub.save_pretrained or gcnet export --format hf)")  # fmt: skip
    return path


def read_saved_config(directory: str) -> dict[str, Any]:
    """``config.json`` of a saved folder, checked for the keys a model is built from."""
    path = os.path.join(directory, CONFIG_NAME)
    try:
        with open(path) as f:
            conf = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("architecture"), str):
        raise ValueError(f"{path} names no architecture: not a gcnet model's config.json")
    return conf


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    from .weights import state_mismatch

    why = state_mismatch(model, state)
    if why:
        raise ValueError(f"{source} does not fit its model: {why}")
    model.load_state_dict(state)


def build_saved(directory: str, create: Callable[..., nn.Module], conf: Mapping[str, Any] | None = None,
                source: str | None = None, **overrides: Any) -> nn.Module:  # fmt: skip
    """The model of a saved folder with its weights and ``pretrained_cfg``: ``create``
    (`gcnet.create_model`) builds ``architecture`` with ``model_args`` and
    ``overrides``."""
    from safetensors.torch import load_file

    conf = read_saved_config(directory) if conf is None else conf
    args = {**conf.get("model_args", {}), **overrides}
    model = create(conf["architecture"], **args)
    weights = os.path.join(directory, WEIGHTS_NAME)
    try:
        state = load_file(weights)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"cannot read {weights}: {e}") from None
    _load_strict(model, state, source or directory)
    model.pretrained_cfg = PretrainedCfg.from_dict(conf.get("pretrained_cfg", {}))
    model.model_args = args
    return model


def load_saved_model(spec: str, create: Callable[..., nn.Module], **overrides: Any) -> nn.Module:
    """``create_model("hf-hub:ORG/NAME")`` / ``create_model("local-dir:PATH")``."""
    return build_saved(resolve_saved(spec), create, source=spec, **overrides)
