"""Share and load trained models the way the field does: the Hugging Face Hub layout.

`save_pretrained` writes a folder of three files, the layout timm and transformers use:

- ``model.safetensors``: the weights;
- ``config.json``: ``architecture`` (the registered model name), ``model_args`` (what
  `gcnet.create_model` takes besides the name: a run's ``model.kwargs`` /
  ``model.context``, ``num_classes``), ``num_classes``, ``classes``, ``task``,
  ``pretrained_cfg`` (`PretrainedCfg`: mean, std, input size,
  crop, interpolation), ``gcnet_version`` and, for a run's model, ``gcnet_config`` (its config
  without the local paths) and ``metrics``;
- ``README.md``: a model card with the Hub's front matter (library, license, tags, datasets,
  metrics, the paper).

``gcnet.create_model("local-dir:PATH")`` / ``create_model("hf-hub:ORG/NAME")`` build it back,
weights loaded; `load_run` also gives the gcnet config the CLI's task code reads (``gcnet
eval / predict / info / export / analyze --checkpoint hf-hub:ORG/NAME``), so a model from
anywhere is preprocessed as it was trained. `push_to_hub` uploads a folder
(``huggingface_hub``, the ``[hub]`` extra).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from gcnet.fileio import atomic_write, write_json
from gcnet.models.pretrained import (
    CONFIG_NAME,
    HF_PREFIX,
    LOCAL_PREFIX,
    WEIGHTS_NAME,
    PretrainedCfg,
    build_saved,
    is_saved_model,
    read_saved_config,
    require_hf,
    resolve_saved,
)

__all__ = [
    "PAPER",
    "PretrainedCfg",
    "is_saved",
    "load_pretrained_dir",
    "load_run",
    "model_card",
    "pretrained_cfg_for_run",
    "push_to_hub",
    "run_metrics",
    "save_pretrained",
]

#: Cao et al., GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond
PAPER = "1904.11492"
CARD_NAME = "README.md"
#: a task's Hub pipeline tag
PIPELINE_TAGS = {
    "classification": "image-classification",
    "segmentation": "image-segmentation",
    "detection": "object-detection",
    "video": "video-classification",
}
#: gcnet's dataset names -> the Hub's dataset ids (the synthetic sets and custom folders: none)
HUB_DATASETS = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "cityscapes": "cityscapes",
    "ade20k": "ade20k",
    "voc": "pascal_voc",
    "coco": "coco",
    "kinetics": "kinetics400",
}
#: metrics.json keys -> the Hub's metric ids
HUB_METRICS = {
    "top1": "accuracy",
    "top5": "accuracy",
    "mIoU": "mean_iou",
    "mAcc": "accuracy",
    "aAcc": "accuracy",
    "bbox_AP": "map",
    "segm_AP": "map",
}
#: counts in a metrics.json, not results
_COUNTS = ("skipped", "num_images", "num_detections", "epoch", "step")
#: the files of a saved folder push_to_hub leaves out (``gcnet eval``'s output, temp files)
PUSH_IGNORE = ["eval/*", ".tmp-*", "**/.tmp-*"]


def is_saved(path: str | None) -> bool:
    """Whether ``path`` names a saved model: ``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a
    folder holding ``config.json`` (checked for the weights when loaded)."""
    if not isinstance(path, str) or not path:
        return False
    return is_saved_model(path) or os.path.isfile(os.path.join(path, CONFIG_NAME))


# -- the pretrained config of a run ---------------------------------------------------------


def pretrained_cfg_for_run(cfg: Mapping[str, Any], classes: Sequence[str] | None = None,
                           model: nn.Module | None = None) -> PretrainedCfg:  # fmt: skip
    """A run's preprocessing as a `PretrainedCfg`: ``data.mean`` / ``std``, its input
    size (the task's, from ``data.image_size`` or the clip), the eval crop, its classes."""
    from gcnet.config import fill_defaults
    from gcnet.tasks import task_of

    cfg = fill_defaults(cfg)
    task = task_of(cfg)
    data = cfg["data"]
    size = tuple(int(v) for v in task.analysis.input_shape(cfg)[1:])
    mean, std = tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
    tf = getattr(model, "transform", None)  # torchvision's R-CNNs normalise inside the model
    if tf is not None and hasattr(tf, "image_mean"):
        mean, std = tuple(float(v) for v in tf.image_mean), tuple(float(v) for v in tf.image_std)
    crop = float(data["augment"]["eval_crop_ratio"])
    if len(size) == 4:  # a clip: the crop of the eval scale
        crop = size[-1] / float(data.get("video", {}).get("test_scale", size[-1] / crop))
    names = None if classes is None else [str(c) for c in classes]
    n = task.model_classes(len(names)) if names is not None else getattr(model, "num_classes", None)
    return PretrainedCfg(mean=mean, std=std, input_size=size, crop_pct=round(crop, 6), task=task.name,
                         num_classes=n, classes=names, architecture=cfg["model"]["name"])  # fmt: skip


def _as_pretrained_cfg(value: Any) -> PretrainedCfg | None:
    if value is None or isinstance(value, PretrainedCfg):
        return copy.deepcopy(value)
    if isinstance(value, Mapping):  # a timm model's, or a dict given by hand
        return PretrainedCfg.from_dict({k: v for k, v in value.items() if _jsonable(v)})
    raise TypeError(f"pretrained_cfg must be a PretrainedCfg or a dict, got {type(value).__name__}")


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _portable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config without what belongs to the machine it ran on: the output folder, the
    data root and absolute paths (``--data`` gives them again), the device."""
    out = {k: copy.deepcopy(v) for k, v in cfg.items() if k != "output"}

    def strip(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (strip(v) if isinstance(v, Mapping) else None if isinstance(v, str) and
                    (os.path.isabs(v) or v.startswith("~")) else v) for k, v in d.items()}  # fmt: skip

    if isinstance(out.get("data"), Mapping):
        out["data"] = {**strip(out["data"]), "root": None}
    if isinstance(out.get("train"), Mapping) and "device" in out["train"]:
        out["train"]["device"] = "auto"
    return out


def run_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The gcnet config of a saved folder's ``config.json`` (what the task code reads):
    a run's own config where saved, else one made of the pretrained config (task, model,
    mean / std / size, crop); the model always as ``config.json`` builds it."""
    from gcnet.config import fill_defaults

    p = PretrainedCfg.from_dict(conf.get("pretrained_cfg", {}))
    args = dict(conf.get("model_args", {}))
    args.pop("num_classes", None)  # the task gives it from the classes
    model = {"name": conf["architecture"], "pretrained": False, "context": args.pop("context", None) or {},
             "kwargs": args}  # fmt: skip
    if conf.get("gcnet_config"):
        cfg = copy.deepcopy(dict(conf["gcnet_config"]))
        cfg["model"] = {**cfg.get("model", {}), **model}
        return fill_defaults(cfg)
    size = list(p.input_size)
    data: dict[str, Any] = {"mean": list(p.mean), "std": list(p.std), "image_size": int(size[-2]),
                            "augment": {"eval_crop_ratio": float(p.crop_pct)}}  # fmt: skip
    if len(size) == 4:  # (C, T, H, W): a clip of T frames, cropped from the eval scale
        data["video"] = {"clip_len": int(size[1]), "crop_size": int(size[-1]),
                         "test_scale": int(round(size[-1] / float(p.crop_pct)))}  # fmt: skip
    return fill_defaults({"task": p.task, "model": model, "data": data})


def _class_names(conf: Mapping[str, Any], task, num_outputs: int | None) -> list[str]:
    names = conf.get("classes") or PretrainedCfg.from_dict(conf.get("pretrained_cfg", {})).classes
    if names:
        return [str(c) for c in names]
    if num_outputs is None:
        raise ValueError("the saved config.json names neither classes nor num_classes")
    return [str(i) for i in range(int(num_outputs) - task.model_classes(0))]


def load_run(spec: str):
    """(model in eval mode, gcnet config, class names, task) of a saved model
    (``hf-hub:ORG/NAME``, ``local-dir:PATH`` or a folder): what a run's checkpoint gives the
    CLI (`gcnet.cli._common.load_trained`)."""
    from gcnet.models import create_model
    from gcnet.tasks import task_of

    directory = resolve_saved(spec)
    conf = read_saved_config(directory)
    model = build_saved(directory, create_model, conf, source=spec)
    cfg = run_config(conf)
    task = task_of(cfg)
    classes = _class_names(conf, task, conf.get("num_classes", getattr(model, "num_classes", None)))
    model.pretrained_cfg.classes = classes
    return model.eval(), cfg, classes, task


def load_pretrained_dir(path: str, **overrides: Any) -> nn.Module:
    """The model saved in the folder ``path`` (or ``hf-hub:ORG/NAME``), weights loaded:
    ``gcnet.create_model("local-dir:PATH")``."""
    from gcnet.models import create_model

    return create_model(path if is_saved_model(path) else f"{LOCAL_PREFIX}{path}", **overrides)


# -- saving ---------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    from torch.optim.swa_utils import AveragedModel

    while isinstance(model, DataParallel | DistributedDataParallel | AveragedModel):
        model = model.module
    return model


def _model_args(model: nn.Module, config: Mapping[str, Any] | None, num_classes: int | None) -> dict:
    if config is not None:  # the task builds create_model(name, num_classes=n, **kwargs, context=...)
        args = {k: v for k, v in dict(config["model"].get("kwargs") or {}).items() if k != "num_classes"}
        if config["model"].get("context"):
            args["context"] = config["model"]["context"]
    else:
        args = dict(getattr(model, "model_args", None) or {})
    if num_classes is not None:
        args["num_classes"] = int(num_classes)
    bad = [k for k, v in args.items() if not _jsonable(v)]
    if bad:
        raise ValueError(f"model argument(s) {bad} cannot be written to {CONFIG_NAME}; build the model from "
                         "plain values (numbers, strings, lists, dicts)")  # fmt: skip
    return json.loads(json.dumps(args))  # tuples as lists, as they read back


def _architecture(model: nn.Module, config: Mapping[str, Any] | None, pcfg: PretrainedCfg | None) -> str:
    name = (config["model"]["name"] if config is not None else None) or getattr(model, "model_name", None)
    name = name or (pcfg.architecture if pcfg is not None else None)
    if not isinstance(name, str) or not name:
        raise ValueError("the model has no registered name (model.model_name): build it with "
                         "gcnet.create_model, or pass config= (a run's config)")  # fmt: skip
    return name


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    config: Mapping[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    pretrained_cfg: PretrainedCfg | Mapping[str, Any] | None = None,
) -> str:
    """Write ``model`` to ``directory`` in the Hub layout (``model.safetensors``,
    ``config.json``, ``README.md``; each atomically) and return the folder.

    Args:
        model: a model `gcnet.create_model` built (or a run's, with ``config``).
        config: a gcnet run's config: its model name, options and preprocessing.
        classes: the class names (a run's; default the pretrained config's).
        metrics: evaluation results for the model card (a run's ``metrics.json``).
        pretrained_cfg: the preprocessing, if not the run's or the model's own.
    """
    import torch
    from safetensors.torch import save_file

    from gcnet._version import __version__

    model = _unwrap(model)
    directory = os.fspath(directory)
    if config is not None:
        from gcnet.config import fill_defaults

        config = fill_defaults(config)
    pcfg = _as_pretrained_cfg(pretrained_cfg)
    if pcfg is None and config is not None:
        pcfg = pretrained_cfg_for_run(config, classes, model)
    if pcfg is None:
        own = getattr(model, "pretrained_cfg", None)
        if isinstance(own, Mapping) and own.get("architecture"):  # a timm model's: timm names it
            own = {**own, "architecture": f"timm:{str(own['architecture']).removeprefix('timm:')}"}
        pcfg = _as_pretrained_cfg(own) or PretrainedCfg()
    names = [str(c) for c in classes] if classes is not None else pcfg.classes
    n = getattr(model, "num_classes", None)
    n = n if isinstance(n, int) else pcfg.num_classes
    arch = _architecture(model, config, pcfg)
    pcfg.classes, pcfg.num_classes, pcfg.architecture = names, n, arch
    conf: dict[str, Any] = {
        "architecture": arch,
        "model_args": _model_args(model, config, n),
        "num_classes": n,
        "classes": names,
        "task": pcfg.task,
        "pretrained_cfg": pcfg.to_dict(),
        "gcnet_version": __version__,
    }
    if config is not None:
        conf["gcnet_config"] = _portable(config)
    if metrics:
        conf["metrics"] = _scalars(metrics)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
             if isinstance(v, torch.Tensor)}  # fmt: skip
    atomic_write(os.path.join(directory, WEIGHTS_NAME),
                 lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))  # fmt: skip
    write_json(os.path.join(directory, CONFIG_NAME), conf, indent=2)
    card = model_card(conf)

    def _write_card(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(card)

    atomic_write(os.path.join(directory, CARD_NAME), _write_card)
    return directory


# -- the model card -------------------------------------------------------------------------


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.json`` (per-class lists and matrices left out)."""
    return {str(k): float(v) for k, v in metrics.items() if k not in _COUNTS
            and isinstance(v, int | float) and not isinstance(v, bool)}  # fmt: skip


def run_metrics(run_dir: str) -> dict[str, float] | None:
    """A run folder's latest results: ``metrics.json`` (``gcnet eval``'s, in the folder or in
    its ``eval/``), else the last validation row of the training log (``metrics.jsonl``)."""
    for path in (os.path.join(run_dir, "metrics.json"), os.path.join(run_dir, "eval", "metrics.json")):
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    return _scalars(json.load(f)) or None
            except (OSError, ValueError, AttributeError):
                continue
    log = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(log):
        return None
    last = None
    with open(log) as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            val = {k[4:]: v for k, v in row.items() if k.startswith("val_")} if isinstance(row, dict) else {}
            last = _scalars(val) or last
    return last


def _front_matter(conf: Mapping[str, Any]) -> dict[str, Any]:
    pipeline = PIPELINE_TAGS.get(PretrainedCfg.from_dict(conf.get("pretrained_cfg", {})).task)
    dataset = HUB_DATASETS.get(((conf.get("gcnet_config") or {}).get("data") or {}).get("dataset"))
    metrics = conf.get("metrics") or {}
    meta: dict[str, Any] = {"library_name": "gcnet", "license": "apache-2.0"}
    if pipeline:
        meta["pipeline_tag"] = pipeline
    meta["tags"] = [t for t in (pipeline, "gcnet", "global-context", f"arxiv:{PAPER}") if t]
    if dataset:
        meta["datasets"] = [dataset]
    ids = list(dict.fromkeys(HUB_METRICS[k] for k in metrics if k in HUB_METRICS))
    if ids:
        meta["metrics"] = ids
    if metrics and pipeline:
        results = [{"type": HUB_METRICS.get(k, k), "name": k, "value": round(float(v), 4)}
                   for k, v in metrics.items() if k in HUB_METRICS]  # fmt: skip
        if results:
            meta["model-index"] = [{"name": conf["architecture"], "results": [{
                "task": {"type": pipeline},
                "dataset": {"name": dataset or "custom", "type": dataset or "custom"},
                "metrics": results,
            }]}]  # fmt: skip
    return meta


def model_card(conf: Mapping[str, Any]) -> str:
    """``README.md`` for a saved folder: the Hub's YAML front matter, then how to load it,
    its preprocessing, its results and the paper."""
    import yaml

    arch = conf["architecture"]
    p = conf.get("pretrained_cfg", {})
    task = PretrainedCfg.from_dict(p).task
    lines = ["---", yaml.safe_dump(_front_matter(conf), sort_keys=False).rstrip(), "---", "",
             f"# {arch}", "",
             f"A {arch} ({task}) trained with "
             "[gcnet](https://github.com/gcnet/gcnet): Global Context Networks in PyTorch "
             f"([arXiv {PAPER}](https://arxiv.org/abs/{PAPER})).", "",
             "## Use", "", "```python", "import gcnet", "",
             'model = gcnet.create_model("hf-hub:ORG/NAME").eval()  # or "local-dir:PATH"',
             "cfg = model.pretrained_cfg  # mean, std, input_size, crop_pct, classes", "```", "",
             "```bash", "gcnet predict image.jpg --checkpoint hf-hub:ORG/NAME", "```", "",
             "## Preprocessing", "",
             f"- input size: {'x'.join(str(v) for v in p.get('input_size', []))}",
             f"- mean / std: {p.get('mean')} / {p.get('std')} (RGB in [0, 1])",
             f"- eval crop: {p.get('crop_pct')} ({p.get('interpolation', 'bilinear')} resize)",
             f"- classes: {conf.get('num_classes')}"]  # fmt: skip
    if conf.get("metrics"):
        lines += ["", "## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in conf["metrics"].items()]
    lines += ["", "## Citation", "", "```bibtex",
              "@article{cao2019gcnet,",
              "  title={GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond},",
              "  author={Cao, Yue and Xu, Jiarui and Lin, Stephen and Wei, Fangyun and Hu, Han},",
              f"  journal={{arXiv preprint arXiv:{PAPER}}},", "  year={2019}", "}", "```", ""]  # fmt: skip
    return "\n".join(lines)


# -- pushing --------------------------------------------------------------------------------


def push_to_hub(
    model_or_dir: nn.Module | str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload gcnet model",
    create_pr: bool = False,
    **save_kwargs: Any,
):
    """Upload a saved folder (or save ``model_or_dir`` first, with ``save_kwargs`` of
    `save_pretrained`) to the Hub repo ``repo_id`` (created if missing) with
    ``HfApi.upload_folder``; returns its commit info."""
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must be NAME or ORG/NAME, got {repo_id!r}")
    if isinstance(model_or_dir, nn.Module):
        with tempfile.TemporaryDirectory(prefix="gcnet-push-") as tmp:
            save_pretrained(model_or_dir, tmp, **save_kwargs)
            return push_to_hub(tmp, repo_id, token=token, private=private, revision=revision,
                               commit_message=commit_message, create_pr=create_pr)  # fmt: skip
    if save_kwargs:
        raise ValueError(f"{sorted(save_kwargs)} apply to a model, not to a saved folder")
    folder = os.fspath(model_or_dir)
    if folder.startswith(HF_PREFIX):
        raise ValueError(f"{folder}: push a local folder, not a Hub repo")
    folder = resolve_saved(folder)
    hf = require_hf("pushing to the Hugging Face Hub")
    api = hf.HfApi(token=token, library_name="gcnet")
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model", revision=revision,
                             commit_message=commit_message, create_pr=create_pr,
                             ignore_patterns=PUSH_IGNORE)  # fmt: skip
