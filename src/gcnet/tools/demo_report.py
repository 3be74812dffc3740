"""What ``gcnet demo`` reports: the block of each model, mean +- std over seeds, the averaged
curves, the comparison table and ``report.md``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from gcnet.layers import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation

__all__ = ["block_kind", "closeness", "mean_history", "mean_std", "write_report"]

# below this mean cosine distance the attention maps of the query positions are the same map
# up to float rounding: a ratio to it measures the rounding, not the model
NEAR_ZERO_DISTANCE = 1e-4


def closeness(inputs: float, attention: float) -> str:
    """How much closer to each other the attention maps of the query positions are than the
    block's inputs, in words: '20.1x closer', or, where the attention distance is ~0 (below
    `NEAR_ZERO_DISTANCE`), no ratio but both distances ('the same map up to ...')."""
    if attention < NEAR_ZERO_DISTANCE:
        return (
            f"the same map up to float rounding (distance {attention:.1e} against the inputs' "
            f"{inputs:.4f}: too close to 0 for a meaningful ratio), so far closer"
        )
    return f"{inputs / attention:.1f}x closer"


def block_kind(model: nn.Module) -> tuple[str, str]:
    """(short kind, description) of a model's context blocks: ("plain", "none"), ("GC",
    "GC r1/4 (att, add) x1"), ("NL", ...), ("SE", ...), ("SNL", ...); another block of the
    model's ``context_blocks()`` by its class name, as kind and description."""
    found: dict[str, list[str]] = {}
    for m in model.modules():
        if isinstance(m, NonLocalBlock):
            sub = {False: "", "input": ", sub-sampled input"}.get(m.sub_sample, ", sub-sampled phi, g")
            found.setdefault("NL", []).append(f"NL ({m.mode.replace('_', ' ')}{sub})")
        elif isinstance(m, SqueezeExcitation):
            found.setdefault("SE", []).append(f"SE r{_ratio(m.ratio)} (avg, scale)")
        elif isinstance(m, SimplifiedNonLocalBlock):
            found.setdefault("SNL", []).append("SNL (att, one C->C conv, add)")
        elif isinstance(m, GlobalContextBlock):
            fusion = "+".join(m.fusion)
            found.setdefault("GC", []).append(f"GC r{_ratio(m.ratio)} ({m.pooling}, {fusion})")
    if not found:  # another block of the family (ECA, CBAM, ...): its class, once per kind
        others = getattr(model, "context_blocks", dict)().values()
        for m in others:
            found.setdefault(type(m).__name__, []).append(type(m).__name__)
    if not found:
        return "plain", "none"
    kind = next(iter(found))
    descs = found[kind]
    return kind, descs[0] + (f" x{len(descs)}" if len(descs) > 1 else "")


def _ratio(r: float | None) -> str:
    if r is None:
        return " C->C"
    inv = 1 / r
    return f"1/{inv:.0f}" if abs(inv - round(inv)) < 1e-6 else f"{r:g}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = [float(x) for x in values]
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return m, sd


def fmt_mean_std(values: Sequence[float], digits: int = 2) -> str:
    m, sd = mean_std(values)
    return f"{m:.{digits}f}" if len(values) == 1 else f"{m:.{digits}f} +- {sd:.{digits}f}"


def mean_history(histories: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per epoch, the mean of every numeric entry over runs (epochs all runs have)."""
    n = min(len(h) for h in histories)
    out = []
    for e in range(n):
        rows = [h[e] for h in histories]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and all(k in r for r in rows)]
        out.append({k: sum(float(r[k]) for r in rows) / len(rows) for k in keys})
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def results_table(results: Sequence[Mapping[str, Any]], metric_label: str, score_labels: Sequence[str],
                  references: Sequence[tuple[str, Mapping[str, float]]] = ()) -> list[str]:  # fmt: skip
    """The demo's table as markdown lines (one row per model, then the reference rows)."""
    n_seeds = max(len(r["finals"]) for r in results)
    over = f", mean +- std over {n_seeds} seeds" if n_seeds > 1 else ""
    giga = max(r["macs"] for r in results) >= 1e9  # small models in MFLOPs
    flops = f"{'G' if giga else 'M'}FLOPs (mult-adds)"
    header = ["model", "block", f"val {metric_label} (%{over})", *(f"{s} (%)" for s in score_labels),
              "params (M)", flops, "latency (ms)", "train time (s)"]  # fmt: skip
    rows = []
    for r in results:
        rows.append([r["name"], r["block"], fmt_mean_std(r["finals"]),
                     *(fmt_mean_std(r["scores"][s]) for s in score_labels),
                     f"{r['params'] / 1e6:.3f}",
                     f"{r['macs'] / 1e9:.3f}" if giga else f"{r['macs'] / 1e6:.2f}",
                     f"{r['latency_ms']:.1f}" if r.get("latency_ms") is not None else "-",
                     fmt_mean_std(r["train_times"], 0)])  # fmt: skip
    for label, metrics in references:
        nan = float("nan")
        rows.append([f"*{label}*", "-", f"{metrics.get(metric_label, nan):.2f}",
                     *(f"{metrics.get(s, nan):.2f}" for s in score_labels), "-", "-", "-", "-"])  # fmt: skip
    return _table(header, rows)


def verdict(
    results: Sequence[Mapping[str, Any]], metric_label: str, score_labels: Sequence[str] = ()
) -> list[str]:
    """What the measurement says: each context model against the plain one (first), and GC
    against NL where both ran. Judged on the first score when there is one (the demo's
    "object acc.": the pixels only context decides), else on the metric; a difference is
    clear beyond 2 standard deviations (of either model, over the seeds)."""
    base = results[0]

    def judged(r):
        return r["scores"][score_labels[0]] if score_labels else r["finals"]

    label = score_labels[0] if score_labels else metric_label
    bm = mean_std(base["finals"])[0]
    lines = [f"Judged on {label}:"]
    for r in results[1:]:
        m = mean_std(r["finals"])[0]
        (jm, jsd), (jb, jbsd) = mean_std(judged(r)), mean_std(judged(base))
        gap = jm - jb
        noise = 2 * max(jsd, jbsd)
        if len(r["finals"]) == 1 or len(base["finals"]) == 1:  # no spread to judge by
            how = "beats" if gap > 0 else "trails" if gap < 0 else "ties with"
            how += " (one seed: no spread to judge by)"
        else:
            how = "clearly beats" if gap > noise else "clearly trails" if -gap > noise else "ties with"
        dm = 100 * (r["macs"] - base["macs"]) / base["macs"]
        dp = r["params"] - base["params"]
        also = f"{metric_label} {m:.2f} vs {bm:.2f}, " if score_labels else ""
        lines.append(f"- {r['name']} ({r['kind']}) {how} the plain {base['name']}: {also}{label} "
                     f"{jm:.2f} vs {jb:.2f} ({gap:+.2f}), for {dp / 1e3:+.1f} K params and "
                     f"{dm:+.2f}% FLOPs.")  # fmt: skip
    by_kind = {r["kind"]: r for r in results}
    if "GC" in by_kind and "SE" in by_kind:
        gc, se = by_kind["GC"], by_kind["SE"]
        gp, sp = gc["params"] - base["params"], se["params"] - base["params"]
        gm, sm = gc["macs"] - base["macs"], se["macs"] - base["macs"]
        lines.append(f"- GC vs SE (the cost reference): {gp / 1e3:+.1f} vs {sp / 1e3:+.1f} K params, "
                     f"{gm / 1e6:+.3f} vs {sm / 1e6:+.3f} MFLOPs over the plain model.")  # fmt: skip
    if "GC" in by_kind and "NL" in by_kind:
        gc, nl = by_kind["GC"], by_kind["NL"]
        g, n = mean_std(gc["finals"])[0], mean_std(nl["finals"])[0]
        (jg, jgsd), (jn, jnsd) = mean_std(judged(gc)), mean_std(judged(nl))
        close = abs(jg - jn) <= 2 * max(jgsd, jnsd) if len(gc["finals"]) > 1 else abs(jg - jn) <= 1.0
        dg, dn = gc["macs"] - base["macs"], nl["macs"] - base["macs"]
        share = f"{100 * dg / dn:.1f}%" if dn > 0 else "n/a"
        match = ("a match" if close else "not a match") + (
            " within 2 std" if len(gc["finals"]) > 1 else " within 1 point, one seed"
        )
        more = f", {label} {jg:.2f} vs {jn:.2f}" if score_labels else ""
        lines.append(f"- GC vs NL: {metric_label} {g:.2f} vs {n:.2f}{more} ({match}); "
                     f"GC's extra FLOPs are {share} of NL's ({dg / 1e6:+.3f} vs {dn / 1e6:+.3f} "
                     f"MFLOPs), its latency {gc.get('latency_ms', float('nan')):.1f} vs "
                     f"{nl.get('latency_ms', float('nan')):.1f} ms.")  # fmt: skip
    return lines


def write_report(path: str, *, title: str, intro: Sequence[str], table: Sequence[str],
                 verdict_lines: Sequence[str], curves: str | None, cosine: Sequence[str],
                 attention: Sequence[tuple[str, str]], runs: Sequence[str]) -> str:  # fmt: skip
    """``report.md`` with relative links to the PNGs beside it."""
    here = os.path.dirname(os.path.abspath(path))

    def rel(p: str) -> str:
        return os.path.relpath(os.path.abspath(p), here)

    lines = [f"# {title}", "", *intro, "", "## Results", "", *table, "", *verdict_lines, ""]
    if curves:
        lines += ["## Training curves (mean over seeds)", "", f"![curves]({rel(curves)})", ""]
    if cosine:
        lines += [*cosine, ""]
    if attention:
        lines += ["## Where global context looks (validation images)", ""]
        for caption, png in attention:
            lines += [f"{caption}", "", f"![{caption}]({rel(png)})", ""]
    lines += ["## Runs", "", *runs, ""]
    os.makedirs(here, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path
