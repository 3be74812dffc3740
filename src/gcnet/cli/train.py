"""``gcnet train``: a recipe, overrides, single process or torchrun."""

from __future__ import annotations

import argparse

from ._common import SET_HELP


def train_config(args: argparse.Namespace):
    """The recipe (``-c``) with ``--set`` overrides and the shortcut flags applied."""
    from gcnet.config import load_config, merge, validate
    from gcnet.tasks import task_of

    from ._common import config_overrides

    overrides = config_overrides(args.set)
    if args.output:
        overrides.append(f"output.dir={args.output}")
    if getattr(args, "model", None):
        overrides.append(f"model.name={args.model}")
    if getattr(args, "skip_bad_images", False):
        overrides.append("data.skip_bad_images=true")
    # every command-line source first (recipe, --set, the flags, --data), then one validation
    cfg = load_config(args.config, overrides, check=False)
    if getattr(args, "data", None):
        cfg = merge(cfg, task_of(cfg).data_root_overrides(cfg, args.data))
    validate(cfg)
    return cfg


def run(args: argparse.Namespace) -> int:
    from gcnet.engine import train
    from gcnet.utils import distributed as du

    cfg = train_config(args)
    try:
        summary = train(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
        rank = du.rank()  # before the process group goes
    finally:
        du.cleanup()
    if rank == 0:
        files = "last.pth, best.pth" + (", weights.safetensors" if summary["final_weights"] else "")
        print(f"best val {summary['metric_label']} {summary['best']:.2f}%; "
              f"checkpoints in {summary['out_dir']} ({files})")  # fmt: skip
        if summary.get("curves"):
            print(f"curves: {summary['curves']}")
    # a preempted run (SIGTERM) that saved its state ended well; Ctrl-C is the shell's 130
    return 130 if summary["interrupted"] == "SIGINT" else 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model of any task from a recipe (torchrun for DDP)")
    p.add_argument("--config", "-c", default=None, help="YAML recipe (configs/*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--model", default=None, help="shortcut for model.name")
    p.add_argument("--data", default=None,
                   help="the root of the recipe's dataset (an ImageFolder tree with train/ and val/ for "
                        "classification, the Cityscapes / VOC / ADE20K / your own segmentation root, the "
                        "COCO root, a video root); on a recipe of the embedded data, your own data in "
                        "the task's format; other datasets: --set data.dataset=NAME")  # fmt: skip
    p.add_argument("--output", "-o", default=None, help="shortcut for output.dir")
    p.add_argument("--resume", default=None, help="checkpoint path, or 'auto' for <output>/last.pth")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N epochs (as if interrupted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad-images", action="store_true", help="drop unreadable images, count them")
    p.set_defaults(fn=run)
