"""The paper's ablation layout as a complexity table: params, FLOPs and CPU latency of
ResNet-50 with each block configuration (Cao et al., Tables 2-4 / TPAMI Tables 3-6)."""

from __future__ import annotations

import csv
import os
from typing import Any

import torch

from gcnet.models import create_model

from .complexity import PAPER_UNIT, count_macs, count_params
from .profiling import compare_times

__all__ = ["ABLATION_ROWS", "complexity_table", "write_table"]

_ONE = dict(stages=("c4",), indices={"c4": [-2]}, position="after_add")  # one block, before c4's last
ABLATION_ROWS: list[tuple[str, str, str, dict[str, Any]]] = [
    # (group, row label, model name, overrides)
    ("blocks", "baseline", "resnet50", {}),
    ("blocks", "+1 NL", "nl_resnet50", dict(sub_sample="input")),  # the paper's NL: phi, g on pooled x
    ("blocks", "+1 SNL", "resnet50", dict(plugin="snl", **_ONE)),
    ("blocks", "+1 GC r16", "resnet50", dict(plugin="gc", ratio=1 / 16, **_ONE)),
    ("blocks", "+all GC r16", "gc_resnet50", {}),
    ("blocks", "+all GC r4", "gc_resnet50_r4", {}),
    ("position", "after_1x1", "gc_resnet50", dict(position="after_1x1")),
    ("position", "after_3x3", "gc_resnet50", dict(position="after_3x3")),
    ("position", "after_add", "gc_resnet50", dict(position="after_add")),
    ("stage", "c3", "gc_resnet50", dict(stages="c3")),
    ("stage", "c4", "gc_resnet50", dict(stages="c4")),
    ("stage", "c5", "gc_resnet50", dict(stages="c5")),
    ("stage", "c3-c5", "gc_resnet50", dict(stages="c3-c5")),
    ("pooling+fusion", "avg + mul (SE-like)", "gc_resnet50", dict(pooling="avg", fusion="mul")),
    ("pooling+fusion", "avg + add", "gc_resnet50", dict(pooling="avg", fusion="add")),
    ("pooling+fusion", "att + mul", "gc_resnet50", dict(pooling="att", fusion="mul")),
    ("pooling+fusion", "att + add (GC)", "gc_resnet50", dict(pooling="att", fusion="add")),
    ("pooling+fusion", "att + add + mul", "gc_resnet50", dict(pooling="att", fusion=("add", "mul"))),
]


def complexity_table(
    size: int = 224, latency_repeats: int = 3, rows=None, progress: bool = True
) -> list[dict[str, Any]]:
    """One dict per row: group, row, params_M, gflops (multiply-adds, the paper's unit),
    latency_ms (batch 1, float32 CPU,
    all rows timed round-robin so drifts of the machine fall on every row alike) and the
    differences against the baseline (the first row)."""
    out: list[dict[str, Any]] = []
    models = {}
    x = torch.randn(1, 3, size, size)
    rows = rows or ABLATION_ROWS
    for i, (group, label, name, kw) in enumerate(rows):
        torch.manual_seed(0)
        model = create_model(name, **kw).eval()
        with torch.no_grad():  # non-zero plug-ins: no block may look free because it is zero
            for pname, p in model.named_parameters():
                if ".context_block." in pname:
                    p.normal_(0, 0.01)
        out.append({"group": group, "row": label, "params_M": count_params(model) / 1e6,
                    "gflops": count_macs(model, x) / 1e9})  # fmt: skip
        models[i] = model
        if progress:
            r = out[-1]
            print(f"[{i + 1}/{len(rows)}] {group}: {label}: {r['params_M']:.2f}M, {r['gflops']:.3f} GFLOPs",
                  flush=True)  # fmt: skip
    if latency_repeats > 0:
        if progress:
            print(f"timing {len(rows)} models round-robin, {latency_repeats} rounds ...", flush=True)
        with torch.inference_mode():
            times = compare_times({i: (lambda m=m: m(x)) for i, m in models.items()}, latency_repeats, 1)
        for i, row in enumerate(out):
            row["latency_ms"] = times[i]
    base = out[0]
    for row in out:
        row["d_params_M"] = row["params_M"] - base["params_M"]
        row["d_gflops_pct"] = 100 * (row["gflops"] - base["gflops"]) / base["gflops"]
        if "latency_ms" in row:
            row["d_latency_pct"] = 100 * (row["latency_ms"] - base["latency_ms"]) / base["latency_ms"]
    return out


def write_table(rows: list[dict[str, Any]], out_dir: str) -> tuple[str, str]:
    """Write ``complexity.md`` and ``complexity.csv``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    keys = list(rows[0])
    csv_path = os.path.join(out_dir, "complexity.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lat = "latency_ms" in rows[0]
    lines = [
        f"GFLOPs: {PAPER_UNIT}.",
        "",
        "| group | configuration | params (M) | +params (M) | GFLOPs | +FLOPs | "
        + ("latency (ms) | +latency |" if lat else ""),
        "|---|---|---|---|---|---|" + ("---|---|" if lat else ""),
    ]
    for r in rows:
        line = (f"| {r['group']} | {r['row']} | {r['params_M']:.2f} | {r['d_params_M']:+.2f} | "
                f"{r['gflops']:.3f} | {r['d_gflops_pct']:+.2f}% |")  # fmt: skip
        if lat:
            line += f" {r['latency_ms']:.1f} | {r['d_latency_pct']:+.1f}% |"
        lines.append(line)
    md_path = os.path.join(out_dir, "complexity.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return md_path, csv_path
