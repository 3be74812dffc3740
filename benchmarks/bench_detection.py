"""Detection benchmark: Mask R-CNN with the GC-ResNet-50-FPN backbone (r16) vs the plain
ResNet-50-FPN, float32 CPU, ratios measured side by side in one run.

    python benchmarks/bench_detection.py [--repeats 3] [--size 800x1333] [--train-batch 1]

Inference: one 800x1333 image (the model's own transform keeps it at 800x1333), eval mode,
100 detections per image (the mask head included).
Training step: forward with targets (a few boxes and masks per image), backward, SGD step,
frozen BN and frozen stem + c2 as in the recipes. The official GCNet README reports
10.2 -> 9.9 fps on a V100 with r16 (+3% time): the overhead should be small.
"""

from __future__ import annotations

import argparse

import torch

from gcnet import create_model
from gcnet.tools.profiling import compare_times

NAMES = ("maskrcnn_r50_fpn", "maskrcnn_gc_r50_fpn")


def _targets(n: int, h: int, w: int, g: torch.Generator) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(n):
        xy = torch.rand(5, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 40 + torch.rand(5, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(5, h, w, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        out.append({"boxes": boxes, "labels": torch.randint(1, 81, (5,), generator=g), "masks": masks})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="800x1333")
    ap.add_argument("--train-batch", type=int, default=1)
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # score threshold 0: both models keep exactly box_detections_per_img (100) detections, so
    # the mask head runs on 100 RoIs as for a trained model on COCO (untrained weights would
    # otherwise pass nothing and skip it)
    models = {n: create_model(n, box_score_thresh=0.0) for n in NAMES}
    print(f"threads {torch.get_num_threads()}, image 3x{h}x{w}, float32 CPU\n")

    img = [torch.rand(3, h, w, generator=g)]
    for m in models.values():
        m.eval()
    with torch.inference_mode():
        fns = {n: (lambda m=m: m(img)) for n, m in models.items()}
        inf = compare_times(fns, repeats=args.repeats, warmup=1)

    imgs = [torch.rand(3, h, w, generator=g) for _ in range(args.train_batch)]
    tg = _targets(args.train_batch, h, w, g)
    opts = {n: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
            for n, m in models.items()}  # fmt: skip

    def step(n):
        torch.manual_seed(0)  # the same RPN / RoI sampling draws at every call
        m = models[n].train()
        loss = sum(m(imgs, tg).values())
        opts[n].zero_grad(set_to_none=True)
        loss.backward()
        opts[n].step()

    trn = compare_times({n: (lambda n=n: step(n)) for n in NAMES}, repeats=args.repeats, warmup=1)
    base = NAMES[0]
    print("| model | params (M) | inference (ms/img) | vs plain | train step (ms, batch "
          f"{args.train_batch}) | vs plain |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n, m in models.items():
        p = sum(q.numel() for q in m.parameters()) / 1e6
        print(f"| {n} | {p:.2f} | {inf[n]:.0f} | {inf[n] / inf[base]:.3f} | {trn[n]:.0f} | "
              f"{trn[n] / trn[base]:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
