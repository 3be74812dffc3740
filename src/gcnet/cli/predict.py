"""``gcnet predict``: a trained checkpoint on image (or video) files."""

from __future__ import annotations

import argparse
import json

from ._common import SET_HELP, config_overrides, load_trained


def _positive(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return k


def run(args: argparse.Namespace) -> int:
    from gcnet.config import merge, parse_override

    model, cfg, classes, task = load_trained(args.checkpoint)
    for item in config_overrides(args.set):
        cfg = merge(cfg, parse_override(item))
    options = {"topk": args.topk, "score_threshold": args.score_threshold, "output": args.output}
    results = task.predict(model, cfg, classes, args.images, options)
    print(json.dumps(results, indent=2) if args.json else task.format_predictions(results, options))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="top-k classes, segmentation masks or detections on images; top-k actions on videos"
    )
    p.add_argument("images", nargs="+", help="image files (video files for a video model)")
    p.add_argument(
        "--checkpoint", required=True, help="a gcnet run's best.pth / last.pth / weights.safetensors"
    )
    p.add_argument(
        "--topk", type=_positive, default=5, help="classification: how many classes to list per image"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; e.g. eval.mode=slide")
    p.add_argument("--output", "-o", default=None,
                   help="folder for mask / detection PNGs (default: predictions)")  # fmt: skip
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detection: draw boxes scoring at least this")  # fmt: skip
    p.set_defaults(fn=run)
