"""The ``gcnet`` command line: ``gcnet blocks | demo | info | export ...``."""

from __future__ import annotations

import argparse
import os
import sys

from gcnet.fileio import write_json

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 8x256x56x56, got {text!r}") from None
    if any(d < 1 for d in dims) or not 3 <= len(dims) <= 5:
        raise argparse.ArgumentTypeError(f"expected N x C x spatial (3 to 5 dims), got {text!r}")
    return dims


def _parse_image_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}") from None
    if len(dims) != 3 or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x224x224, got {text!r}")
    return dims


def cmd_blocks(args: argparse.Namespace) -> int:
    """The block family on one sample input: parameters, FLOPs, forward time."""
    import torch

    from gcnet.layers import create_block
    from gcnet.tools.complexity import count_flops, count_params
    from gcnet.tools.profiling import median_time

    torch.manual_seed(0)
    shape = args.shape
    x = torch.randn(shape)
    c = shape[1]
    rows = [
        ("GC r16 (att, add)", create_block("gc", c, ratio=1 / 16)),
        ("GC r4 (att, add)", create_block("gc", c, ratio=1 / 4)),
        ("GC r16 (att, add+mul)", create_block("gc", c, fusion=("add", "mul"))),
        ("GC r16 (avg, add)", create_block("gc", c, pooling="avg")),
        ("SNL", create_block("snl", c)),
        ("SE r16 (avg, mul)", create_block("se", c)),
        ("NL (embedded gaussian)", create_block("nl", c)),
        ("NL (sub-sampled)", create_block("nl", c, sub_sample=True)),
    ]
    print(f"Block family on input {tuple(shape)} (float32, {torch.get_num_threads()} threads)\n")
    print(f"{'block':<24} {'params':>10} {'GFLOPs':>9} {'fwd ms':>9} {'out == x at init':>17}")
    for name, blk in rows:
        blk.eval()
        with torch.no_grad():
            same = torch.equal(blk(x), x)
            ms = median_time(lambda b=blk: b(x), repeats=args.repeats)
        flops = count_flops(blk, x)
        print(f"{name:<24} {count_params(blk):>10,} {flops / 1e9:>9.4f} {ms:>9.2f} {str(same):>17}")
    return 0


def _parse_overrides(items: list[str] | None) -> dict:
    """``["ratio=0.25", "stages=c4"]`` -> {"ratio": 0.25, "stages": "c4"} (YAML values)."""
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _build_model(args: argparse.Namespace, **extra):
    from gcnet.models import create_model

    kw = {**_parse_overrides(getattr(args, "set", None)), **extra}
    return create_model(args.model, pretrained=getattr(args, "checkpoint", None) or False, **kw)


def cmd_info(args: argparse.Namespace) -> int:
    """Parameters, FLOPs and the plug-in's overhead over the plain network."""
    import torch

    from gcnet.tools.complexity import count_flops, count_params

    model = _build_model(args).eval()
    x = torch.randn(1, *args.input)
    plain = None
    seg_plain = None
    from gcnet.models.detection import DETECTORS

    if args.model in DETECTORS:  # a detector: count its backbone + FPN on the resized image
        name = args.model.replace("_gc_", "_").removesuffix("_r4")
        if name != args.model:
            seg_plain = name
            plain = _build_model(argparse.Namespace(**{**vars(args), "model": name})).eval()
        with torch.no_grad():
            x = model.transform([x[0]])[0].tensors  # the model's own resize (min_size / max_size)
        params = count_params(model)
        model, plain = model.backbone, plain.backbone if plain is not None else None
    elif not hasattr(model, "plugin"):  # a segmentor: compare with the FCN head on the same backbone
        from gcnet.models.segmentation import SEGMENTORS

        for prefix in ("gcnet_", "nonlocal_"):
            if args.model.startswith(prefix) and "fcn_" + args.model[len(prefix) :] in SEGMENTORS:
                seg_plain = "fcn_" + args.model[len(prefix) :]
        if seg_plain is not None:
            plain = _build_model(argparse.Namespace(**{**vars(args), "model": seg_plain})).eval()
    elif model.plugin is not None:  # the same network without the plug-ins
        from gcnet.models import ResNet, model_config

        cfg = model_config(args.model, **_parse_overrides(args.set))
        cfg.pop("_arch")
        plain = ResNet(**{**cfg, "plugin": None}).eval()
    with torch.no_grad():
        if args.model not in DETECTORS:
            params = count_params(model)
        flops = count_flops(model, x)
    print(f"model: {args.model}   input: 1x{'x'.join(map(str, args.input))}")
    if args.model in DETECTORS:
        size = tuple(x.shape[-2:])
        print(f"GFLOPs: backbone + FPN on the resized, padded {size} image; the RPN and RoI heads, the")
        print("same in both models (their cost follows the proposals and detections), are not counted")
    if seg_plain is not None and hasattr(model, "context_blocks"):
        print(f"context blocks: {sorted(model.context_blocks())}; 'plain' = {seg_plain}")
    elif seg_plain is not None:
        print(f"'plain' = {seg_plain}")
    net = getattr(model, "body", model)  # a detector's ResNet sits inside the FPN wrapper
    if getattr(net, "plugin", None) is not None:
        p = net.plugin
        print(
            f"plug-in: {p.block} {dict(p.kwargs)} at {p.position}, stages {list(p.stages)}"
            + (f", indices {dict(p.indices)}" if p.indices else "")
            + f" ({len(net.context_blocks())} blocks)"
        )
    print(f"{'':<12} {'params (M)':>12} {'GFLOPs':>10}")
    print(f"{'model':<12} {params / 1e6:>12.3f} {flops / 1e9:>10.3f}")
    if plain is not None:
        with torch.no_grad():
            pp, pf = count_params(plain), count_flops(plain, x)
        if args.model in DETECTORS:  # whole-detector parameters
            pp += params - count_params(model)
        print(f"{'plain':<12} {pp / 1e6:>12.3f} {pf / 1e9:>10.3f}")
        print(
            f"{'overhead':<12} {(params - pp) / 1e6:>+12.3f} {(flops - pf) / 1e9:>+10.4f}"
            f"   ({100 * (params - pp) / pp:+.2f}% params, {100 * (flops - pf) / pf:+.3f}% FLOPs)"
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gcnet.tools.export import export_model

    model = _build_model(args).eval()
    out = args.output or f"{args.model}.{'onnx' if args.format == 'onnx' else 'pt'}"
    report = export_model(model, out, args.format, input_shape=args.input)
    print(
        f"wrote {out} ({args.format}); parity vs eager: max abs diff {report['max_abs_diff']:.2e}"
        f" (tolerance {report['tolerance']:.0e}) -> {'OK' if report['ok'] else 'FAILED'}"
    )
    return 0 if report["ok"] else 1


def _train_config(args: argparse.Namespace):
    from gcnet.config import load_config

    overrides = list(args.set or [])
    if args.output:
        overrides.append(f"output.dir={args.output}")
    if getattr(args, "model", None):
        overrides.append(f"model.name={args.model}")
    if getattr(args, "skip_bad_images", False):
        overrides.append("data.skip_bad_images=true")
    if getattr(args, "data", None):
        # a folder: an ImageFolder tree for classification, the dataset root for segmentation
        seg = load_config(args.config, overrides)["task"] == "segmentation"
        overrides += ([] if seg else ["data.dataset=imagefolder"]) + [f"data.root={args.data}"]
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from gcnet.engine import distributed as du
    from gcnet.engine import train

    cfg = _train_config(args)
    try:
        summary = train(cfg, resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress)
    finally:
        du.cleanup()
    if du.rank() == 0:
        print(
            f"best val {'top-1' if summary['metric'] == 'top1' else summary['metric']} "
            f"{summary['best']:.2f}%; "
            f"checkpoints in {summary['out_dir']} "
            "(last.pth, best.pth" + (", weights.safetensors" if summary["final_weights"] else "") + ")"
        )
        if summary.get("curves"):
            print(f"curves: {summary['curves']}")
    return 0


def _load_trained(checkpoint: str, use_ema: bool = True):
    """(model in eval mode, config, class names) from a training checkpoint."""
    from gcnet.engine.checkpoint import load_checkpoint
    from gcnet.engine.trainer import build_model_from_config

    ck = load_checkpoint(checkpoint)
    if "config" not in ck or "model" not in ck:
        raise ValueError(f"{checkpoint} is not a gcnet training checkpoint (no config/model entries)")
    cfg, classes = ck["config"], ck["classes"]
    model = build_model_from_config(cfg, len(classes), pretrained=False)
    state = ck["model"]
    if use_ema and ck.get("ema"):
        state = {k[len("module.") :]: v for k, v in ck["ema"].items() if k.startswith("module.")}
    model.load_state_dict(state)
    return model.eval(), cfg, classes


def cmd_eval(args: argparse.Namespace) -> int:

    from torch.utils.data import DataLoader

    from gcnet.config import merge, parse_override
    from gcnet.data import build_classification_data, collate_skip_bad
    from gcnet.engine.trainer import evaluate, resolve_device

    model, cfg, classes = _load_trained(args.checkpoint)
    for item in args.set or []:
        cfg = merge(cfg, parse_override(item))
    if cfg.get("task") == "segmentation":
        return _eval_segmentation(args, model, cfg, classes)
    if cfg.get("task") == "detection":
        return _eval_detection(args, model, cfg, classes)
    if args.data:
        cfg = merge(cfg, {"data": {"dataset": "imagefolder", "root": args.data}})
    if args.skip_bad_images:
        cfg = merge(cfg, {"data": {"skip_bad_images": True}})
    ds, ds_classes = build_classification_data(cfg, "val")
    if len(ds_classes) != len(classes):
        raise ValueError(f"the data has {len(ds_classes)} classes, the checkpoint {len(classes)}")
    device = resolve_device(cfg["train"]["device"])
    loader = DataLoader(ds, batch_size=cfg["train"]["batch_size"], num_workers=cfg["data"]["num_workers"],
                        collate_fn=collate_skip_bad)  # fmt: skip
    res = evaluate(model.to(device), loader, device, len(classes), progress=True)
    out_dir = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval")
    os.makedirs(out_dir, exist_ok=True)
    k = min(5, len(classes))
    print(
        f"{res['num_samples']} images: top-1 {res['top1']:.2f}%  top-{k} {res[f'top{k}']:.2f}%  "
        f"loss {res['loss']:.4f}"
    )
    print("per-class accuracy:")
    for name, acc in zip(classes, res["per_class"]):
        print(f"  {name:<28} {acc:6.2f}%")
    cm = res.pop("confusion_matrix")
    write_json(os.path.join(out_dir, "metrics.json"),
               {**res, "classes": classes, "confusion_matrix": cm.tolist()}, indent=2)  # fmt: skip
    png = _plot_confusion(cm, classes, os.path.join(out_dir, "confusion_matrix.png"))
    print(f"wrote {os.path.join(out_dir, 'metrics.json')} and {png}")
    if res["skipped"]:
        print(f"skipped {res['skipped']} unreadable image(s)")
    return 0


def _sharded_val_loader(cfg, classes, collate_fn):
    """(dataset, loader) of the config's val split, each DDP rank taking its share; the data
    must have the checkpoint's classes."""
    from torch.utils.data import DataLoader

    from gcnet.engine import distributed as du
    from gcnet.engine.trainer import ShardSampler, build_data

    ds, ds_classes = build_data(cfg, "val")
    if len(ds_classes) != len(classes):
        raise ValueError(f"the data has {len(ds_classes)} classes, the checkpoint {len(classes)}")
    sampler = ShardSampler(len(ds), du.world_size(), du.rank())
    loader = DataLoader(ds, batch_size=int(cfg["eval"]["batch_size"]), collate_fn=collate_fn,
                        num_workers=cfg["data"]["num_workers"], sampler=sampler)  # fmt: skip
    return ds, loader


def _eval_segmentation(args: argparse.Namespace, model, cfg, classes) -> int:

    from gcnet.config import merge
    from gcnet.data import collate_skip_bad
    from gcnet.engine import distributed as du
    from gcnet.engine.seg_eval import evaluate_segmentation
    from gcnet.engine.trainer import resolve_device

    if args.data:
        cfg = merge(cfg, {"data": {"root": args.data}})
    if args.skip_bad_images:
        raise ValueError("--skip-bad-images applies to classification data only")
    device = resolve_device(cfg["train"]["device"])
    du.init_distributed(device)
    try:
        ds, loader = _sharded_val_loader(cfg, classes, collate_skip_bad)
        res = evaluate_segmentation(model.to(device), loader, device, len(classes), cfg["eval"],
                                    progress=du.rank() == 0)  # fmt: skip
    finally:
        du.cleanup()
    if du.rank() != 0:
        return 0
    e = cfg["eval"]
    how = e["mode"] + (f", scales {e['scales']}" if list(e["scales"]) != [1.0] else "") + (
        ", flip" if e["flip"] else "")  # fmt: skip
    print(
        f"{len(ds)} images ({how}): mIoU {res['mIoU']:.2f}%  mAcc {res['mAcc']:.2f}%  aAcc {res['aAcc']:.2f}%"
    )
    print(f"  {'class':<24} {'IoU':>7} {'Acc':>7}")
    for name, iou, acc in zip(classes, res["per_class_iou"], res["per_class_acc"]):
        print(f"  {name:<24} {iou:7.2f} {acc:7.2f}")
    out_dir = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval")
    os.makedirs(out_dir, exist_ok=True)
    cm = res.pop("confusion_matrix")
    report = {**res, "classes": classes, "eval": dict(e), "confusion_matrix": cm.tolist()}
    write_json(os.path.join(out_dir, "metrics.json"), report, indent=2)
    print(f"wrote {os.path.join(out_dir, 'metrics.json')}")
    return 0


def _eval_detection(args: argparse.Namespace, model, cfg, classes) -> int:

    from gcnet.config import merge
    from gcnet.data.coco import collate_detection
    from gcnet.engine import distributed as du
    from gcnet.engine.det_eval import STAT_NAMES, evaluate_detection
    from gcnet.engine.trainer import resolve_device

    if args.data:
        cfg = merge(cfg, {"data": {"dataset": "coco", "root": args.data}})
    if args.skip_bad_images:
        raise ValueError("--skip-bad-images applies to classification data only")
    device = resolve_device(cfg["train"]["device"])
    du.init_distributed(device)
    out_dir = args.output or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "eval")
    try:
        _, loader = _sharded_val_loader(cfg, classes, collate_detection)
        res = evaluate_detection(model.to(device), loader, device, out_dir=out_dir, progress=du.rank() == 0)
    finally:
        du.cleanup()
    if du.rank() != 0:
        return 0
    n_img, n_det = res["num_images"], res["num_detections"]
    print(f"{n_img} images, {n_det} detections (COCO AP, %; -1 = no such objects)")
    print(f"  {'':<6}" + "".join(f"{k:>8}" for k in STAT_NAMES))
    for t in ("bbox", "segm"):
        if f"{t}_AP" in res:
            print(f"  {t:<6}" + "".join(f"{res[f'{t}_{k}']:8.2f}" for k in STAT_NAMES))
    write_json(os.path.join(out_dir, "metrics.json"), {**res, "classes": list(classes)}, indent=2)
    written = [res[k] for k in ("bbox_results", "segm_results") if k in res]
    print(f"wrote {os.path.join(out_dir, 'metrics.json')}, " + ", ".join(written))
    return 0


def _plot_confusion(cm, classes, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    import torch

    from gcnet.data.datasets import _load_rgb
    from gcnet.data.transforms import build_transforms

    model, cfg, classes = _load_trained(args.checkpoint)
    if cfg.get("task") == "segmentation":
        return _predict_segmentation(args, model, cfg, classes)
    if cfg.get("task") == "detection":
        return _predict_detection(args, model, classes)
    tf = build_transforms(cfg["data"], train=False, tensor_input=False)
    k = min(args.topk, len(classes))
    results = []
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        x = tf(_load_rgb(path)).unsqueeze(0)
        with torch.no_grad():
            prob = model(x).softmax(-1)[0]
        p, i = prob.topk(k)
        results.append({"image": path, "top": [{"class": classes[j], "prob": float(q)}
                                               for q, j in zip(p, i.tolist())]})  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["image"])
            for t in r["top"]:
                print(f"  {t['prob']:7.2%}  {t['class']}")
    return 0


def _predict_segmentation(args: argparse.Namespace, model, cfg, classes) -> int:
    """Colour-coded masks and overlays as PNG, plus per-image class pixel shares."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    from gcnet.config import merge, parse_override
    from gcnet.data.datasets import _load_rgb
    from gcnet.data.segmentation import SyntheticSegmentation, build_seg_transform, color_palette, colorize
    from gcnet.engine.seg_eval import predict_probs

    for item in args.set or []:
        cfg = merge(cfg, parse_override(item))
    tf = build_seg_transform(cfg["data"], train=False)
    palette = SyntheticSegmentation.palette if cfg["data"]["dataset"] == "synthetic" else None
    if palette is None:
        from gcnet.data import segmentation as segdata

        palette = {"cityscapes": segdata.CITYSCAPES_PALETTE}.get(
            cfg["data"]["dataset"], color_palette(len(classes))
        )
    out_dir = args.output or "predictions"
    os.makedirs(out_dir, exist_ok=True)
    e = cfg["eval"]
    results = []
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        rgb = np.asarray(_load_rgb(path))
        img = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
        x, _ = tf(img, torch.zeros(img.shape[-2:], dtype=torch.uint8))
        with torch.no_grad():
            probs = predict_probs(model, x[None], len(classes), out_size=rgb.shape[:2], mode=e["mode"],
                                  crop_size=e["crop_size"], stride=e["stride"], scales=e["scales"],
                                  flip=e["flip"])[0]  # fmt: skip
        pred = probs.argmax(0).numpy().astype(np.uint8)
        stem = os.path.splitext(os.path.basename(path))[0]
        color = colorize(pred, palette)
        mask_png = os.path.join(out_dir, f"{stem}_mask.png")
        overlay_png = os.path.join(out_dir, f"{stem}_overlay.png")
        label_png = os.path.join(out_dir, f"{stem}_labels.png")
        Image.fromarray(color).save(mask_png)
        Image.fromarray((0.5 * rgb + 0.5 * color).astype(np.uint8)).save(overlay_png)
        Image.fromarray(pred, mode="L").save(label_png)
        ids, counts = np.unique(pred, return_counts=True)
        shares = {classes[i]: float(c) / pred.size for i, c in zip(ids.tolist(), counts.tolist())}
        results.append({"image": path, "mask": mask_png, "overlay": overlay_png, "labels": label_png,
                        "class_share": dict(sorted(shares.items(), key=lambda kv: -kv[1]))})  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            top = ", ".join(f"{k} {v:.1%}" for k, v in list(r["class_share"].items())[:5])
            print(f"{r['image']}: {top}\n  wrote {r['mask']}, {r['overlay']}, {r['labels']}")
    return 0


def _predict_detection(args: argparse.Namespace, model, classes) -> int:
    """Boxes, labels, scores and masks drawn on each image, as PNG; JSON with --json."""
    import json

    import numpy as np
    import torch
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    from gcnet.data.datasets import _load_rgb

    out_dir = args.output or "predictions"
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image not found: {path}")
        img = torch.from_numpy(np.asarray(_load_rgb(path)).copy()).permute(2, 0, 1)
        with torch.no_grad():
            det = model([img.float() / 255])[0]
        keep = det["scores"] >= args.score_threshold
        boxes, labels, scores = det["boxes"][keep], det["labels"][keep], det["scores"][keep]
        canvas = img
        if "masks" in det and keep.any():
            canvas = draw_segmentation_masks(canvas, det["masks"][keep][:, 0] > 0.5, alpha=0.45)
        names = [f"{classes[int(c) - 1]} {float(s):.2f}" for c, s in zip(labels, scores)]
        if len(boxes):
            canvas = draw_bounding_boxes(canvas, boxes, names, colors="yellow", width=2)
        png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + "_det.png")
        Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(png)
        results.append({"image": path, "output": png, "detections": [
            {"class": classes[int(c) - 1], "score": float(s), "box_xyxy": [round(float(v), 1) for v in b]}
            for b, c, s in zip(boxes, labels, scores)]})  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['image']}: {len(r['detections'])} detections (score >= {args.score_threshold})")
            for d in r["detections"][:20]:
                print(f"  {d['score']:.2f}  {d['class']:<20} {d['box_xyxy']}")
            print(f"  wrote {r['output']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Train a plain model and its GC counterpart of the same size on the embedded dataset,
    compare: ResNet-18 vs GC-ResNet-18 (classification), the FCN head vs the GCNet head on
    a dilated ResNet-18 (``--task segmentation``), or Mask R-CNN on R18-FPN vs GC-R18-FPN
    (``--task detection``)."""
    import torch

    from gcnet.config import load_config, merge
    from gcnet.engine import train
    from gcnet.engine.logger import plot_curves
    from gcnet.models import create_model
    from gcnet.tools.complexity import count_flops, count_params

    task = args.task
    default, names, metric, label, output = {
        "classification": ("demo_synthetic.yaml", ("resnet18", "gc_resnet18"), "top1", "top-1",
                           "runs/demo"),
        "segmentation": ("demo_segmentation.yaml", ("fcn_r18_d8", "gcnet_r18_d8"), "mIoU", "mIoU",
                         "runs/demo_seg"),
        "detection": ("demo_detection.yaml", ("maskrcnn_r18_fpn", "maskrcnn_gc_r18_fpn"), "bbox_AP",
                      "box AP", "runs/demo_det"),
    }[task]  # fmt: skip
    recipe = args.config or os.path.join(os.path.dirname(__file__), "recipes", default)
    output = args.output or output
    runs, rows = {}, []
    for name in names:
        cfg = load_config(recipe, [*(args.set or []), f"model.name={name}",
                                   f"output.dir={os.path.join(output, name)}"])  # fmt: skip
        if task == "detection" and cfg["data"]["dataset"] == "synthetic" and not cfg["data"]["root"]:
            # both models read one copy of the synthetic COCO set, written once
            cfg = merge(cfg, {"data": {"root": os.path.join(output, "synthetic_coco")}})
        print(f"\n=== {name} ===")
        s = train(cfg, progress=not args.no_progress)
        size = cfg["data"]["image_size"]
        kw = dict(cfg["model"]["kwargs"], num_classes=s["num_classes"] + (task == "detection"))
        m = create_model(name, **kw).eval()
        with torch.no_grad():
            if task == "detection":  # one landscape image; no detection passes: mask head not counted
                m.roi_heads.score_thresh = 2.0
                flops = count_flops(m, [torch.rand(3, size, size * 4 // 3)])
            else:
                flops = count_flops(m, torch.randn(1, 3, size, size))
        last = s["history"][-1]
        extra = f" (mask AP {last['val_segm_AP']:.2f})" if "val_segm_AP" in last else ""
        rows.append((name, count_params(m), flops, s["best"], last.get(f"val_{metric}", float("nan")),
                     last["train_loss"], s["train_time_s"], s["out_dir"], extra))  # fmt: skip
        runs[name] = s["history"]
    curves = plot_curves(runs, os.path.join(output, "curves.png"), metric=f"val_{metric}")
    print(
        f"\n| model | params (M) | MFLOPs/img | best val {label} | final val {label} | final train loss "
        "| train time |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, p, f, best, final, loss, t, _, extra in rows:
        print(
            f"| {name} | {p / 1e6:.2f} | {f / 1e6:.1f} | {best:.2f}% | {final:.2f}%{extra} "
            f"| {loss:.4f} | {t:.0f}s |"
        )
    print(f"\ncurves: {curves}")
    for name, *_, out, _ in rows:
        print(f"checkpoints of {name}: {out}/best.pth, {out}/last.pth, {out}/weights.safetensors")
    return 0


def _analysis_model(args: argparse.Namespace):
    """A model for the analysis commands: a gcnet training checkpoint (its config builds the
    model), or ``--model NAME`` with optional weights (``--checkpoint`` path/'torchvision')."""
    from gcnet.models import create_model, load_checkpoint_file

    ckpt = getattr(args, "checkpoint", None)
    if ckpt and ckpt.endswith((".pth", ".pt")):
        from gcnet.engine.checkpoint import load_checkpoint

        ck = load_checkpoint(ckpt)
        if isinstance(ck, dict) and "config" in ck and "classes" in ck:
            model, cfg, _ = _load_trained(ckpt)
            data = dict(cfg["data"])
            if cfg.get("task") == "segmentation" and data["dataset"] != "synthetic":
                data["image_size"] = args.size  # real scenes: not the synthetic training size
            return model, data
    if not args.model:
        raise ValueError("--model is required unless --checkpoint is a gcnet training checkpoint")
    kw = _parse_overrides(getattr(args, "set", None))
    if ckpt and ckpt != "torchvision" and "num_classes" not in kw:
        sd = load_checkpoint_file(ckpt)
        if "fc.weight" in sd:
            kw["num_classes"] = sd["fc.weight"].shape[0]
    model = create_model(args.model, pretrained=ckpt or False, **kw).eval()
    return model, None


def _image_batch(paths: list[str], size: int, data_cfg=None):
    """(normalised batch, list of uint8 HxWx3 arrays as shown) for image files."""
    import numpy as np
    import torch
    from torchvision.transforms import v2

    from gcnet.data.datasets import _load_rgb

    mean = data_cfg["mean"] if data_cfg else [0.485, 0.456, 0.406]
    std = data_cfg["std"] if data_cfg else [0.229, 0.224, 0.225]
    if data_cfg:
        size = data_cfg["image_size"]
    shown_tf = v2.Compose([v2.ToImage(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    xs, shown = [], []
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"image not found: {p}")
        img = shown_tf(_load_rgb(p))
        shown.append(np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
        xs.append(norm(img))
    return torch.stack(xs), shown


def cmd_analyze(args: argparse.Namespace) -> int:
    import torch

    from gcnet.tools.attention import AttentionRecorder, query_independence
    from gcnet.tools.visualize import plot_attention, plot_cosine, plot_query_maps, stage_of

    out_dir = args.output
    os.makedirs(out_dir, exist_ok=True)
    if args.what == "complexity":
        from gcnet.tools.ablation import complexity_table, write_table

        rows = complexity_table(args.size, 0 if args.no_latency else args.repeats)
        md, csv_path = write_table(rows, out_dir)
        print(open(md).read())
        print(f"wrote {md} and {csv_path}")
        return 0
    model, data_cfg = _analysis_model(args)
    if args.what == "attention":
        if not args.images:
            raise ValueError("analyze attention needs at least one IMAGE")
        x, shown = _image_batch(args.images, args.size, data_cfg)
        with AttentionRecorder(model) as rec, torch.no_grad():
            model(x)
        records = list(rec.records.values())
        for i, path in enumerate(args.images):
            stem = os.path.splitext(os.path.basename(path))[0]
            f = plot_attention(shown[i], records, i, os.path.join(out_dir, f"{stem}_attention.png"))
            print(f"wrote {f}")
            for r in records:
                if r.kind == "nl":
                    q = os.path.join(out_dir, f"{stem}_{r.name.replace('.', '_')}_queries.png")
                    print(f"wrote {plot_query_maps(shown[i], r, i, q, args.queries)}")
        return 0
    # cosine: the paper's query-independence study
    import csv

    from gcnet.data.datasets import IMG_EXTENSIONS

    if args.data:
        files = sorted(
            os.path.join(d, f)
            for d, _, fs in os.walk(args.data)
            for f in fs
            if f.lower().endswith(IMG_EXTENSIONS)
        )[: args.num_images]
        if not files:
            raise FileNotFoundError(f"no images under {args.data}")
        x, _ = _image_batch(files, args.size, data_cfg)
    else:
        from gcnet.data import SyntheticContext

        size = data_cfg["image_size"] if data_cfg else args.size
        ds = SyntheticContext(args.num_images, size, split="val")
        mean = torch.tensor(data_cfg["mean"] if data_cfg else [0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor(data_cfg["std"] if data_cfg else [0.229, 0.224, 0.225]).view(3, 1, 1)
        x = torch.stack([(ds[i][0].float() / 255 - mean) / std for i in range(len(ds))])
    with AttentionRecorder(model, keep_features=True) as rec, torch.no_grad():
        for chunk in x.split(args.batch_size):
            model(chunk)
    per_block = {n: query_independence(r) for n, r in rec.records.items()}
    stages: dict[str, list[dict]] = {}
    for n, v in per_block.items():
        stages.setdefault(stage_of(n), []).append(v)
    rows = [{"stage": st, "blocks": len(vs), **{k: sum(v[k] for v in vs) / len(vs) for k in vs[0]}}
            for st, vs in stages.items()]  # fmt: skip
    print(f"mean pairwise cosine distance (1 - cos) / 2 over query positions, {x.shape[0]} images\n")
    print("| stage | blocks | input | output | attention | attention JS div |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['blocks']} | {r['input']:.4f} | {r['output']:.4f} | "
              f"{r['attention']:.6f} | {r['attention_js']:.6f} |")  # fmt: skip
    csv_path = os.path.join(out_dir, "cosine.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    png = plot_cosine(rows, os.path.join(out_dir, "cosine.png"))
    print(f"\nwrote {csv_path} and {png}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gcnet", description="Global Context Networks in PyTorch")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("blocks", help="compare the block family on a sample input")
    p.add_argument("--shape", type=_parse_shape, default=(8, 256, 28, 28))
    p.add_argument("--repeats", type=int, default=10)
    p.set_defaults(fn=cmd_blocks)

    p = sub.add_parser("info", help="parameters, FLOPs and plug-in overhead of a model")
    p.add_argument("model")
    p.add_argument("--input", type=_parse_image_shape, default=(3, 224, 224))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    p.add_argument("--checkpoint", default=None)
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("export", help="export a model to ONNX or TorchScript, parity-checked")
    p.add_argument("model")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--input", type=_parse_shape, default=(1, 3, 224, 224))
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    p.add_argument("--checkpoint", default=None, help="weights (path, or 'torchvision')")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("train", help="train a classifier or a segmentation model (torchrun for DDP)")
    p.add_argument("--config", "-c", default=None, help="YAML recipe (configs/*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, e.g. optim.lr=0.05")
    p.add_argument("--model", default=None, help="shortcut for model.name")
    p.add_argument(
        "--data", default=None, help="ImageFolder root (train/, val/) or segmentation dataset root"
    )
    p.add_argument("--output", "-o", default=None, help="shortcut for output.dir")
    p.add_argument("--resume", default=None, help="checkpoint path, or 'auto' for <output>/last.pth")
    p.add_argument("--stop-after", type=int, default=None, help="stop after N epochs (as if interrupted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-bad-images", action="store_true", help="drop unreadable images, count them")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "eval", help="evaluate a trained checkpoint: top-1/5 and confusion matrix, or mIoU per class"
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None,
                   help="ImageFolder root (classification) or dataset root (segmentation); "
                        "its val split")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--output", "-o", default=None)
    p.add_argument("--skip-bad-images", action="store_true", help="drop unreadable images, count them")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes of images, or segmentation masks as PNG")
    p.add_argument("images", nargs="+")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. eval.mode=slide (segmentation)")
    p.add_argument("--output", "-o", default=None,
                   help="folder for mask / detection PNGs (default: predictions)")  # fmt: skip
    p.add_argument("--score-threshold", type=float, default=0.5,
                   help="detection: draw boxes scoring at least this")  # fmt: skip
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("analyze", help="attention maps, the cosine-distance study, complexity tables")
    p.add_argument("what", choices=("attention", "cosine", "complexity"))
    p.add_argument("images", nargs="*", help="images (attention)")
    p.add_argument("--model", default=None, help="registered model name")
    p.add_argument("--checkpoint", default=None, help="training checkpoint, weights file or 'torchvision'")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model override")
    p.add_argument("--data", default=None, help="folder of images (cosine; default: the synthetic set)")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--size", type=int, default=224, help="input size (a training checkpoint's own wins)")
    p.add_argument("--queries", type=int, default=4, help="NL query points to show")
    p.add_argument("--repeats", type=int, default=3, help="latency repeats (complexity)")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--output", "-o", default="runs/analyze")
    p.set_defaults(fn=cmd_analyze)

    p = sub.add_parser("demo", help="train a plain and a GC model on the embedded data, compare")
    p.add_argument("--task", choices=("classification", "segmentation", "detection"),
                   default="classification",
                   help="ResNet-18 vs GC-ResNet-18, FCN vs GCNet head on ResNet-18-D8, or Mask R-CNN "
                        "on R18-FPN vs GC-R18-FPN")  # fmt: skip
    p.add_argument("--config", "-c", default=None, help="recipe (default: the packaged demo recipe)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--output", "-o", default=None, help="default runs/demo, runs/demo_seg or runs/demo_det")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as e:
        msg = str(e)
        if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the message only
            msg = [line for line in msg.splitlines() if line.strip()][-1]
        print(f"gcnet {args.command}: error: {msg}", file=sys.stderr)
        return 2
