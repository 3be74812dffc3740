"""``gcnet study``: which cheap global context to pick. Every block of the family
(`gcnet.layers.list_blocks`, or ``--blocks``) and the plain network, trained like for like on
a demo's task (default: ``context``, the far-key set where context is necessary; ``--task
video``: the video demo), on the demo's recipe and budget, several seeds each; one table
(params, multiply-adds, latency ratio to the plain network, the demo's scores as mean +- std,
identity at init) and a plot of the scores against the added multiply-adds, in
``<output>/report.md``.

Resumable: each finished (block, seed) run leaves ``<output>/<block>/seed<k>/result.json``;
run the same command again and those runs are reused, not retrained (a results file of
another config, or whose weights are gone, is not). The plan, the results files, the table
and the plot are `gcnet.tools.study`'s; the training and the measurements reuse ``gcnet
demo``'s.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

from ._common import SET_HELP, config_overrides
from .demo import DEFAULT_DEMO, DemoNames, list_demos, measure_complexity, time_models, train_one

DEFAULT_OUTPUT = "runs/study"
DEFAULT_SEEDS = 3
#: ``--quick`` for a demo without cut-down overrides of its own: tiny data, one epoch
QUICK = ("data.train_size=16", "data.val_size=8", "train.epochs=1")


@dataclass
class _Job:
    """One (block, seed) run: its config, folder, and its earlier result if it finished."""

    variant: Any
    seed: int
    cfg: dict
    out_dir: str
    done: dict | None


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def _jobs(task, variants, seeds, recipe: str, quick: list[str], args, output: str) -> list[_Job]:
    """Every variant x seed with its config (the demo's recipe, ``--quick``'s and ``--set``'s
    overrides, then the variant's model) and, where it finished before, its result."""
    from gcnet.config import load_config
    from gcnet.tools.study import load_result

    jobs = []
    for v in variants:
        for seed in seeds:
            out_dir = os.path.join(output, v.label, f"seed{seed}")
            sets = [
                *quick,
                *config_overrides(args.set),
                *v.sets(),
                f"output.dir={out_dir}",
                f"train.seed={seed}",
            ]
            cfg = task.demos.prepare_demo(load_config(recipe, sets), output)
            jobs.append(_Job(v, seed, cfg, out_dir, load_result(out_dir, cfg)))
    return jobs


def _preflight(task, jobs: list[_Job]) -> tuple[dict[str, bool | None], dict[str, str]]:
    """Build each variant once, untrained, and run it on one demo input (float64): whether
    its blocks are the identity at init, and the variants that do not build or run on this
    task's inputs (a block for other ranks), with the one-line reason: skipped, not trained."""
    from gcnet.tools.study import identity_at_init

    identity: dict[str, bool | None] = {}
    skipped: dict[str, str] = {}
    for job in jobs:
        label = job.variant.label
        if label in identity or label in skipped:
            continue
        try:
            model = task.build_model(job.cfg, 4, pretrained=False)
            identity[label] = identity_at_init(model, task.demos.demo_input(job.cfg))
        except (ValueError, RuntimeError, TypeError, AttributeError, NotImplementedError) as e:
            if job is jobs[0]:  # the plain network: nothing to compare with
                raise
            skipped[label] = (
                f"`{job.variant.built_as}` does not build or run here: "
                + (str(e).strip().splitlines() or [type(e).__name__])[0]
            )
    return identity, skipped


def _train(task, jobs: list[_Job], args, verbose: bool, t0: float) -> dict[str, list[dict]]:
    """Train every job that has no result yet (reuse the others), one progress line per run;
    returns {label: [result per seed]}."""
    from gcnet.tools.study import save_result

    results: dict[str, list[dict]] = {}
    to_train = sum(j.done is None for j in jobs)
    spent: list[float] = []
    for k, job in enumerate(jobs, 1):
        label, res = job.variant.label, job.done
        if res is None:
            t = time.perf_counter()
            if verbose:
                print(f"\n=== {label} (seed {job.seed}): {job.variant.built_as} ===", flush=True)
            log = None if verbose else os.path.join(job.out_dir, "train.log")
            s, model = train_one(task, job.cfg, log, not args.no_progress)
            res = {"block": job.variant.block, "built_as": job.variant.built_as, "seed": job.seed,
                   "metric": s["history"][-1].get(f"val_{task.metric}", float("nan")),
                   "scores": task.demos.demo_scores(job.cfg, model), "train_time_s": s["train_time_s"],
                   "weights": s.get("final_weights") or os.path.join(s["out_dir"], "best.pth")}  # fmt: skip
            save_result(job.out_dir, job.cfg, res)
            spent.append(time.perf_counter() - t)
            how = f"train {s['train_time_s']:.0f} s"
        else:
            how = "reused: finished before"
        results.setdefault(label, []).append(res)
        left = to_train - len(spent)
        eta = f", ETA {_duration(left * sum(spent) / len(spent))}" if spent and left else ""
        extra = "".join(f", {lab} {v:.2f}%" for lab, v in res["scores"].items())
        so_far = _duration(time.perf_counter() - t0)
        print(f"[{k}/{len(jobs)}] {label} seed {job.seed}: val {task.metric_label} {res['metric']:.2f}%"
              f"{extra} ({how}; {so_far} so far{eta})", flush=True)  # fmt: skip
    return results


def _measure(task, variants, results, cfg, rounds: int, identity) -> tuple[dict[str, dict], dict]:
    """Per variant (its seed-0 trained model): params, multiply-adds, and the latency at
    batch 1 as the median over round-robin rounds of the ratio to the plain network's time
    in the same round; returns ({label: measured}, {label: model})."""
    from gcnet.tools.profiling import median, ratio_stats

    from ._common import load_trained_if_any

    models = {v.label: load_trained_if_any(results[v.label][0]["weights"])[0] for v in variants}
    counts = measure_complexity(task, cfg, models, rounds=0)
    times = time_models(models, task.demos.demo_input(cfg), rounds) if rounds > 0 else {}
    plain = variants[0].label
    out = {}
    for label, (params, macs, _) in counts.items():
        out[label] = {"params": params, "macs": macs, "identity": identity[label],
                      "latency_ms": median(times[label]) if times else None,
                      "latency_ratio": ratio_stats(times, label, plain)[0] if times else None}  # fmt: skip
    return out, models


def _runs_section(jobs, results, recipe, sets, seeds, total: float, rounds: int) -> list[str]:
    fresh = sum(j.done is None for j in jobs)
    per_run = [r["train_time_s"] for rs in results.values() for r in rs]
    return [
        f"- recipe `{recipe}` (the `gcnet demo` budget), overrides {sets or 'none'}; seeds {list(seeds)} "
        "(train.seed: initialisation and data order; the data is the same).",
        f"- {len(jobs)} runs: {fresh} trained now, {len(jobs) - fresh} reused (finished before: their "
        f"`<block>/seed<k>/result.json`); training {sum(per_run) / len(per_run):.0f} s per run on average "
        "(the scores after it not counted).",
        f"- the whole study took {_duration(total)} here ({os.cpu_count()} CPU cores), after Python's start; "
        f"latency over {rounds} round-robin round(s), float32, one CPU thread.",
        *(
            f"- {label}: " + ", ".join(f"`{os.path.dirname(r['weights'])}`" for r in rs)
            for label, rs in results.items()
        ),
    ]


def _setup(args: argparse.Namespace):
    """(task, demo spec, variants, seeds, output folder, recipe, --quick's overrides): every
    check of the command line, before anything is built or trained."""
    from gcnet.config import find_recipe
    from gcnet.layers import list_blocks
    from gcnet.tools.study import parse_blocks, plan_variants

    task, spec = list_demos()[args.task]
    variants = plan_variants(spec.models, parse_blocks(args.blocks, list_blocks()))
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = tuple(range(args.seeds or (1 if args.quick else DEFAULT_SEEDS)))
    output = args.output or (DEFAULT_OUTPUT if args.task == DEFAULT_DEMO else f"{DEFAULT_OUTPUT}_{args.task}")
    recipe = find_recipe(args.config or spec.recipe)
    quick = list(spec.quick or QUICK) if args.quick else []
    return task, spec, variants, seeds, output, recipe, quick


def run(args: argparse.Namespace) -> int:
    from gcnet.tools import study as st
    from gcnet.utils.extras import require

    require("matplotlib", "gcnet study (its plot)")  # now, not after the training
    task, spec, variants, seeds, output, recipe, quick = _setup(args)
    t0 = time.perf_counter()
    jobs = _jobs(task, variants, seeds, recipe, quick, args, output)
    identity, skipped = _preflight(task, jobs)
    for label, why in skipped.items():
        print(f"skipping {label}: {why}", flush=True)
    variants = [v for v in variants if v.label not in skipped]
    jobs = [j for j in jobs if j.variant.label not in skipped]
    done = sum(j.done is not None for j in jobs)
    reused = f" ({done} finished before: reused)" if done else ""
    print(f"study '{args.task}': plain + {len(variants) - 1} blocks x {len(seeds)} seed(s) = "
          f"{len(jobs)} runs of {recipe} -> {output}{reused}", flush=True)  # fmt: skip
    results = _train(task, jobs, args, args.verbose, t0)
    rounds = min(args.rounds, 2) if args.quick else args.rounds
    measured, models = _measure(task, variants, results, jobs[0].cfg, rounds, identity)
    rows = st.study_rows(variants, results, measured)
    scores = list(rows[0]["scores"])
    table = st.study_table(rows, task.metric_label, scores, task.demos.demo_references(jobs[0].cfg))
    plot = st.plot_study(rows, task.metric_label, scores, os.path.join(output, "study.png"))
    print("\n" + "\n".join(table))
    notes = task.demos.demo_notes(jobs[0].cfg, {variants[0].model: models["plain"]})
    intro = [f"`gcnet study --task {args.task}`: the plain network and {len(variants) - 1} blocks of the "
             "family, each trained on the demo's recipe and budget, only the block differs. A block the "
             f"demo trains keeps the demo's configuration ({', '.join(spec.models[1:])}); any other is the "
             f"plain {spec.models[0]} with the block put in by its model option, built with the block's "
             "defaults.", *notes]  # fmt: skip
    sets = quick + list(config_overrides(args.set))
    runs = _runs_section(jobs, results, recipe, sets, seeds, time.perf_counter() - t0, rounds)
    report = st.write_study_report(os.path.join(output, "report.md"), title=f"gcnet study --task {args.task}",
                                   intro=intro, table=table, plot=plot, skipped=skipped,
                                   runs=runs)  # fmt: skip
    print(f"\nplot: {plot}\nreport: {report}   ({_duration(time.perf_counter() - t0)} in all)")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "study", help="train every context block of the family on a demo task, compare cost and accuracy",
        description="Train the plain network and every block of gcnet.layers.list_blocks() (or --blocks) "
        "on a demo's task, recipe and budget, several seeds each, and compare them in <output>/report.md: "
        "params, multiply-adds, latency ratio, the demo's scores (mean +- std), identity at init, and a plot "
        "of the scores against the added multiply-adds. Resumable: a finished (block, seed) run whose "
        "<output>/<block>/seed<k>/result.json exists (same config, weights still there) is reused, not "
        "retrained, so an interrupted study goes on where it stopped when run again.",
    )  # fmt: skip
    p.add_argument("--task", choices=DemoNames(), default=DEFAULT_DEMO, metavar="DEMO",
                   help=f"whose task, recipe and budget (default {DEFAULT_DEMO}: the far-key set, where "
                   "context is necessary; video: the video demo)")  # fmt: skip
    p.add_argument("--blocks", default=None, metavar="B1,B2,...",
                   help="the blocks to train beside the plain network, by gcnet.create_block name "
                   "(default: all, every name of gcnet.layers.list_blocks())")  # fmt: skip
    p.add_argument("--config", "-c", default=None, help="recipe (default: the demo's packaged recipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP + " (every run)")
    p.add_argument("--output", "-o", default=None,
                   help=f"output folder (default {DEFAULT_OUTPUT}, {DEFAULT_OUTPUT}_<task> for another "
                   "task); its finished runs are reused")  # fmt: skip
    p.add_argument("--seeds", type=int, default=None, help=f"seeds per block (default {DEFAULT_SEEDS})")
    p.add_argument("--quick", action="store_true",
                   help="a cut-down run in seconds per block: tiny data, one epoch, one seed "
                   "(for tests)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=30, help="latency rounds (batch 1; median of the ratios)")
    p.add_argument("--verbose", action="store_true", help="the engine's epoch lines on the terminal")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(fn=run)
