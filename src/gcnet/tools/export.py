"""Export to ONNX (``torch.onnx.export``, dynamo) or TorchScript (trace), with a parity
check against eager built in: the exported file is run (onnxruntime / torch.jit.load) on a
random input and compared with the eager model. Files are written atomically."""

from __future__ import annotations

import os
import tempfile

import torch
from torch import nn

__all__ = ["export_model"]


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    tolerance: float = 1e-4,
) -> dict:
    """Export ``model`` (put in eval mode) to ``path``; returns the parity report."""
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    path = os.fspath(path)
    model = model.eval()
    x = torch.randn(*input_shape)
    with torch.no_grad():
        ref = model(x)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    os.close(fd)
    try:
        if fmt == "onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                raise ValueError("ONNX export needs: pip install 'gcnet[onnx]'") from None
            with torch.no_grad():
                program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
            program.save(tmp)
            sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            (out,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
            out = torch.from_numpy(out)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(model, (x,), check_trace=False)
            traced.save(tmp)
            with torch.no_grad():
                out = torch.jit.load(tmp)(x)
        diff = (out - ref).abs().max().item()
        ok = diff <= tolerance * max(1.0, ref.abs().max().item())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"path": path, "max_abs_diff": diff, "tolerance": tolerance, "ok": ok}
