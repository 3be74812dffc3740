"""Semantic segmentation: Cityscapes / VOC / ADE20K readers and the synthetic cue set with
mmseg's joint transforms; cross-entropy with ignore index 255 on the main logits plus
``train.aux_loss_weight`` x the auxiliary head's; mIoU / mAcc / aAcc with whole-image or
sliding-window, multi-scale and flip inference (:mod:`gcnet.tasks.seg_eval`); colour-coded
masks for image files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gcnet.data import segmentation as segdata
from gcnet.data.datasets import load_image
from gcnet.errors import ConfigError
from gcnet.fileio import write_json
from gcnet.models import SEGMENTORS, model_family

from .base import DemoSpec, Task, check_choice
from .seg_eval import evaluate_segmentation, predict_probs

__all__ = ["IGNORE_INDEX", "SegmentationTask"]

IGNORE_INDEX = 255


class SegmentationTask(Task):
    name = "segmentation"
    datasets = ("synthetic", "cityscapes", "voc", "ade20k")
    metric = "mIoU"
    metric_label = "mIoU"
    model_families = ("segmentor",)
    model_examples = "gcnet_r50_d8, fcn_r50_d8"
    demo = DemoSpec("demo_segmentation.yaml", ("fcn_r18_d8", "gcnet_r18_d8"), "runs/demo_seg")

    def validate(self, cfg: Mapping[str, Any]) -> None:
        super().validate(cfg)
        check_choice(cfg, "eval.mode", ("whole", "slide"))
        if cfg["eval"]["mode"] == "slide" and not (cfg["eval"]["crop_size"] and cfg["eval"]["stride"]):
            raise ConfigError("eval.mode=slide needs eval.crop_size and eval.stride")
        d = cfg["data"]
        crop, rr = d["seg"]["crop_size"], d["seg"]["ratio_range"] or [1.0]
        if crop and d["dataset"] == "synthetic" and max(crop) > d["image_size"] * max(rr):
            raise ConfigError(f"data.seg.crop_size={crop} is larger than any training image "
                              f"(data.image_size={d['image_size']} x data.seg.ratio_range {rr})")  # fmt: skip

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        if cfg["data"]["dataset"] == "synthetic":
            raise ConfigError(
                "--data: this recipe trains on the embedded synthetic set; give a recipe for "
                f"{'/'.join(self.datasets[1:])} or --set data.dataset=NAME with --data"
            )
        return {"data": {"root": root}}

    def build_data(self, cfg: Mapping[str, Any], split: str) -> tuple[Dataset, list[str]]:
        return segdata.build_segmentation_data(cfg, split)

    def val_batch_size(self, cfg: Mapping[str, Any], per_rank: int) -> int:
        return int(cfg["eval"]["batch_size"])

    def loss(self, cfg: Mapping[str, Any], output, targets) -> torch.Tensor:
        targets = targets.long()
        if not isinstance(output, Mapping):
            return F.cross_entropy(output.float(), targets, ignore_index=IGNORE_INDEX)
        loss = F.cross_entropy(output["out"].float(), targets, ignore_index=IGNORE_INDEX)
        if "aux" in output:
            aux = F.cross_entropy(output["aux"].float(), targets, ignore_index=IGNORE_INDEX)
            loss = loss + float(cfg["train"]["aux_loss_weight"]) * aux
        return loss

    def evaluate(self, cfg, model, loader, device, num_classes, amp="none", channels_last=False,
                 progress=False, out_dir=None) -> dict[str, Any]:  # fmt: skip
        return evaluate_segmentation(model, loader, device, num_classes, cfg["eval"], amp, channels_last,
                                     IGNORE_INDEX, progress)  # fmt: skip

    def val_metrics(self, result: Mapping[str, Any], num_classes: int) -> dict[str, float]:
        return {"val_loss": result["loss"], "val_mIoU": result["mIoU"], "val_aAcc": result["aAcc"],
                "val_mAcc": result["mAcc"]}  # fmt: skip

    def epoch_summary(self, row: Mapping[str, Any]) -> str:
        if "val_mIoU" not in row:
            return ""
        return (
            f", val loss {row['val_loss']:.4f}, val mIoU {row['val_mIoU']:.2f}%, aAcc {row['val_aAcc']:.2f}%"
        )

    def report_eval(self, result, cfg, classes, out_dir, num_images) -> None:
        e = cfg["eval"]
        how = e["mode"] + (f", scales {e['scales']}" if list(e["scales"]) != [1.0] else "")
        how += ", flip" if e["flip"] else ""
        print(
            f"{num_images} images ({how}): mIoU {result['mIoU']:.2f}%  mAcc {result['mAcc']:.2f}%  "
            f"aAcc {result['aAcc']:.2f}%"
        )
        print(f"  {'class':<24} {'IoU':>7} {'Acc':>7}")
        for name, iou, acc in zip(classes, result["per_class_iou"], result["per_class_acc"]):
            print(f"  {name:<24} {iou:7.2f} {acc:7.2f}")
        cm = result.pop("confusion_matrix")
        report = {**result, "classes": list(classes), "eval": dict(e), "confusion_matrix": cm.tolist()}
        print(f"wrote {write_json(os.path.join(out_dir, 'metrics.json'), report, indent=2)}")

    def _palette(self, cfg: Mapping[str, Any], num_classes: int):
        dataset = cfg["data"]["dataset"]
        if dataset == "synthetic":
            return segdata.SyntheticSegmentation.palette
        if dataset == "cityscapes":
            return segdata.CITYSCAPES_PALETTE
        return segdata.color_palette(num_classes)

    def predict(self, model, cfg, classes, paths, options) -> list[dict[str, Any]]:
        """Colour-coded masks, overlays and label PNGs, plus per-image class pixel shares."""
        from PIL import Image

        tf = segdata.build_seg_transform(cfg["data"], train=False)
        palette = self._palette(cfg, len(classes))
        out_dir = options.get("output") or "predictions"
        os.makedirs(out_dir, exist_ok=True)
        e = cfg["eval"]
        results = []
        for path in paths:
            rgb = np.asarray(load_image(path))
            img = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
            x, _ = tf(img, torch.zeros(img.shape[-2:], dtype=torch.uint8))
            with torch.no_grad():
                probs = predict_probs(model, x[None], len(classes), out_size=rgb.shape[:2], mode=e["mode"],
                                      crop_size=e["crop_size"], stride=e["stride"], scales=e["scales"],
                                      flip=e["flip"])[0]  # fmt: skip
            pred = probs.argmax(0).numpy().astype(np.uint8)
            stem = os.path.splitext(os.path.basename(path))[0]
            color = segdata.colorize(pred, palette)
            files = {k: os.path.join(out_dir, f"{stem}_{k}.png") for k in ("mask", "overlay", "labels")}
            Image.fromarray(color).save(files["mask"])
            Image.fromarray((0.5 * rgb + 0.5 * color).astype(np.uint8)).save(files["overlay"])
            Image.fromarray(pred, mode="L").save(files["labels"])
            ids, counts = np.unique(pred, return_counts=True)
            shares = {classes[i]: float(c) / pred.size for i, c in zip(ids.tolist(), counts.tolist())}
            results.append({"image": path, **files,
                            "class_share": dict(sorted(shares.items(), key=lambda kv: -kv[1]))})  # fmt: skip
        return results

    def format_predictions(self, results: Sequence[Mapping[str, Any]], options) -> str:
        lines = []
        for r in results:
            top = ", ".join(f"{k} {v:.1%}" for k, v in list(r["class_share"].items())[:5])
            lines.append(f"{r['image']}: {top}\n  wrote {r['mask']}, {r['overlay']}, {r['labels']}")
        return "\n".join(lines)

    def analysis_size(self, cfg: Mapping[str, Any], default: int) -> int:
        # real scenes are trained on crops of rescaled images: image_size means nothing there
        return int(cfg["data"]["image_size"]) if cfg["data"]["dataset"] == "synthetic" else default

    def owns_model(self, name: str) -> bool:
        return model_family(name) == "segmentor"

    def plain_model(self, name, build, overrides):
        """A GCNet / NL head is compared with the FCN head on the same backbone."""
        for prefix in ("gcnet_", "nonlocal_"):
            plain = "fcn_" + name[len(prefix) :]
            if name.startswith(prefix) and plain in SEGMENTORS:
                return build(plain).eval(), plain
        return None, None
