"""Detection benchmark: Mask R-CNN with the GC-ResNet-50-FPN backbone (r16) vs the plain
ResNet-50-FPN, float32 CPU, ratios measured side by side in one run.

    python benchmarks/bench_detection.py [--rounds 5] [--size 800x1333] [--train-batch 1] [--threads N]

Inference: one 800x1333 image (the model's own transform keeps it at 800x1333), eval mode,
100 detections per image (the mask head included).
Training step: forward with targets (a few boxes and masks per image), backward, SGD step,
frozen BN and frozen stem + c2 as in the recipes. The official GCNet README reports
10.2 -> 9.9 fps on a V100 with r16 (+3% time): the overhead should be small.

The two models are timed round-robin (one call of each per round); each ratio is the median
over rounds of the ratio within a round, printed with its spread (min..max over rounds).
Like the other benchmarks, the script raises glibc's mmap / trim thresholds for its own
process (``--system-malloc`` to keep them).
"""

from __future__ import annotations

import argparse

import torch

from gcnet import create_model
from gcnet.tools.profiling import median, raise_malloc_thresholds, ratio_stats, round_robin

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
    ap.add_argument("--rounds", "--repeats", type=int, default=5, dest="rounds")
    ap.add_argument("--size", default="800x1333")
    ap.add_argument("--train-batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args(argv)
    if not args.system_malloc:
        raise_malloc_thresholds()
    if args.threads:
        torch.set_num_threads(args.threads)
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
        inf = round_robin(fns, args.rounds, 1)

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

    trn = round_robin({n: (lambda n=n: step(n)) for n in NAMES}, args.rounds, 1)
    base = NAMES[0]

    def ratio(t, n):
        return "1.000" if n == base else "{:.3f} ({:.3f}..{:.3f})".format(*ratio_stats(t, n, base))

    print(f"{args.rounds} rounds; ratio = median of per-round ratios (min..max)\n")
    print("| model | params (M) | inference (ms/img) | vs plain | train step (ms, batch "
          f"{args.train_batch}) | vs plain |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n, m in models.items():
        p = sum(q.numel() for q in m.parameters()) / 1e6
        print(f"| {n} | {p:.2f} | {median(inf[n]):.0f} | {ratio(inf, n)} | {median(trn[n]):.0f} | "
              f"{ratio(trn, n)} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
