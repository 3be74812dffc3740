"""Matplotlib figures (written as PNG) for the analysis tools."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gcnet.utils.extras import require

from .attention import BlockRecord

__all__ = [
    "draw_detections",
    "place_labels",
    "plot_attention",
    "plot_confusion",
    "plot_query_maps",
    "plot_cosine",
    "plot_video_attention",
    "save_video_attention_gif",
    "stage_of",
    "text_color",
]


def _plt():
    require("matplotlib", "drawing figures").use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_of(name: str) -> str:
    """'layer3.5.context_block' -> 'c4'; names outside a ResNet stage are kept."""
    for i in range(1, 5):
        if name.startswith(f"layer{i}.") or f".layer{i}." in name:
            return f"c{i + 1}"
    return name


def _upsample(att: torch.Tensor, spatial: tuple[int, ...], size: tuple[int, int],
              input_hw: tuple[int, int] | None = None) -> np.ndarray:  # fmt: skip
    """A map on the ``spatial`` grid resized to the image's ``size`` (H, W), scaled to [0, 1].
    ``input_hw``: the model's input when larger than the image (padded at the bottom and the
    right to batch images of several shapes): the map covers it, and only the image's part is
    kept (and scaled)."""
    h, w = size
    full = input_hw or size
    a = att.reshape(1, 1, *spatial[-2:]).float()
    a = F.interpolate(a, size=tuple(full), mode="bilinear", align_corners=False)[0, 0, :h, :w]
    a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
    return a.numpy()


def _grid_label(spatial: tuple[int, ...]) -> str:
    """'7x7 map'; 'a 1x1 map: one value, no spatial information' where there is nothing to see."""
    if int(np.prod(spatial)) == 1:
        return "1x1 map: nothing to localise"
    return "x".join(str(s) for s in spatial) + " map"


FLAT = 1e-4  # a map whose (max - min) / mean is below this is drawn as flat (float noise)


def _flat(att: torch.Tensor) -> bool:
    a = att.double().flatten()
    return float(a.max() - a.min()) <= FLAT * max(abs(float(a.mean())), 1e-30)


def _peak(att: torch.Tensor) -> str:
    """How peaked a map is: its maximum over its mean ('peak 3.2x mean'), since every panel is
    scaled to its own [min, max] and a nearly flat map would otherwise look as peaked as any."""
    a = att.double().flatten()
    mean = float(a.mean())
    if mean <= 0:
        return ""
    if _flat(att):
        return "flat: weights equal within 1e-4"
    r = float(a.max()) / mean
    return f"peak {r:.1f}x mean" if r >= 1.1 else f"peak {r:.4f}x mean: nearly flat"


def _title(*parts: str, width: int = 34) -> str:
    import textwrap

    return "\n".join(textwrap.fill(p, width) for p in parts if p)


def _grid(n: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return -(-n // cols), cols


def _colorbar(fig, axes, label: str = "attention, each map\nscaled to its min..max"):
    mpl = require("matplotlib", "drawing figures")
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap="jet")
    cb = fig.colorbar(sm, ax=list(np.ravel(axes)), shrink=0.8, fraction=0.03, pad=0.02)
    cb.set_ticks([0, 0.5, 1], labels=["min", "", "max"])
    cb.set_label(label, fontsize=7)
    return cb


def _split_shown(image) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``(image, model input (H, W) or None)``: `Task.analysis_inputs` may pair an image
    with the padded input it was batched in."""
    if isinstance(image, tuple):
        return image[0], (tuple(int(v) for v in image[1]) if image[1] is not None else None)
    return image, None


def _nl_map(rec: BlockRecord, att: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """An NL block's query-independent summary: the mean over queries, on the key grid."""
    att = att.mean(0)
    sp = rec.spatial if att.numel() == int(np.prod(rec.spatial)) else _subsampled(rec.spatial)
    return att, sp


def plot_attention(image: np.ndarray, records: list[BlockRecord], index: int, path: str,
                   max_cols: int = 4, input_hw: tuple[int, int] | None = None) -> str:  # fmt: skip
    """The image and, per stage, the last block's query-independent attention map (for NL
    blocks: the mean over queries), upsampled and overlaid on the whole image, in a grid of
    at most ``max_cols`` columns, with a colour bar. ``image``: (H, W, 3) uint8 (or
    ``(image, input_hw)``); ``input_hw``: the model input's (H, W) when the image was padded
    at the bottom / right to it."""
    plt = _plt()
    image, hw = _split_shown(image)
    input_hw = input_hw or hw
    per_stage = _last_per_stage(records)
    h, w = image.shape[:2]
    rows, cols = _grid(1 + len(per_stage), max_cols)
    pw = 3.0
    fig, axes = plt.subplots(rows, cols, figsize=(pw * cols + 0.9, (pw * h / w + 0.45) * rows),
                             squeeze=False, layout="constrained")  # fmt: skip
    flat = axes.ravel()
    flat[0].imshow(image)
    flat[0].set_title(_title("input", f"{w}x{h} px"), fontsize=8)
    for ax, (stage, rec) in zip(flat[1:], per_stage.items()):
        att = rec.attention[-1][index]
        sp = rec.spatial
        if rec.kind == "nl":
            att, sp = _nl_map(rec, att)
        ax.imshow(image)
        if not _flat(att):  # scaling float noise to [0, 1] would draw patterns that are not there
            ax.imshow(_upsample(att, sp, (h, w), input_hw), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        name = rec.name if stage == rec.name else f"{stage}: {rec.name}"
        what = f"{_grid_label(sp[-2:])}{', mean over queries' if rec.kind == 'nl' else ''}"
        ax.set_title(_title(name, what, _peak(att)), fontsize=7)
    for ax in flat:
        ax.axis("off")
    _colorbar(fig, axes)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _subsampled(spatial: tuple[int, ...]) -> tuple[int, ...]:
    return (*spatial[:-2], spatial[-2] // 2, spatial[-1] // 2)


def plot_query_maps(image: np.ndarray, rec: BlockRecord, index: int, path: str, queries: int = 4,
                    input_hw: tuple[int, int] | None = None) -> str:  # fmt: skip
    """Attention maps of ``queries`` query points of an NL block side by side (the paper's
    Figure 2): nearly the same map whatever the query is."""
    plt = _plt()
    image, hw = _split_shown(image)
    input_hw = input_hw or hw
    att = rec.attention[-1][index]  # (L, L')
    sp = rec.spatial
    key_sp = sp if att.shape[1] == int(np.prod(sp)) else _subsampled(sp)
    hq, wq = sp[-2], sp[-1]
    h, w = image.shape[:2]
    hin, win = input_hw or (h, w)
    # query positions on the image (not on the padding of a batch of several shapes)
    qy, qx = np.divmod(np.arange(att.shape[0]) % (hq * wq), wq)
    inside = np.flatnonzero(((qy + 0.5) * hin / hq < h) & ((qx + 0.5) * win / wq < w))
    rng = np.random.default_rng(0)
    picks = rng.choice(inside, size=min(queries, len(inside)), replace=False)
    pw = 3.0
    fig, axes = plt.subplots(1, len(picks), figsize=(pw * len(picks) + 0.9, pw * h / w + 1.0), squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, q in zip(axes[0], picks):
        ax.imshow(image)
        ax.imshow(_upsample(att[q], key_sp, (h, w), input_hw), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        qy, qx = divmod(int(q) % (hq * wq), wq)
        ax.plot((qx + 0.5) * win / wq, (qy + 0.5) * hin / hq, "w*", markersize=14, markeredgecolor="k")
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"query (row {qy}, col {qx}) = white star", fontsize=8)
        ax.axis("off")
    fig.suptitle(_title(f"{rec.name}: one map per query position", width=80), fontsize=9)
    _colorbar(fig, axes)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_cosine(rows: list[dict[str, Any]], path: str) -> str:
    """Grouped bars of the mean pairwise cosine distance (input, output, attention) per stage."""
    plt = _plt()
    labels = [r["stage"] for r in rows]
    keys = ("input", "output", "attention")
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows)) + 1.2, 3.6), layout="constrained")
    for k, key in enumerate(keys):
        bars = ax.bar(x + (k - 1) * 0.27, [r[key] for r in rows], 0.27, label=key)
        # the values, since a near-0 bar (GC's attention: 0 by design) is invisible
        ax.bar_label(bars, labels=[f"{float(r[key]):.2g}" for r in rows], fontsize=6, padding=1)
    ax.set_xticks(x, labels)
    ax.set_ylabel("mean cosine distance (1 - cos) / 2")
    ax.set_yscale("symlog", linthresh=1e-4)
    top = max([float(r[key]) for r in rows for key in keys] + [1e-4])
    ax.set_ylim(0, top * 4)  # room for the labels above the tallest bar
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def text_color(rgba) -> str:
    """'white' on a dark cell, 'black' on a light one (relative luminance of sRGB)."""
    r, g, b = rgba[:3]
    return "white" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5 else "black"


def plot_confusion(cm: torch.Tensor, classes: list[str], path: str) -> str:
    """The confusion matrix (rows true, columns predicted) with counts for <= 30 classes."""
    plt = _plt()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * n + 2.6), max(4, 0.5 * n + 2)), layout="constrained")
    im = ax.imshow(cm.numpy(), cmap="Blues")
    fig.colorbar(im, ax=ax, shrink=0.8, label="count")
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color=text_color(im.cmap(im.norm(float(cm[i, j])))))  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (rows: true class)", fontsize=9)
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


def _video_grid_label(sp: tuple[int, ...]) -> str:
    """What a stage's T' x H' x W' map can show, for its title."""
    dims = "x".join(str(v) for v in sp)
    if int(np.prod(sp)) == 1:
        return f"{dims} map: one value, nothing to see"
    if int(np.prod(sp[-2:])) == 1:
        return f"{dims} map: 1x1 in space, only the weight per time step varies"
    return f"{dims} map"


def _split_clip(frames) -> tuple[np.ndarray, list[int]]:
    """``(frames (T, H, W, 3), each frame's index in the video)``: the video task's shown
    item is ``(frames, indices)``; bare frames are numbered 0..T-1."""
    if isinstance(frames, tuple):
        frames, ids = frames
        if ids is not None and len(ids) == len(frames):
            return frames, [int(i) for i in ids]
    return frames, list(range(len(frames)))


def plot_video_attention(frames: np.ndarray, records: list[BlockRecord], index: int, path: str,
                         frame_ids: list[int] | None = None, max_frames: int = 16) -> str:  # fmt: skip
    """A strip of the clip's frames (top row, each titled with its index in the video) and,
    one row per stage, the last block's attention over T x H x W overlaid on every frame:
    where in space *and* time global context looks. ``frames``: (T, H, W, 3) uint8 (or
    ``(frames, frame_ids)``); at most ``max_frames`` frames, evenly spaced, are drawn."""
    plt = _plt()
    frames, ids = _split_clip(frames)
    ids = frame_ids or ids
    per_stage = _last_per_stage(records)
    t, h, w = frames.shape[:3]
    cols = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    rows = 1 + len(per_stage)
    pw = 1.6
    fig, axes = plt.subplots(rows, len(cols), figsize=(pw * len(cols) + 1.0, (pw * h / w + 0.45) * rows),
                             squeeze=False, layout="constrained")  # fmt: skip
    for k, j in enumerate(cols):
        axes[0, k].imshow(frames[j])
        axes[0, k].set_title(f"frame {ids[j]}", fontsize=7)
    for i, (stage, rec) in enumerate(per_stage.items(), start=1):
        maps = _video_maps(rec, index, (t, h, w))
        sp = rec.spatial
        if rec.kind == "nl" and rec.attention[-1][index].shape[-1] != int(np.prod(sp)):
            sp = _subsampled(sp)
        flat = _flat(rec.attention[-1][index])
        for k, j in enumerate(cols):
            axes[i, k].imshow(frames[j])
            if not flat:
                axes[i, k].imshow(maps[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        name = rec.name if stage == rec.name else f"{stage}: {rec.name}"
        label = _video_grid_label(tuple(sp)) + (", flat: weights equal within 1e-4" if flat else "")
        # over the whole row: a title would widen the first column; blank titles keep the height
        axes[i, 0].set_title(" ", fontsize=7)
        note = axes[i, 0].annotate(f"{name} ({label})", (0, 1), xycoords="axes fraction", xytext=(0, 3),
                                   textcoords="offset points", fontsize=7, va="bottom",
                                   annotation_clip=False)  # fmt: skip
        note.set_in_layout(False)
    for ax in axes.flat:
        ax.axis("off")
    shown = "" if len(cols) == t else f" ({len(cols)} of the clip's {t} frames)"
    fig.suptitle(f"attention over T x H x W, frames numbered as in the video{shown}", fontsize=8)
    _colorbar(fig, axes[1:] if rows > 1 else axes, label="attention, scaled\nover the whole clip")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_video_attention_gif(frames: np.ndarray, records: list[BlockRecord], index: int, path: str,
                             fps: float = 4.0, min_width: int = 512) -> str:  # fmt: skip
    """An animated GIF: the clip and, side by side, the last block's attention over T x H x W
    (the deepest stage) overlaid in red, frame by frame, each frame labelled with its index in
    the video; scaled up (nearest) to at least ``min_width`` pixels wide."""
    import os

    from PIL import Image, ImageDraw

    frames, ids = _split_clip(frames)
    rec = list(_last_per_stage(records).values())[-1]
    t, h, w = frames.shape[:3]
    maps = _video_maps(rec, index, (t, h, w))
    if _flat(rec.attention[-1][index]):
        maps = np.zeros_like(maps)
    scale = max(1, -(-min_width // (2 * w)))
    images = []
    for j in range(t):
        heat = frames[j].astype(np.float32) * 0.5
        heat[..., 0] += 127.5 * maps[j]
        both = np.concatenate([frames[j], heat.clip(0, 255).astype(np.uint8)], axis=1)
        im = Image.fromarray(both).resize((2 * w * scale, h * scale), Image.NEAREST)
        _label(ImageDraw.Draw(im), (3, 3), f"frame {ids[j]}")
        _label(ImageDraw.Draw(im), (w * scale + 3, 3), f"{stage_of(rec.name)} attention")
        images.append(im)
    tmp = path + ".tmp"
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    os.replace(tmp, path)
    return path


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _label(draw, xy: tuple[float, float], text: str, fill=(255, 255, 0), size: int = 12) -> tuple:
    """``text`` at ``xy`` (its top left) on a filled box; returns the box (x0, y0, x1, y1)."""
    font = _font(size)
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font)
    box = (x0 - 2, y0 - 2, x1 + 2, y1 + 2)
    draw.rectangle(box, fill=fill)
    draw.text(xy, text, fill=(0, 0, 0), font=font)
    return box


# a palette of distinct colours for boxes (one per class)
BOX_COLORS = ((255, 215, 0), (0, 200, 255), (255, 80, 80), (120, 255, 120), (255, 140, 0), (200, 120, 255),
              (255, 255, 255), (0, 160, 120))  # fmt: skip


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: list[tuple[float, float, float, float]], sizes: list[tuple[int, int]],
                 image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:  # fmt: skip
    """A rectangle (x0, y0, x1, y1) per label of size (w, h) for each box (x0, y0, x1, y1), in
    order (place the most important first), inside the image (W, H) and overlapping no label
    placed before it where possible: just above the box, else inside its top, below it, inside
    its bottom, else moved down from the top in steps of the label's height."""
    width, height = image_size
    placed: list[tuple[int, int, int, int]] = []
    for (bx0, by0, _, by1), (w, h) in zip(boxes, sizes):
        x = int(min(max(bx0, 0), max(width - w, 0)))
        ys = [by0 - h, by0, by1, by1 - h]
        ys += [by0 + k * h for k in range(1, int(height // max(h, 1)) + 1)]
        ys += [by0 - k * h for k in range(2, int(height // max(h, 1)) + 1)]
        rect = None
        for y in ys:
            y = int(min(max(y, 0), max(height - h, 0)))
            cand = (x, y, x + w, y + h)
            if not any(_overlaps(cand, p) for p in placed):
                rect = cand
                break
        if rect is None:  # no free spot: the first choice
            y = int(min(max(by0 - h, 0), max(height - h, 0)))
            rect = (x, y, x + w, y + h)
        placed.append(rect)
    return placed


def draw_detections(image: np.ndarray, boxes, names: list[str], class_ids: list[int] | None = None,
                    width: int = 2, font_size: int = 12) -> np.ndarray:  # fmt: skip
    """``image`` (H, W, 3) uint8 with each box drawn and labelled ('cat 0.91') on a filled
    background in the box's colour (one colour per class id), the labels placed so that they
    do not overlap each other (`place_labels`). Returns a new array."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    font = _font(font_size)
    boxes = [tuple(float(v) for v in b) for b in boxes]
    ids = list(class_ids) if class_ids is not None else [0] * len(boxes)
    colors = [BOX_COLORS[int(c) % len(BOX_COLORS)] for c in ids]
    for b, c in zip(boxes, colors):
        draw.rectangle(b, outline=c, width=width)
    sizes = []
    for n in names:
        x0, y0, x1, y1 = draw.textbbox((0, 0), n, font=font)
        sizes.append((x1 + 4, y1 + 3))
    for rect, n, c in zip(place_labels(boxes, sizes, im.size), names, colors):
        draw.rectangle(rect, fill=c)
        draw.text((rect[0] + 2, rect[1] + 1), n, font=font, fill=text_color([v / 255 for v in c]))
    return np.asarray(im).copy()
