"""``gcnet export``: ONNX or TorchScript, checked against eager."""

from __future__ import annotations

import argparse

from ._common import parse_shape
from .info import build_model


def run(args: argparse.Namespace) -> int:
    from gcnet.tools.export import export_model

    model = build_model(args).eval()
    out = args.output or f"{args.model}.{'onnx' if args.format == 'onnx' else 'pt'}"
    report = export_model(model, out, args.format, input_shape=args.input)
    print(
        f"wrote {out} ({args.format}); parity vs eager: max abs diff {report['max_abs_diff']:.2e}"
        f" (tolerance {report['tolerance']:.0e}) -> {'OK' if report['ok'] else 'FAILED'}"
    )
    return 0 if report["ok"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or TorchScript, parity-checked")
    p.add_argument("model", help="registered model name (gcnet.list_models())")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="output format")
    p.add_argument("--output", "-o", default=None, help="output file (default MODEL.onnx / MODEL.pt)")
    p.add_argument("--input", type=parse_shape, default=(1, 3, 224, 224), metavar="NxCxHxW",
                   help="example input for tracing and the parity check (default 1x3x224x224)")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="model option, e.g. ratio=0.25")
    p.add_argument("--checkpoint", default=None, help="weights: a checkpoint path, or 'torchvision'")
    p.set_defaults(fn=run)
