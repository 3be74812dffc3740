"""What several commands share: argument types, ``--set`` parsing, loading a trained
checkpoint, and the sharded validation loader."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SET_HELP",
    "add_model_argument",
    "config_overrides",
    "default_eval_dir",
    "load_trained",
    "load_trained_if_any",
    "model_name",
    "parse_image_input",
    "parse_shape",
    "parse_model_overrides",
    "val_loader",
]

#: one meaning of ``--set`` in every command
SET_HELP = (
    "KEY=VALUE (YAML value), repeatable: a dotted config key (optim.lr=0.05, model.kwargs.ratio=0.25) "
    "or a model option as a bare key (ratio=0.25 = model.kwargs.ratio=0.25)"
)


def _dims(text: str, example: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like {example}, got {text!r}") from None
    if any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"every size must be >= 1, got {text!r}")
    return dims


def parse_shape(text: str) -> tuple[int, ...]:
    """A tensor shape for the blocks: ``8x256x56x56`` -> (8, 256, 56, 56), i.e. N x C x 1 to 3
    spatial sizes."""
    dims = _dims(text, "8x256x56x56")
    if not 3 <= len(dims) <= 5:
        raise argparse.ArgumentTypeError(f"expected N x C x 1-3 spatial sizes (3 to 5 numbers), got {text!r}")
    return dims


def parse_image_input(text: str) -> tuple[int, ...]:
    """An image batch shape ``[N]xCxHxW`` -> (N, C, H, W) (N is 1 when left out), or a batch
    of clips ``NxCxTxHxW`` (video models)."""
    dims = _dims(text, "1x3x224x224")
    if len(dims) == 3:
        dims = (1, *dims)
    if len(dims) not in (4, 5):
        raise argparse.ArgumentTypeError(f"expected [N]xCxHxW like 1x3x224x224 or 3x224x224 (clips: "
                                         f"NxCxTxHxW like 1x3x8x224x224), got {text!r}")  # fmt: skip
    return dims


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    return key.strip(), value


def config_overrides(items: list[str] | None) -> list[str]:
    """``--set`` for the commands that take a config: dotted keys as they are, a bare key
    that is no top-level config key as a model option (``model.kwargs.KEY``)."""
    from gcnet.config import DEFAULTS

    out = []
    for item in items or []:
        key, value = _split(item)
        out.append(f"model.kwargs.{key}={value}" if "." not in key and key not in DEFAULTS else item)
    return out


def parse_model_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set`` for the commands that take a model name: ``["ratio=0.25",
    "model.kwargs.stages=c4"]`` -> {"ratio": 0.25, "stages": "c4"} (YAML values)."""
    import yaml

    out = {}
    for item in config_overrides(items):
        key, value = _split(item)
        if not key.startswith("model.kwargs."):
            raise ValueError(f"--set {key}: this command takes model options (KEY=VALUE or "
                             "model.kwargs.KEY=VALUE), not config keys")  # fmt: skip
        out[key[len("model.kwargs.") :]] = yaml.safe_load(value)
    return out


def add_model_argument(p: argparse.ArgumentParser) -> None:
    """The model: ``--model NAME`` in every command (here also as the first argument)."""
    p.add_argument("model_pos", nargs="?", metavar="MODEL", help="registered model name (same as --model)")
    p.add_argument("--model", default=None, help="registered model name (gcnet.list_models())")


def model_name(args: argparse.Namespace, required: bool = True) -> str | None:
    pos, opt = getattr(args, "model_pos", None), getattr(args, "model", None)
    if pos and opt and pos != opt:
        raise ValueError(f"two models given: {pos!r} and --model {opt!r}")
    name = pos or opt
    if name is None and required:
        raise ValueError("give a model: MODEL or --model NAME (see gcnet.list_models())")
    return name


def _read_trained(checkpoint: str, use_ema: bool, probe: bool = False):
    """(state dict, config, classes) of a run's ``.pth`` checkpoint or ``weights.safetensors``
    (``probe``: None for another kind of checkpoint instead of an error)."""
    import json

    if checkpoint.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        try:
            with safe_open(checkpoint, "pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise ValueError(f"cannot read {checkpoint}: {e}") from None
        if "config" not in meta:
            if probe:
                return None
            raise ValueError(f"{checkpoint} holds weights without their run's config (written by an older "
                             "gcnet, or not by gcnet train): use the run's best.pth / last.pth")  # fmt: skip
        return load_file(checkpoint), json.loads(meta["config"]), json.loads(meta["classes_json"])
    from gcnet.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    if not isinstance(ck, Mapping) or not {"config", "model", "classes"} <= set(ck):
        if probe:
            return None
        raise ValueError(f"{checkpoint} is not a gcnet training checkpoint (no config/model entries)")
    state = ck["model"]
    if use_ema and ck.get("ema"):
        state = {k[len("module.") :]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    return state, ck["config"], ck["classes"]


def load_trained(checkpoint: str, use_ema: bool = True):
    """(model in eval mode, config, class names, task) from a gcnet run's checkpoint
    (``best.pth`` / ``last.pth``: the EMA weights when the run kept them) or its final
    ``weights.safetensors``, or a saved model (``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a
    folder with ``config.json`` + ``model.safetensors``: `gcnet.hub.load_run`, its
    config made from the saved one, so the task code preprocesses as it was trained)."""
    from gcnet.hub import is_saved, load_run

    if is_saved(checkpoint):
        return load_run(checkpoint)
    return _build_trained(*_read_trained(checkpoint, use_ema))


def load_trained_if_any(path: str | None):
    """`load_trained` when ``path`` is a gcnet run's ``.pth`` / ``.safetensors`` (read
    once) or a saved model, None for any other weights file or no path."""
    from gcnet.hub import is_saved, load_run

    if is_saved(path):
        return load_run(path)
    if not path or not os.path.isfile(path) or not path.endswith((".pth", ".pt", ".safetensors")):
        return None
    read = _read_trained(path, use_ema=True, probe=True)
    return None if read is None else _build_trained(*read)


def _build_trained(state, cfg, classes):
    from gcnet.engine.checkpoint import load_model_state
    from gcnet.tasks import task_of

    task = task_of(cfg)
    model = task.build_model(cfg, len(classes), pretrained=False)
    load_model_state(model, state, "the checkpoint", cfg["model"]["name"])
    return model.eval(), cfg, list(classes), task


def val_loader(task, cfg: Mapping[str, Any], classes, rank: int, world: int):
    """(dataset, loader) of the config's val split, each DDP rank taking its share, labelled
    with the checkpoint's classes (``task.align_classes``)."""
    from torch.utils.data import DataLoader

    from gcnet.data.samplers import ShardSampler

    ds, ds_classes = task.build_eval_data(cfg)
    ds = task.align_classes(ds, ds_classes, classes)
    per_rank = cfg["train"]["batch_size"] // world
    loader = DataLoader(ds, batch_size=task.val_batch_size(cfg, per_rank), collate_fn=task.collate_fn,
                        num_workers=cfg["data"]["num_workers"],
                        sampler=ShardSampler(len(ds), world, rank))  # fmt: skip
    return ds, loader


def default_eval_dir(checkpoint: str) -> str:
    """``<the checkpoint's folder>/eval``; a saved model's: ``<its folder>/eval``, a Hub
    repo's ``eval/<ORG>--<NAME>`` here."""
    from gcnet.models.pretrained import HF_PREFIX, LOCAL_PREFIX

    if checkpoint.startswith(HF_PREFIX):
        repo = checkpoint[len(HF_PREFIX) :].replace("/", "--").replace("@", "--")
        return os.path.abspath(os.path.join("eval", repo))
    path = checkpoint[len(LOCAL_PREFIX) :] if checkpoint.startswith(LOCAL_PREFIX) else checkpoint
    if os.path.isdir(path):
        return os.path.join(os.path.abspath(path), "eval")
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "eval")
