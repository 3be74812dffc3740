"""Matplotlib figures (written as PNG) for the analysis tools."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .attention import BlockRecord

__all__ = [
    "plot_attention",
    "plot_confusion",
    "plot_query_maps",
    "plot_cosine",
    "plot_video_attention",
    "save_video_attention_gif",
    "stage_of",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_of(name: str) -> str:
    """'layer3.5.context_block' -> 'c4'; names outside a ResNet stage are kept."""
    for i in range(1, 5):
        if name.startswith(f"layer{i}.") or f".layer{i}." in name:
            return f"c{i + 1}"
    return name


def _upsample(att: torch.Tensor, spatial: tuple[int, ...], size: tuple[int, int]) -> np.ndarray:
    a = att.reshape(1, 1, *spatial[-2:]).float()
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)[0, 0]
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    return a.numpy()


def plot_attention(image: np.ndarray, records: list[BlockRecord], index: int, path: str) -> str:
    """The image and, per stage, the last block's query-independent attention map (for NL
    blocks: the mean over queries), upsampled and overlaid. ``image``: (H, W, 3) uint8."""
    plt = _plt()
    per_stage: dict[str, BlockRecord] = {}
    for rec in records:
        per_stage[stage_of(rec.name)] = rec  # the last block of each stage wins
    n = 1 + len(per_stage)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4))
    axes = np.atleast_1d(axes)
    axes[0].imshow(image)
    axes[0].set_title("image")
    h, w = image.shape[:2]
    for ax, (stage, rec) in zip(axes[1:], per_stage.items()):
        att = rec.attention[-1][index]
        if rec.kind == "nl":
            att = att.mean(0) if att.shape[-1] == att.shape[0] else att.mean(0)
            sp = rec.spatial if att.numel() == int(np.prod(rec.spatial)) else _subsampled(rec.spatial)
        else:
            sp = rec.spatial
        ax.imshow(image)
        ax.imshow(_upsample(att, sp, (h, w)), cmap="jet", alpha=0.5)
        ax.set_title(rec.name if stage == rec.name else f"{stage}: {rec.name}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _subsampled(spatial: tuple[int, ...]) -> tuple[int, ...]:
    return (*spatial[:-2], spatial[-2] // 2, spatial[-1] // 2)


def plot_query_maps(image: np.ndarray, rec: BlockRecord, index: int, path: str, queries: int = 4) -> str:
    """Attention maps of ``queries`` query points of an NL block side by side (the paper's
    Figure 2): nearly the same map whatever the query is."""
    plt = _plt()
    att = rec.attention[-1][index]  # (L, L')
    sp = rec.spatial
    key_sp = sp if att.shape[1] == int(np.prod(sp)) else _subsampled(sp)
    hq, wq = sp[-2], sp[-1]
    rng = np.random.default_rng(0)
    picks = rng.choice(att.shape[0], size=min(queries, att.shape[0]), replace=False)
    h, w = image.shape[:2]
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4))
    for ax, q in zip(np.atleast_1d(axes), picks):
        ax.imshow(image)
        ax.imshow(_upsample(att[q], key_sp, (h, w)), cmap="jet", alpha=0.5)
        qy, qx = divmod(int(q) % (hq * wq), wq)
        ax.plot((qx + 0.5) * w / wq, (qy + 0.5) * h / hq, "w*", markersize=14, markeredgecolor="k")
        ax.set_title(f"query ({qy}, {qx})", fontsize=8)
        ax.axis("off")
    fig.suptitle(rec.name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cosine(rows: list[dict[str, Any]], path: str) -> str:
    """Grouped bars of the mean pairwise cosine distance (input, output, attention) per stage."""
    plt = _plt()
    labels = [r["stage"] for r in rows]
    keys = ("input", "output", "attention")
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)), 3.6))
    for k, key in enumerate(keys):
        ax.bar(x + (k - 1) * 0.27, [r[key] for r in rows], 0.27, label=key)
    ax.set_xticks(x, labels)
    ax.set_ylabel("mean cosine distance (1 - cos) / 2")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(cm: torch.Tensor, classes: list[str], path: str) -> str:
    """The confusion matrix (rows true, columns predicted) with counts for <= 30 classes."""
    plt = _plt()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2), max(4, 0.5 * n + 2)))
    ax.imshow(cm.numpy(), cmap="Blues")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _video_maps(rec: BlockRecord, index: int, frames: tuple[int, int, int]) -> np.ndarray:
    """A block's query-independent attention over (T', H', W') (NL: the mean over queries),
    resized to the clip's (T, H, W) (nearest in time, bilinear in space), scaled to [0, 1]
    over the whole clip so that frames compare."""
    att = rec.attention[-1][index]
    sp = rec.spatial
    if rec.kind == "nl":
        att = att.mean(0)
        if att.numel() != int(np.prod(sp)):
            sp = _subsampled(sp)
    a = att.reshape(1, 1, *sp).float()
    a = F.interpolate(a, size=frames, mode="trilinear", align_corners=False)[0, 0]
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    return a.numpy()


def _last_per_stage(records: list[BlockRecord]) -> dict[str, BlockRecord]:
    per_stage: dict[str, BlockRecord] = {}
    for rec in records:
        per_stage[stage_of(rec.name)] = rec  # the last block of each stage wins
    return per_stage


def plot_video_attention(frames: np.ndarray, records: list[BlockRecord], index: int, path: str) -> str:
    """A strip of the clip's frames (top row) and, one row per stage, the last block's
    attention over T x H x W overlaid on every frame: where in space *and* time global
    context looks. ``frames``: (T, H, W, 3) uint8."""
    plt = _plt()
    per_stage = _last_per_stage(records)
    t, h, w = frames.shape[:3]
    rows = 1 + len(per_stage)
    fig, axes = plt.subplots(rows, t, figsize=(1.6 * t, 1.7 * rows), squeeze=False)
    for j in range(t):
        axes[0, j].imshow(frames[j])
        axes[0, j].set_title(f"frame {j}", fontsize=7)
    for i, (stage, rec) in enumerate(per_stage.items(), start=1):
        maps = _video_maps(rec, index, (t, h, w))
        for j in range(t):
            axes[i, j].imshow(frames[j])
            axes[i, j].imshow(maps[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[i, 0].set_title(f"{stage}: {rec.name}", fontsize=6, loc="left")
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_video_attention_gif(frames: np.ndarray, records: list[BlockRecord], index: int, path: str,
                             fps: float = 4.0) -> str:  # fmt: skip
    """An animated GIF: the clip and, side by side, the last block's attention over T x H x W
    (the deepest stage) overlaid in red, frame by frame."""
    from PIL import Image

    rec = list(_last_per_stage(records).values())[-1]
    t, h, w = frames.shape[:3]
    maps = _video_maps(rec, index, (t, h, w))
    images = []
    for j in range(t):
        heat = frames[j].astype(np.float32) * 0.5
        heat[..., 0] += 127.5 * maps[j]
        both = np.concatenate([frames[j], heat.clip(0, 255).astype(np.uint8)], axis=1)
        images.append(Image.fromarray(both))
    tmp = path + ".tmp"
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    import os

    os.replace(tmp, path)
    return path
