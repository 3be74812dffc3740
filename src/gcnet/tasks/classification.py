"""Image classification: the embedded synthetic set, ImageFolder trees and CIFAR; cross-entropy
(label smoothing, MixUp / CutMix); top-1 / top-5, per-class accuracy and the confusion
matrix (`ClassScores`, reduced across DDP ranks); top-k prediction on image files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gcnet.config_schema import bounded, register_section
from gcnet.data import build_classification_data
from gcnet.data.datasets import load_image
from gcnet.data.transforms import build_batch_mix, build_transforms
from gcnet.errors import ConfigError
from gcnet.fileio import write_json
from gcnet.models import model_config, model_family
from gcnet.utils import distributed as du
from gcnet.utils.device import autocast_ctx
from gcnet.utils.extras import MissingExtraError
from gcnet.utils.progress import progress_bar

from .base import Analysis, Demos, DemoSpec, Reporting, Task


@dataclass
class AugmentConfig:
    """``data.augment``: the image classification pipeline's augmentation."""

    random_resized_crop: bool = False
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip: bool = True
    randaugment: bool = False
    mixup: float = bounded(0.0, 0)
    cutmix: float = bounded(0.0, 0)
    eval_crop_ratio: float = bounded(0.875, 0, 1, lo_in=False)


def _check_augment(cfg: Mapping[str, Any]) -> None:
    scale = cfg["data"]["augment"]["scale"]
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"data.augment.scale must be [low, high] with 0 < low <= high <= 1, got {scale!r}")


register_section("data.augment", AugmentConfig, "classification", _check_augment)

__all__ = ["ClassScores", "ClassificationTask", "evaluate_classification"]


class ClassScores:
    """Top-k hits and the confusion matrix of ``(scores (B, K), targets (B,))`` batches,
    summed across DDP ranks by `compute`. Per-class accuracy is the recall of each class
    (0 for a class with no samples, as torchmetrics' ``MulticlassAccuracy(average=None)``);
    the mean class accuracy averages it over the classes that have samples (mmaction2's
    ``mean_class_accuracy``). The prediction of a row is its top-1 index.

    A few tensor ops per batch: torchmetrics gives the same numbers (tested) but costs ~4.5 s
    of imports (scipy.signal) in every process that evaluates."""

    def __init__(self, num_classes: int, ks: Sequence[int], device: torch.device) -> None:
        self.num_classes, self.ks = int(num_classes), tuple(int(k) for k in ks)
        self.hits = torch.zeros(len(self.ks), dtype=torch.float64, device=device)
        self.cm = torch.zeros(self.num_classes * self.num_classes, dtype=torch.int64, device=device)

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        top = scores.topk(max(self.ks), dim=-1).indices  # (B, k), best first
        hit = (top == targets[:, None]).cumsum(-1).clamp_(max=1)  # hit[:, k-1]: target in top k
        self.hits += hit[:, [k - 1 for k in self.ks]].sum(0)
        self.cm += torch.bincount(targets * self.num_classes + top[:, 0], minlength=self.cm.numel())

    def compute(self) -> dict[str, Any]:
        """``top{k}`` (%), ``per_class`` (%), ``mean_class_accuracy`` (%), ``confusion_matrix``
        (K, K) int64 on the CPU (rows: true class), ``num`` (samples)."""
        hits, cm = du.all_reduce_sum(self.hits.clone()), du.all_reduce_sum(self.cm.clone())
        cm = cm.view(self.num_classes, self.num_classes).cpu()
        support = cm.sum(1)
        n = int(support.sum())
        recall = cm.diag().double() / support.clamp(min=1)
        return {
            **{f"top{k}": 100.0 * float(h) / max(n, 1) for k, h in zip(self.ks, hits.tolist())},
            "per_class": [100.0 * float(v) for v in recall],
            "mean_class_accuracy": 100.0 * float(recall[support > 0].mean()) if n else float("nan"),
            "confusion_matrix": cm,
            "num": n,
        }


@torch.no_grad()
def evaluate_classification(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """top-1/top-5 (%), mean loss, per-class accuracy and the confusion matrix; reduced
    across DDP ranks."""
    k = min(5, num_classes)
    scores = ClassScores(num_classes, (1, k), device)
    model.eval()
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # (sum, count)
    skipped = 0
    for images, targets, n_bad in progress_bar(loader, progress, desc="eval"):
        skipped += n_bad
        if images is None:
            continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast_ctx(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum[0] += F.cross_entropy(logits, targets, reduction="sum").double()
        loss_sum[1] += targets.numel()
        scores.update(logits, targets)
    du.all_reduce_sum(loss_sum)
    n = int(loss_sum[1].item())
    if n == 0:
        raise ValueError("evaluation saw no images (empty or entirely unreadable dataset)")
    res = scores.compute()
    return {
        "loss": float(loss_sum[0] / n),
        "top1": res["top1"],
        f"top{k}": res[f"top{k}"],
        "per_class": res["per_class"],
        "confusion_matrix": res["confusion_matrix"],
        "num_samples": n,
        "skipped": skipped,
    }


class ClassificationReporting(Reporting):
    """``gcnet eval``'s report and ``gcnet predict`` for the classification task."""

    def report_eval(self, result, cfg, classes, out_dir, num_images) -> None:
        k = min(5, len(classes))
        print(
            f"{result['num_samples']} images: top-1 {result['top1']:.2f}%  top-{k} {result[f'top{k}']:.2f}%  "
            f"loss {result['loss']:.4f}"
        )
        self._report_classes(result, classes, out_dir, "per-class accuracy:")

    def _report_classes(self, result, classes, out_dir, heading: str) -> None:
        """Print the per-class accuracies, write metrics.json and the confusion matrix PNG."""
        from gcnet.tools.visualize import plot_confusion

        print(heading)
        for name, acc in zip(classes, result["per_class"]):
            print(f"  {name:<28} {acc:6.2f}%")
        cm = result.pop("confusion_matrix")
        metrics = write_json(os.path.join(out_dir, "metrics.json"),
                             {**result, "classes": list(classes), "confusion_matrix": cm.tolist()},
                             indent=2)  # fmt: skip
        try:
            png = plot_confusion(cm, list(classes), os.path.join(out_dir, "confusion_matrix.png"))
            print(f"wrote {metrics} and {png}")
        except MissingExtraError as e:  # the scores stand without the figure: say what it needs
            print(f"wrote {metrics}; no confusion_matrix.png: {e}")
        if result["skipped"]:
            print(f"skipped {result['skipped']} unreadable {self.task.sample_noun}(s)")

    def predict(self, model, cfg, classes, paths, options) -> list[dict[str, Any]]:
        tf = build_transforms(cfg["data"], train=False, tensor_input=False)
        k = min(int(options.get("topk", 5)), len(classes))
        results = []
        for path in paths:
            x = tf(load_image(path)).unsqueeze(0)
            with torch.no_grad():
                prob = model(x).softmax(-1)[0]
            p, i = prob.topk(k)
            top = [{"class": classes[j], "prob": float(q)} for q, j in zip(p, i.tolist())]
            results.append({"image": path, "top": top})
        return results

    def format_predictions(self, results: Sequence[Mapping[str, Any]], options) -> str:
        lines = []
        for r in results:
            lines.append(r["image"])
            lines += [f"  {t['prob']:7.2%}  {t['class']}" for t in r["top"]]
        return "\n".join(lines)


class ClassificationDemos(Demos):
    """``gcnet demo`` for the classification task: its demo specs and report hooks."""

    spec = DemoSpec("demo_synthetic.yaml", ("resnet18", "gc_resnet18"), "runs/demo_cls")


class ClassificationAnalysis(Analysis):
    """``gcnet info`` / ``export`` / ``analyze`` for the classification task."""

    def plain_model(self, name, build, overrides):
        from gcnet.models import ResNet, create_model

        if overrides.get("context"):  # the same network without the context blocks put in
            plain = create_model(name, **{k: v for k, v in overrides.items() if k != "context"})
            return plain.eval(), f"{name} without model.context's blocks"
        if model_family(name) == "external":
            return None, None
        cfg = model_config(name, **overrides)
        cfg.pop("_arch")
        if cfg.get("plugin") is None:
            return None, None
        return ResNet(**{**cfg, "plugin": None}).eval(), None


class ClassificationTask(Task):
    name = "classification"
    reporting_cls = ClassificationReporting
    demos_cls = ClassificationDemos
    analysis_cls = ClassificationAnalysis
    datasets = ("synthetic", "imagefolder", "cifar10", "cifar100")
    rootless_datasets = ("synthetic", "cifar10", "cifar100")
    metric = "top1"
    metric_label = "top-1"
    model_families = ("resnet", "external")
    model_examples = "resnet50, gc_resnet50, tv:convnext_tiny, timm:efficientnet_b0"
    skips_bad_images = True

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        dataset = cfg["data"]["dataset"]
        return {"data": {"dataset": "imagefolder" if dataset == "synthetic" else dataset, "root": root}}

    def build_data(self, cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
        return build_classification_data(cfg, split)

    def align_classes(self, ds, ds_classes, classes):
        """An ImageFolder tree numbers its classes by sorted folder name; a checkpoint keeps
        its own order (the synthetic set's is not sorted): relabel the tree by class name."""
        if list(ds_classes) == list(classes):
            return ds
        if sorted(ds_classes) != sorted(classes) or not hasattr(ds, "samples"):
            return super().align_classes(ds, ds_classes, classes)
        to_ckpt = {ds.class_to_idx[name]: i for i, name in enumerate(classes)}
        ds.samples = [(path, to_ckpt[t]) for path, t in ds.samples]
        ds.targets = [t for _, t in ds.samples]
        ds.classes, ds.class_to_idx = list(classes), {name: i for i, name in enumerate(classes)}
        return ds

    def batch_transform(self, cfg: Mapping[str, Any], num_classes: int):
        return build_batch_mix(cfg["data"], num_classes)

    def loss(self, cfg: Mapping[str, Any], output, targets) -> torch.Tensor:
        smoothing = float(cfg["train"]["label_smoothing"])
        return F.cross_entropy(output.float(), targets, label_smoothing=smoothing)

    def evaluate(self, cfg, model, loader, device, num_classes, amp="none", channels_last=False,
                 progress=False, out_dir=None) -> dict[str, Any]:  # fmt: skip
        return evaluate_classification(model, loader, device, num_classes, amp, channels_last, progress)

    def val_metrics(self, result: Mapping[str, Any], num_classes: int) -> dict[str, float]:
        k = min(5, num_classes)
        return {"val_loss": result["loss"], "val_top1": result["top1"], f"val_top{k}": result[f"top{k}"]}

    def epoch_summary(self, row: Mapping[str, Any]) -> str:
        if "val_top1" not in row:
            return ""
        return f", val loss {row['val_loss']:.4f}, val top-1 {row['val_top1']:.2f}%"

    def owns_model(self, name: str) -> bool:
        return model_family(name) in self.model_families
