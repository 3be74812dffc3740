"""``gcnet eval``: a trained checkpoint on its validation data (or another root), for any
task; under torchrun each rank takes its share of the images."""

from __future__ import annotations

import argparse
import os

from ._common import SET_HELP, config_overrides, default_eval_dir, load_trained, val_loader


def eval_config(args: argparse.Namespace, cfg, task):
    """The checkpoint's config with ``--set``, ``--data`` and ``--skip-bad-images`` applied."""
    from gcnet.config import merge, parse_override, validate

    for item in config_overrides(args.set):
        cfg = merge(cfg, parse_override(item))
    if args.data:
        cfg = merge(cfg, task.data_root_overrides(cfg, args.data))
    if args.skip_bad_images:
        if not task.skips_bad_images:
            raise ValueError(f"--skip-bad-images does not apply to {task.name} data")
        cfg = merge(cfg, {"data": {"skip_bad_images": True}})
    validate(cfg)
    task.check_run(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    from gcnet.utils import distributed as du
    from gcnet.utils.device import resolve_device

    model, cfg, classes, task = load_trained(args.checkpoint)
    cfg = eval_config(args, cfg, task)
    device = resolve_device(cfg["train"]["device"])
    du.init_distributed(device)
    out_dir = args.output or default_eval_dir(args.checkpoint)
    if du.rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
    try:
        ds, loader = val_loader(task, cfg, classes, du.rank(), du.world_size())
        progress = du.rank() == 0 and not args.no_progress
        res = task.evaluate(cfg, model.to(device), loader, device, len(classes), progress=progress,
                            out_dir=out_dir)  # fmt: skip
        rank = du.rank()
    finally:
        du.cleanup()
    if rank == 0:
        task.reporting.report_eval(res, cfg, classes, out_dir, len(ds))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a trained checkpoint (top-1/5, mIoU or COCO AP, per class)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a gcnet run's best.pth / last.pth / weights.safetensors, or a saved model: hf-hub:ORG/NAME, "
        "local-dir:PATH or a folder with config.json + model.safetensors",
    )
    p.add_argument("--data", default=None,
                   help="the root of the checkpoint's kind of dataset (ImageFolder tree, segmentation "
                        "dataset, COCO); its val split is evaluated")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; e.g. eval.flip=true")
    p.add_argument(
        "--output", "-o", default=None, help="folder for metrics.json etc. (default: <checkpoint dir>/eval)"
    )
    p.add_argument("--skip-bad-images", action="store_true", help="drop unreadable images, count them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=run)
