"""COCO evaluation of detectors with pycocotools: bbox and segm AP (AP, AP50, AP75, APs,
APm, APl), the detections written out as COCO results json. Under DDP every rank runs its
share of the images, the detections are gathered to rank 0, which evaluates; the metrics
are broadcast back.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from gcnet.fileio import write_json
from gcnet.utils.device import autocast_ctx
from gcnet.utils.extras import require
from gcnet.utils.progress import progress_bar

__all__ = ["STAT_NAMES", "RESULT_KEYS", "to_coco_results", "coco_evaluate", "evaluate_detection"]

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# the fields of a COCO results file, per iou type: what is written out (pycocotools' loadRes
# adds id / area / iscrowd / bbox / segmentation to the dicts it is given, as numpy values)
RESULT_KEYS = {"bbox": ("image_id", "category_id", "bbox", "score"),
               "segm": ("image_id", "category_id", "segmentation", "score")}  # fmt: skip


def to_coco_results(output: dict[str, torch.Tensor], image_id: int, label_to_cat: dict[int, int],
                    mask_threshold: float = 0.5) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """One image's torchvision detections -> (bbox results, segm results) in COCO's format
    (xywh boxes, original category ids, RLE masks binarised at ``mask_threshold``)."""
    mask_utils = require("pycocotools.mask", "COCO evaluation")

    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    bbox = [{"image_id": image_id, "category_id": label_to_cat[c], "bbox": [round(v, 2) for v in b],
             "score": s} for b, s, c in zip(xywh, scores, labels)]  # fmt: skip
    segm = []
    if "masks" in output:
        m = (output["masks"].detach().float().cpu()[:, 0] > mask_threshold).numpy().astype(np.uint8)
        for k in range(m.shape[0]):
            rle = mask_utils.encode(np.asfortranarray(m[k]))
            rle["counts"] = rle["counts"].decode("ascii")
            segm.append({"image_id": image_id, "category_id": label_to_cat[labels[k]], "segmentation": rle,
                         "score": scores[k]})  # fmt: skip
    return bbox, segm


def coco_evaluate(coco_gt, results: list[dict], iou_type: str, image_ids: list[int] | None = None,
                  verbose: bool = False) -> dict[str, float]:  # fmt: skip
    """pycocotools' COCOeval on ``results``: {AP, AP50, AP75, APs, APm, APl} in [0, 1]
    (-1 where COCO defines none, e.g. no small objects). No detections -> all 0.
    ``results`` is left as it was: pycocotools gets copies (its loadRes adds keys in place)."""
    COCOeval = require("pycocotools.cocoeval", "COCO evaluation").COCOeval

    if not results:
        return {k: 0.0 for k in STAT_NAMES}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes only sets top-level keys
        ev = COCOeval(coco_gt, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats[:6])}


@torch.no_grad()
def evaluate_detection(
    model: nn.Module,
    loader,
    device: torch.device,
    amp: str = "none",
    out_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """COCO AP of ``model`` on ``loader`` (its dataset a `CocoDetection`).
    Returns ``bbox_AP``, ``bbox_AP50``, ... (and ``segm_*`` for Mask R-CNN), in %."""
    import torch.distributed as dist

    ds = loader.dataset
    model.eval()
    bbox, segm, seen = [], [], []
    for images, targets, _ in progress_bar(loader, progress, desc="eval"):
        images = [im.to(device, non_blocking=True) for im in images]
        with autocast_ctx(device, amp):
            outputs = model(images)
        for out, t in zip(outputs, targets):
            iid = int(t["image_id"])
            b, s = to_coco_results(out, iid, ds.label_to_cat)
            bbox += b
            segm += s
            seen.append(iid)
    with_masks = getattr(ds, "with_masks", False)
    if dist.is_available() and dist.is_initialized():
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (bbox, segm, seen))
        bbox = [r for p in parts for r in p[0]]
        segm = [r for p in parts for r in p[1]]
        seen = [i for p in parts for i in p[2]]
        main = dist.get_rank() == 0
    else:
        main = True
    metrics: dict[str, Any] = {}
    if main:
        if not seen:
            raise ValueError("evaluation saw no images")
        for iou_type, res in (("bbox", bbox), ("segm", segm)) if with_masks else (("bbox", bbox),):
            stats = coco_evaluate(ds.coco, res, iou_type, sorted(set(seen)))
            metrics.update({f"{iou_type}_{k}": 100.0 * v if v >= 0 else v for k, v in stats.items()})
            if out_dir:
                keys = RESULT_KEYS[iou_type]
                rows = [{k: r[k] for k in keys} for r in res]
                path = write_json(os.path.join(out_dir, f"results_{iou_type}.json"), rows)
                metrics[f"{iou_type}_results"] = path
        metrics["num_images"] = len(set(seen))
        metrics["num_detections"] = len(bbox)
    if dist.is_available() and dist.is_initialized():
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics
