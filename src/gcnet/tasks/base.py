"""The task interface: everything that differs between classification, segmentation,
detection (and any task added later), so that the training loop (`gcnet.engine`) and
the command line (`gcnet.cli`) never name a task.

A task is a plain object with the hooks a training run calls, in four groups and in this
order:

1. config: `Task.validate` (called by `gcnet.config.validate` through the
   config schema's task registry) and `Task.data_root_overrides` (``--data ROOT``);
2. data and model: `Task.build_data`, `Task.collate_fn`,
   `Task.train_batches`, `Task.build_model`;
3. the step: `Task.batch_transform`, `Task.move_batch`, `Task.forward`,
   `Task.loss`;
4. evaluation: `Task.evaluate`, `Task.val_metrics`, `Task.metric` (which
   picks ``best.pth``), `Task.epoch_summary`.

What the loop never calls lives in three small parts beside the task, each with the task at
``self.task``: `Reporting` (``task.reporting``: ``gcnet eval``'s report, ``gcnet
predict``), `Demos` (``task.demos``: the demo specs and the demo report's hooks) and
`Analysis` (``task.analysis``: the example input of ``info`` / ``export``, the inputs
and figures of ``analyze``, the plain twin and the complexity of ``info``).

The defaults below are those of a dense-tensor task (images and targets collated into
tensors, a model called on the images alone); a task overrides what differs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from gcnet.config_schema import check_choice
from gcnet.data import collate_skip_bad
from gcnet.data.datasets import IMG_EXTENSIONS
from gcnet.errors import ConfigError
from gcnet.models import create_model, did_you_mean_model, model_family

__all__ = ["Analysis", "DemoSpec", "Demos", "Reporting", "Task", "TaskPart", "check_choice"]


@dataclass(frozen=True)
class DemoSpec:
    """What ``gcnet demo --task NAME`` trains: a packaged recipe, the models it compares
    (plain first), and the default output folder; optionally the seeds each model trains
    with (the table shows mean +- std), the overrides of ``--quick``, the model whose NL
    attention the cosine study reads and the one whose attention maps are drawn, and a
    ``name`` for a demo listed in `Demos.extra`."""

    recipe: str
    models: tuple[str, ...]
    output: str
    seeds: tuple[int, ...] = (0,)
    quick: tuple[str, ...] = ()
    cosine_model: str | None = None
    attention_model: str | None = None
    name: str = ""


class TaskPart:
    """A group of a task's hooks that the training loop does not call, beside the task
    (``task.reporting``, ``task.demos``, ``task.analysis``); ``self.task`` is the task."""

    def __init__(self, task: Task) -> None:
        self.task = task


class Reporting(TaskPart):
    """``gcnet eval``'s report and ``gcnet predict`` (the defaults: none)."""

    def report_eval(self, result: dict[str, Any], cfg: Mapping[str, Any], classes: Sequence[str],
                    out_dir: str, num_images: int) -> None:  # fmt: skip
        """Print an evaluation (``gcnet eval``) and write ``metrics.json`` and friends."""
        raise NotImplementedError

    def predict(self, model: nn.Module, cfg: Mapping[str, Any], classes: Sequence[str],
                paths: Sequence[str], options: Mapping[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
        """Predictions on image files (``gcnet predict``), one JSON-able dict per file;
        ``options``: ``topk``, ``score_threshold``, ``output`` (a folder for images)."""
        raise NotImplementedError

    def format_predictions(self, results: Sequence[Mapping[str, Any]], options: Mapping[str, Any]) -> str:
        raise NotImplementedError


class Demos(TaskPart):
    """``gcnet demo``: the demo specs and the hooks of the demo's report (the defaults)."""

    #: what ``gcnet demo --task NAME`` trains, or None
    spec: DemoSpec | None = None

    #: more demos of this task, each with a ``name`` that ``gcnet demo --task`` takes
    extra: tuple[DemoSpec, ...] = ()

    def prepare_demo(self, cfg: dict[str, Any], output: str) -> dict[str, Any]:
        """Adjust a demo model's config (e.g. share one copy of generated data)."""
        return cfg

    def demo_input(self, cfg: Mapping[str, Any]):
        """One input of the demo's size, for counting FLOPs."""
        size = cfg["data"]["image_size"]
        return torch.randn(1, 3, size, size)

    def demo_note(self, row: Mapping[str, Any]) -> str:
        """Extra text beside the demo's final metric (e.g. the mask AP)."""
        return ""

    def demo_scores(self, cfg: Mapping[str, Any], model: nn.Module) -> dict[str, float]:
        """More scores of a trained demo model on the validation data, for the demo's table
        ({label: percent}; e.g. the accuracy on the pixels only context decides)."""
        return {}

    def demo_references(self, cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, float]]]:
        """Reference rows of the demo's table, [(label, {metric label: percent})], e.g. a
        hand-written solution and the best a model blind to the context can do."""
        return []

    def demo_notes(self, cfg: Mapping[str, Any], models: Mapping[str, nn.Module]) -> list[str]:
        """Lines for the demo report's introduction (what the data is, checked facts about
        it and the trained ``models``)."""
        return []


class Analysis(TaskPart):
    """``gcnet info`` / ``export`` / ``analyze``: example inputs, attention figures, the plain
    twin and complexity (the defaults, a dense-tensor image task's)."""

    def input_shape(self, cfg: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """The example input of ``gcnet info`` / ``export``: a trained run's own size, else
        ImageNet's."""
        size = int(cfg["data"]["image_size"]) if cfg else 224
        return (1, 3, size, size)

    def analysis_size(self, cfg: Mapping[str, Any], default: int) -> int:
        """The input size for the analysis tools on a trained model: the training size."""
        return int(cfg["data"]["image_size"])

    def analysis_inputs(self, paths: Sequence[str], cfg: Mapping[str, Any] | None, size: int,
                        clip_len: int | None = None) -> tuple[torch.Tensor, list]:  # fmt: skip
        """(normalised batch, the inputs as shown) for ``gcnet analyze attention`` on files:
        whole images (not cropped: the short side at a run's own size, else at ``size``) with
        the run's normalisation; each shown item is ``(image, the batch's (H, W))`` since
        images of other shapes are padded to a common one."""
        from gcnet.tools.attention import image_batch

        data = None if cfg is None else {**cfg["data"], "image_size": self.analysis_size(cfg, size)}
        x, shown = image_batch(list(paths), size, data, crop=False)
        return x, [(img, tuple(x.shape[-2:])) for img in shown]

    def plot_attention(self, shown, records: list, index: int, out_dir: str, stem: str,
                       queries: int) -> list[str]:  # fmt: skip
        """Figures of the recorded attention on input ``index``: one PNG per input, and an NL
        block's per-query maps (the paper's Figure 2)."""
        from gcnet.tools.visualize import plot_attention, plot_query_maps

        out = [plot_attention(shown, records, index, os.path.join(out_dir, f"{stem}_attention.png"))]
        for r in records:
            if r.kind == "nl":
                q = os.path.join(out_dir, f"{stem}_{r.name.replace('.', '_')}_queries.png")
                out.append(plot_query_maps(shown, r, index, q, queries))
        return out

    def cosine_inputs(self, cfg: Mapping[str, Any] | None, data_dir: str | None, num: int, size: int,
                      clip_len: int | None, out_dir: str) -> torch.Tensor:  # fmt: skip
        """The inputs of ``gcnet analyze cosine``: the first ``num`` images under ``data_dir``,
        else validation images of the embedded synthetic set."""
        from gcnet.data import SyntheticContext
        from gcnet.tools.attention import image_batch

        data = None if cfg is None else {**cfg["data"], "image_size": self.analysis_size(cfg, size)}
        if data_dir:
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk(data_dir) for f in fs
                           if f.lower().endswith(IMG_EXTENSIONS))[:num]  # fmt: skip
            if not files:
                raise FileNotFoundError(f"no images under {data_dir}")
            return image_batch(files, size, data)[0]
        size = data["image_size"] if data else size
        ds = SyntheticContext(num, size, split="val")
        mean = torch.tensor(data["mean"] if data else [0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor(data["std"] if data else [0.229, 0.224, 0.225]).view(3, 1, 1)
        return torch.stack([(ds[i][0].float() / 255 - mean) / std for i in range(len(ds))])

    def plain_model(self, name: str, build: Callable[..., nn.Module], overrides: Mapping[str, Any]):
        """(plain model, its description) to compare ``name`` with in ``gcnet info``: the
        same network without context blocks, or (None, None)."""
        return None, None

    def complexity(self, model: nn.Module, plain: nn.Module | None, x: torch.Tensor) -> dict[str, Any]:
        """Parameters and FLOPs of ``model`` (and ``plain``) on ``x`` for ``gcnet info``;
        ``notes``: lines that say what was counted."""
        from gcnet.tools.complexity import count_flops, count_params

        with torch.no_grad():
            out = {"params": count_params(model), "flops": count_flops(model, x), "notes": []}
            if plain is not None:
                out.update(plain_params=count_params(plain), plain_flops=count_flops(plain, x))
        return out


class Task:
    """Base class of the tasks; see the module docstring for the order of the hooks. What
    the training loop does not call lives in three parts beside it, built with the task:
    `reporting` (``gcnet eval``'s report, ``gcnet predict``), `demos` (``gcnet
    demo``) and `analysis` (``gcnet info`` / ``export`` / ``analyze``)."""

    #: the classes of the parts; a task overrides those it specialises
    reporting_cls: type[Reporting] = Reporting
    demos_cls: type[Demos] = Demos
    analysis_cls: type[Analysis] = Analysis

    def __init__(self) -> None:
        self.reporting = self.reporting_cls(self)
        self.demos = self.demos_cls(self)
        self.analysis = self.analysis_cls(self)

    name: str = ""
    #: ``data.dataset`` values the task reads
    datasets: tuple[str, ...] = ()
    #: those that need no ``data.root`` (generated, or downloaded to a default folder)
    rootless_datasets: tuple[str, ...] = ("synthetic",)
    #: those generated by the library (their data.root, if given, need not exist yet)
    generated_datasets: tuple[str, ...] = ("synthetic",)
    #: the validation metric that picks ``best.pth`` (a key of `evaluate`'s result)
    metric: str = ""
    #: how the metric is called in printed summaries
    metric_label: str = ""
    #: the `gcnet.models.model_family` values of the task's models, and examples
    model_families: tuple[str, ...] = ()
    model_examples: str = ""
    #: whether ``--skip-bad-images`` applies to this task's data
    skips_bad_images: bool = False
    #: what a sample is called in messages, and the key that skips unreadable ones
    sample_noun: str = "image"
    skip_key: str = "data.skip_bad_images"
    #: the file suffixes ``gcnet predict`` takes from a folder or a glob
    input_extensions: tuple[str, ...] = IMG_EXTENSIONS
    #: the memory format of ``train.channels_last`` (``torch.channels_last_3d`` for clips)
    memory_format: torch.memory_format = torch.channels_last

    # -- config -----------------------------------------------------------------------
    def validate(self, cfg: Mapping[str, Any]) -> None:
        """Task-specific checks of a loaded config; raise `ConfigError`."""
        check_choice(cfg, "data.dataset", self.datasets)
        if cfg["data"]["dataset"] not in self.rootless_datasets and not cfg["data"]["root"]:
            raise ConfigError(f"data.root is required for data.dataset={cfg['data']['dataset']}")

    def check_run(self, cfg: Mapping[str, Any]) -> None:
        """Checks of a config about to train or evaluate, before any data is read or any file
        written: the model fits the task, the dataset root exists."""
        name = cfg["model"]["name"]
        family = model_family(name)
        if family is None:
            raise ConfigError(f"model.name={name!r} is not a registered model{did_you_mean_model(name)} "
                              "(see gcnet.list_models())")  # fmt: skip
        if family not in self.model_families:
            raise ConfigError(f"task={self.name} needs a {self.name} model (e.g. {self.model_examples}), "
                              f"got model.name={name!r}")  # fmt: skip
        root = cfg["data"]["root"]
        made = cfg["data"]["dataset"] in self.generated_datasets or cfg["data"].get("download")
        if root and not made and not os.path.isdir(root):
            raise ConfigError(f"data.root={root!r}: folder not found (data.dataset={cfg['data']['dataset']})")

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        """The config update that ``--data ROOT`` stands for: the root of the recipe's own
        dataset (a recipe on the embedded synthetic set switches to the task's file format)."""
        return {"data": {"root": root}}

    # -- data and model ---------------------------------------------------------------
    def build_data(self, cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
        """(dataset, class names) for ``split`` in {"train", "val"}."""
        raise NotImplementedError

    #: the DataLoader's collate function; batches are ``(inputs, targets, n_skipped)``
    collate_fn: Callable = staticmethod(collate_skip_bad)

    def train_batches(self, ds: Dataset, batch_size: int, seed: int, world: int, rank: int) -> dict[str, Any]:
        """DataLoader arguments that shard and shuffle the training set; the sampler must
        have ``set_epoch``. Default: a `DistributedSampler`, incomplete batches dropped."""
        sampler = DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        return {"batch_size": batch_size, "sampler": sampler, "drop_last": True}

    def too_small_message(self, ds: Dataset, batch_size: int) -> str:
        """Why an epoch has no step."""
        return f"the training set ({len(ds)} images) is smaller than one batch ({batch_size})"

    def align_classes(self, ds: Dataset, ds_classes: Sequence[str], classes: Sequence[str]) -> Dataset:
        """The dataset labelled with a checkpoint's class indices: the class names must be
        the checkpoint's, in its order (a task whose datasets can relabel overrides this)."""
        if list(ds_classes) != list(classes):
            raise ValueError(f"the data's classes {list(ds_classes)[:10]} are not the checkpoint's "
                             f"{list(classes)[:10]}")  # fmt: skip
        return ds

    def build_eval_data(self, cfg: Mapping[str, Any]) -> tuple[Dataset, list[str]]:
        """(dataset, class names) that ``gcnet eval`` scores: the val split (a video task
        evaluates more views per video than the validation inside training)."""
        return self.build_data(cfg, "val")

    def val_batch_size(self, cfg: Mapping[str, Any], per_rank: int) -> int:
        return per_rank

    def model_classes(self, num_classes: int) -> int:
        """The model's output classes for ``num_classes`` classes in the data."""
        return num_classes

    def build_model(self, cfg: Mapping[str, Any], num_classes: int, pretrained=None) -> nn.Module:
        """The config's model for the data's ``num_classes`` (``pretrained`` overrides
        ``model.pretrained``)."""
        m = cfg["model"]
        pre = m["pretrained"] if pretrained is None else pretrained
        n = self.model_classes(num_classes)
        kw = dict(m["kwargs"])
        if "num_classes" in kw and int(kw.pop("num_classes")) != n:
            # the data decides; a recipe may state it only if it agrees
            raise ValueError(
                f"model.kwargs.num_classes={m['kwargs']['num_classes']} but the data gives {n} classes"
                + (" (with background)" if n != num_classes else "")
                + "; drop model.kwargs.num_classes"
            )
        if m.get("context"):  # blocks put into the model by gcnet.add_context_blocks
            kw["context"] = m["context"]
        return create_model(m["name"], pretrained=pre or False, num_classes=n, **kw)

    # -- the step ---------------------------------------------------------------------
    def batch_transform(self, cfg: Mapping[str, Any], num_classes: int) -> Callable | None:
        """A transform of a whole training batch ``(inputs, targets) -> (inputs, targets)``
        applied on the device (MixUp / CutMix), or None."""
        return None

    def move_batch(self, inputs, targets, device: torch.device, channels_last: bool = False):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            inputs = inputs.contiguous(memory_format=self.memory_format)
        return inputs, targets

    def forward(self, model: nn.Module, inputs, targets):
        """The training forward pass (a detector also takes the targets)."""
        return model(inputs)

    def loss(self, cfg: Mapping[str, Any], output, targets) -> torch.Tensor:
        raise NotImplementedError

    # -- evaluation and reporting -----------------------------------------------------
    def evaluate(
        self,
        cfg: Mapping[str, Any],
        model: nn.Module,
        loader,
        device: torch.device,
        num_classes: int,
        amp: str = "none",
        channels_last: bool = False,
        progress: bool = False,
        out_dir: str | None = None,
    ) -> dict[str, Any]:
        """Metrics over ``loader`` (this rank's share), reduced across DDP ranks."""
        raise NotImplementedError

    def val_metrics(self, result: Mapping[str, Any], num_classes: int) -> dict[str, float]:
        """The scalars of an evaluation that go into the training log (``val_*`` keys)."""
        out = {f"val_{self.metric}": result[self.metric]}
        if "loss" in result:
            out["val_loss"] = result["loss"]
        return out

    def epoch_summary(self, row: Mapping[str, Any]) -> str:
        """The validation part of the one-line epoch summary (empty when not evaluated)."""
        if f"val_{self.metric}" not in row:
            return ""
        return f", val {self.metric_label} {row[f'val_{self.metric}']:.2f}%"

    # -- demo and model information -----------------------------------------------------

    # -- analysis (gcnet analyze) -------------------------------------------------------

    def owns_model(self, name: str) -> bool:
        """Whether ``name`` (a registered model) is one of this task's models."""
        return False
