"""One config system: nested dicts of defaults, YAML recipes on top, dotted overrides last.

    cfg = load_config("configs/demo_synthetic.yaml", ["optim.lr=0.05", "train.epochs=3"])

Every key of a recipe or override must exist in :data:`DEFAULTS` (except the free-form
``model.kwargs``); an unknown key is an error that suggests the nearest valid key.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from gcnet.config_schema import check_choice, check_combinations, check_ranges, check_types
from gcnet.errors import ConfigError
from gcnet.tasks import get_task

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "fill_defaults",
    "find_recipe",
    "list_recipes",
    "load_config",
    "merge",
    "parse_override",
    "flatten",
    "validate",
]

DEFAULTS: dict[str, Any] = {
    "task": "classification",  # a name in gcnet.tasks.TASKS
    "model": {
        "name": "gc_resnet18",
        "pretrained": False,  # False | "torchvision" | path
        "kwargs": {},  # free-form overrides for gcnet.create_model
        # free-form: context blocks put into any model (tv:NAME / timm:NAME included) by
        # gcnet.add_context_blocks, e.g. {block: gc, after: "preset:resnet:after_1x1:c3-c5",
        # ratio: 0.0625}; {} = none
        "context": {},
    },
    "data": {
        # classification: synthetic | imagefolder | cifar10 | cifar100
        # segmentation: synthetic | cityscapes | voc | ade20k | custom; detection: synthetic | coco
        # video: synthetic_video | video_list | video_folder | kinetics | rawframes
        "dataset": "synthetic",
        "root": None,
        "train_split": "train",
        "val_split": "val",
        "download": False,
        "image_size": 48,
        "train_size": 3000,  # synthetic only
        "val_size": 600,  # synthetic only
        "seed": 0,  # synthetic only
        # detection (coco): annotation files and image folders, relative to data.root or absolute;
        # None: found (annotations/instances_<split>.json, annotations/<split>.json,
        # <split>/_annotations.coco.json, ...; images in <split>/, images/<split>/, images/)
        "train_ann": None,
        "val_ann": None,
        "train_images": None,
        "val_images": None,
        "num_workers": 2,
        "skip_bad_images": False,
        # imagefolder: check every image before training (quick: headers + JPEGs at 1/8 scale;
        # full: a whole decode; off): bad files stop the run up front, or are skipped, counted
        "verify_images": "quick",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "augment": {
            "random_resized_crop": False,
            "scale": [0.08, 1.0],
            "hflip": True,
            "randaugment": False,
            "mixup": 0.0,
            "cutmix": 0.0,
            "eval_crop_ratio": 0.875,
        },
        "video": {  # video: clips decoded with PyAV (gcnet.data.video)
            "train_list": None,  # list / CSV file (relative to data.root); None: the format's default
            "val_list": None,
            "filename_tmpl": "img_{:05d}.jpg",  # rawframes
            "clip_len": 8,  # frames per clip ...
            "frame_interval": 8,  # ... one every N-th (8x8 sampling)
            "train_scale": [256, 320],  # short side scaled to a random size in this range
            "crop_size": 224,  # train crop side
            "test_scale": 256,  # eval: short side, and the side of the 3 crops
            "num_clips": 10,  # gcnet eval / predict: clips per video ...
            "num_crops": 3,  # ... x crops per clip (10 x 3 = 30 views)
            "val_clips": 1,  # validation inside training: fewer views (1 x 1: one centre clip)
            "val_crops": 1,
            "skip_bad_videos": False,  # missing / undecodable clips: skip and count, or stop
        },
        "seg": {  # segmentation: mmseg's joint pipeline
            "scale": None,  # [long, short] edges of the random rescale's base; None = as loaded
            "ratio_range": [0.5, 2.0],  # null: no random rescale
            "crop_size": None,  # [h, w] random crop (padded with ignore); None = whole image
            "cat_max_ratio": 0.75,
            "photometric": True,
            "test_scale": None,  # [long, short] keep-ratio resize of eval images; None = as is
            # your classes (data.dataset=custom; or a voc / ade20k / cityscapes tree relabelled):
            # a list of names (mask value i = the i-th) or a file (relative to data.root) with
            # one "name [R G B]" per line; None: <root>/classes.txt (custom), the dataset's own
            "classes": None,
            "palette": None,  # [[R, G, B], ...] one per class; None: classes.txt's or VOC's colour map
            "ignore_index": 255,  # the mask value that counts nowhere (as stored in the files)
            "reduce_zero_label": False,  # custom: label 0 -> ignore, k -> k-1 (ADE20K-style masks)
            # custom: folders relative to data.root ("{split}" replaced; None: found), file suffixes,
            # split lists (one stem per line; None: the folders' own split subfolders)
            "img_dir": None,
            "ann_dir": None,
            "img_suffix": None,  # None: .jpg .jpeg .png .bmp .tif .tiff .webp
            "seg_map_suffix": ".png",
            "train_list": None,
            "val_list": None,
        },
    },
    "eval": {  # segmentation inference
        "mode": "whole",  # whole | slide
        "crop_size": None,  # [h, w] windows for slide
        "stride": None,  # [h, w]
        "scales": [1.0],  # multi-scale: e.g. [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
        "flip": False,
        "batch_size": 1,
    },
    "optim": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.1,  # for the reference batch size below (linear scaling rule)
        "ref_batch_size": 256,
        "momentum": 0.9,
        "nesterov": False,
        "weight_decay": 1e-4,
        "no_decay_norm_bias": True,
        "betas": [0.9, 0.999],
    },
    "sched": {
        "name": "cosine",  # cosine | step | poly | constant
        "warmup_epochs": 0.0,
        "warmup_iters": 0,  # if > 0, overrides warmup_epochs (detection: 500)
        "warmup_factor": 0.1,
        "milestones": [],  # epochs, for step
        "gamma": 0.1,
        "min_lr": 0.0,
        "power": 0.9,  # poly
    },
    "train": {
        "epochs": 5,
        "max_iters": None,  # iteration budget (segmentation recipes); overrides epochs
        "batch_size": 64,  # global batch (split across DDP ranks)
        "label_smoothing": 0.0,
        "aux_loss_weight": 0.4,  # segmentation auxiliary head
        "clip_grad": None,
        "amp": "none",  # none | bf16 | fp16
        "channels_last": False,
        "compile": False,
        "ema": False,
        "ema_decay": 0.999,
        "sync_bn": False,
        "seed": 0,
        "device": "auto",  # auto | cpu | cuda
        "eval_every": 1,
        "checkpoint_every_epochs": 1,  # write last.pth after every N-th epoch (and the last)
        "checkpoint_every": None,  # also write last.pth every N steps inside an epoch
        "checkpoint_every_minutes": None,  # ... and / or every M minutes
        "skip_nonfinite_steps": 0,  # skip up to N steps with a non-finite loss (0: stop at the first)
    },
    "output": {
        "dir": "runs/default",
        "tensorboard": False,
        "plot": True,
    },
}

_FREE_FORM = ("model.kwargs", "model.context")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in _FREE_FORM and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _suggest(key: str) -> str:
    valid = list(flatten(DEFAULTS))
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not near:  # maybe only the last part is misspelt or misplaced
        leaf = key.rsplit(".", 1)[-1]
        near = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean {near[0]!r}?)" if near else ""


def merge(base: dict[str, Any], update: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``; unknown keys raise."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        key = f"{prefix}{k}"
        if k not in out:
            full = f"{key}.{next(iter(flatten(v)))}" if isinstance(v, Mapping) and v else key
            raise ConfigError(f"unknown config key {full!r}{_suggest(full)}")
        if key in _FREE_FORM:
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} must be a mapping, got {v!r}")
            out[k] = {**out[k], **v}
        elif isinstance(out[k], dict):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{key} is a section; got the value {v!r}")
            out[k] = merge(out[k], v, key + ".")
        else:
            out[k] = v
    return out


def fill_defaults(cfg: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``cfg`` with every key it lacks taken from :data:`DEFAULTS`: the config of a
    checkpoint written before a key existed reads as it trained (the default is the behaviour
    the key was added with)."""
    defaults = DEFAULTS if defaults is None else defaults
    out = copy.deepcopy(dict(cfg))
    for k, v in defaults.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out[k], Mapping) and v:
            out[k] = fill_defaults(out[k], v)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``"optim.lr=0.05"`` -> ``{"optim": {"lr": 0.05}}`` (the value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override must look like key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of {key!r}: {e}") from None
    parts = key.split(".")
    # model.kwargs.ratio=0.25 -> a free-form entry
    for free in _FREE_FORM:
        fparts = free.split(".")
        if parts[: len(fparts)] == fparts and len(parts) > len(fparts):
            inner: Any = value
            for p in reversed(parts[len(fparts) :]):
                inner = {p: inner}
            value, parts = inner, fparts
            break
    out: Any = value
    for p in reversed(parts):
        out = {p: out}
    return out


RECIPES = os.path.join(os.path.dirname(__file__), "recipes")


def list_recipes() -> list[str]:
    """The recipes shipped in the package (``configs/`` in a checkout is the same folder)."""
    return sorted(f for f in os.listdir(RECIPES) if f.endswith(".yaml"))


def find_recipe(path: str | os.PathLike) -> str:
    """``path`` if it is a file, else a packaged recipe of that name (``.yaml`` optional), so
    ``-c demo_segmentation.yaml`` works from any folder."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    for candidate in (name, name + ".yaml"):
        if os.path.isfile(os.path.join(RECIPES, candidate)):
            return os.path.join(RECIPES, candidate)
    raise FileNotFoundError(
        f"config file not found: {path} (nor a packaged recipe of that name: {', '.join(list_recipes())})"
    )


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    base: Mapping[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Defaults <- ``base`` <- YAML file at ``path`` <- dotted ``overrides``, validated
    (``check=False``: not yet, for a caller that merges more sources first and then calls
    :func:`validate` once)."""
    cfg = copy.deepcopy(DEFAULTS)
    if base:
        cfg = merge(cfg, base)
    if path is not None:
        path = find_recipe(path)
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path} must hold a mapping at the top level")
        data = dict(data)
        data.pop("_base_", None)
        cfg = merge(cfg, data)
    for item in overrides:
        cfg = merge(cfg, parse_override(item))
    if check:
        validate(cfg)
    return cfg


def validate(cfg: Mapping[str, Any]) -> None:
    """Check a merged config (types, ranges, the task's own checks, combinations); raise
    :class:`ConfigError` naming the key, the value and what is allowed."""
    flat = flatten(cfg)
    check_types(flat, flatten(DEFAULTS))
    check_ranges(flat)
    check_combinations(cfg)
    get_task(cfg["task"]).validate(cfg)
    _check_external_model(cfg["model"])
    check_choice(cfg, "optim.name", ("sgd", "adamw"))
    check_choice(cfg, "sched.name", ("cosine", "step", "poly", "constant"))
    mi = cfg["train"]["max_iters"]
    if mi is not None and (not isinstance(mi, int) or mi < 1):
        raise ConfigError(f"train.max_iters must be a positive integer or null, got {mi!r}")
    check_choice(cfg, "train.amp", ("none", "bf16", "fp16"))
    check_choice(cfg, "data.verify_images", ("quick", "full", "off", False, True))
    check_choice(cfg, "train.device", ("auto", "cpu", "cuda"))
    for key in ("train.epochs", "train.batch_size"):
        v = flatten(cfg)[key]
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{key} must be a positive integer, got {v!r}")


def _check_external_model(m: Mapping[str, Any]) -> None:
    """``model.context`` (keys, block name and arguments) and a ``tv:`` / ``timm:`` name."""
    from gcnet.models.external import check_external_name, is_external
    from gcnet.models.plugins import check_context_config

    try:
        check_context_config(m.get("context", {}))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if is_external(m["name"]):
        try:
            check_external_name(m["name"])
        except ValueError as e:
            raise ConfigError(f"model.name: {e}") from None
