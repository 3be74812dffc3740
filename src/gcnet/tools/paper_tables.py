"""The paper's ablation tables (Cao et al. 2019, arXiv v1: ImageNet ResNet-50 and COCO Mask
R-CNN R50-FPN 1x) with our params and FLOPs beside the published ones, and our latency.

Every row is built through the public API (`gcnet.create_model`), so each is a
configuration a user can train. Params and FLOPs are counted on the ``meta`` device (no
weights, no compute); FLOPs are multiply-adds, the paper's unit. Latency: batch 1, float32,
this machine's CPU, one thread, all rows of a table timed round-robin (the median over the
rounds); for
the detector, of the backbone + FPN (where the rows differ; the RPN and RoI heads are the same
in every row, and a randomly initialised detector's head cost depends on its random boxes).

What is counted for the detector (the convention of mmdetection's ``get_flops``, which the
published numbers come from): the backbone, FPN and RPN head on a 1280x800 image, the box
head on 1000 RoIs and the mask head on 100 RoIs (mmdetection's ``forward_dummy``). The NL
rows use the NL the paper used: embedded Gaussian, phi and g on the input max-pooled by 2
(``sub_sample="input"``), one block before the last residual block of c4, after the add;
the +1 SNL / +1 GC rows put their block at the same place.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gcnet.models import create_model

from .complexity import PAPER_UNIT, count_params
from .profiling import median, ratio_stats, round_robin

__all__ = ["PAPER_TABLES", "PaperRow", "build_row", "paper_table", "row_complexity", "write_paper_table"]


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table: our model name and overrides, and the published numbers
    (``metrics``: APbox / APmask or top-1 / top-5; params in M, FLOPs in G multiply-adds)."""

    label: str
    model: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[float, float] = (float("nan"), float("nan"))
    params_m: float = float("nan")
    gflops: float = float("nan")


_ONE = dict(stages=("c4",), indices={"c4": [-2]}, position="after_add")  # before c4's last block
_NL = dict(plugin="nl", sub_sample="input", **_ONE)
_DET, _GC = "maskrcnn_r50_fpn", "maskrcnn_gc_r50_fpn"


def _bb(**kw) -> dict[str, Any]:
    return {"backbone_kwargs": kw}


IMAGENET = (
    PaperRow("baseline", "resnet50", {}, (76.88, 93.16), 25.56, 3.86),
    PaperRow("+1 NL", "resnet50", _NL, (77.20, 93.51), 27.66, 4.11),
    PaperRow("+1 SNL", "resnet50", dict(plugin="snl", **_ONE), (77.28, 93.60), 26.61, 3.86),
    PaperRow("+1 GC", "resnet50", dict(plugin="gc", ratio=1 / 16, **_ONE), (77.34, 93.52), 25.69, 3.86),
    PaperRow("+all GC (r16, c3-c5)", "gc_resnet50", {}, (77.70, 93.66), 28.08, 3.87),
    PaperRow("avg+scale (SE)", "gc_resnet50", dict(pooling="avg", fusion="mul"), (77.26, 93.55), 28.07, 3.87),
    PaperRow("avg+add", "gc_resnet50", dict(pooling="avg", fusion="add"), (77.40, 93.60), 28.07, 3.87),
    PaperRow("att+scale", "gc_resnet50", dict(pooling="att", fusion="mul"), (77.34, 93.48), 28.08, 3.87),
)

COCO = (
    PaperRow("baseline", _DET, {}, (37.2, 33.8), 44.4, 279.4),
    PaperRow("+1 NL (c4)", _DET, _bb(**_NL), (38.0, 34.7), 46.5, 288.7),
    PaperRow("+1 SNL (c4)", _DET, _bb(plugin="snl", **_ONE), (38.1, 35.0), 45.4, 279.4),
    PaperRow("+1 GC (c4)", _DET, _bb(plugin="gc", ratio=1 / 16, **_ONE), (38.1, 34.9), 44.5, 279.4),
    PaperRow("+all GC r16 (c3-c5, after 1x1)", _GC, {}, (39.4, 35.7), 46.9, 279.6),
    PaperRow("position: after add", _GC, dict(position="after_add"), (39.4, 35.8), 46.9, 279.6),
    PaperRow("stage: c3 only", _GC, dict(stages="c3"), (37.9, 34.5), 44.5, 279.5),
    PaperRow("stage: c4 only", _GC, dict(stages="c4"), (38.9, 35.5), 45.2, 279.5),
    PaperRow("stage: c5 only", _GC, dict(stages="c5"), (38.7, 35.2), 45.9, 279.4),
    PaperRow("bottleneck: w/o ratio (one C->C conv)", _GC, dict(ratio=None), (39.4, 35.9), 64.4, 279.6),
    PaperRow("bottleneck: r16 without LN and ReLU", _GC, _bb(block_kwargs=dict(norm=False, relu=False)),
             (38.8, 35.3), 46.9, 279.6),
    PaperRow("bottleneck: r16 + ReLU", _GC, _bb(block_kwargs=dict(norm=False)), (38.8, 35.4), 46.9, 279.6),
    PaperRow("bottleneck: r16 + LN + ReLU", _GC, {}, (39.4, 35.7), 46.9, 279.6),
    PaperRow("ratio 4", _GC, dict(ratio=1 / 4), (39.9, 36.2), 54.4, 279.6),
    PaperRow("ratio 8", _GC, dict(ratio=1 / 8), (39.5, 35.9), 49.4, 279.6),
    PaperRow("ratio 16", _GC, dict(ratio=1 / 16), (39.4, 35.7), 46.9, 279.6),
    PaperRow("ratio 32", _GC, dict(ratio=1 / 32), (39.1, 35.7), 45.7, 279.5),
    PaperRow("pooling+fusion: avg+scale (SE)", _GC, _bb(pooling="avg", fusion="mul"), (38.2, 34.7), 46.9,
             279.5),
    PaperRow("pooling+fusion: avg+add", _GC, _bb(pooling="avg", fusion="add"), (39.1, 35.6), 46.9, 279.5),
    PaperRow("pooling+fusion: att+scale", _GC, _bb(pooling="att", fusion="mul"), (38.3, 34.8), 46.9, 279.6),
    PaperRow("pooling+fusion: att+add", _GC, _bb(pooling="att", fusion="add"), (39.4, 35.7), 46.9, 279.6),
)  # fmt: skip

#: name -> (rows, metric names, the input FLOPs are counted and latency measured on (H, W))
PAPER_TABLES: dict[str, tuple[tuple[PaperRow, ...], tuple[str, str], tuple[int, int]]] = {
    "imagenet": (IMAGENET, ("top-1", "top-5"), (224, 224)),
    "coco": (COCO, ("APbox", "APmask"), (800, 1280)),
}


def build_row(row: PaperRow, device: str | torch.device = "cpu") -> nn.Module:
    """The row's model in eval mode (``device="meta"``: shapes only, for counting)."""
    with torch.device(device):
        return create_model(row.model, **dict(row.overrides)).eval()


def _macs(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops() // 2


def row_complexity(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """(params, multiply-adds) of a row's model (built on any device, ``meta`` included) at
    input ``size``; a detector as mmdetection's ``get_flops`` counts it (module docstring)."""
    dev = next(model.parameters()).device
    x = torch.empty(1, 3, *size, device=dev)
    if not hasattr(model, "roi_heads"):
        return count_params(model), _macs(lambda: model(x))
    # the dense part on the padded image (GeneralizedRCNNTransform would resize 800 -> 800)
    feats: dict = {}
    macs = _macs(lambda: feats.update(model.backbone(x)))
    macs += _macs(lambda: model.rpn.head(list(feats.values())))
    rh = model.roi_heads
    macs += _macs(lambda: rh.box_predictor(rh.box_head(torch.empty(1000, 256, 7, 7, device=dev))))
    if rh.mask_head is not None:
        macs += _macs(lambda: rh.mask_predictor(rh.mask_head(torch.empty(100, 256, 14, 14, device=dev))))
    return count_params(model), macs


def paper_table(which: str, rounds: int = 3, progress: bool = True, rows=None) -> list[dict[str, Any]]:
    """One dict per row of the paper's ``which`` table ("imagenet" / "coco"): label, the
    published metrics, params and FLOPs, ours and the differences; ``latency_ms`` (batch 1,
    CPU, median of ``rounds`` round-robin rounds; none for ``rounds=0``)."""
    if which not in PAPER_TABLES:
        raise ValueError(f"--paper must be one of {tuple(PAPER_TABLES)}, got {which!r}")
    table, names, size = PAPER_TABLES[which]
    rows = table if rows is None else rows
    out = []
    for i, row in enumerate(rows):
        params, macs = row_complexity(build_row(row, "meta"), size)
        out.append({"row": row.label, "model": row.model, names[0]: row.metrics[0], names[1]: row.metrics[1],
                    "paper_params_M": row.params_m, "params_M": params / 1e6,
                    "d_params_M": params / 1e6 - row.params_m, "paper_gflops": row.gflops,
                    "gflops": macs / 1e9, "d_gflops": macs / 1e9 - row.gflops})  # fmt: skip
        if progress:
            r = out[-1]
            print(f"[{i + 1}/{len(rows)}] {row.label}: {r['params_M']:.2f}M ({r['d_params_M']:+.2f}), "
                  f"{r['gflops']:.2f} GFLOPs ({r['d_gflops']:+.2f})", flush=True)  # fmt: skip
    if rounds > 0:
        _latency(rows, out, size, rounds, progress)
    return out


def _latency(rows, out, size, rounds: int, progress: bool) -> None:
    """Batch-1 CPU latency of every row, round-robin (a detector's backbone + FPN)."""
    x = torch.randn(1, 3, *size)
    fns = {}
    detector = False
    for i, row in enumerate(rows):
        torch.manual_seed(0)
        model = build_row(row)
        with torch.no_grad():  # non-zero blocks: no block may look free because it is zero
            for name, p in model.named_parameters():
                if ".context_block." in name:
                    p.normal_(0, 0.01)
        detector = hasattr(model, "roi_heads")
        fns[i] = (lambda m=model.backbone: m(x)) if detector else (lambda m=model: m(x))
    if progress:
        what = "backbones + FPN" if detector else "models"
        print(f"timing {len(rows)} {what} at batch 1, {size[0]}x{size[1]}, one thread, {rounds} round(s) ...",
              flush=True)  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier on a shared machine
    try:
        with torch.inference_mode():  # one warm-up round: a first call pays for fresh pages
            times = round_robin(fns, rounds, 1)
    finally:
        torch.set_num_threads(threads)
    for i, r in enumerate(out):
        r["latency_ms"] = median(times[i])
        # the ratio within each round: load that slows a whole round cancels
        r["latency_vs_baseline"] = ratio_stats(times, i, 0)[0]


def write_paper_table(rows: list[dict[str, Any]], which: str, out_dir: str) -> tuple[str, str]:
    """``paper_<which>.md`` and ``.csv`` in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    _, names, size = PAPER_TABLES[which]
    csv_path = os.path.join(out_dir, f"paper_{which}.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lat = "latency_ms" in rows[0]
    what = "ResNet-50, ImageNet 224x224" if which == "imagenet" else "Mask R-CNN R50-FPN, COCO, 1280x800"
    lines = [
        f"{what}. Published: {names[0]} / {names[1]}, params, FLOPs (arXiv v1); ours: params and FLOPs "
        f"of the same configuration built by gcnet, and the difference; GFLOPs: {PAPER_UNIT}."
        + (
            " Latency: batch 1, float32, one CPU thread, "
            f"{'backbone + FPN, ' if which == 'coco' else ''}median of "
            "round-robin rounds; vs baseline: the median over rounds of the ratio within a round."
            if lat
            else ""
        ),
        "",
        f"| row | {names[0]} | {names[1]} | params (M) paper | ours | diff | GFLOPs paper | ours | diff |"
        + (" latency (ms) | vs baseline |" if lat else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|" if lat else ""),
    ]
    for r in rows:
        line = (f"| {r['row']} | {r[names[0]]:.2f} | {r[names[1]]:.2f} | {r['paper_params_M']:.2f} | "
                f"{r['params_M']:.2f} | {r['d_params_M']:+.2f} | {r['paper_gflops']:.2f} | "
                f"{r['gflops']:.2f} | {r['d_gflops']:+.2f} |")  # fmt: skip
        if lat:
            line += f" {r['latency_ms']:.0f} | x{r['latency_vs_baseline']:.2f} |"
        lines.append(line)
    md_path = os.path.join(out_dir, f"paper_{which}.md")
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return md_path, csv_path
