"""One-shot CUDA check (issue 16): parity, mixed precision, and the speed ratios on a GPU.

    python benchmarks/gpu_check.py [--device cuda] [--budget 220] [--rounds 10] [--skip-ratios]

Runs in under 4 minutes on one CUDA device and prints a summary; without CUDA it prints why
and exits 0 (nothing to check). Exit status 1 when a parity or mixed-precision check fails
(the ratios are reported, never failed on).

1. Parity CUDA vs CPU, float32 (TF32 off on both matmul and cuDNN while comparing):
   - the GC block family (att/avg pooling, add/mul/both fusion, SNL, SE), output and every
     gradient (x and parameters), contiguous and channels_last: rtol 1e-4, atol 1e-5;
   - gc_resnet50 in eval mode, 2x3x224x224: logits rtol 1e-3 / atol 1e-3, and the gradients
     of the context-block parameters, relative L2 error <= 1e-3.
2. Mixed precision, two training steps each: fp16 autocast + GradScaler and bf16 autocast for
   classification (gc_resnet50), segmentation (gcnet_r50_d8, with its auxiliary head) and
   detection (maskrcnn_gc_r50_fpn with boxes and masks): finite losses, no dtype errors,
   float32 parameter gradients that are finite (or skipped by the scaler, for fp16).
3. Ratios on CUDA (timed with synchronisation, round-robin, median of per-round ratios):
   the GC block alone at 8x256x56x56 ... 8x2048x7x7 against its memory-traffic bounds
   (forward 1.5 copies of x, forward+backward 3.5 copies; see BENCHMARKS.md) and against
   timm's GlobalContext; gc_resnet50 vs resnet50 vs torchvision's resnet50 vs timm's
   gcresnet50t, inference b1/b32 (contiguous and channels_last) and SGD steps at b8/b16;
   Mask R-CNN R50-FPN plain vs GC, one training step at batch 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time

import torch
import torch.nn.functional as F

from gcnet.tools.profiling import median as _med

SHAPES = [(8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7)]


class Report:
    def __init__(self, budget: float) -> None:
        self.t0 = time.perf_counter()
        self.budget = budget
        self.rows: list[tuple[str, str, str]] = []  # (section, check, result)
        self.failed = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def over(self, reserve: float = 0.0) -> bool:
        return self.elapsed() > self.budget - reserve

    def add(self, section: str, check: str, ok: bool | None, detail: str) -> None:
        tag = "info" if ok is None else ("PASS" if ok else "FAIL")
        self.failed += ok is False
        self.rows.append((section, check, f"{tag} {detail}"))
        print(f"[{self.elapsed():6.1f}s] {section} | {check} | {tag} {detail}", flush=True)


@contextlib.contextmanager
def no_tf32():
    m, c = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m, c


def _randomize(m: torch.nn.Module, std: float = 0.1) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, std)
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


# -- 1. parity --------------------------------------------------------------------------------
def check_block_parity(rep: Report, dev: torch.device) -> None:
    from gcnet import GlobalContextBlock, SimplifiedNonLocalBlock, SqueezeExcitation

    blocks = {
        "gc r16 att add": lambda: GlobalContextBlock(64, 1 / 16),
        "gc avg add": lambda: GlobalContextBlock(64, 1 / 16, pooling="avg"),
        "gc att mul": lambda: GlobalContextBlock(64, 1 / 16, fusion="mul"),
        "gc att add+mul": lambda: GlobalContextBlock(64, 1 / 4, fusion=("add", "mul")),
        "snl": lambda: SimplifiedNonLocalBlock(64),
        "se r16": lambda: SqueezeExcitation(64, 1 / 16),
    }
    for name, make in blocks.items():
        torch.manual_seed(0)
        cpu = _randomize(make())
        gpu = make().to(dev)
        gpu.load_state_dict(cpu.state_dict())
        worst = 0.0
        ok = True
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(2, 64, 14, 14).to(memory_format=fmt)
            gy = torch.randn(2, 64, 14, 14)
            outs = []
            for m, d in ((cpu, "cpu"), (gpu, dev)):
                xd = x.to(d).requires_grad_()
                y = m(xd)
                grads = torch.autograd.grad(y, [xd, *m.parameters()], gy.to(d), allow_unused=True)
                outs.append([y, *grads])
            for a, b in zip(outs[0], outs[1]):
                if a is None or b is None:
                    ok &= a is None and b is None
                    continue
                a, b = a.detach(), b.detach().cpu()
                worst = max(worst, float((a - b).abs().max()))
                ok &= torch.allclose(b, a, rtol=1e-4, atol=1e-5)
        rep.add("parity", f"block {name}", ok, f"max |cuda - cpu| {worst:.2e} (rtol 1e-4, atol 1e-5)")


def check_backbone_parity(rep: Report, dev: torch.device) -> None:
    from gcnet import create_model

    torch.manual_seed(0)
    cpu = create_model("gc_resnet50").eval()
    with torch.no_grad():
        for n, p in cpu.named_parameters():
            if "context_block" in n:
                p.normal_(0, 0.01)
    gpu = create_model("gc_resnet50").to(dev).eval()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 3, 224, 224)
    res = []
    for m, d in ((cpu, "cpu"), (gpu, dev)):
        y = m(x.to(d))
        params = [p for n, p in m.named_parameters() if "context_block" in n]
        grads = torch.autograd.grad(y.square().mean(), params)
        res.append((y.detach().cpu(), [g.cpu() for g in grads]))
    (ya, ga), (yb, gb) = res
    ok_y = torch.allclose(yb, ya, rtol=1e-3, atol=1e-3)
    rel = max(_rel(b, a) for a, b in zip(ga, gb))
    rep.add(
        "parity",
        "gc_resnet50 eval logits",
        ok_y,
        f"max |cuda - cpu| {float((ya - yb).abs().max()):.2e} (rtol 1e-3, atol 1e-3)",
    )
    rep.add(
        "parity",
        "gc_resnet50 context-block grads",
        rel <= 1e-3,
        f"worst relative L2 error {rel:.2e} (<= 1e-3)",
    )


# -- 2. mixed precision -----------------------------------------------------------------------
def _det_targets(n: int, h: int, w: int, dev: torch.device) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        boxes = torch.cat([xy, xy + 32 + torch.rand(3, 2, generator=g) * 64], 1)
        masks = torch.zeros(3, h, w, dtype=torch.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
            masks[k, y0:y1, x0:x1] = 1
        out.append(
            {
                "boxes": boxes.to(dev),
                "labels": torch.randint(1, 81, (3,), generator=g).to(dev),
                "masks": masks.to(dev),
            }
        )
    return out


def _task_step(task: str, dev: torch.device):
    """(model, loss_fn) for one task; loss_fn() runs a forward and returns the loss."""
    from gcnet import create_model

    torch.manual_seed(0)
    if task == "classification":
        m = create_model("gc_resnet50", num_classes=10).to(dev).train()
        x, y = torch.randn(4, 3, 128, 128, device=dev), torch.randint(0, 10, (4,), device=dev)
        return m, lambda: F.cross_entropy(m(x), y)
    if task == "segmentation":
        m = create_model("gcnet_r50_d8", num_classes=5).to(dev).train()
        x, y = torch.randn(2, 3, 128, 128, device=dev), torch.randint(0, 5, (2, 128, 128), device=dev)

        def seg_loss():
            out = m(x)
            return F.cross_entropy(out["out"], y) + 0.4 * F.cross_entropy(out["aux"], y)

        return m, seg_loss
    m = create_model("maskrcnn_gc_r50_fpn", num_classes=81, min_size=320, max_size=320).to(dev).train()
    imgs = [torch.rand(3, 320, 320, device=dev) for _ in range(2)]
    targets = _det_targets(2, 320, 320, dev)
    return m, lambda: sum(m(imgs, targets).values())


def check_mixed_precision(rep: Report, dev: torch.device) -> None:
    for task in ("classification", "segmentation", "detection"):
        for dtype in (torch.float16, torch.bfloat16):
            name = f"{task} {'fp16 + GradScaler' if dtype == torch.float16 else 'bf16'}"
            if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
                rep.add("amp", name, None, "bf16 not supported on this device: skipped")
                continue
            try:
                model, loss_fn = _task_step(task, dev)
                opt = torch.optim.SGD(
                    [p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9
                )
                scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
                losses, bad = [], []
                for _ in range(2):
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=dtype):
                        loss = loss_fn()
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                    for n, p in model.named_parameters():
                        if p.grad is not None and p.grad.dtype != p.dtype:
                            bad.append(f"{n}: grad {p.grad.dtype} vs param {p.dtype}")
                    finite = all(
                        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None
                    )
                    if dtype == torch.bfloat16 and not finite:
                        bad.append("non-finite gradient under bf16")
                    scaler.step(opt)
                    scaler.update()
                    losses.append(float(loss))
                ok = all(math.isfinite(v) for v in losses) and not bad
                detail = f"losses {', '.join(f'{v:.4f}' for v in losses)}" + (f"; {bad[:3]}" if bad else "")
                rep.add("amp", name, ok, detail)
                del model, opt
            except Exception as e:  # a dtype error is exactly what this check is for
                rep.add("amp", name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")
            torch.cuda.empty_cache()


# -- 3. ratios --------------------------------------------------------------------------------
def _round_robin(fns: dict, rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times[k].append(start.elapsed_time(end))
    return times


def _ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return _med([x / y for x, y in zip(times[a], times[b])])


def ratios_blocks(rep: Report, dev: torch.device, rounds: int) -> None:
    from gcnet import GlobalContextBlock

    try:
        from timm.layers import GlobalContext
    except ImportError:
        GlobalContext = None
    for shape in SHAPES:
        if rep.over(150):
            rep.add("ratios", f"block {shape}", None, "skipped: time budget")
            continue
        c = shape[1]
        x = torch.randn(shape, device=dev)
        xg = x.clone().requires_grad_()
        gy = torch.randn_like(x)
        impls = {"gcnet": GlobalContextBlock(c, 1 / 16)}
        if GlobalContext is not None:
            impls["timm"] = GlobalContext(c, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16)
        fns = {"copy": lambda x=x: x.clone()}
        for k, m in impls.items():
            m = _randomize(m.to(dev), 0.01)
            params = [xg, *m.parameters()]

            def fwd(m=m, x=x):
                with torch.no_grad():
                    m(x)

            def fb(m=m, params=params, xg=xg, gy=gy):
                torch.autograd.grad(m(xg), params, gy)

            fns[f"{k} fwd"], fns[f"{k} fb"] = fwd, fb
        t = _round_robin(fns, rounds)
        copy = _med(t["copy"])
        s = "x".join(map(str, shape))
        f, fbm = _med(t["gcnet fwd"]), _med(t["gcnet fb"])
        detail = (
            f"copy {copy * 1e3:.0f}us; fwd {f * 1e3:.0f}us = {f / (1.5 * copy):.2f}x bound, "
            f"fwd+bwd {fbm * 1e3:.0f}us = {fbm / (3.5 * copy):.2f}x bound"
        )
        if "timm fwd" in t:
            rf, rfb = _ratio(t, "gcnet fwd", "timm fwd"), _ratio(t, "gcnet fb", "timm fb")
            detail += f"; vs timm fwd {rf:.2f}x, fwd+bwd {rfb:.2f}x"
        rep.add("ratios", f"block {s}", None, detail)


def ratios_backbones(rep: Report, dev: torch.device, rounds: int) -> None:
    import torchvision

    from gcnet import create_model

    models = {
        "resnet50": create_model("resnet50"),
        "gc_resnet50": create_model("gc_resnet50"),
        "tv resnet50": torchvision.models.resnet50(),
    }
    try:
        import timm

        models["timm gcresnet50t"] = timm.create_model("gcresnet50t")
    except ImportError:
        pass
    with torch.no_grad():
        for m in models.values():
            for n, p in m.named_parameters():
                if "context_block" in n or "attn" in n:
                    p.normal_(0, 0.01)
    models = {k: m.to(dev) for k, m in models.items()}

    def line(t):
        return ", ".join(f"{k} {_ratio(t, k, 'resnet50'):.3f}" for k in t if k != "resnet50") + (
            f" (resnet50 {_med(t['resnet50']):.2f} ms)"
        )

    for bs in (1, 32):
        for fmt_name, fmt in (
            ("contiguous", torch.contiguous_format),
            ("channels_last", torch.channels_last),
        ):
            if rep.over(70):
                rep.add("ratios", f"inference b{bs} {fmt_name}", None, "skipped: time budget")
                continue
            x = torch.randn(bs, 3, 224, 224, device=dev).to(memory_format=fmt)
            for m in models.values():
                m.eval().to(memory_format=fmt)
            with torch.inference_mode():
                t = _round_robin({k: (lambda m=m, x=x: m(x)) for k, m in models.items()}, rounds)
            rep.add("ratios", f"inference b{bs} {fmt_name}, vs resnet50", None, line(t))
    for bs in (8, 16):
        if rep.over(50):
            rep.add("ratios", f"train step b{bs}", None, "skipped: time budget")
            continue
        x = torch.randn(bs, 3, 224, 224, device=dev)
        y = torch.randint(0, 1000, (bs,), device=dev)
        steps = {}
        for k, m in models.items():
            m.train().to(memory_format=torch.contiguous_format)
            opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)

            def step(m=m, opt=opt, x=x, y=y):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(m(x), y).backward()
                opt.step()

            steps[k] = step
        t = _round_robin(steps, max(3, rounds // 2))
        rep.add("ratios", f"train step b{bs} float32, vs resnet50", None, line(t))
    del models
    torch.cuda.empty_cache()


def ratios_detection(rep: Report, dev: torch.device, rounds: int) -> None:
    from gcnet import create_model

    if rep.over(30):
        rep.add("ratios", "maskrcnn train step", None, "skipped: time budget")
        return
    imgs = [torch.rand(3, 800, 1216, device=dev) for _ in range(2)]
    targets = _det_targets(2, 800, 1216, dev)
    steps = {}
    for name in ("maskrcnn_r50_fpn", "maskrcnn_gc_r50_fpn"):
        torch.manual_seed(0)
        m = create_model(name).to(dev).train()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(m=m, opt=opt):
            opt.zero_grad(set_to_none=True)
            torch.manual_seed(0)  # the same RPN / RoI sampling for both
            sum(m(imgs, targets).values()).backward()
            opt.step()

        steps[name] = step
    t = _round_robin(steps, max(3, rounds // 2), warmup=2)
    r = _ratio(t, "maskrcnn_gc_r50_fpn", "maskrcnn_r50_fpn")
    rep.add(
        "ratios",
        "maskrcnn R50-FPN train step b2 (gc / plain)",
        None,
        f"{r:.3f} (plain {_med(t['maskrcnn_r50_fpn']):.1f} ms)",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, default=220.0, help="seconds; later sections skip past it")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--skip-ratios", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: skipped, no CUDA device available (torch {torch.__version__}, "
            f"built with CUDA {torch.version.cuda or 'none'}). Nothing was checked."
        )
        return 0
    dev = torch.device(args.device)
    torch.cuda.set_device(dev)
    rep = Report(args.budget)
    name = torch.cuda.get_device_name(dev)
    print(f"gpu_check on {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    with no_tf32():
        check_block_parity(rep, dev)
        check_backbone_parity(rep, dev)
    check_mixed_precision(rep, dev)
    if not args.skip_ratios:
        torch.backends.cudnn.benchmark = True
        ratios_blocks(rep, dev, args.rounds)
        ratios_backbones(rep, dev, args.rounds)
        ratios_detection(rep, dev, args.rounds)
    print(f"\n## gpu_check summary ({rep.elapsed():.0f} s, {rep.failed} failed)\n")
    print("| section | check | result |")
    print("|---|---|---|")
    for row in rep.rows:
        print("| " + " | ".join(row) + " |")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
