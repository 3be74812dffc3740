"""Types, ranges and combinations of the config keys, checked when a config is built so that a
bad value is one named error before any data is read or any file is written.

A key's type is its default's (:data:`gcnet.config.DEFAULTS`) unless :data:`TYPES` says
otherwise; :data:`RANGES` bounds the numbers. Every error names the key, the value and what
is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gcnet.errors import ConfigError

__all__ = ["TYPES", "RANGES", "check_choice", "check_combinations", "check_ranges", "check_types"]

NUMBER, INT, BOOL, STR, LIST, NONE = "number", "integer", "boolean", "string", "list", "null"

#: keys whose values may take more than their default's type
TYPES: dict[str, tuple[str, ...]] = {
    "model.pretrained": (BOOL, STR),
    "data.root": (STR, NONE),
    "data.verify_images": (STR, BOOL),  # YAML reads a bare off as false
    "data.seg.scale": (LIST, NONE),
    "data.seg.ratio_range": (LIST, NONE),
    "data.seg.crop_size": (LIST, NONE),
    "data.seg.test_scale": (LIST, NONE),
    "data.video.train_list": (STR, NONE),
    "data.video.val_list": (STR, NONE),
    "eval.crop_size": (LIST, NONE),
    "eval.stride": (LIST, NONE),
    "train.max_iters": (INT, NONE),
    "train.clip_grad": (NUMBER, NONE),
    "train.checkpoint_every": (INT, NONE),
    "train.checkpoint_every_minutes": (NUMBER, NONE),
}

#: (low, high, low inclusive, high inclusive); None: unbounded
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.image_size": (8, None, True, True),
    "data.train_size": (1, None, True, True),
    "data.val_size": (1, None, True, True),
    "data.num_workers": (0, None, True, True),
    "data.augment.mixup": (0, None, True, True),
    "data.augment.cutmix": (0, None, True, True),
    "data.augment.eval_crop_ratio": (0, 1, False, True),
    "data.seg.cat_max_ratio": (0, 1, False, True),
    "data.video.clip_len": (1, None, True, True),
    "data.video.frame_interval": (1, None, True, True),
    "data.video.crop_size": (8, None, True, True),
    "data.video.test_scale": (8, None, True, True),
    "data.video.num_clips": (1, None, True, True),
    "data.video.num_crops": (1, 3, True, True),
    "data.video.val_clips": (1, None, True, True),
    "data.video.val_crops": (1, 3, True, True),
    "eval.batch_size": (1, None, True, True),
    "optim.lr": (0, None, False, True),
    "optim.ref_batch_size": (1, None, True, True),
    "optim.momentum": (0, 1, True, False),
    "optim.weight_decay": (0, None, True, True),
    "sched.warmup_epochs": (0, None, True, True),
    "sched.warmup_iters": (0, None, True, True),
    "sched.warmup_factor": (0, 1, False, True),
    "sched.gamma": (0, None, False, True),
    "sched.min_lr": (0, None, True, True),
    "sched.power": (0, None, False, True),
    "train.epochs": (1, None, True, True),
    "train.max_iters": (1, None, True, True),
    "train.batch_size": (1, None, True, True),
    "train.label_smoothing": (0, 1, True, False),
    "train.aux_loss_weight": (0, None, True, True),
    "train.clip_grad": (0, None, True, True),  # 0 / null: off
    "train.ema_decay": (0, 1, False, False),
    "train.eval_every": (1, None, True, True),
    "train.checkpoint_every_epochs": (1, None, True, True),
    "train.checkpoint_every": (1, None, True, True),
    "train.checkpoint_every_minutes": (0, None, False, True),
    "train.skip_nonfinite_steps": (0, None, True, True),
}


_ARTICLE = {NUMBER: "a number", INT: "an integer", BOOL: "true or false", STR: "a string", LIST: "a list",
            NONE: "null"}  # fmt: skip


def check_choice(cfg: Mapping[str, Any], key: str, choices) -> None:
    """Raise :class:`ConfigError` unless the dotted ``key`` of ``cfg`` is one of ``choices``."""
    value: Any = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value not in choices:
        raise ConfigError(f"{key} must be one of {tuple(choices)}, got {value!r}")


def _kind(value: Any) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STR
    if isinstance(value, list | tuple):
        return LIST
    return type(value).__name__


def _fits(value: Any, allowed: tuple[str, ...]) -> bool:
    kind = _kind(value)
    return kind in allowed or (kind == INT and NUMBER in allowed)


def _expected(key: str, default: Any) -> tuple[str, ...]:
    if key in TYPES:
        return TYPES[key]
    kind = _kind(default)
    return (NUMBER,) if kind == NUMBER else (kind,)


def check_types(flat: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Every value of the flattened config has its key's type."""
    for key, default in defaults.items():
        if key not in flat or default is None and key not in TYPES:
            continue
        allowed = _expected(key, default)
        value = flat[key]
        if not _fits(value, allowed):
            names = " or ".join(_ARTICLE.get(a, a) for a in allowed)
            raise ConfigError(f"{key} must be {names}, got {value!r}")
        if _kind(value) == LIST and _kind(default) == LIST and default and all(_kind(v) in (INT, NUMBER)
                                                                             for v in default):  # fmt: skip
            bad = [v for v in value if _kind(v) not in (INT, NUMBER)]
            if bad:
                raise ConfigError(f"{key} must be a list of numbers, got {value!r}")


def check_ranges(flat: Mapping[str, Any]) -> None:
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        value = flat.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        ok = (lo is None or value > lo or (lo_in and value == lo)) and (
            hi is None or value < hi or (hi_in and value == hi)
        )
        if not ok:
            if hi is None and lo == 1 and isinstance(value, int):
                want = "a positive integer"
            elif hi is None:
                want = f"{'>=' if lo_in else '>'} {lo}"
            else:
                want = f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"
            raise ConfigError(f"{key} must be {want}, got {value!r}")


def check_combinations(cfg: Mapping[str, Any]) -> None:
    """Values that are fine alone but not together."""
    d = cfg["data"]
    e = cfg["eval"]
    pairs = (("data.seg.crop_size", d["seg"]["crop_size"]), ("eval.crop_size", e["crop_size"]),
             ("eval.stride", e["stride"]), ("data.seg.scale", d["seg"]["scale"]))  # fmt: skip
    for key, value in pairs:
        if value is not None and (len(value) != 2 or any(not isinstance(v, int) or v < 1 for v in value)):
            raise ConfigError(f"{key} must be two positive integers [h, w], got {value!r}")
    scale = d["augment"]["scale"]
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"data.augment.scale must be [low, high] with 0 < low <= high <= 1, got {scale!r}")
    rr = d["seg"]["ratio_range"]
    if rr is not None and (len(rr) != 2 or not 0 < rr[0] <= rr[1]):
        raise ConfigError(f"data.seg.ratio_range must be [low, high] with 0 < low <= high, got {rr!r}")
    for key in ("mean", "std"):
        if len(d[key]) != 3:
            raise ConfigError(f"data.{key} must hold 3 numbers (R, G, B), got {d[key]!r}")
    if any(v <= 0 for v in d["std"]):
        raise ConfigError(f"data.std must be positive, got {d['std']!r}")
