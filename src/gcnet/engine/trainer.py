"""The training loop, single process or DDP under torchrun, for any task of
`gcnet.tasks`: the task builds the data, the model and the loss and evaluates; the loop
owns schedules, AMP, EMA, DDP, gradient clipping, checkpoints and logging, and names no task.

Resume is exact, from the end of an epoch or from inside one: every epoch re-seeds the RNGs
from (seed, epoch, rank) and the sampler from (seed, epoch), every sample's augmentation
draws from (seed, epoch, index) (`EpochSeeded`), the learning
rate is a function of the step, and a checkpoint written inside an epoch
(``train.checkpoint_every`` / ``checkpoint_every_minutes``, or on SIGTERM / SIGINT) holds
each rank's RNG state and its place in the epoch. A run interrupted anywhere and resumed ends
with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader

from gcnet.data.samplers import ResumableBatches, ShardSampler
from gcnet.data.seeding import EpochSeeded
from gcnet.errors import ConfigError
from gcnet.fileio import atomic_link, atomic_write
from gcnet.layers.sync_bn import convert_sync_batchnorm
from gcnet.tasks import Task, get_task, task_of
from gcnet.utils import distributed as du
from gcnet.utils.device import autocast_ctx, resolve_device
from gcnet.utils.extras import MissingExtraError, require
from gcnet.utils.log import get_logger
from gcnet.utils.progress import progress_bar

from .checkpoint import (
    check_checkpoint_model,
    load_checkpoint,
    load_model_state,
    rng_state,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from .logger import MetricsLogger, plot_curves
from .optim import Schedule, build_optimizer, total_steps
from .preemption import StopRequest, agree
from .settings import EngineSettings

log = get_logger(__name__)

__all__ = ["train", "build_model_from_config", "resolve_paths", "write_config", "Run"]


def write_config(cfg: Mapping[str, Any], path: str) -> str:
    """The resolved config as YAML (atomically): the run's ``config.yaml``, a complete recipe
    (``gcnet train -c RUN/config.yaml`` trains the same run; with ``--resume auto`` goes on)."""
    import yaml

    def _dump(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("# the resolved config of this run (gcnet train -c THIS_FILE --resume auto goes on)\n")
            yaml.safe_dump(json.loads(json.dumps(cfg)), f, sort_keys=False)

    atomic_write(path, _dump)
    return path


def build_model_from_config(cfg: Mapping[str, Any], num_classes: int, pretrained=None) -> nn.Module:
    """The config's model for ``num_classes`` classes in the data (the task adds any extra
    class, e.g. detection's background); ``pretrained`` overrides ``model.pretrained``."""
    return task_of(cfg).build_model(cfg, num_classes, pretrained)


def _seed_epoch(seed: int, epoch: int, rank: int) -> None:
    s = (seed * 1_000_003 + epoch * 10_007 + rank) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


@dataclass(kw_only=True)
class Run:
    """Everything a training run holds between steps (built by keyword, `setup`). The
    loop reads ``settings`` and ``schedule``; ``cfg``, the config dict, goes to the task's
    hooks and into the checkpoints."""

    cfg: Mapping[str, Any]
    settings: EngineSettings
    schedule: Schedule
    task: Task
    device: torch.device
    rank: int
    world: int
    classes: list[str]
    model: nn.Module
    train_model: nn.Module  # DDP / compiled wrapper of ``model``
    ema: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_loader: DataLoader
    batches: ResumableBatches
    val_loader: DataLoader
    steps_per_epoch: int
    max_steps: int
    epochs: int
    batch_transform: Any = None
    start_epoch: int = 0
    step: int = 0
    best: float = -math.inf
    lr: float = 0.0
    skipped: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)
    logger: MetricsLogger | None = None
    nonfinite: int = 0  # training steps skipped for a non-finite loss
    resume_mid: dict[str, Any] | None = None  # this rank's place inside the epoch to resume
    stop: StopRequest | None = None
    interrupted: str | None = None  # the signal that stopped the run
    last_save: float = field(default_factory=time.monotonic)
    preflight_skipped: int = 0  # unreadable files the datasets found and left out before training

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> str:
        return self.settings.output.dir

    @property
    def last_path(self) -> str:
        return os.path.join(self.out_dir, "last.pth")


def _build_model(cfg, settings: EngineSettings, task: Task, num_classes: int, device: torch.device,
                 distributed: bool):  # fmt: skip
    """(model, training wrapper, EMA or None, optimizer, scaler)."""
    t = settings.train
    _seed_epoch(t.seed, -1, 0)  # identical model init on every rank
    model = task.build_model(cfg, num_classes)
    if t.sync_bn and distributed:
        model = convert_sync_batchnorm(model, device_type=device.type)
    model.to(device)
    if t.channels_last:
        model.to(memory_format=task.memory_format)
    ema = None
    if t.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        avg = get_ema_multi_avg_fn(float(t.ema_decay))
        ema = AveragedModel(model, multi_avg_fn=avg, use_buffers=True)
    optimizer = build_optimizer(model, settings)
    scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
    train_model: nn.Module = model
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if t.compile:
        train_model = torch.compile(train_model)
    return model, train_model, ema, optimizer, scaler


def _build_loaders(cfg, settings: EngineSettings, task: Task, train_ds, val_ds, device: torch.device,
                   world: int, rank: int):  # fmt: skip
    t = settings.train
    per_rank = t.batch_size // world
    kw = dict(num_workers=settings.num_workers, pin_memory=device.type == "cuda",
              collate_fn=task.collate_fn)  # fmt: skip
    spec = task.train_batches(train_ds, per_rank, t.seed, world, rank)
    if "batch_sampler" in spec:  # (an empty one is falsy: test the key, not the value)
        inner = spec["batch_sampler"]
    else:
        inner = BatchSampler(spec["sampler"], spec["batch_size"], spec["drop_last"])
    batches = ResumableBatches(inner)
    train_loader = DataLoader(EpochSeeded(train_ds, t.seed), batch_sampler=batches, **kw)
    val_loader = DataLoader(val_ds, batch_size=task.val_batch_size(cfg, per_rank),
                            sampler=ShardSampler(len(val_ds), world, rank), **kw)  # fmt: skip
    if len(train_loader) == 0:
        raise ValueError(task.too_small_message(train_ds, per_rank if world > 1 else t.batch_size))
    return train_loader, batches, val_loader


def resolve_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config with ``data.root`` made absolute, so that the checkpoint's config (read by
    ``gcnet eval`` / ``predict`` from any folder) and ``config.yaml`` still find the data."""
    cfg = dict(cfg)
    root = cfg["data"]["root"]
    if root:
        cfg["data"] = {**cfg["data"], "root": os.path.abspath(os.path.expanduser(str(root)))}
    return cfg


def check_device_settings(settings: EngineSettings, device: torch.device) -> None:
    """Settings that make no sense on ``device``, refused before any data is read."""
    if settings.train.amp == "fp16" and device.type == "cpu":
        raise ConfigError("train.amp=fp16 on the CPU runs ~40x slower than float32 (no fp16 kernels); "
                          "use train.amp=bf16 (or none) on the CPU, fp16 on a GPU")  # fmt: skip


def _warn_schedule(run: Run) -> None:
    warm = run.schedule.warmup
    if run.main and warm > run.max_steps:
        log.warning(f"warning: the warm-up ({warm} steps) is longer than the whole run ({run.max_steps} "
                    "steps): the learning rate never reaches optim.lr; lower sched.warmup_epochs / "
                    "sched.warmup_iters")  # fmt: skip


def _without_missing_plots(settings: EngineSettings) -> EngineSettings:
    """``output.plot`` (on by default) without matplotlib: the curves are a by-product of a
    run, so training goes on without them after one line that says what they need."""
    if not settings.output.plot:
        return settings
    try:
        require("matplotlib", "output.plot (the run's curves.png)", alternative="--set output.plot=false")
    except MissingExtraError as e:
        if du.rank() == 0:
            log.warning(f"note: {e}; training without curves.png")
        return replace(settings, output=replace(settings.output, plot=False))
    return settings


def setup(cfg: Mapping[str, Any]) -> Run:
    """Device, process group, data, model, optimizer and loaders of a run."""
    task = get_task(cfg["task"])
    task.check_run(cfg)
    settings = _without_missing_plots(EngineSettings.from_config(cfg))
    device = resolve_device(settings.train.device)
    check_device_settings(settings, device)
    distributed = du.init_distributed(device)
    rank, world = du.rank(), du.world_size()
    if settings.train.batch_size % world:
        raise ValueError(
            f"train.batch_size={settings.train.batch_size} is not divisible by {world} processes"
        )
    train_ds, classes = task.build_data(cfg, "train")
    val_ds, _ = task.build_data(cfg, "val")
    model, train_model, ema, optimizer, scaler = _build_model(cfg, settings, task, len(classes), device,
                                                              distributed)  # fmt: skip
    train_loader, batches, val_loader = _build_loaders(cfg, settings, task, train_ds, val_ds, device, world,
                                                       rank)  # fmt: skip
    steps = len(train_loader)
    max_steps = total_steps(steps, settings)
    run = Run(
        cfg=cfg, settings=settings, schedule=Schedule.from_config(settings, steps), task=task, device=device,
        rank=rank, world=world, classes=list(classes), model=model, train_model=train_model, ema=ema,
        optimizer=optimizer, scaler=scaler, train_loader=train_loader, batches=batches, val_loader=val_loader,
        steps_per_epoch=steps, max_steps=max_steps, epochs=math.ceil(max_steps / steps),
        batch_transform=task.batch_transform(cfg, len(classes)),
        preflight_skipped=sum(len(getattr(ds, "bad_files", ())) for ds in (train_ds, val_ds)),
    )  # fmt: skip
    _warn_schedule(run)
    return run


def resume_from(run: Run, path: str, auto: bool = False) -> bool:
    """Load a checkpoint into the run: its end-of-epoch state, or its place inside an epoch.
    ``auto``: a missing ``last.pth`` starts the run from scratch (with a note)."""
    if auto and not os.path.isfile(path):
        if run.main:
            log.info(f"--resume auto: no {path} yet, starting from scratch")
        return False
    ck = load_checkpoint(path)
    if not isinstance(ck, Mapping) or not {"model", "optimizer", "epoch", "step"} <= set(ck):
        raise ValueError(f"{path} is not a gcnet training checkpoint (no model/optimizer/epoch entries): "
                         "--resume takes a run's last.pth")  # fmt: skip
    name = run.settings.model_name
    check_checkpoint_model(path, ck.get("config"), name, hint=f" as this run asks (model.name={name}); "
                           "resume with the run's own model, or give another output folder")  # fmt: skip
    load_model_state(run.model, ck["model"], path, name)
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scaler.load_state_dict(ck["scaler"])
    if run.ema is not None and ck.get("ema") is not None:
        run.ema.load_state_dict(ck["ema"])
    run.start_epoch, run.step = ck["epoch"] + 1, ck["step"]
    run.best = ck.get("best_metric", ck.get("best_top1"))
    run.skipped, run.nonfinite = int(ck.get("skipped", 0)), int(ck.get("nonfinite", 0))
    mid = ck.get("mid_epoch")
    where = f"epoch {run.start_epoch}"
    if mid is not None:
        ranks = mid["ranks"]
        if len(ranks) != run.world and run.main:
            log.info(f"note: {path} was written by {len(ranks)} process(es), this run has {run.world}: "
                     "the rest of the epoch is not bit-exact")  # fmt: skip
        run.resume_mid = {**mid, **ranks[min(run.rank, len(ranks) - 1)]}
        where = f"epoch {run.start_epoch + 1}, batch {mid['batches']} (step {run.step})"
    if run.main:
        log.info(f"resumed from {path} at {where}")
    return True


def _nonfinite(run: Run, loss: torch.Tensor) -> None:
    """A non-finite loss (on any rank): skip the step while ``train.skip_nonfinite_steps``
    allows, else stop naming the step and the last good checkpoint."""
    limit = run.settings.train.skip_nonfinite_steps
    if run.nonfinite < limit:
        run.nonfinite += 1
        run.optimizer.zero_grad(set_to_none=True)
        if run.main:
            log.warning(f"skipped step {run.step}: non-finite loss ({run.nonfinite}/{limit} allowed)")
        return None
    last = run.last_path if os.path.isfile(run.last_path) else "none written yet"
    hint = "" if limit else "; train.skip_nonfinite_steps=N skips up to N such steps"
    raise FloatingPointError(
        f"loss is {loss.item()} at step {run.step}; the last good checkpoint is {last}. Lower optim.lr "
        f"or set train.clip_grad{hint}"
    )


def train_step(run: Run, inputs, targets) -> torch.Tensor | None:
    """One optimizer step at the scheduled learning rate; returns the (detached) loss, or
    None when the step was skipped for a non-finite loss."""
    t = run.settings.train
    run.lr = run.schedule.lr(run.step)
    for g in run.optimizer.param_groups:
        g["lr"] = run.lr
    inputs, targets = run.task.move_batch(inputs, targets, run.device, t.channels_last)
    if run.batch_transform is not None:
        inputs, targets = run.batch_transform(inputs, targets)
    with autocast_ctx(run.device, t.amp):
        output = run.task.forward(run.train_model, inputs, targets)
    loss = run.task.loss(run.cfg, output, targets)
    (bad,) = agree(not bool(torch.isfinite(loss)), device=run.device)
    if bad:
        return _nonfinite(run, loss)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if t.clip_grad:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), float(t.clip_grad))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.step += 1
    return loss.detach()


def _epoch_start(run: Run, epoch: int):
    """(loss accumulator, batches done, seconds already spent) at the start of an epoch, or
    at the place a mid-epoch checkpoint left it."""
    run.batches.set_epoch(epoch)
    run.train_loader.dataset.set_epoch(epoch)
    _seed_epoch(run.settings.train.seed, epoch, run.rank)
    run.train_model.train()
    run.lr = run.schedule.lr(run.step)
    mid, run.resume_mid = run.resume_mid, None
    if mid is None:
        return torch.zeros(2, dtype=torch.float64, device=run.device), 0, 0.0, None
    run.batches.skip = int(mid["batches"])
    acc = torch.tensor(mid["loss_acc"], dtype=torch.float64, device=run.device)
    return acc, int(mid["batches"]), float(mid["elapsed"]), mid["rng"]


def train_epoch(run: Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over the training data (or the rest of it); the epoch's log row."""
    loss_acc, done, spent, rng = _epoch_start(run, epoch)
    t0 = time.perf_counter() - spent
    it = iter(run.train_loader)
    if rng is not None:  # after the loader drew its seed: the generators as the checkpoint left them
        set_rng_state(rng)
    bar = progress_bar(it, run.main and progress, desc=f"epoch {epoch + 1}/{run.epochs}",
                       total=len(run.train_loader), initial=done)  # fmt: skip
    for inputs, targets, n_bad in bar:
        done += 1
        run.skipped += n_bad
        if run.step >= run.max_steps:
            break
        loss = None if inputs is None else train_step(run, inputs, targets)
        if loss is not None:
            loss_acc[0] += loss.double() * len(inputs)
            loss_acc[1] += len(inputs)
            if run.main and progress:
                speed = float(loss_acc[1]) * run.world / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.lr:.3g}", img_s=f"{speed:.0f}")
        if _checkpoint_inside_epoch(run, epoch, done, loss_acc, time.perf_counter() - t0):
            break
    if run.interrupted:
        return {}
    du.all_reduce_sum(loss_acc)
    epoch_time = time.perf_counter() - t0
    row = {"epoch": epoch + 1, "step": run.step, "lr": run.lr,
           "train_loss": float(loss_acc[0] / max(1.0, float(loss_acc[1]))),
           "images_per_s": float(loss_acc[1]) / epoch_time, "epoch_time_s": epoch_time}  # fmt: skip
    if run.settings.train.skip_nonfinite_steps:
        row["nonfinite_steps"] = run.nonfinite
    return row


def _checkpoint_inside_epoch(run: Run, epoch: int, done: int, loss_acc, elapsed: float) -> bool:
    """After a step: write ``last.pth`` when ``train.checkpoint_every`` (steps) or
    ``checkpoint_every_minutes`` says so, or a stop was requested; True to stop now."""
    t = run.settings.train
    every, minutes = t.checkpoint_every, t.checkpoint_every_minutes
    due = bool(every) and run.step > 0 and run.step % int(every) == 0 and done < len(run.train_loader)
    due |= bool(minutes) and run.main and time.monotonic() - run.last_save >= 60 * float(minutes)
    stop, due = agree(run.stop is not None and run.stop.signal is not None, due, device=run.device)
    if not (due or stop):
        return False
    state = {"rng": rng_state(), "loss_acc": loss_acc.tolist()}
    ranks = du.gather_objects(state)
    if run.main:
        mid = {"epoch": epoch, "batches": done, "elapsed": elapsed, "ranks": ranks}
        _save(run, {**checkpoint_state(run, epoch - 1), "mid_epoch": mid}, run.last_path)
    if stop:
        run.interrupted = run.stop.signal if run.stop is not None and run.stop.signal else "SIGTERM"
    return stop


def validate(run: Run) -> dict[str, float]:
    """Evaluate the EMA model (or the model) on the validation set; the ``val_*`` log entries."""
    t = run.settings.train
    model = run.ema.module if run.ema is not None else run.model
    run.last_eval = run.task.evaluate(run.cfg, model, run.val_loader, run.device, len(run.classes),
                                      amp=t.amp, channels_last=t.channels_last)  # fmt: skip
    return run.task.val_metrics(run.last_eval, len(run.classes))


def checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    """The run after ``epoch`` (0-based; -1: none) completed epochs."""
    return {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": rng_state(),
        "epoch": epoch,
        "step": run.step,
        "best_metric": run.best,
        "metric": run.task.metric,
        "config": dict(run.cfg),
        "classes": run.classes,
        "skipped": run.skipped,
        "nonfinite": run.nonfinite,
    }


def _save(run: Run, state: Mapping[str, Any], path: str) -> bool:
    """Write a checkpoint atomically; a failed write (disk full) leaves the previous file
    intact and says so, and the run goes on."""
    try:
        save_checkpoint(state, path)
    except OSError as e:
        log.warning(f"warning: could not write {path} ({e.strerror or e}); the previous checkpoint is intact")
        return False
    run.last_save = time.monotonic()
    return True


def end_epoch(run: Run, epoch: int, row: dict[str, Any], stopping: bool = False) -> None:
    """Track the best metric; on rank 0 log the row, print the summary line, save checkpoints:
    ``last.pth`` after every ``train.checkpoint_every_epochs``-th epoch, the last one, and when
    the run is ``stopping`` here (a signal, ``stop_after``); ``best.pth`` on a new best."""
    key = f"val_{run.task.metric}"
    is_best = row.get(key, -math.inf) > run.best
    if is_best:
        run.best = row[key]
    if not run.main:
        return
    run.logger.log(row)
    msg = f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}" + run.task.epoch_summary(row)
    log.info(msg + f" ({row['epoch_time_s']:.1f}s, {row['images_per_s']:.0f} {run.task.sample_noun}s/s)")
    every = run.settings.train.checkpoint_every_epochs
    due = stopping or epoch + 1 == run.epochs or (epoch + 1) % every == 0
    if not (due or is_best):
        return
    state = checkpoint_state(run, epoch)
    written = due and _save(run, state, run.last_path)
    if is_best:
        best = os.path.join(run.out_dir, "best.pth")
        # the same state as last.pth: a hard link instead of a second write of the file
        if not (written and atomic_link(run.last_path, best)):
            _save(run, state, best)


def finish(run: Run, epoch: int, t_start: float) -> dict[str, Any]:
    """The summary dict; on rank 0 the final weights (after the last epoch) and the curves."""
    metric = run.task.metric
    summary: dict[str, Any] = {
        "out_dir": run.out_dir, "metric": metric, "metric_label": run.task.metric_label, "best": run.best,
        f"best_{metric}": run.best, "epochs_run": epoch + 1 - run.start_epoch,
        "train_time_s": time.perf_counter() - t_start, "num_classes": len(run.classes),
        "classes": run.classes,
        "skipped_images": run.preflight_skipped + run.skipped, "final_weights": None,
        "interrupted": run.interrupted,
        "nonfinite_steps": run.nonfinite,
        "last_eval": {k: v for k, v in run.last_eval.items() if k != "confusion_matrix"},
    }  # fmt: skip
    if run.main:
        if epoch + 1 == run.epochs and not run.interrupted:
            weights = os.path.join(run.out_dir, "weights.safetensors")
            final_model = run.ema.module if run.ema is not None else run.model
            meta = {"model": run.settings.model_name, "classes": ",".join(run.classes),
                    "classes_json": json.dumps(run.classes), "config": json.dumps(run.cfg)}  # fmt: skip
            save_weights(final_model.state_dict(), weights, meta)
            summary["final_weights"] = weights
        history = run.logger.read()
        if run.settings.output.plot and history:
            path = os.path.join(run.out_dir, "curves.png")
            summary["curves"] = plot_curves({run.settings.model_name: history}, path, metric=f"val_{metric}")
        run.logger.close()
        if summary["skipped_images"]:
            log.warning(f"skipped {summary['skipped_images']} unreadable {run.task.sample_noun}(s) "
                        f"({run.task.skip_key}=true)")  # fmt: skip
        if run.interrupted:
            log.info(f"stopped by {run.interrupted} at step {run.step} (epoch {epoch + 1}); wrote "
                     f"{run.last_path}; resume with the same command and --resume auto")  # fmt: skip
    summary["history"] = run.logger.read() if run.main else []
    return summary


def _announce(run: Run) -> None:
    s = run.settings
    log.info(
        f"training {s.model_name} on {s.dataset} ({len(run.train_loader.dataset)} "
        f"train / {len(run.val_loader.dataset)} val {run.task.sample_noun}s, {len(run.classes)} classes) "
        f"for {run.epochs} epochs ({run.max_steps} steps), batch {s.train.batch_size} "
        f"on {run.world} x {run.device.type}"
    )


def train(
    cfg: Mapping[str, Any],
    resume: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train with ``cfg`` (see `gcnet.config`). Returns a summary dict
    (``interrupted``: the signal that stopped the run after writing ``last.pth``, or None).

    ``resume``: a checkpoint path, or ``"auto"`` for ``<output.dir>/last.pth`` (a fresh
    folder starts from scratch). ``stop_after``: stop after this many epochs in all.
    """
    cfg = resolve_paths(cfg)
    run = setup(cfg)
    resumed = bool(resume) and resume_from(
        run, run.last_path if resume == "auto" else resume, resume == "auto"
    )
    if run.main:
        run.logger = MetricsLogger(run.out_dir, run.settings.output.tensorboard, resume=resumed)
        write_config(cfg, os.path.join(run.out_dir, "config.yaml"))
        if resumed:
            run.logger.truncate(run.start_epoch)  # rows of epochs the checkpoint has not seen end
        _announce(run)
    t_start = time.perf_counter()
    epoch = run.start_epoch - 1
    with StopRequest() as run.stop:
        for epoch in range(run.start_epoch, run.epochs):
            row = train_epoch(run, epoch, progress)
            if run.interrupted:
                break
            if epoch + 1 == run.epochs or (epoch + 1) % run.settings.train.eval_every == 0:
                row.update(validate(run))
            (stop,) = agree(run.stop.signal is not None, device=run.device)
            halt = stop_after is not None and epoch + 1 >= stop_after
            end_epoch(run, epoch, row, stopping=stop or halt)
            du.barrier()
            if stop and epoch + 1 < run.epochs:  # last.pth is this epoch's
                run.interrupted = run.stop.signal or "SIGTERM"
                break
            if halt:
                break
    return finish(run, epoch, t_start)
