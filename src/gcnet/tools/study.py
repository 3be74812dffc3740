"""The cheap-global-context study (``gcnet study``): which block of the family to pick.

Every block of `gcnet.layers.list_blocks` (and the plain network) trained like for like on a
demo task (the far-key set by default: context is necessary), several seeds each, then one
table: params, multiply-adds (the paper's FLOPs), latency as a ratio to the plain network,
the demo's scores (mean +- std over seeds), identity at init; and a plot of each score
against the multiply-adds the block adds.

What lives here does not train (``gcnet.tools`` never does): the plan (`parse_blocks`,
`plan_variants`: which model and options each block trains as), the per-run results files
that make a study resumable (`load_result`, `save_result`), the identity-at-init check
(`identity_at_init`), the table (`study_rows`, `study_table`), the plot (`plot_study`) and
``report.md`` (`write_study_report`). ``gcnet.cli.study`` trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .demo_report import fmt_mean_std, mean_std

__all__ = [
    "PLAIN",
    "RESULT_FILE",
    "Variant",
    "block_option",
    "identity_at_init",
    "load_result",
    "parse_blocks",
    "plan_variants",
    "plot_study",
    "save_result",
    "study_rows",
    "study_table",
    "write_study_report",
]

#: the block name of the plain network (no block) in a study
PLAIN = "none"
#: what a finished (block, seed) run leaves in its folder; a study reuses it
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Variant:
    """One row of a study: the ``block`` (`PLAIN` for none), the registered ``model`` it
    trains as and the model options (``overrides``: ``(("head", "eca"),)``) that put the
    block in."""

    block: str
    model: str
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """The row's name and its runs' folder: ``plain`` or the block's name."""
        return "plain" if self.block == PLAIN else self.block

    @property
    def built_as(self) -> str:
        """How the model is built: ``fcn_tiny_s4 head=eca`` or ``gcnet_tiny_s4``."""
        return " ".join([self.model, *(f"{k}={v}" for k, v in self.overrides)])

    def sets(self) -> list[str]:
        """The config overrides (``--set``) that build it."""
        return [f"model.name={self.model}", *(f"model.kwargs.{k}={v}" for k, v in self.overrides)]


def parse_blocks(text: str | None, available: Sequence[str]) -> list[str]:
    """The blocks of ``--blocks``: comma-separated names of ``available`` (``all`` or None:
    every one); ``none`` / ``plain`` (always in a study) are accepted and dropped. An unknown
    name raises a one-line ValueError naming it and listing the valid ones."""
    if text is None or text.strip().lower() == "all":
        return list(available)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ValueError(f"--blocks: expected block names separated by commas (or 'all'), got {text!r}")
    unknown = [n for n in names if n not in available and n not in (PLAIN, "plain")]
    if unknown:
        raise ValueError(f"--blocks: unknown block(s) {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(available)} (or 'all'; the plain network is always in)")  # fmt: skip
    return list(dict.fromkeys(n for n in names if n not in (PLAIN, "plain")))


def block_option(model: str) -> tuple[str | None, str | None]:
    """(the model option that chooses the block of the registered ``model``, its registered
    block or None): ``("head", "gc")`` for ``gcnet_tiny_s4`` (the segmentors' decode-head
    block), ``("plugin", None)`` for ``slowonly_r18`` (the ResNets' and the video models'
    plug-in); ``(None, None)`` where no option chooses one (the seed segmentor, detectors)."""
    from gcnet.models.registry import model_config
    from gcnet.models.segmentation import SEGMENTORS
    from gcnet.models.video import VIDEO_MODELS

    if model in SEGMENTORS:
        head = SEGMENTORS[model]["head"]
        return (None, None) if head == "seed" else ("head", None if head == PLAIN else head)
    if model in VIDEO_MODELS:
        return "plugin", VIDEO_MODELS[model]["plugin"]
    try:
        plugin = model_config(model).get("plugin")
    except ValueError:
        return None, None
    return "plugin", None if plugin is None else plugin.block


def plan_variants(models: Sequence[str], blocks: Sequence[str]) -> list[Variant]:
    """The plain network (``models[0]``, a demo's first model) and, per block, the demo's own
    model with that block where it has one (its configuration: the demo's numbers), else the
    plain network with the block put in by its model option (`block_option`), built with
    the block's defaults."""
    plain = models[0]
    option, own = block_option(plain)
    if option is None or own is not None:
        why = f"it has a {own} block" if own else "no model option chooses its block"
        raise ValueError(f"the study needs a plain first model whose block a model option chooses; "
                         f"{plain!r}: {why}")  # fmt: skip
    registered: dict[str, str] = {}
    for m in models[1:]:
        opt, block = block_option(m)
        if opt == option and block is not None:
            registered.setdefault(block, m)
    out = [Variant(PLAIN, plain)]
    for b in blocks:
        out.append(Variant(b, registered[b]) if b in registered else Variant(b, plain, ((option, b),)))
    return out


# -- the per-run results (what makes a study resumable) --------------------------------------
def _fingerprint(cfg: Mapping[str, Any]) -> str:
    """A digest of a run's config less its output folder: a results file of another config
    (another recipe, ``--quick``, ``--set``) is not reused."""
    keep = {k: v for k, v in cfg.items() if k != "output"}
    text = json.dumps(keep, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_result(out_dir: str, cfg: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """Write ``out_dir/result.json``: ``result`` (the run's scores, its ``weights`` path,
    stored relative to ``out_dir`` so that the study's folder can move) with the config's
    digest; written last (and atomically), so it marks a finished run."""
    path = os.path.join(out_dir, RESULT_FILE)
    os.makedirs(out_dir, exist_ok=True)
    tmp = path + ".tmp"
    weights = os.path.relpath(os.path.abspath(result["weights"]), os.path.abspath(out_dir))
    with open(tmp, "w") as f:
        json.dump({**result, "weights": weights, "fingerprint": _fingerprint(cfg)}, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def load_result(out_dir: str, cfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """The finished run in ``out_dir``: its results file when one exists, was written for
    the same config and its weights are still there (``weights``: their path, ``out_dir``
    joined); else None (train it)."""
    path = os.path.join(out_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    if result.get("fingerprint") != _fingerprint(cfg):
        return None
    result["weights"] = os.path.join(out_dir, str(result.get("weights")))
    return result if os.path.isfile(result["weights"]) else None


# -- identity at init --------------------------------------------------------------------------
@torch.no_grad()
def identity_at_init(model: nn.Module, x: torch.Tensor, tol: float = 1e-9) -> bool | None:
    """Whether every block of ``model.context_blocks()`` returns its input unchanged in
    ``model`` as built (eval mode, float64, on ``x``; within ``tol`` times the input's
    scale), so that putting it into a trained network keeps that network's outputs; None
    for a model with no blocks. ``model`` is changed (float64, eval): pass a fresh one."""
    blocks = list(getattr(model, "context_blocks", dict)().values())
    if not blocks:
        return None
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [b.register_forward_hook(lambda m, i, o: pairs.append((i[0], o))) for b in blocks]
    try:
        model.double().eval()(x.double())
    finally:
        for h in hooks:
            h.remove()
    return bool(pairs) and all(
        o.shape == i.shape and float((o - i).abs().max()) <= tol * (1.0 + float(i.abs().max()))
        for i, o in pairs
    )


# -- the table, the plot, the report -----------------------------------------------------------
def study_rows(variants: Sequence[Variant], results: Mapping[str, Sequence[Mapping[str, Any]]],
               measured: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """One dict per variant (plain first): its runs' scores per seed (``metric``, ``scores``),
    train times, and the ``measured`` params, macs, latency ratio, identity."""
    rows = []
    for v in variants:
        runs = results[v.label]
        scores: dict[str, list[float]] = {}
        for r in runs:
            for k, val in r["scores"].items():
                scores.setdefault(k, []).append(float(val))
        rows.append({"label": v.label, "built_as": v.built_as, "metric": [float(r["metric"]) for r in runs],
                     "scores": scores, "train_times": [float(r["train_time_s"]) for r in runs],
                     "dirs": [os.path.dirname(r["weights"]) for r in runs], **measured[v.label]})  # fmt: skip
    return rows


def _judged(row: Mapping[str, Any], label: str) -> list[float]:
    return row["scores"][label] if label in row["scores"] else row["metric"]


def _vs_plain(row: Mapping[str, Any], plain: Mapping[str, Any], label: str) -> str:
    """The judged score's gap to the plain network, and whether it exceeds 2 std (of either,
    over the seeds): ``+31.20 (clear)``, ``-0.40 (tie)``, ``+2.10 (one seed)``."""
    (m, sd), (pm, psd) = mean_std(_judged(row, label)), mean_std(_judged(plain, label))
    gap = m - pm
    if min(len(_judged(row, label)), len(_judged(plain, label))) < 2:
        return f"{gap:+.2f} (one seed)"
    return f"{gap:+.2f} ({'clear' if abs(gap) > 2 * max(sd, psd) else 'tie'})"


def study_table(
    rows: Sequence[Mapping[str, Any]],
    metric_label: str,
    score_labels: Sequence[str],
    references: Sequence[tuple[str, Mapping[str, float]]] = (),
) -> list[str]:
    """The study's table as markdown lines, one row per block (plain first), then the
    task's reference rows (``task.demos.demo_references``: the far-key oracles)."""
    plain = rows[0]
    judged = score_labels[0] if score_labels else metric_label
    n = max(len(r["metric"]) for r in rows)
    over = f", mean +- std over {n} seeds" if n > 1 else ", one seed"
    header = ["block", "built as", "params", "+params", "MACs (M)", "+MACs (K)", "latency (x plain)",
              *(f"{s} (%{over})" for s in score_labels), f"val {metric_label} (%{over})",
              f"{judged}: vs plain", "identity at init", "train time (s)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        dm = r["macs"] - plain["macs"]
        lat = r.get("latency_ratio")
        ident = {True: "yes", False: "no", None: "-"}[r.get("identity")]
        cells = [f"**{r['label']}**", f"`{r['built_as']}`", f"{r['params']:,}",
                 f"{r['params'] - plain['params']:+,}", f"{r['macs'] / 1e6:.2f}",
                 f"{dm / 1e3:+.1f} ({100 * dm / plain['macs']:+.2f}%)",
                 "-" if lat is None else f"{lat:.2f}", *(fmt_mean_std(r["scores"][s]) for s in score_labels),
                 fmt_mean_std(r["metric"]), "-" if r is plain else _vs_plain(r, plain, judged), ident,
                 fmt_mean_std(r["train_times"], 0)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for label, values in references:
        known = (f"{values.get(k, float('nan')):.2f}" for k in [*score_labels, metric_label])
        cells = [f"*{label}*", *["-"] * 6, *known, *["-"] * 3]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot_study(
    rows: Sequence[Mapping[str, Any]], metric_label: str, score_labels: Sequence[str], path: str
) -> str:
    """A PNG with one panel per score (the demo's scores, then the metric): the score (mean,
    error bars one std over seeds) against the multiply-adds the block adds to the plain
    network, one labelled point per block."""
    from gcnet.utils.extras import require

    require("matplotlib", "gcnet study's plot").use("Agg")
    import matplotlib.pyplot as plt

    panels = [*score_labels, metric_label]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    added = [(r["macs"] - rows[0]["macs"]) / 1e3 for r in rows]
    positive = sorted(a for a in added if a > 0)
    for ax, label in zip(axes[0], panels):
        for r, x in zip(rows, added):
            m, sd = mean_std(r["scores"][label] if label in score_labels else r["metric"])
            ax.errorbar([x], [m], yerr=[sd], fmt="o", capsize=4, color="black" if r is rows[0] else None)
            ax.annotate(r["label"], (x, m), textcoords="offset points", xytext=(5, 5), fontsize=9)
        if len(positive) > 1 and positive[-1] > 30 * positive[0]:  # a wide spread: log past the smallest
            ax.set_xscale("symlog", linthresh=positive[0])
        ax.margins(x=0.08, y=0.08)  # room for the labels of the outermost points
        ax.set_xlabel("multiply-adds the block adds to the plain network (K, the paper's FLOPs)")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(f"{label}: mean +- std over seeds")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_study_report(path: str, *, title: str, intro: Sequence[str], table: Sequence[str], plot: str,
                       skipped: Mapping[str, str], runs: Sequence[str]) -> str:  # fmt: skip
    """``report.md``: the table, how to read it, the plot (a relative link), the blocks
    skipped and why, and the runs."""
    here = os.path.dirname(os.path.abspath(path))
    plot_link = os.path.relpath(os.path.abspath(plot), here)
    lines = [f"# {title}", "", *intro, "", "## Results", "", *table, "",
             "How to read it: *params* and *MACs* (multiply-adds, the paper's FLOPs) of the whole network "
             "and what the block adds to the plain one; *latency*: batch 1, the median over round-robin "
             "rounds of the ratio to the plain network's time in the same round; the scores: mean +- std "
             "over seeds; *vs plain*: the gap in the first score, *clear* beyond 2 std of either; "
             "*identity at init*: the block returns its input as built (it can go into a trained network "
             "without changing its outputs).", "",
             f"![accuracy against added multiply-adds]({plot_link})", ""]  # fmt: skip
    if skipped:
        lines += ["## Skipped", "", *(f"- {b}: {why}" for b, why in skipped.items()), ""]
    lines += ["## Runs", "", *runs, ""]
    os.makedirs(here, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
