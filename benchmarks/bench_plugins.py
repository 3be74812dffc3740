"""What GC r16 costs when ``gcnet.add_context_blocks`` puts it into the models people train:
torchvision's MobileNetV3-Large, EfficientNet-B0, ConvNeXt-T and ResNet-50, timm's ConvNeXt-T
(its blocks channels-last: the GC block runs with ``layout="nhwc"``) and Ultralytics' YOLO11n
(built from its YAML; the ``backbone``, ``neck`` and ``all`` positions), float32 CPU inference.

    python benchmarks/bench_plugins.py [--rounds 5] [--size 224] [--size-b32 112] [--batch 32]
        [--models resnet50,timm:convnext_tiny,yolo11n] [--threads N]

Per model: the model as torchvision builds it ("plain"), the same with GC r16 in c3-c5 at
its preset's after_1x1 position (``preset:<family>``), and, where the model has its own SE
blocks, the model without them (SE -> identity), so that GC's cost stands beside SE's.
Params, FLOPs in the paper's unit (multiply-adds, GMACs, at batch 1 and --size) and
latency at batch 1 (--size) and batch 32 (--size-b32; 224 for the full-size run). The
variants of one model are timed round-robin (one call of each per round, median of the
rounds), so the ratios vs plain are measured side by side. Block weights are non-zero.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torch import nn

import gcnet
from gcnet.tools.complexity import count_flops, count_params
from gcnet.tools.profiling import compare_times, raise_malloc_thresholds

# torchvision name -> preset family
MODELS = {
    "mobilenet_v3_large": "mobilenet",
    "efficientnet_b0": "efficientnet",
    "convnext_tiny": "convnext",
    "resnet50": "resnet",
    "timm:convnext_tiny": "convnext",
    "yolo11n": "ultralytics",
}


def _without_se(model: nn.Module) -> int:
    """Replace the model's own SqueezeExcitation modules by identities; how many."""
    se = [n for n, m in model.named_modules() if type(m).__name__ == "SqueezeExcitation"]
    for name in se:
        parent, _, attr = name.rpartition(".")
        model.get_submodule(parent)._modules[attr] = nn.Identity()
    return len(se)


def _build(name: str) -> nn.Module:
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[len("timm:") :]).eval()
    if name.startswith("yolo"):
        import os
        import tempfile

        os.environ.setdefault("YOLO_OFFLINE", "1")  # no update checks or downloads
        os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="bench-yolo-"))
        from ultralytics import YOLO

        threads = torch.get_num_threads()  # Ultralytics' import changes torch's thread count
        model = YOLO(f"{name}.yaml").model.eval()
        torch.set_num_threads(threads)
        return model
    return torchvision.models.get_model(name).eval()


def _with_gc(name: str, plain: nn.Module, after: str) -> tuple[nn.Module, int]:
    model = _build(name)
    model.load_state_dict(plain.state_dict())
    names = gcnet.add_context_blocks(model, "gc", after, ratio=1 / 16)
    with torch.no_grad():  # non-zero block weights: a zero-initialised block must not look cheaper
        for block in gcnet.inserted_blocks(model).values():
            for p in block.parameters():
                p.normal_(0, 0.01)
    return model.eval(), len(names)


def variants(name: str, family: str) -> dict[str, tuple[nn.Module, int]]:
    """{label: (model in eval mode, number of context blocks it has)}."""
    torch.manual_seed(0)
    plain = _build(name)
    out = {"plain": (plain, 0)}
    if family == "ultralytics":
        for position in ("backbone", "neck", "all"):
            out[f"+GC r16 ({position})"] = _with_gc(name, plain, f"preset:ultralytics:{position}")
        return out
    out["+GC r16 (c3-c5)"] = _with_gc(name, plain, f"preset:{family}:after_1x1:c3-c5")
    no_se = _build(name)
    if _without_se(no_se):
        out["without its SE"] = (no_se, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds (median)")
    ap.add_argument("--size", type=int, default=224, help="input size at batch 1 (and for FLOPs)")
    ap.add_argument("--size-b32", type=int, default=112, help="input size at --batch (224: full size)")
    ap.add_argument("--batch", type=int, default=32, help="the second batch size")
    ap.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS)
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--system-malloc", action="store_true")
    args = ap.parse_args()
    if not args.system_malloc:
        raise_malloc_thresholds()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, float32 CPU, inference; "
          f"batch 1 at {args.size}x{args.size}, batch {args.batch} at {args.size_b32}x{args.size_b32}; "
          f"median of {args.rounds} round-robin rounds\n")  # fmt: skip
    print("| model | variant | blocks | params (M) | +params | GMACs | +MACs | b1 ms | b1 vs plain "
          f"| b{args.batch} ms | b{args.batch} vs plain |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    x1 = torch.randn(1, 3, args.size, args.size)
    x32 = torch.randn(args.batch, 3, args.size_b32, args.size_b32)
    for name in args.models.split(","):
        vs = variants(name, MODELS[name])
        params = {k: count_params(m) for k, (m, _) in vs.items()}
        macs = {k: count_flops(m, x1) / 2 for k, (m, _) in vs.items()}  # FlopCounter: 2 x MACs
        with torch.inference_mode():
            t1 = compare_times({k: (lambda m=m: m(x1)) for k, (m, _) in vs.items()}, args.rounds, 2)
            t32 = compare_times({k: (lambda m=m: m(x32)) for k, (m, _) in vs.items()}, args.rounds, 1)
        for k, (_, blocks) in vs.items():
            dp = (params[k] - params["plain"]) / params["plain"]
            dm = (macs[k] - macs["plain"]) / macs["plain"]
            print(f"| {name} | {k} | {blocks} | {params[k] / 1e6:.3f} | {100 * dp:+.2f}% "
                  f"| {macs[k] / 1e9:.3f} | {100 * dm:+.2f}% | {t1[k]:.1f} | {t1[k] / t1['plain']:.3f} "
                  f"| {t32[k]:.0f} | {t32[k] / t32['plain']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
