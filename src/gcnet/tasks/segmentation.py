"""Semantic segmentation: Cityscapes / VOC / ADE20K readers and the synthetic cue set with
mmseg's joint transforms; cross-entropy with ignore index 255 on the main logits plus
``train.aux_loss_weight`` x the auxiliary head's; mIoU / mAcc / aAcc with whole-image or
sliding-window, multi-scale and flip inference (`gcnet.tasks.seg_eval`); colour-coded
masks for image files."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gcnet.config_schema import bounded, pair_of_positive_ints, register_section
from gcnet.data import segmentation as segdata
from gcnet.data.datasets import load_image
from gcnet.errors import ConfigError
from gcnet.fileio import write_json
from gcnet.models import SEGMENTORS, model_family

from .base import Analysis, Demos, DemoSpec, Reporting, Task, check_choice
from .seg_eval import evaluate_segmentation, predict_probs

__all__ = ["IGNORE_INDEX", "SegmentationTask"]

IGNORE_INDEX = 255


@dataclass
class SegDataConfig:
    """``data.seg``: mmseg's joint pipeline, and your own classes."""

    scale: list[int] | None = None  # [long, short] edges of the random rescale's base; None = as loaded
    ratio_range: list[float] | None = field(default_factory=lambda: [0.5, 2.0])  # null: no random rescale
    crop_size: list[int] | None = None  # [h, w] random crop (padded with ignore); None = whole image
    cat_max_ratio: float = bounded(0.75, 0, 1, lo_in=False)
    photometric: bool = True
    test_scale: list[int] | None = None  # [long, short] keep-ratio resize of eval images; None = as is
    # your classes (data.dataset=custom; or a voc / ade20k / cityscapes tree relabelled):
    # a list of names (mask value i = the i-th) or a file (relative to data.root) with
    # one "name [R G B]" per line; None: <root>/classes.txt (custom), the dataset's own
    classes: list[str] | str | None = None
    palette: list[list[int]] | None = None  # [[R, G, B], ...] one per class; None: classes.txt's or VOC's
    ignore_index: int = 255  # the mask value that counts nowhere (as stored in the files)
    reduce_zero_label: bool = False  # custom: label 0 -> ignore, k -> k-1 (ADE20K-style masks)
    # custom: folders relative to data.root ("{split}" replaced; None: found), file suffixes,
    # split lists (one stem per line; None: the folders' own split subfolders)
    img_dir: str | None = None
    ann_dir: str | None = None
    img_suffix: str | None = None  # None: .jpg .jpeg .png .bmp .tif .tiff .webp
    seg_map_suffix: str = ".png"
    train_list: str | None = None
    val_list: str | None = None


@dataclass
class SegEvalConfig:
    """``eval``: segmentation inference (``batch_size``: detection's too)."""

    mode: str = "whole"  # whole | slide
    crop_size: list[int] | None = None  # [h, w] windows for slide
    stride: list[int] | None = None  # [h, w]
    scales: list[float] = field(default_factory=lambda: [1.0])  # multi-scale: e.g. [0.5, 0.75, 1.0, 1.5]
    flip: bool = False
    batch_size: int = bounded(1, 1)


def _check_seg_sections(cfg: Mapping[str, Any]) -> None:
    d, e = cfg["data"]["seg"], cfg["eval"]
    for key, value in (("data.seg.crop_size", d["crop_size"]), ("eval.crop_size", e["crop_size"]),
                       ("eval.stride", e["stride"]), ("data.seg.scale", d["scale"])):  # fmt: skip
        pair_of_positive_ints(key, value)
    rr = d["ratio_range"]
    if rr is not None and (len(rr) != 2 or not 0 < rr[0] <= rr[1]):
        raise ConfigError(f"data.seg.ratio_range must be [low, high] with 0 < low <= high, got {rr!r}")


register_section("data.seg", SegDataConfig, "segmentation", _check_seg_sections)
register_section("eval", SegEvalConfig, "segmentation")


def _check_seg_data_keys(s: Mapping[str, Any]) -> None:
    """Types and values of the ``data.seg`` keys of your own data (one-line errors)."""
    s = {"classes": None, "palette": None, "ignore_index": IGNORE_INDEX, "img_dir": None, "ann_dir": None,
         "img_suffix": None, "seg_map_suffix": ".png", "train_list": None, "val_list": None, **s}  # fmt: skip
    classes, palette = s["classes"], s["palette"]
    if classes is not None and not isinstance(classes, str):
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str | int) for c in classes):
            raise ConfigError(f"data.seg.classes must be a list of class names or a file (relative to "
                              f"data.root), got {classes!r}")  # fmt: skip
        if len(set(map(str, classes))) != len(classes):
            raise ConfigError(f"data.seg.classes names a class twice: {classes!r}")
        if len(classes) > IGNORE_INDEX:
            raise ConfigError(f"data.seg.classes names {len(classes)} classes; at most {IGNORE_INDEX}")
    if palette is not None:
        ok = isinstance(palette, list) and all(
            isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        )
        if not ok or not palette:
            raise ConfigError(f"data.seg.palette must be a list of [R, G, B] (integers 0-255), one per "
                              f"class, got {palette!r}")  # fmt: skip
        if isinstance(classes, list) and len(palette) != len(classes):
            raise ConfigError(f"data.seg.palette holds {len(palette)} colours for the {len(classes)} classes "
                              "of data.seg.classes")  # fmt: skip
    ign = s["ignore_index"]
    if isinstance(ign, bool) or not isinstance(ign, int) or not 0 <= ign <= 255:
        raise ConfigError(f"data.seg.ignore_index must be an integer in [0, 255] (a mask value), got {ign!r}")
    for key in ("img_dir", "ann_dir", "img_suffix", "train_list", "val_list"):
        if s[key] is not None and (not isinstance(s[key], str) or not s[key]):
            raise ConfigError(f"data.seg.{key} must be a non-empty string or null, got {s[key]!r}")
    if not isinstance(s["seg_map_suffix"], str) or not s["seg_map_suffix"]:
        raise ConfigError(f"data.seg.seg_map_suffix must be a non-empty string (e.g. '.png', '_mask.png'), "
                          f"got {s['seg_map_suffix']!r}")  # fmt: skip
    if (s["img_dir"] is None) != (s["ann_dir"] is None):
        raise ConfigError("data.seg.img_dir and data.seg.ann_dir go together: give both (or neither)")


class SegmentationReporting(Reporting):
    """``gcnet eval``'s report and ``gcnet predict`` for the segmentation task."""

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
        d = cfg["data"]
        seg = d.get("seg", {})
        if seg.get("palette") is not None and len(seg["palette"]) == num_classes:
            return np.asarray(seg["palette"], np.uint8)
        if seg.get("classes") is not None or d["dataset"] == "custom":
            try:  # your classes: their colours (classes.txt's, if it is still there), else VOC's map
                _, pal = segdata.seg_classes_from_config({**d, "seg": {**seg, "palette": None}})
            except (OSError, ValueError):
                pal = None
            return pal if pal is not None and len(pal) == num_classes else segdata.color_palette(num_classes)
        dataset = d["dataset"]
        if dataset == "synthetic":
            return segdata.SyntheticSegmentation.palette
        if dataset == "far_key":
            from gcnet.data.context_demo import FarKeySegmentation

            return FarKeySegmentation.palette
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


class SegmentationDemos(Demos):
    """``gcnet demo`` for the segmentation task: its demo specs and report hooks."""

    spec = DemoSpec("demo_segmentation.yaml", ("fcn_r18_d8", "gcnet_r18_d8"), "runs/demo_seg")

    #: the main job (``gcnet demo``): plain vs GC vs SE vs NL on the far-key set
    extra = (
        DemoSpec(
            "demo_context.yaml", ("fcn_tiny_s4", "gcnet_tiny_s4", "se_tiny_s4", "nonlocal_tiny_s4"),
            "runs/demo", seeds=(0, 1, 2), cosine_model="nonlocal_tiny_s4", attention_model="gcnet_tiny_s4",
            name="context",
            quick=("data.image_size=64", "data.train_size=32", "data.val_size=8", "train.batch_size=16",
                   "train.epochs=1", "eval.batch_size=8"),
        ),
    )  # fmt: skip

    def demo_scores(self, cfg: Mapping[str, Any], model) -> dict[str, float]:
        """On the far-key set: the accuracy on the object pixels, whose class only the key
        (beyond a plain network's sight) decides."""
        if cfg["data"]["dataset"] != "far_key":
            return {}
        ds, _ = self.task.build_data(cfg, "val")
        hit = total = 0
        model.eval()
        with torch.no_grad():
            for start in range(0, len(ds), 32):
                idx = range(start, min(start + 32, len(ds)))
                x, y = zip(*(ds[i] for i in idx))
                pred = model(torch.stack(x)).argmax(1)
                obj = torch.from_numpy(np.stack([ds.object_mask(i) for i in idx]))
                hit += int((pred == torch.stack(y).long())[obj].sum())
                total += int(obj.sum())
        return {"object acc.": 100.0 * hit / max(total, 1)}

    def demo_references(self, cfg: Mapping[str, Any]) -> list[tuple[str, dict[str, float]]]:
        """On the far-key set: the hand-written oracle (reads the key) and the blind oracle
        (the key's own pixels and the object shapes right, the objects' class a fixed guess)."""
        if cfg["data"]["dataset"] != "far_key":
            return []
        from gcnet.data.context_demo import blind_oracle_predict, oracle_predict

        from .seg_eval import confusion_matrix, metrics_from_confusion

        ds, classes = self.task.build_data(cfg, "val")
        out = []
        oracles = (("oracle with global information (hand-written)", oracle_predict),
                   ("blind oracle: exact shapes, the key's class guessed", blind_oracle_predict))  # fmt: skip
        for label, fn in oracles:
            cm, hit, total = 0, 0, 0
            for i in range(len(ds)):
                img, mask = ds.render(i)
                pred = torch.from_numpy(fn(img))
                cm = cm + confusion_matrix(pred, torch.from_numpy(mask.copy()), len(classes), IGNORE_INDEX)
                obj = ds.object_mask(i)
                hit += int((pred.numpy() == mask)[obj].sum())
                total += int(obj.sum())
            out.append(
                (label, {"mIoU": metrics_from_confusion(cm)["mIoU"], "object acc.": 100.0 * hit / total})
            )
        return out

    def demo_notes(self, cfg: Mapping[str, Any], models) -> list[str]:
        """On the far-key set: the construction, and the plain model's receptive field
        against the key's distance, both computed now."""
        if cfg["data"]["dataset"] != "far_key":
            return []
        from gcnet.tools.receptive_field import receptive_field_halfwidth

        ds, _ = self.task.build_data(cfg, "val")
        plain = next(iter(models.values()))
        half = receptive_field_halfwidth(plain, 128)
        seen = "cannot see" if half < ds.min_distance else "CAN see"
        return [
            "",
            f"The data (`data.dataset: far_key`, {ds.image_size}x{ds.image_size}): a stripe of a saturated "
            "colour (red, green or blue) along one random edge is the *key*; one to three grey objects, "
            f"the same whatever their class, lie at least {ds.min_distance} px from it. The key's pixels "
            "and every object pixel are labelled with the key's colour, everything else is background: "
            "an object's class is decided only by pixels far away.",
            "",
            f"The plain network ({next(iter(models))}) sees {half} px around a pixel (its theoretical "
            "receptive field, computed structurally by `gcnet.tools.receptive_field`: a "
            f"{2 * half + 1} px square), so it "
            f"{seen} the key from any object pixel ({ds.min_distance} px away at least). Without context the "
            "best is the blind oracle below: one object class in three.",
        ]


class SegmentationAnalysis(Analysis):
    """``gcnet info`` / ``export`` / ``analyze`` for the segmentation task."""

    def cosine_inputs(self, cfg, data_dir, num, size, clip_len, out_dir) -> torch.Tensor:
        """A run on an embedded set: its own validation images (else the base's choice)."""
        if cfg is None or data_dir or cfg["data"]["dataset"] not in self.task.rootless_datasets:
            return super().cosine_inputs(cfg, data_dir, num, size, clip_len, out_dir)
        ds, _ = self.task.build_data(cfg, "val")
        return torch.stack([ds[i][0] for i in range(min(num, len(ds)))])

    def analysis_size(self, cfg: Mapping[str, Any], default: int) -> int:
        # real scenes are trained on crops of rescaled images: image_size means nothing there
        return (
            int(cfg["data"]["image_size"])
            if cfg["data"]["dataset"] in self.task.rootless_datasets
            else default
        )

    def plain_model(self, name, build, overrides):
        """A GCNet / NL head is compared with the FCN head on the same backbone."""
        for prefix in ("gcnet_", "nonlocal_", "se_", "snl_"):
            plain = "fcn_" + name[len(prefix) :]
            if name.startswith(prefix) and plain in SEGMENTORS:
                return build(plain).eval(), plain
        return None, None


class SegmentationTask(Task):
    name = "segmentation"
    reporting_cls = SegmentationReporting
    demos_cls = SegmentationDemos
    analysis_cls = SegmentationAnalysis
    datasets = ("synthetic", "far_key", "cityscapes", "voc", "ade20k", "custom")
    rootless_datasets = ("synthetic", "far_key")
    generated_datasets = ("synthetic", "far_key")
    metric = "mIoU"
    metric_label = "mIoU"
    model_families = ("segmentor",)
    model_examples = "gcnet_r50_d8, fcn_r50_d8"

    def validate(self, cfg: Mapping[str, Any]) -> None:
        super().validate(cfg)
        check_choice(cfg, "eval.mode", ("whole", "slide"))
        if cfg["eval"]["mode"] == "slide" and not (cfg["eval"]["crop_size"] and cfg["eval"]["stride"]):
            raise ConfigError("eval.mode=slide needs eval.crop_size and eval.stride")
        d = cfg["data"]
        crop, rr = d["seg"]["crop_size"], d["seg"]["ratio_range"] or [1.0]
        if crop and d["dataset"] in self.rootless_datasets and max(crop) > d["image_size"] * max(rr):
            raise ConfigError(f"data.seg.crop_size={crop} is larger than any training image "
                              f"(data.image_size={d['image_size']} x data.seg.ratio_range {rr})")  # fmt: skip
        _check_seg_data_keys(d["seg"])

    def data_root_overrides(self, cfg: Mapping[str, Any], root: str) -> dict[str, Any]:
        """The recipe's own format; a recipe on an embedded set switches to ``custom`` (your
        images and masks, classes from ``data.seg.classes`` or ``ROOT/classes.txt``) with a
        pipeline for images of any size: the short side rescaled to about ``data.image_size``
        (x 0.5-2 in training), random ``image_size`` crops (keys set by ``--set`` are kept)."""
        d = cfg["data"]
        if d["dataset"] not in self.rootless_datasets:
            return {"data": {"root": root}}
        size, s = int(d["image_size"]), d["seg"]
        seg: dict[str, Any] = {}
        if s["crop_size"] is None:
            seg = {"crop_size": [size, size], "ratio_range": s["ratio_range"] or [0.5, 2.0]}
            if s["scale"] is None:
                seg["scale"] = [4 * size, size]
        if s["test_scale"] is None:
            seg["test_scale"] = [4 * size, size]
        return {"data": {"dataset": "custom", "root": root, "seg": seg}}

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

    def owns_model(self, name: str) -> bool:
        return model_family(name) == "segmentor"
