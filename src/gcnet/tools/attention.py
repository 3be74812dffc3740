"""See what the model sees: capture every context block's attention, and the paper's
cosine-distance analysis of query (in)dependence.

`AttentionRecorder` hooks every `GlobalContextBlock` with
attention pooling (GC, SNL: one map per image) and every
`NonLocalBlock` (one map per query position) in any model built from
gcnet's blocks, and records, per block, its input, the term it adds (output - input, i.e.
the block's output before fusion with x for add fusion) and its attention. The hooks only
read: the model's output is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gcnet.layers import GlobalContextBlock, NonLocalBlock

__all__ = [
    "AttentionRecorder",
    "BlockRecord",
    "image_batch",
    "mean_pairwise_cosine_distance",
    "mean_pairwise_js_divergence",
    "query_independence",
]


@dataclass
class BlockRecord:
    name: str
    kind: str  # "gc" (query-independent) or "nl" (per query)
    spatial: tuple[int, ...]
    inputs: list[torch.Tensor] = field(default_factory=list)  # (N, C, L)
    deltas: list[torch.Tensor] = field(default_factory=list)  # (N, C, L): output - input
    attention: list[torch.Tensor] = field(default_factory=list)  # (N, L) or (N, L, L')


def _context_modules(model: nn.Module) -> dict[str, nn.Module]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, NonLocalBlock) or (isinstance(m, GlobalContextBlock) and m.pooling == "att"):
            out[name or type(m).__name__] = m
    return out


class AttentionRecorder:
    """Context manager recording every context block's attention during forward passes.

        with AttentionRecorder(model, keep_features=True) as rec:
            model(images)
        rec.records["layer3.5.context_block"].attention[0]   # (N, H, W) for GC

    ``keep_features`` also keeps each block's input and added term (for the cosine study).
    """

    def __init__(self, model: nn.Module, keep_features: bool = False) -> None:
        self.model = model
        self.keep_features = keep_features
        self.records: dict[str, BlockRecord] = {}
        self._handles: list = []
        self.modules = _context_modules(model)
        if not self.modules:
            raise ValueError(
                "the model has no attention-based context block (GC/SNL with pooling='att', or NL)"
            )

    def _pre_hook(self, name: str):
        # before the block runs: blocks inside backbones may fuse into their input in place
        def hook(mod, args):
            x = args[0]
            with torch.no_grad():
                att = mod.attention(x).detach().float().cpu()
                if isinstance(mod, NonLocalBlock):
                    kind = "nl"
                else:
                    kind = "gc"
                    att = att.reshape(att.shape[0], -1)
                rec = self.records.setdefault(name, BlockRecord(name, kind, tuple(x.shape[2:])))
                rec.attention.append(att)
                if self.keep_features:
                    rec.inputs.append(x.detach().flatten(2).float().cpu().clone())

        return hook

    def _post_hook(self, name: str):
        def hook(mod, args, output):
            rec = self.records[name]
            with torch.no_grad():
                rec.deltas.append(output.detach().flatten(2).float().cpu() - rec.inputs[-1])

        return hook

    def __enter__(self) -> AttentionRecorder:
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_pre_hook(self._pre_hook(name)))
            if self.keep_features:
                self._handles.append(m.register_forward_hook(self._post_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def mean_pairwise_cosine_distance(vectors: torch.Tensor) -> float:
    """Average of dist = (1 - cos(u_i, u_j)) / 2 over all pairs i != j of the rows of
    ``vectors`` (L, D), in O(L D): sum_{i != j} cos = ||sum_i u_i||^2 - L for unit u_i.
    Zero rows count as orthogonal to everything."""
    v = vectors.double()
    n = v.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 vectors, got {n}")
    u = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = u.sum(0)
    self_terms = (u * u).sum()
    mean_cos = ((s @ s) - self_terms) / (n * (n - 1))
    return float((1 - mean_cos) / 2)


def mean_pairwise_js_divergence(maps: torch.Tensor, max_pairs: int = 4096, seed: int = 0) -> float:
    """Mean Jensen-Shannon divergence (natural log, in [0, ln 2]) between the rows of
    ``maps`` (L, L'), each a probability distribution; over all pairs, or ``max_pairs``
    random pairs when there are more."""
    p = maps.double().clamp_min(0)
    p = p / p.sum(1, keepdim=True).clamp_min(1e-300)
    n = p.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 maps, got {n}")
    i, j = torch.triu_indices(n, n, offset=1)
    if i.numel() > max_pairs:
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(i.numel(), generator=g)[:max_pairs]
        i, j = i[pick], j[pick]
    a, b = p[i], p[j]
    m = 0.5 * (a + b)

    def kl(x, y):
        return torch.where(x > 0, x * (x.clamp_min(1e-300).log() - y.clamp_min(1e-300).log()), 0).sum(1)

    return float((0.5 * kl(a, m) + 0.5 * kl(b, m)).mean())


def query_independence(record: BlockRecord) -> dict[str, float]:
    """The paper's analysis for one block, averaged over the recorded images: mean pairwise
    cosine distance between positions of the block's input, of its output (the added term)
    and of the per-query attention maps, and the JS divergence between attention maps.
    For GC/SNL the attention is one map per image, the same for every query: 0 by design."""
    if not record.inputs:
        raise ValueError("record the features first: AttentionRecorder(model, keep_features=True)")
    out = {"input": [], "output": [], "attention": [], "attention_js": []}
    for x, d, att in zip(record.inputs, record.deltas, record.attention):
        for n in range(x.shape[0]):
            out["input"].append(mean_pairwise_cosine_distance(x[n].T))
            out["output"].append(mean_pairwise_cosine_distance(d[n].T))
            if record.kind == "nl":
                out["attention"].append(mean_pairwise_cosine_distance(att[n]))
                out["attention_js"].append(mean_pairwise_js_divergence(att[n]))
            else:  # one map shared by every query
                out["attention"].append(0.0)
                out["attention_js"].append(0.0)
    return {k: sum(v) / len(v) for k, v in out.items()}


def image_batch(paths: list[str], size: int, data_cfg=None, crop: bool = True):
    """(normalised batch, list of uint8 HxWx3 arrays as shown) for image files: resized and
    centre-cropped to ``size`` (``data_cfg['image_size']`` if given), normalised with the
    data's (or ImageNet's) mean and std. ``crop=False`` keeps the whole image: the short
    side resized to ``size``, the aspect ratio kept; images of different shapes are padded
    at the bottom and the right (with the mean colour, 0 once normalised) to the largest
    height and width, and the shown arrays are the unpadded images."""
    import numpy as np
    import torch.nn.functional as F
    from torchvision.transforms import v2

    from gcnet.data.datasets import load_image

    mean = data_cfg["mean"] if data_cfg else [0.485, 0.456, 0.406]
    std = data_cfg["std"] if data_cfg else [0.229, 0.224, 0.225]
    if data_cfg:
        size = data_cfg["image_size"]
    steps = [v2.ToImage(), v2.Resize(size, antialias=True)] + ([v2.CenterCrop(size)] if crop else [])
    shown_tf = v2.Compose(steps)
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    xs, shown = [], []
    for p in paths:
        img = shown_tf(load_image(p))
        shown.append(np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
        xs.append(norm(img))
    hmax, wmax = max(x.shape[-2] for x in xs), max(x.shape[-1] for x in xs)
    xs = [F.pad(x, (0, wmax - x.shape[-1], 0, hmax - x.shape[-2])) for x in xs]
    return torch.stack(xs), shown
