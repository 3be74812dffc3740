"""Training and evaluation for classification and semantic segmentation (``cfg["task"]``),
single process or DDP under torchrun. The two tasks share the loop, schedules, checkpoints,
AMP, EMA and DDP; they differ in data, loss (segmentation: cross-entropy with ignore index
255 on the main logits + ``train.aux_loss_weight`` x the auxiliary head's) and evaluation
(top-1 vs mIoU, see :mod:`gcnet.engine.seg_eval`).

Resume is exact: every epoch re-seeds the RNGs from (seed, epoch, rank) and the sampler
from (seed, epoch), and the learning rate is a function of the step, so a run interrupted
after epoch k and resumed ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from gcnet.data import build_classification_data, collate_skip_bad
from gcnet.data.transforms import build_batch_mix
from gcnet.layers.sync_bn import convert_sync_batchnorm
from gcnet.models import create_model

from . import distributed as du
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, save_weights
from .logger import MetricsLogger, plot_curves
from .optim import build_optimizer, lr_at, total_steps

__all__ = [
    "train",
    "evaluate",
    "build_data",
    "build_model_from_config",
    "resolve_device",
    "autocast_ctx",
    "task_loss",
    "primary_metric",
]

IGNORE_INDEX = 255


class ShardSampler(Sampler[int]):
    """Every index exactly once across ranks (rank r takes r, r+W, ...): no padding, so
    distributed evaluation counts each sample once."""

    def __init__(self, n: int, num_replicas: int, rank: int) -> None:
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def autocast_ctx(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def build_model_from_config(cfg: Mapping[str, Any], num_classes: int, pretrained=None) -> nn.Module:
    """``num_classes``: the dataset's classes (detection adds torchvision's background)."""
    m = cfg["model"]
    pre = m["pretrained"] if pretrained is None else pretrained
    if cfg.get("task") == "detection":
        num_classes += 1
    kw = dict(m["kwargs"])
    if "num_classes" in kw:  # the data decides; a recipe may state it only if it agrees
        if int(kw.pop("num_classes")) != num_classes:
            raise ValueError(
                f"model.kwargs.num_classes={m['kwargs']['num_classes']} but the data gives "
                f"{num_classes} classes"
                + (" (with background)" if cfg.get("task") == "detection" else "")
                + "; drop model.kwargs.num_classes"
            )
    return create_model(m["name"], pretrained=pre or False, num_classes=num_classes, **kw)


def build_data(cfg: Mapping[str, Any], split: str):
    """(dataset, class names) for the config's task and ``split`` ("train" / "val")."""
    if cfg.get("task", "classification") == "segmentation":
        from gcnet.data.segmentation import build_segmentation_data

        return build_segmentation_data(cfg, split)
    if cfg.get("task") == "detection":
        from gcnet.data.coco import build_detection_data

        return build_detection_data(cfg, split)
    return build_classification_data(cfg, split)


def primary_metric(cfg: Mapping[str, Any]) -> str:
    """The validation metric that picks the best checkpoint: ``top1``, ``mIoU`` or ``bbox_AP``."""
    return {"segmentation": "mIoU", "detection": "bbox_AP"}.get(cfg.get("task", "classification"), "top1")


def task_loss(cfg: Mapping[str, Any], output, targets: torch.Tensor) -> torch.Tensor:
    t_cfg = cfg["train"]
    if cfg.get("task") == "detection":  # torchvision's detectors return their losses
        return sum(output.values())
    if cfg.get("task", "classification") == "segmentation":
        targets = targets.long()
        if isinstance(output, Mapping):
            loss = F.cross_entropy(output["out"].float(), targets, ignore_index=IGNORE_INDEX)
            if "aux" in output:
                aux = F.cross_entropy(output["aux"].float(), targets, ignore_index=IGNORE_INDEX)
                loss = loss + float(t_cfg["aux_loss_weight"]) * aux
            return loss
        return F.cross_entropy(output.float(), targets, ignore_index=IGNORE_INDEX)
    return F.cross_entropy(output.float(), targets, label_smoothing=float(t_cfg["label_smoothing"]))


def _evaluate_task(cfg, model, loader, device, num_classes, progress=False) -> dict[str, Any]:
    t_cfg = cfg["train"]
    if cfg.get("task") == "detection":
        from .det_eval import evaluate_detection

        return evaluate_detection(model, loader, device, t_cfg["amp"], progress=progress)
    if cfg.get("task", "classification") == "segmentation":
        from .seg_eval import evaluate_segmentation

        return evaluate_segmentation(model, loader, device, num_classes, cfg["eval"], t_cfg["amp"],
                                     t_cfg["channels_last"], IGNORE_INDEX, progress)  # fmt: skip
    return evaluate(model, loader, device, num_classes, t_cfg["amp"], t_cfg["channels_last"], progress)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 10_007 + rank) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


@torch.no_grad()
def evaluate(
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
    for images, targets, n_bad in tqdm(loader, desc="eval", leave=False, disable=not progress):
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


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def train(
    cfg: Mapping[str, Any],
    resume: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with ``cfg`` (see :mod:`gcnet.config`). Returns a summary dict.

    ``resume``: a checkpoint path, or ``"auto"`` for ``<output.dir>/last.pth``.
    ``stop_after``: stop after this many epochs in all (as if interrupted).
    """
    t_cfg, out_dir = cfg["train"], cfg["output"]["dir"]
    device = resolve_device(t_cfg["device"])
    distributed = du.init_distributed(device)
    rank, world = du.rank(), du.world_size()
    main = rank == 0
    if t_cfg["batch_size"] % world:
        raise ValueError(f"train.batch_size={t_cfg['batch_size']} is not divisible by {world} processes")
    seed = int(t_cfg["seed"])
    _seed_epoch(seed, -1, 0)  # identical model init on every rank

    seg = cfg.get("task", "classification") == "segmentation"
    det = cfg.get("task") == "detection"
    metric = primary_metric(cfg)
    train_ds, classes = build_data(cfg, "train")
    val_ds, _ = build_data(cfg, "val")
    num_classes = len(classes)
    model = build_model_from_config(cfg, num_classes)
    if t_cfg["sync_bn"] and distributed:
        model = convert_sync_batchnorm(model, device_type=device.type)
    model.to(device)
    if t_cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    ema = None
    if t_cfg["ema"]:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(float(t_cfg["ema_decay"])), use_buffers=True
        )
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=t_cfg["amp"] == "fp16")
    train_model: nn.Module = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t_cfg["compile"]:
        train_model = torch.compile(train_model)

    per_rank = t_cfg["batch_size"] // world
    workers = int(cfg["data"]["num_workers"])
    loader_kw = dict(num_workers=workers, pin_memory=device.type == "cuda", collate_fn=collate_skip_bad)
    if det:
        from gcnet.data.coco import AspectRatioBatchSampler, collate_detection

        loader_kw["collate_fn"] = collate_detection
        sampler = AspectRatioBatchSampler(train_ds.aspect_ratios(), per_rank, True, seed, world, rank)
        train_loader = DataLoader(train_ds, batch_sampler=sampler, **loader_kw)
    else:
        sampler = DistributedSampler(
            train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        train_loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, drop_last=True, **loader_kw)
    val_bs = int(cfg["eval"]["batch_size"]) if seg or det else per_rank
    val_loader = DataLoader(
        val_ds, batch_size=val_bs, sampler=ShardSampler(len(val_ds), world, rank), **loader_kw
    )
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the training set ({len(train_ds)} images) is smaller than one batch ({t_cfg['batch_size']})"
        )
    mix = None if seg or det else build_batch_mix(cfg["data"], num_classes)
    max_steps = total_steps(steps_per_epoch, cfg)
    epochs = math.ceil(max_steps / steps_per_epoch)

    start_epoch, step, best = 0, 0, -math.inf
    if resume:
        path = os.path.join(out_dir, "last.pth") if resume == "auto" else resume
        ck = load_checkpoint(path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        if ema is not None and ck.get("ema") is not None:
            ema.load_state_dict(ck["ema"])
        start_epoch, step, best = ck["epoch"] + 1, ck["step"], ck.get("best_metric", ck.get("best_top1"))
        if main:
            print(f"resumed from {path} at epoch {start_epoch}")
    logger = MetricsLogger(out_dir, cfg["output"]["tensorboard"], resume=bool(resume)) if main else None
    if main:
        print(
            f"training {cfg['model']['name']} on {cfg['data']['dataset']} ({len(train_ds)} train / "
            f"{len(val_ds)} val images, {num_classes} classes) for {epochs} epochs ({max_steps} steps), "
            f"batch {t_cfg['batch_size']} on {world} x {device.type}"
        )
    skipped_total = 0
    last_eval: dict[str, Any] = {}
    t_start = time.perf_counter()
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        sampler.set_epoch(epoch)
        _seed_epoch(seed, epoch, rank)
        train_model.train()
        loss_acc = torch.zeros(2, dtype=torch.float64, device=device)
        t0, seen = time.perf_counter(), 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not (main and progress),
                   leave=False, dynamic_ncols=True)  # fmt: skip
        lr = lr_at(step, steps_per_epoch, cfg)
        for images, targets, n_bad in bar:
            skipped_total += n_bad
            if images is None:
                continue
            if step >= max_steps:
                break
            lr = lr_at(step, steps_per_epoch, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            if det:
                images = [im.to(device, non_blocking=True) for im in images]
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            else:
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
            if mix is not None:
                images, targets = mix(images, targets)
            if t_cfg["channels_last"] and not det:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_ctx(device, t_cfg["amp"]):
                output = train_model(images, targets) if det else train_model(images)
            loss = task_loss(cfg, output, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t_cfg["clip_grad"]:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), float(t_cfg["clip_grad"]))
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            n = len(images)
            seen += n
            loss_acc[0] += loss.detach().double() * n
            loss_acc[1] += n
            if main and progress:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}",
                                img_s=f"{seen * world / (time.perf_counter() - t0):.0f}")  # fmt: skip
        du.all_reduce_sum(loss_acc)
        epoch_time = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "train_loss": float(loss_acc[0] / max(1.0, float(loss_acc[1]))),
            "images_per_s": float(loss_acc[1]) / epoch_time,
            "epoch_time_s": epoch_time,
        }
        final = epoch + 1 == epochs
        if final or (epoch + 1) % int(t_cfg["eval_every"]) == 0:
            eval_model = ema.module if ema is not None else model
            last_eval = _evaluate_task(cfg, eval_model, val_loader, device, num_classes)
            if "loss" in last_eval:
                row.update(val_loss=last_eval["loss"])
            if det:
                row.update({f"val_{k}": v for k, v in last_eval.items() if k.startswith(("bbox_", "segm_"))
                            and not k.endswith("_results")})  # fmt: skip
            elif seg:
                row.update(val_mIoU=last_eval["mIoU"], val_aAcc=last_eval["aAcc"], val_mAcc=last_eval["mAcc"])
            else:
                row["val_top1"] = last_eval["top1"]
                row[f"val_top{min(5, num_classes)}"] = last_eval[f"top{min(5, num_classes)}"]
        is_best = row.get(f"val_{metric}", -math.inf) > best
        if is_best:
            best = row[f"val_{metric}"]
        if main:
            logger.log(row)
            msg = f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}"
            if "val_top1" in row:
                msg += f", val loss {row['val_loss']:.4f}, val top-1 {row['val_top1']:.2f}%"
            if "val_bbox_AP" in row:
                msg += f", val bbox AP {row['val_bbox_AP']:.2f}"
                if "val_segm_AP" in row:
                    msg += f", segm AP {row['val_segm_AP']:.2f}"
            if "val_mIoU" in row:
                msg += (f", val loss {row['val_loss']:.4f}, val mIoU {row['val_mIoU']:.2f}%, "
                        f"aAcc {row['val_aAcc']:.2f}%")  # fmt: skip
            print(msg + f" ({epoch_time:.1f}s, {row['images_per_s']:.0f} img/s)", flush=True)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": rng_state(),
                "epoch": epoch,
                "step": step,
                "best_metric": best,
                "metric": metric,
                "config": dict(cfg),
                "classes": classes,
            }
            save_checkpoint(state, os.path.join(out_dir, "last.pth"))
            if is_best:
                save_checkpoint(state, os.path.join(out_dir, "best.pth"))
        du.barrier()
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    summary: dict[str, Any] = {
        "out_dir": out_dir,
        "metric": metric,
        "best": best,
        f"best_{metric}": best,
        "epochs_run": epoch + 1 - start_epoch,
        "train_time_s": time.perf_counter() - t_start,
        "num_classes": num_classes,
        "classes": classes,
        "skipped_images": skipped_total,
        "last_eval": {k: v for k, v in last_eval.items() if k != "confusion_matrix"},
        "final_weights": None,
    }
    if main:
        if epoch + 1 == epochs:
            weights = os.path.join(out_dir, "weights.safetensors")
            final_model = ema.module if ema is not None else model
            save_weights(final_model.state_dict(), weights, {"model": cfg["model"]["name"],
                                                             "classes": ",".join(classes)})  # fmt: skip
            summary["final_weights"] = weights
        if cfg["output"]["plot"] and logger.read():
            summary["curves"] = plot_curves(
                {cfg["model"]["name"]: logger.read()},
                os.path.join(out_dir, "curves.png"),
                metric=f"val_{metric}",
            )
        logger.close()
        if skipped_total:
            print(f"skipped {skipped_total} unreadable image(s) (data.skip_bad_images=true)")
    summary["history"] = logger.read() if main else []
    return summary
