"""``gcnet demo`` (the ``make demo`` job): train a task's demo models on its embedded data
with the same recipe (only the block differs), over one or more seeds, and compare them in one
table: the metric (mean +- std), params, FLOPs (multiply-adds), latency, train time.

The default demo, ``context``, is the paper's argument on a task built so that context is
necessary (``data.dataset: far_key``): plain vs GC vs SE vs NL, then the paper's cosine
study (``gcnet analyze cosine``) on the trained NL model and the attention maps of GC and NL
(``gcnet analyze attention``) on validation images, all in ``<output>/report.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

from ._common import SET_HELP, config_overrides

DEFAULT_DEMO = "context"


class DemoNames:
    """``--task``'s choices, read from the tasks when argparse checks or lists them: building
    the parser (every ``gcnet`` command, ``gcnet --help``) imports no task."""

    def __contains__(self, name: object) -> bool:
        return name in list_demos()

    def __iter__(self) -> Iterator[str]:
        return iter(list_demos())


class _DemoHelp(argparse.HelpFormatter):
    """Fills ``{demos}`` / ``{outputs}`` in the help texts when ``gcnet demo --help`` shows them."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if text and ("{demos}" in text or "{outputs}" in text):
            demos = list_demos()
            listing = "; ".join(f"{n}: {' vs '.join(spec.models)}" for n, (_, spec) in demos.items())
            outputs = ", ".join(sorted({spec.output for _, spec in demos.values()}))
            text = text.replace("{demos}", listing).replace("{outputs}", outputs)
        return text


def list_demos() -> dict:
    """Every demo by the name ``--task`` takes: each task's own, and its named extra demos."""
    from gcnet.tasks import TASKS

    out = {}
    for name, t in TASKS.items():
        if t.demos.spec is not None:
            out[name] = (t, t.demos.spec)
        for spec in t.demos.extra:
            out[spec.name] = (t, spec)
    return out


def train_one(task, cfg, log_path: str | None, progress: bool):
    """Train; with ``log_path`` the engine's lines go to that file instead of the terminal.
    Returns (summary, the final model)."""
    from gcnet.engine import train

    from ._common import load_trained_if_any

    if log_path is None:
        s = train(cfg, progress=progress)
    else:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w") as f, contextlib.redirect_stdout(f):
            s = train(cfg, progress=False)
    weights = s.get("final_weights") or os.path.join(s["out_dir"], "best.pth")
    model = load_trained_if_any(weights)[0]
    return s, model


def measure_complexity(task, cfg, models: dict, rounds: int) -> dict:
    """{name: (params, multiply-adds, latency ms)}: one input of the demo's size, batch 1,
    the models timed round-robin (median of ``rounds``)."""
    import torch

    from gcnet.tools.complexity import count_macs, count_params
    from gcnet.tools.profiling import median

    x = task.demos.demo_input(cfg)
    out = {}
    for name, m in models.items():
        m.eval()
        if hasattr(m, "roi_heads"):  # no detection passes: the mask head is not counted
            m.roi_heads.score_thresh = 2.0
        with torch.no_grad():
            out[name] = [count_params(m), count_macs(m, x), None]
    if rounds > 0:
        for name, times in time_models(models, x, rounds).items():
            out[name][2] = median(times)
    return out


def time_models(models: dict, x, rounds: int) -> dict[str, list[float]]:
    """{name: ms of each round}: ``model(x)`` of every model (in eval mode), timed
    round-robin (one call of each per round, 2 warm-up rounds), on one CPU thread: batch-1
    latency of small models is steadier on a shared machine."""
    import torch

    from gcnet.tools.profiling import round_robin

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return round_robin({n: (lambda m=m: m(x)) for n, m in models.items()}, rounds, 2)
    finally:
        torch.set_num_threads(threads)


def _analysis(
    spec, runs_dir: dict, output: str, quick: bool, main
) -> tuple[list[str], list[tuple[str, str]]]:
    """The cosine study on the NL model and the attention maps (``gcnet analyze``, run by
    ``main``, the command line's entry point); returns (report lines of the cosine section,
    [(caption, png)])."""
    import csv

    cos_lines: list[str] = []
    figures: list[tuple[str, str]] = []
    out = os.path.join(output, "analysis")
    if spec.cosine_model and spec.cosine_model in runs_dir:
        ckpt = os.path.join(runs_dir[spec.cosine_model], "best.pth")
        n = 2 if quick else 16
        print(
            f"\n=== the paper's cosine study on the trained {spec.cosine_model} ({n} validation images) ==="
        )
        if main(["analyze", "cosine", "--checkpoint", ckpt, "--num-images", str(n), "-o", out]) == 0:
            with open(os.path.join(out, "cosine.csv")) as f:
                rows = list(csv.DictReader(f))
            cos_lines = _cosine_section(
                spec.cosine_model, rows, n, os.path.relpath(os.path.join(out, "cosine.png"), output)
            )
    images = _save_val_images(runs_dir, spec, out, 1 if quick else 3)
    for model in (spec.attention_model, spec.cosine_model):
        if not model or model not in runs_dir or not images:
            continue
        ckpt = os.path.join(runs_dir[model], "best.pth")
        dest = os.path.join(out, f"attention_{model}")
        print(f"\n=== attention maps of the trained {model} on {len(images)} validation image(s) ===")
        if main(["analyze", "attention", *images, "--checkpoint", ckpt, "--queries", "4", "-o", dest]) == 0:
            for img in images:
                stem = os.path.splitext(os.path.basename(img))[0]
                for png in sorted(f for f in os.listdir(dest) if f.startswith(stem + "_")):
                    what = (
                        "per-query maps (4 query points, stars)"
                        if png.endswith("_queries.png")
                        else "attention"
                    )
                    figures.append((f"{model}, {stem}: {what}", os.path.join(dest, png)))
    return cos_lines, figures


def _save_val_images(runs_dir: dict, spec, out: str, n: int) -> list[str]:
    """The first ``n`` validation images of the demo's data as PNG files (for ``analyze
    attention``), rendered from the run's config."""
    from PIL import Image

    from ._common import load_trained_if_any

    name = spec.attention_model or spec.cosine_model
    if not name or name not in runs_dir:
        return []
    _, cfg, _, task = load_trained_if_any(os.path.join(runs_dir[name], "best.pth"))
    ds, _ = task.build_data(cfg, "val")
    if not hasattr(ds, "render"):  # a set of files (the video demo's .mp4s): the files themselves
        files = [s[0] for s in getattr(ds, "samples", [])[:n]]
        return [f for f in files if isinstance(f, str) and os.path.isfile(f)]
    os.makedirs(out, exist_ok=True)
    paths = []
    for i in range(min(n, len(ds))):
        img = ds.render(i)[0]
        p = os.path.join(out, f"val{i}.png")
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def _cosine_section(model: str, rows: list[dict], n: int, png: str) -> list[str]:
    from gcnet.tools.demo_report import closeness

    lines = [
        "## Is NL's attention query-independent? (the paper's Table 1)",
        "",
        f"`gcnet analyze cosine` on the trained {model}, {n} validation images: the mean pairwise cosine "
        "distance (1 - cos) / 2 between query positions of the block's input, of its output (the term it "
        "adds) and of the per-query attention maps. The paper's COCO row for the same NL (embedded "
        "Gaussian) is beside it.",
        "",
        "| block | input | output | attention | attention JS div |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {model}: {r['stage']} | {float(r['input']):.4f} | {float(r['output']):.4f} | "
                     f"{float(r['attention']):.4f} | {float(r['attention_js']):.4f} |")  # fmt: skip
    lines += ["| paper, COCO, NL E-Gaussian | 0.402 | 0.012 | 0.020 | |", ""]
    for r in rows:
        att, inp = float(r["attention"]), float(r["input"])
        ratio = closeness(inp, att)
        lines.append(f"Between query positions the attention maps of {r['stage']} are {ratio} than "
                     "the block's inputs (the paper, COCO: 20x). GC computes one map for all queries: 0 by "
                     "design.")  # fmt: skip
    return [*lines, "", f"![cosine]({png})"]


def _train_all(task, spec, recipe: str, output: str, seeds, quick: list[str], args, verbose: bool):
    """Every model x seed: (results, mean histories, seed-0 models, seed-0 run dirs, a config)."""
    from gcnet.config import load_config
    from gcnet.tools import demo_report as rep

    n_runs, k, t0 = len(spec.models) * len(seeds), 0, time.perf_counter()
    results, histories, models, runs_dir, cfg0 = [], {}, {}, {}, None
    for name in spec.models:
        res = {"name": name, "finals": [], "bests": [], "train_times": [], "scores": {}, "dirs": []}
        hist = []
        for seed in seeds:
            k += 1
            out_dir = (
                os.path.join(output, name) if len(seeds) == 1 else os.path.join(output, name, f"seed{seed}")
            )
            sets = [*quick, *config_overrides(args.set), f"model.name={name}", f"output.dir={out_dir}",
                    f"train.seed={seed}"]  # fmt: skip
            cfg = task.demos.prepare_demo(load_config(recipe, sets), output)
            cfg0 = cfg0 or cfg
            if verbose:
                print(f"\n=== {name} (seed {seed}) ===", flush=True)
            s, model = train_one(task, cfg, None if verbose else os.path.join(out_dir, "train.log"),
                                  not args.no_progress)  # fmt: skip
            last = s["history"][-1]
            final = last.get(f"val_{task.metric}", float("nan"))
            scores = task.demos.demo_scores(cfg, model)
            res["finals"].append(final)
            res["bests"].append(s["best"])
            res["train_times"].append(s["train_time_s"])
            res["dirs"].append(out_dir)
            res["note"] = task.demos.demo_note(last)
            for lab, v in scores.items():
                res["scores"].setdefault(lab, []).append(v)
            hist.append(s["history"])
            if seed == seeds[0]:
                models[name], runs_dir[name] = model, out_dir
                res["kind"], res["block"] = rep.block_kind(model)
            extra = "".join(f", {lab} {v:.2f}%" for lab, v in scores.items())
            so_far = time.perf_counter() - t0
            took = f"(train {s['train_time_s']:.0f} s, {so_far:.0f} s so far)"
            print(f"[{k}/{n_runs}] {name} seed {seed}: val {task.metric_label} {final:.2f}%{extra}"
                  f"{res['note']} {took}", flush=True)  # fmt: skip
        results.append(res)
        histories[name] = rep.mean_history(hist)
    return results, histories, models, runs_dir, cfg0


def run(args: argparse.Namespace) -> int:
    from gcnet.config import find_recipe
    from gcnet.engine.logger import plot_curves
    from gcnet.tools import demo_report as rep
    from gcnet.utils.extras import require

    require("matplotlib", "gcnet demo (its curves and figures)")  # now, not after the training
    task, spec = list_demos()[args.task]
    recipe = find_recipe(args.config or spec.recipe)
    output = args.output or spec.output
    seeds = spec.seeds[:1] if args.quick else spec.seeds
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        seeds = tuple(range(args.seeds))
    quick = list(spec.quick) if args.quick else []
    verbose = args.verbose or len(seeds) * len(spec.models) <= 2
    t0 = time.perf_counter()
    logs = "" if verbose else " (each run's log: <run>/train.log)"
    print(f"demo '{args.task}': {', '.join(spec.models)} x {len(seeds)} seed(s) = "
          f"{len(seeds) * len(spec.models)} runs of {recipe} -> {output}{logs}", flush=True)  # fmt: skip
    results, histories, models, runs_dir, cfg0 = _train_all(
        task, spec, recipe, output, seeds, quick, args, verbose
    )
    rounds = 1 if args.quick else args.rounds
    for name, (p, macs, lat) in measure_complexity(task, cfg0, models, rounds).items():
        next(r for r in results if r["name"] == name).update(params=p, macs=macs, latency_ms=lat)
    curves = plot_curves(histories, os.path.join(output, "curves.png"), metric=f"val_{task.metric}")
    scores = list(results[0]["scores"])
    table = rep.results_table(results, task.metric_label, scores, task.demos.demo_references(cfg0))
    verdict = rep.verdict(results, task.metric_label, scores)
    print("\n" + "\n".join(table) + "\n\n" + "\n".join(verdict))
    cos_lines, figures = _analysis(spec, runs_dir, output, args.quick, args.run_command)
    intro = [f"`gcnet demo --task {args.task}`: {', '.join(spec.models)}, the same recipe and budget, only "
             "the block differs.", *task.demos.demo_notes(cfg0, models)]  # fmt: skip
    total = time.perf_counter() - t0
    why = "" if len(seeds) > 1 else " One seed: the demo's spec (or --quick / --seeds) asks for one."
    runs = [f"- recipe `{recipe}`, overrides {quick + list(config_overrides(args.set)) or 'none'}; seeds "
            f"{list(seeds)} (train.seed: initialisation and data order; the data is the same).{why}",
            f"- latency: batch 1, one {task.sample_noun} of the demo's size, float32, one CPU thread, median "
            f"of {rounds} round-robin round(s); GFLOPs: multiply-adds (the paper's unit).",
            f"- the whole demo took {total:.0f} s on this machine ({os.cpu_count()} CPU cores), after "
            "Python's start and the imports.",
            *(f"- {r['name']}: " + ", ".join(f"`{d}`" for d in r["dirs"]) for r in results)]  # fmt: skip
    title = f"gcnet demo --task {args.task}: {' vs '.join(spec.models)}"
    report = rep.write_report(os.path.join(output, "report.md"), title=title, intro=intro, table=table,
                              verdict_lines=verdict, curves=curves, cosine=cos_lines, attention=figures,
                              runs=runs)  # fmt: skip
    print(f"\ncurves: {curves}")
    for r in results:
        d = r["dirs"][0]
        print(f"checkpoints of {r['name']}: {d}/best.pth, {d}/last.pth, {d}/weights.safetensors")
    print(f"\nreport: {report}   ({total:.0f} s in all)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a task's demo models (plain and with context blocks), compare",
                       formatter_class=_DemoHelp)  # fmt: skip
    p.add_argument("--task", choices=DemoNames(), default=DEFAULT_DEMO, metavar="DEMO",
                   help=f"which demo (default {DEFAULT_DEMO}, the main job; {{demos}})")  # fmt: skip
    p.add_argument("--config", "-c", default=None, help="recipe (default: the packaged demo recipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + " (every model)")
    p.add_argument("--output", "-o", default=None, help="output folder (default: {outputs})")
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds per model (default: the demo's, 3 for context)"
    )
    p.add_argument(
        "--quick", action="store_true", help="a cut-down run in seconds: tiny data, one epoch, one seed"
    )
    p.add_argument("--rounds", type=int, default=10, help="latency rounds (batch 1; the median is shown)")
    p.add_argument("--verbose", action="store_true", help="the engine's epoch lines on the terminal")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=run)
