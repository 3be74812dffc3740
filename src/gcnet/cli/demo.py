"""``gcnet demo``: train a plain model and its GC counterpart on a task's embedded data and
compare them in one table (the ``make demo`` job)."""

from __future__ import annotations

import argparse
import os

from ._common import SET_HELP, config_overrides


def _row(task, name: str, cfg, summary) -> tuple:
    import torch

    from gcnet.models import create_model
    from gcnet.tools.complexity import count_flops, count_params

    kw = dict(cfg["model"]["kwargs"], num_classes=task.model_classes(summary["num_classes"]))
    m = create_model(name, **kw).eval()
    if hasattr(m, "roi_heads"):  # no detection passes: the mask head is not counted
        m.roi_heads.score_thresh = 2.0
    with torch.no_grad():
        flops = count_flops(m, task.demo_input(cfg))
    last = summary["history"][-1]
    final = last.get(f"val_{task.metric}", float("nan"))
    return (name, count_params(m), flops, summary["best"], final, last["train_loss"], summary["train_time_s"],
            summary["out_dir"], task.demo_note(last))  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from gcnet.config import find_recipe, load_config
    from gcnet.engine import train
    from gcnet.engine.logger import plot_curves
    from gcnet.tasks import get_task

    task = get_task(args.task)
    spec = task.demo
    recipe = find_recipe(args.config or spec.recipe)
    output = args.output or spec.output
    runs, rows = {}, []
    for name in spec.models:
        sets = [*config_overrides(args.set), f"model.name={name}", f"output.dir={os.path.join(output, name)}"]
        cfg = task.prepare_demo(load_config(recipe, sets), output)
        print(f"\n=== {name} ===")
        s = train(cfg, progress=not args.no_progress)
        rows.append(_row(task, name, cfg, s))
        runs[name] = s["history"]
    curves = plot_curves(runs, os.path.join(output, "curves.png"), metric=f"val_{task.metric}")
    label = task.metric_label
    print(
        f"\n| model | params (M) | MFLOPs/img | best val {label} | final val {label} | final train loss "
        "| train time |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, p, f, best, final, loss, t, _, extra in rows:
        print(f"| {name} | {p / 1e6:.2f} | {f / 1e6:.1f} | {best:.2f}% | {final:.2f}%{extra} "
              f"| {loss:.4f} | {t:.0f}s |")  # fmt: skip
    print(f"\ncurves: {curves}")
    for name, *_, out, _ in rows:
        print(f"checkpoints of {name}: {out}/best.pth, {out}/last.pth, {out}/weights.safetensors")
    return 0


def add_parser(sub) -> None:
    from gcnet.tasks import TASKS

    demos = {name: t.demo for name, t in TASKS.items() if t.demo is not None}
    models = "; ".join(f"{n}: {' vs '.join(d.models)}" for n, d in demos.items())
    p = sub.add_parser("demo", help="train a plain and a GC model on the embedded data, compare")
    p.add_argument("--task", choices=tuple(demos), default="classification",
                   help=f"which task's demo ({models})")  # fmt: skip
    p.add_argument("--config", "-c", default=None, help="recipe (default: the packaged demo recipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + " (both models)")
    outputs = ", ".join(d.output for d in demos.values())
    p.add_argument("--output", "-o", default=None, help=f"output folder (default: {outputs})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=run)
