"""``gcnet analyze``: attention maps, the paper's cosine-distance study, complexity tables."""

from __future__ import annotations

import argparse
import os

from ._common import SET_HELP, load_trained_if_any, parse_image_input, parse_model_overrides


def analysis_model(args: argparse.Namespace):
    """(model, the run's config or None, task): a gcnet training checkpoint (its config
    builds the model), or ``--model NAME`` with optional weights (``--checkpoint`` path /
    'torchvision')."""
    from gcnet.models import create_model, load_checkpoint_file
    from gcnet.tasks import task_for_model

    ckpt = getattr(args, "checkpoint", None)
    trained = load_trained_if_any(ckpt)
    if trained is not None:
        from gcnet.engine.checkpoint import check_checkpoint_model

        model, cfg, _, task = trained
        check_checkpoint_model(ckpt, cfg, args.model)
        return model, cfg, task
    if not args.model:
        raise ValueError("--model is required unless --checkpoint is a gcnet training checkpoint")
    kw = parse_model_overrides(getattr(args, "set", None))
    if ckpt and ckpt != "torchvision" and "num_classes" not in kw:
        sd = load_checkpoint_file(ckpt)
        if "fc.weight" in sd:
            kw["num_classes"] = sd["fc.weight"].shape[0]
    model = create_model(args.model, pretrained=ckpt or False, **kw).eval()
    return model, None, task_for_model(args.model)


def _size(args: argparse.Namespace) -> int:
    """The square input side: ``--input``'s H (= W)."""
    return args.input[-1]


def _stems(paths: list[str]) -> list[str]:
    """Output names for input files: the stem, or the whole file name where stems collide
    (a.jpg and a.png)."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [s if stems.count(s) == 1 else os.path.basename(p).replace(".", "_") for s, p in zip(stems, paths)]


def _complexity(args: argparse.Namespace) -> int:
    if args.paper:
        from gcnet.tools.paper_tables import paper_table, write_paper_table

        rounds = args.repeats if args.repeats is not None else (1 if args.paper == "coco" else 3)
        rows = paper_table(args.paper, 0 if args.no_latency else rounds)
        md, csv_path = write_paper_table(rows, args.paper, args.output)
        print(open(md).read())
        print(f"wrote {md} and {csv_path}")
        return 0
    from gcnet.tools.ablation import complexity_table, write_table

    rows = complexity_table(
        _size(args), 0 if args.no_latency else (3 if args.repeats is None else args.repeats)
    )
    md, csv_path = write_table(rows, args.output)
    print(open(md).read())
    print(f"wrote {md} and {csv_path}")
    return 0


def _attention(args: argparse.Namespace, model, cfg, task) -> int:
    import torch

    from gcnet.tools.attention import AttentionRecorder

    if not args.images:
        raise ValueError("analyze attention needs at least one IMAGE")
    x, shown = task.analysis.analysis_inputs(args.images, cfg, _size(args), _clip_len(args))
    os.makedirs(args.output, exist_ok=True)  # once the inputs are read: a bad one leaves nothing
    with AttentionRecorder(model) as rec, torch.no_grad():
        model(x)
    records = list(rec.records.values())
    for i, stem in enumerate(_stems(args.images)):
        for f in task.analysis.plot_attention(shown[i], records, i, args.output, stem, args.queries):
            print(f"wrote {f}")
    return 0


def _clip_len(args: argparse.Namespace) -> int | None:
    """``--input NxCxTxHxW``'s T (video models), or None."""
    return args.input[2] if len(args.input) == 5 else None


def _cosine(args: argparse.Namespace, model, cfg, task) -> int:
    """The paper's query-independence study: distances between query positions, per stage."""
    import csv

    import torch

    from gcnet.tools.attention import AttentionRecorder, query_independence
    from gcnet.tools.visualize import plot_cosine, stage_of

    x = task.analysis.cosine_inputs(
        cfg, args.data, args.num_images, _size(args), _clip_len(args), args.output
    )
    os.makedirs(args.output, exist_ok=True)
    with AttentionRecorder(model, keep_features=True) as rec, torch.no_grad():
        for chunk in x.split(args.batch_size):
            model(chunk)
    stages: dict[str, list[dict]] = {}
    for n, r in rec.records.items():
        stages.setdefault(stage_of(n), []).append(query_independence(r))
    rows = [{"stage": st, "blocks": len(vs), **{k: sum(v[k] for v in vs) / len(vs) for k in vs[0]}}
            for st, vs in stages.items()]  # fmt: skip
    print(f"mean pairwise cosine distance (1 - cos) / 2 over query positions, {x.shape[0]} "
          f"{task.sample_noun}s\n")  # fmt: skip
    print("| stage | blocks | input | output | attention | attention JS div |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['blocks']} | {r['input']:.4f} | {r['output']:.4f} | "
              f"{r['attention']:.6f} | {r['attention_js']:.6f} |")  # fmt: skip
    csv_path = os.path.join(args.output, "cosine.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    png = plot_cosine(rows, os.path.join(args.output, "cosine.png"))
    print(f"\nwrote {csv_path} and {png}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.size is not None:  # the old spelling of --input 3xSxS
        args.input = (1, 3, args.size, args.size)
    if args.input[-1] != args.input[-2]:
        raise ValueError(
            f"--input: the analysis tools take square inputs, got {args.input[-2]}x{args.input[-1]}"
        )
    if args.what == "attention" and not args.images:
        raise ValueError("analyze attention needs at least one IMAGE")
    if args.what == "complexity":
        os.makedirs(args.output, exist_ok=True)
        return _complexity(args)
    model, cfg, task = analysis_model(args)
    if args.what == "attention":
        return _attention(args, model, cfg, task)
    return _cosine(args, model, cfg, task)


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="attention maps, the cosine-distance study, complexity tables")
    p.add_argument("what", choices=("attention", "cosine", "complexity"), help="which analysis")
    p.add_argument("images", nargs="*", help="images, or videos for a video model (attention)")
    p.add_argument("--model", default=None, help="registered model name")
    p.add_argument("--checkpoint", default=None, help="training checkpoint, weights file or 'torchvision'")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument(
        "--data", default=None, help="folder of images or videos (cosine; default: the synthetic set)"
    )
    p.add_argument("--num-images", type=int, default=8, help="cosine: images to analyse")
    p.add_argument("--batch-size", type=int, default=4, help="cosine: images per forward pass")
    p.add_argument("--input", type=parse_image_input, default=(1, 3, 224, 224), metavar="[N]xCxHxW",
                   help="square input (default 1x3x224x224; clips NxCxTxHxW, default 8 frames; "
                        "a run's own size wins)")  # fmt: skip
    p.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)  # old spelling of --input
    p.add_argument("--queries", type=int, default=4, help="NL query points to show")
    p.add_argument("--rounds", "--repeats", dest="repeats", type=int, default=None, metavar="N",
                   help="complexity: latency rounds, the median is shown (default 3; --paper coco: "
                        "1)")  # fmt: skip
    p.add_argument("--no-latency", action="store_true", help="complexity: skip the latency column")
    p.add_argument("--paper", choices=("imagenet", "coco"), default=None,
                   help="complexity: the paper's ImageNet (ResNet-50) or COCO (Mask R-CNN R50-FPN) ablation "
                        "table, the published params and FLOPs beside ours")  # fmt: skip
    p.add_argument("--output", "-o", default="runs/analyze", help="output folder (default runs/analyze)")
    p.set_defaults(fn=run)
