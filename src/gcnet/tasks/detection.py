"""Object detection and instance segmentation: torchvision's Mask R-CNN / Faster R-CNN on
GC-ResNet-FPN, COCO data (and the synthetic COCO set) with aspect-ratio batches, the
detector's own losses, pycocotools bbox / segm AP (`gcnet.tasks.det_eval`), and boxes
and masks drawn on image files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gcnet.config_schema import register_section
from gcnet.data.coco import AspectRatioBatchSampler, build_detection_data, collate_detection
from gcnet.data.datasets import load_image
from gcnet.errors import ConfigError
from gcnet.fileio import write_json
from gcnet.models import model_family

from .base import Analysis, Demos, DemoSpec, Reporting, Task, check_choice
from .det_eval import STAT_NAMES, evaluate_detection


@dataclass
class CocoPathsConfig:
    """Keys under ``data`` for ``data.dataset: coco``: annotation files and image folders,
    relative to ``data.root`` or absolute; None: found (``annotations/instances_<split>.json``,
    ``annotations/<split>.json``, ``<split>/_annotations.coco.json``, ...; images in
    ``<split>/``, ``images/<split>/``, ``images/``)."""

    train_ann: str | None = None
    val_ann: str | None = None
    train_images: str | None = None
    val_images: str | None = None


register_section("data", CocoPathsConfig, "detection")

__all__ = ["DetectionTask"]


class DetectionReporting(Reporting):
    """``gcnet eval``'s report and ``gcnet predict`` for the detection task."""

    def report_eval(self, result, cfg, classes, out_dir, num_images) -> None:
        print(f"{result['num_images']} images, {result['num_detections']} detections "
              "(COCO AP, %; -1 = no such objects)")  # fmt: skip
        print(f"  {'':<6}" + "".join(f"{k:>8}" for k in STAT_NAMES))
        for t in ("bbox", "segm"):
            if f"{t}_AP" in result:
                print(f"  {t:<6}" + "".join(f"{result[f'{t}_{k}']:8.2f}" for k in STAT_NAMES))
        metrics = write_json(os.path.join(out_dir, "metrics.json"), {**result, "classes": list(classes)},
                             indent=2)  # fmt: skip
        written = [result[k] for k in ("bbox_results", "segm_results") if k in result]
        print(f"wrote {metrics}, " + ", ".join(written))

    def predict(self, model, cfg, classes, paths, options) -> list[dict[str, Any]]:
        """Boxes, labels, scores and masks drawn on each image, as PNG."""
        from PIL import Image
        from torchvision.utils import draw_segmentation_masks

        from gcnet.tools.visualize import draw_detections

        out_dir = options.get("output") or "predictions"
        threshold = float(options.get("score_threshold", 0.5))
        os.makedirs(out_dir, exist_ok=True)
        results = []
        for path in paths:
            img = torch.from_numpy(np.asarray(load_image(path)).copy()).permute(2, 0, 1)
            with torch.no_grad():
                det = model([img.float() / 255])[0]
            keep = det["scores"] >= threshold
            boxes, labels, scores = det["boxes"][keep], det["labels"][keep], det["scores"][keep]
            canvas = img
            if "masks" in det and keep.any():
                canvas = draw_segmentation_masks(canvas, det["masks"][keep][:, 0] > 0.5, alpha=0.45)
            names = [f"{classes[int(c) - 1]} {float(s):.2f}" for c, s in zip(labels, scores)]
            drawn = canvas.permute(1, 2, 0).numpy()
            if len(boxes):  # boxes come sorted by score: the best ones get their labels' first choice
                drawn = draw_detections(drawn, boxes.tolist(), names, labels.tolist())
            png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + "_det.png")
            Image.fromarray(drawn).save(png)
            dets = [{"class": classes[int(c) - 1], "score": float(s),
                     "box_xyxy": [round(float(v), 1) for v in b]}
                    for b, c, s in zip(boxes, labels, scores)]  # fmt: skip
            results.append({"image": path, "output": png, "detections": dets})
        return results

    def format_predictions(self, results: Sequence[Mapping[str, Any]], options) -> str:
        threshold = float(options.get("score_threshold", 0.5))
        lines = []
        for r in results:
            lines.append(f"{r['image']}: {len(r['detections'])} detections (score >= {threshold})")
            lines += [f"  {d['score']:.2f}  {d['class']:<20} {d['box_xyxy']}" for d in r["detections"][:20]]
            lines.append(f"  wrote {r['output']}")
        return "\n".join(lines)


class DetectionDemos(Demos):
    """``gcnet demo`` for the detection task: its demo specs and report hooks."""

    spec = DemoSpec("demo_detection.yaml", ("maskrcnn_r18_fpn", "maskrcnn_gc_r18_fpn"), "runs/demo_det")

    def prepare_demo(self, cfg: dict[str, Any], output: str) -> dict[str, Any]:
        if cfg["data"]["dataset"] == "synthetic" and not cfg["data"]["root"]:
            # every model reads one copy of the synthetic COCO set, written once
            cfg = {**cfg, "data": {**cfg["data"], "root": os.path.join(output, "synthetic_coco")}}
        return cfg

    def demo_input(self, cfg: Mapping[str, Any]):
        size = cfg["data"]["image_size"]
        return [torch.rand(3, size, size * 4 // 3)]  # one landscape image

    def demo_note(self, row: Mapping[str, Any]) -> str:
        return f" (mask AP {row['val_segm_AP']:.2f})" if "val_segm_AP" in row else ""


class DetectionAnalysis(Analysis):
    """``gcnet info`` / ``export`` / ``analyze`` for the detection task."""

    def plain_model(self, name, build, overrides):
        plain = name.replace("_gc_", "_").removesuffix("_r4")
        if plain == name:
            return None, None
        return build(plain).eval(), plain

    def complexity(self, model, plain, x) -> dict[str, Any]:
        """Backbone + FPN on the image as the detector resizes and pads it; the RPN and RoI
        heads are the same in both models and their cost follows the proposals."""
        from gcnet.tools.complexity import count_flops, count_params

        with torch.no_grad():
            x = model.transform([x[0]])[0].tensors  # the model's own resize (min_size / max_size)
            out = {"params": count_params(model), "flops": count_flops(model.backbone, x)}
            if plain is not None:
                out.update(plain_params=count_params(plain), plain_flops=count_flops(plain.backbone, x))
        size = tuple(x.shape[-2:])
        out["notes"] = [
            f"GFLOPs: backbone + FPN on the resized, padded {size} image; the RPN and RoI heads, the",
            "same in both models (their cost follows the proposals and detections), are not counted",
        ]
        return out


class DetectionTask(Task):
    name = "detection"
    reporting_cls = DetectionReporting
    demos_cls = DetectionDemos
    analysis_cls = DetectionAnalysis
    datasets = ("synthetic", "coco")
    metric = "bbox_AP"
    metric_label = "bbox AP"
    model_families = ("detector",)
    model_examples = "maskrcnn_gc_r50_fpn, fasterrcnn_r50_fpn"
    collate_fn = staticmethod(collate_detection)

    def validate(self, cfg: Mapping[str, Any]) -> None:
        """The base's checks, with a root optional when both annotation files are given."""
        check_choice(cfg, "data.dataset", self.datasets)
        d = cfg["data"]
        for key in ("train_ann", "val_ann", "train_images", "val_images"):
            v = d.get(key)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"data.{key} must be a path (relative to data.root or absolute) or null, "
                                  f"got {v!r}")  # fmt: skip
        if d["dataset"] == "coco" and not d["root"] and not (d.get("train_ann") and d.get("val_ann")):
            raise ConfigError("data.root is required for data.dataset=coco (or give data.train_ann and "
                              "data.val_ann)")  # fmt: skip

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        return {"data": {"dataset": "coco", "root": root}}

    def build_data(self, cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
        return build_detection_data(cfg, split)

    def train_batches(self, ds, batch_size: int, seed: int, world: int, rank: int) -> dict[str, Any]:
        return {
            "batch_sampler": AspectRatioBatchSampler(ds.aspect_ratios(), batch_size, True, seed, world, rank)
        }

    def too_small_message(self, ds, batch_size: int) -> str:
        ratios = ds.aspect_ratios()
        wide = sum(r >= 1 for r in ratios)
        return (
            f"no aspect-ratio group of the training set fills one batch of {batch_size} per process: "
            f"{wide} landscape and {len(ratios) - wide} portrait images (batches never mix the two); "
            "lower train.batch_size or add images"
        )

    def val_batch_size(self, cfg: Mapping[str, Any], per_rank: int) -> int:
        return int(cfg["eval"]["batch_size"])

    def model_classes(self, num_classes: int) -> int:
        return num_classes + 1  # torchvision's detectors count the background

    def move_batch(self, inputs, targets, device: torch.device, channels_last: bool = False):
        inputs = [im.to(device, non_blocking=True) for im in inputs]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        return inputs, targets

    def forward(self, model, inputs, targets):
        return model(inputs, targets)

    def loss(self, cfg: Mapping[str, Any], output, targets) -> torch.Tensor:
        return sum(output.values())  # torchvision's detectors return their losses

    def evaluate(self, cfg, model, loader, device, num_classes, amp="none", channels_last=False,
                 progress=False, out_dir=None) -> dict[str, Any]:  # fmt: skip
        return evaluate_detection(model, loader, device, amp, out_dir=out_dir, progress=progress)

    def val_metrics(self, result: Mapping[str, Any], num_classes: int) -> dict[str, float]:
        return {f"val_{k}": v for k, v in result.items()
                if k.startswith(("bbox_", "segm_")) and not k.endswith("_results")}  # fmt: skip

    def epoch_summary(self, row: Mapping[str, Any]) -> str:
        if "val_bbox_AP" not in row:
            return ""
        msg = f", val bbox AP {row['val_bbox_AP']:.2f}%"
        if "val_segm_AP" in row:
            msg += f", segm AP {row['val_segm_AP']:.2f}%"
        return msg

    def owns_model(self, name: str) -> bool:
        return model_family(name) == "detector"
