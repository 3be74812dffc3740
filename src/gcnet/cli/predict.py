"""``gcnet predict``: a trained checkpoint on image (or video) files, folders and globs."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ._common import SET_HELP, config_overrides, load_trained

#: ``--output`` suffixes that name a results file (any other path is a folder for the PNGs)
RESULT_SUFFIXES = (".csv", ".jsonl", ".json")


def _positive(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return k


def expand_inputs(items: Sequence[str], extensions: Sequence[str], noun: str = "file") -> list[str]:
    """Files from the command line: a file as it is (checked later, one by one), a folder's
    files with one of ``extensions`` (recursively, sorted), a glob's matches (``**``
    recursive). A folder or glob that yields nothing, or a missing plain file, is an error
    naming it, raised before any file is read."""
    out: list[str] = []
    exts = tuple(e.lower() for e in extensions)
    for item in items:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(item) for f in fs if f.lower().endswith(exts)
            )
            if not found:
                raise FileNotFoundError(f"no {'/'.join(e[1:] for e in exts[:4])} files under {item}")
            out += found
        elif glob.has_magic(item) and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"no files match {item}")
            out += found
        elif not os.path.exists(item):
            raise FileNotFoundError(f"{noun} not found: {item}")
        else:
            out.append(item)
    return list(dict.fromkeys(out))  # each file once


def _flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A result as CSV columns: nested dicts dotted, a list of dicts numbered from 1
    (``top.1.class``), other lists as JSON."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            for i, x in enumerate(v, 1):
                out.update(_flatten(x, f"{key}.{i}."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def write_results(results: Sequence[Mapping[str, Any]], path: str) -> str:
    """The results as ``.csv`` (one row per file), ``.jsonl`` (one object per line) or
    ``.json`` (a list), written atomically."""
    import csv

    from gcnet.fileio import atomic_write

    def _write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            if path.endswith(".csv"):
                rows = [_flatten(r) for r in results]
                keys = list(dict.fromkeys(k for r in rows for k in r))
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(rows)
            elif path.endswith(".jsonl"):
                f.writelines(json.dumps(r) + "\n" for r in results)
            else:
                json.dump(list(results), f, indent=2)

    atomic_write(path, _write)
    return path


def _bad_input_errors():
    from gcnet.data import BadImageError
    from gcnet.data.video_io import BadVideoError

    return (BadImageError, BadVideoError, FileNotFoundError)


def run(args: argparse.Namespace) -> int:
    from gcnet.config import merge, parse_override
    from gcnet.utils.progress import progress_bar

    model, cfg, classes, task = load_trained(args.checkpoint)
    for item in config_overrides(args.set):
        cfg = merge(cfg, parse_override(item))
    paths = expand_inputs(args.images, task.input_extensions, task.sample_noun)
    total = len(paths)
    results_file = args.output if args.output and args.output.lower().endswith(RESULT_SUFFIXES) else None
    folder = args.output
    if results_file:  # PNGs (masks, overlays) beside the results file, in <stem>/
        folder = os.path.splitext(results_file)[0]
    options = {"topk": args.topk, "score_threshold": args.score_threshold, "output": folder}
    results, skipped = [], []
    if task.sample_noun == "image":  # a cheap look at every file first: stop before any output
        from gcnet.data.datasets import BadImageError, find_bad_images

        skipped = find_bad_images(paths, "quick", progress=not args.no_progress)
        if skipped and not args.skip_bad_images:
            more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
            raise BadImageError(f"{skipped[0][1]}{more}; --skip-bad-images goes on without them")
        paths = [p for p in paths if p not in {s for s, _ in skipped}]
        total = len(paths) + len(skipped)
    bad = _bad_input_errors()
    for path in progress_bar(paths, not args.no_progress and len(paths) > 1, desc="predict"):
        try:
            results += task.reporting.predict(model, cfg, classes, [path], options)
        except bad as e:
            if not args.skip_bad_images:
                raise
            skipped.append((path, str(e)))
    if results_file:
        print(f"wrote {write_results(results, results_file)} ({len(results)} {task.sample_noun}s)")
    elif results:
        print(
            json.dumps(results, indent=2)
            if args.json
            else task.reporting.format_predictions(results, options)
        )
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s) of {total} (--skip-bad-images):", file=sys.stderr)
        for _, why in skipped[:10]:
            print(f"  {why}", file=sys.stderr)
    if not results:
        raise ValueError(f"no prediction: all {total} file(s) were unreadable")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="top-k classes, segmentation masks or detections on images; top-k actions on videos"
    )
    p.add_argument("images", nargs="+", metavar="INPUT",
                   help="image files, folders (searched recursively) or quoted globs ('photos/**/*.jpg'); "
                        "videos for a video model")  # fmt: skip
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a gcnet run's best.pth / last.pth / weights.safetensors, or a saved model: hf-hub:ORG/NAME, "
        "local-dir:PATH or a folder with config.json + model.safetensors",
    )
    p.add_argument(
        "--topk", type=_positive, default=5, help="classification: how many classes to list per image"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + "; e.g. eval.mode=slide")
    p.add_argument("--output", "-o", default=None,
                   help="results.csv / .jsonl / .json: write the results there (mask / detection PNGs go to "
                        "the folder of the same name); any other path: the folder for the PNGs "
                        "(default: predictions)")  # fmt: skip
    p.add_argument("--skip-bad-images", action="store_true",
                   help="go on past unreadable files, count and list them (default: stop at the "
                        "first)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detection: draw boxes scoring at least this")  # fmt: skip
    p.set_defaults(fn=run)
