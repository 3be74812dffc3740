"""Image classification: the embedded synthetic set, ImageFolder trees and CIFAR; cross-entropy
(label smoothing, MixUp / CutMix); top-1 / top-5, per-class accuracy and the confusion
matrix (torchmetrics, reduced across DDP ranks); top-k prediction on image files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gcnet.data import build_classification_data
from gcnet.data.datasets import load_image
from gcnet.data.transforms import build_batch_mix, build_transforms
from gcnet.fileio import write_json
from gcnet.models import model_config, model_family
from gcnet.utils import distributed as du
from gcnet.utils.device import autocast_ctx
from gcnet.utils.progress import progress_bar

from .base import DemoSpec, Task

__all__ = ["ClassificationTask", "evaluate_classification"]


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
    from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

    k = min(5, num_classes)
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro").to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=k, average="micro").to(device)
    per_class = MulticlassAccuracy(num_classes, average=None).to(device)
    confmat = MulticlassConfusionMatrix(num_classes).to(device)
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
        for m in (top1, top5, per_class, confmat):
            m.update(logits, targets)
    du.all_reduce_sum(loss_sum)
    n = int(loss_sum[1].item())
    if n == 0:
        raise ValueError("evaluation saw no images (empty or entirely unreadable dataset)")
    return {
        "loss": float(loss_sum[0] / n),
        "top1": 100.0 * float(top1.compute()),
        f"top{k}": 100.0 * float(top5.compute()),
        "per_class": [100.0 * float(v) for v in per_class.compute()],
        "confusion_matrix": confmat.compute().cpu(),
        "num_samples": n,
        "skipped": skipped,
    }


class ClassificationTask(Task):
    name = "classification"
    datasets = ("synthetic", "imagefolder", "cifar10", "cifar100")
    rootless_datasets = ("synthetic", "cifar10", "cifar100")
    metric = "top1"
    metric_label = "top-1"
    model_families = ("resnet", "external")
    model_examples = "resnet50, gc_resnet50, tv:convnext_tiny, timm:efficientnet_b0"
    skips_bad_images = True
    demo = DemoSpec("demo_synthetic.yaml", ("resnet18", "gc_resnet18"), "runs/demo_cls")

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
        png = plot_confusion(cm, list(classes), os.path.join(out_dir, "confusion_matrix.png"))
        print(f"wrote {metrics} and {png}")
        if result["skipped"]:
            print(f"skipped {result['skipped']} unreadable {self.sample_noun}(s)")

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

    def owns_model(self, name: str) -> bool:
        return model_family(name) in self.model_families

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
