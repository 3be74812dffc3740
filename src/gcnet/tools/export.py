"""Export to ONNX or TorchScript (trace), with a parity check against eager built in.

ONNX: ``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes`` (`torch.export.Dim`)
for the models that return a tensor (classification, segmentation, video): the batch and
every spatial axis (height, width; a clip's time too) are symbolic in the file unless
``static``. A detector (a model that returns one dict of boxes / labels / scores [/ masks]
per image: torchvision's R-CNNs, whose NMS ``torch.export`` cannot trace) goes through
torch's TorchScript-based exporter (``dynamo=False``) for one image at a time: height and
width are dynamic, the batch is 1, and the number of detections is data-dependent.

The file carries ``metadata_props`` (the gcnet version, the input layout, size and dynamic
axes, and what the caller adds: model name, task, class names, mean / std); a TorchScript
file carries the same as the extra file ``gcnet_metadata.json``. The exported file is run
(onnxruntime / ``torch.jit.load``) and compared with the eager model at two batch sizes
and two input sizes where those axes are dynamic (else at the export shape). Files are
written atomically (`gcnet.fileio.atomic_write`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from gcnet.fileio import atomic_write
from gcnet.utils.extras import require

__all__ = ["AXIS_NAMES", "export_model", "parity_shapes", "read_metadata"]

#: the names of an input's axes by its rank (None: channels, never dynamic)
AXIS_NAMES: dict[int, tuple[str | None, ...]] = {
    4: ("batch", None, "height", "width"),
    5: ("batch", None, "time", "height", "width"),
}
_LAYOUT = {4: "NCHW", 5: "NCTHW"}
METADATA_FILE = "gcnet_metadata.json"  # TorchScript's extra file


def _fmt(shape) -> str:
    return "x".join(map(str, shape))


def _is_detector_output(out: Any) -> bool:
    return isinstance(out, (list, tuple)) and len(out) > 0 and all(isinstance(o, Mapping) for o in out)


def parity_shapes(shape: tuple[int, ...], dynamic: Mapping[int, str]) -> list[tuple[int, ...]]:
    """The shapes the exported file is checked at: batch 1 at ``shape``'s size and batch 3 at
    a second size (each dynamic spatial axis 1.5x, rounded up); ``shape`` alone when nothing
    is dynamic. An axis that is not dynamic keeps its size."""
    if not dynamic:
        return [tuple(shape)]
    first, second = list(shape), list(shape)
    if 0 in dynamic:
        first[0], second[0] = 1, 3
    for axis in dynamic:
        if axis > 1:
            second[axis] = shape[axis] + (shape[axis] + 1) // 2
    out = [tuple(first), tuple(second)]
    return out if out[0] != out[1] else out[:1]


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an exported ONNX file (or a TorchScript file's metadata)."""
    path = os.fspath(path)
    if path.endswith(".onnx"):
        onnx = require("onnx", "reading ONNX metadata")
        return {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    files = {METADATA_FILE: ""}
    torch.jit.load(path, _extra_files=files)
    return json.loads(files[METADATA_FILE] or "{}")


def _max_diff(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float] | None:
    """(max abs difference, max abs reference) over matching outputs; None when the shapes
    differ (a detector that found a different number of objects)."""
    diff, scale = 0.0, 0.0
    for g, w in zip(got, want, strict=True):
        if tuple(g.shape) != tuple(w.shape):
            return None
        if w.numel():
            diff = max(diff, (g.double() - w.double()).abs().max().item())
            scale = max(scale, w.double().abs().max().item())
    return diff, scale


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    tolerance: float = 1e-4,
    *,
    static: bool = False,
    metadata: Mapping[str, Any] | None = None,
    input_option: str = "input_shape",
) -> dict:
    """Export ``model`` (put in eval mode) to ``path``; returns the report: ``path``,
    ``format``, ``dynamic`` ({input / output name: {axis: name}}), ``checks`` ([(shape,
    max abs diff or None)]), ``max_abs_diff``, ``tolerance``, ``ok``, ``metadata``.

    ``static``: fix every axis at ``input_shape`` (ONNX only). ``metadata``: more entries for
    the file (values that are not strings are written as JSON). ``input_option``: how the
    messages name the input shape (``--input`` for the command line)."""
    input_shape = _checked_shape(fmt, input_shape, static, input_option)
    path = os.fspath(path)
    model = model.eval()
    with torch.no_grad():
        probe = model(torch.rand(*input_shape))
    detector = _is_detector(probe, fmt, input_shape, input_option)
    names = AXIS_NAMES[len(input_shape)]
    dynamic = {} if static else {a: n for a, n in enumerate(names) if n and not (detector and a == 0)}
    report: dict[str, Any] = {"path": path, "format": fmt, "tolerance": tolerance}
    meta = {
        "gcnet_version": _version(),
        "input_layout": _LAYOUT[len(input_shape)],
        "input_shape": _fmt(input_shape),
        "input_size": _fmt(input_shape[2:]),
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }

    def write(tmp: str) -> None:
        if fmt == "onnx":
            axes, run = _export_onnx(model, tmp, input_shape, dynamic, detector, probe, input_option)
            meta["dynamic_axes"] = json.dumps(axes)
            _set_onnx_metadata(tmp, meta)
        else:
            axes, run = _export_torchscript(model, tmp, input_shape, dynamic, meta)
        report["dynamic"] = axes
        checks, ok = _parity(model, run, input_shape, dynamic, detector, tolerance, input_option)
        report.update(checks=checks, ok=ok, metadata=dict(meta))
        report["max_abs_diff"] = max((d for _, d in checks if d is not None), default=float("nan"))

    atomic_write(path, write)
    return report


def _checked_shape(
    fmt: str, input_shape: tuple[int, ...], static: bool, input_option: str
) -> tuple[int, ...]:
    """``input_shape`` as ints, once ``fmt``, its rank and ``static`` are checked."""
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in AXIS_NAMES:
        raise ValueError(f"{input_option} {_fmt(input_shape)}: expected NxCxHxW or NxCxTxHxW (clips)")
    if static and fmt != "onnx":
        raise ValueError("--static (static=True) applies to ONNX: a TorchScript trace takes any input size")
    return input_shape


def _is_detector(probe: Any, fmt: str, input_shape: tuple[int, ...], input_option: str) -> bool:
    """Whether the model's output ``probe`` is a detector's (a list of dicts); an output or a
    setting that gcnet cannot export raises."""
    detector = _is_detector_output(probe)
    if detector and fmt != "onnx":
        raise ValueError("--format torchscript: a detector returns a list of dicts, which a trace cannot "
                         "hold; export it with --format onnx")  # fmt: skip
    if detector and input_shape[0] != 1:
        raise ValueError(f"{input_option} {_fmt(input_shape)}: a detector is exported for one image at a "
                         f"time; give N=1 (1x{_fmt(input_shape[1:])})")  # fmt: skip
    if not detector and not isinstance(probe, torch.Tensor):
        raise ValueError(f"cannot export a model that returns {type(probe).__name__}: gcnet exports models "
                         "that return a tensor, or a detector's list of dicts")  # fmt: skip
    return detector


def _parity(
    model: nn.Module,
    run: Callable[[torch.Tensor], list[torch.Tensor]],
    input_shape: tuple[int, ...],
    dynamic: Mapping[int, str],
    detector: bool,
    tolerance: float,
    input_option: str,
) -> tuple[list[tuple[tuple[int, ...], float | None]], bool]:
    """([(shape, max abs difference, or None where the file did not run or the outputs' shapes
    differ)], whether every difference is within ``tolerance``) of the exported file's ``run``
    against ``model`` at `parity_shapes`."""
    checks = []
    ok = True
    for shape in parity_shapes(input_shape, dynamic):
        x = torch.rand(*shape) if detector else torch.randn(*shape)
        try:
            with torch.no_grad():
                want = model(x)
        except RuntimeError as e:  # the model itself fixes an axis (e.g. a Linear after Flatten)
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            free = ", ".join(dynamic.values())
            raise ValueError(f"{input_option} {_fmt(input_shape)}: the model does not take {_fmt(shape)} "
                             f"({reason}), so its {free} cannot be dynamic; export with --static "
                             "(static=True)") from None  # fmt: skip
        want = [want[0][k] for k in want[0]] if detector else [want]
        try:
            res = _max_diff(run(x), want)
        except Exception:  # the exported file does not run at this shape
            res = None
        if res is None:
            checks.append((shape, None))
            ok = False
        else:
            checks.append((shape, res[0]))
            ok = ok and res[0] <= tolerance * max(1.0, res[1])
    return checks, ok


def _version() -> str:
    from gcnet import __version__

    return str(__version__)


def _export_onnx(model, tmp, shape, dynamic, detector, probe, input_option):
    ort = require("onnxruntime", "ONNX export")  # the parity check
    require("onnx", "ONNX export")  # the file's axes and metadata
    if not detector:
        require("onnxscript", "ONNX export")  # torch.onnx.export(dynamo=True)
    if detector:
        keys = list(probe[0])
        axes: dict[str, dict[int, str]] = {"input": dict(dynamic)}
        for k in keys:  # how many objects: always data-dependent; masks at the image's size
            axes[k] = {0: "detections"}
            if k == "masks" and dynamic:
                axes[k].update({2: "height", 3: "width"})
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.rand(*shape),), tmp, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=keys, dynamic_axes=axes)  # fmt: skip
    else:
        from torch.export import Dim

        # a dynamic axis is traced at size >= 2 (torch.export specialises an example size of 1)
        example = torch.randn(*(max(2, d) if a in dynamic else d for a, d in enumerate(shape)))
        spec = ({a: Dim(n) for a, n in dynamic.items()},) if dynamic else None
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=spec,
                                            verbose=False, input_names=["input"],
                                            output_names=["output"])  # fmt: skip
        except Exception as e:
            if not dynamic:
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{input_option} {_fmt(shape)}: the model does not export with dynamic "
                             f"{', '.join(dynamic.values())} ({reason}); export with --static "
                             "(static=True)") from None  # fmt: skip
        program.save(tmp)
        axes = {"input": dict(dynamic), "output": _output_axes(tmp)}
    sess = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])

    def run(x):
        return [torch.from_numpy(y) for y in sess.run(None, {"input": x.numpy()})]

    return axes, run


def _output_axes(path: str) -> dict[int, str]:
    """The symbolic axes of the exported file's output (e.g. {0: "batch", 2: "height", ...})."""
    onnx = require("onnx", "ONNX export")
    out = onnx.load(path, load_external_data=False).graph.output[0]
    dims = out.type.tensor_type.shape.dim
    return {i: d.dim_param for i, d in enumerate(dims) if d.dim_param}


def _set_onnx_metadata(path: str, meta: Mapping[str, str]) -> None:
    onnx = require("onnx", "ONNX export")
    m = onnx.load(path)
    onnx.helper.set_model_props(m, dict(meta))
    onnx.save(m, path)


def _export_torchscript(model, tmp, shape, dynamic, meta):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (torch.randn(*shape),), check_trace=False)
    axes = {"input": dict(dynamic)}
    meta["dynamic_axes"] = json.dumps(axes)
    traced.save(tmp, _extra_files={METADATA_FILE: json.dumps(meta)})
    loaded = torch.jit.load(tmp)

    def run(x):
        with torch.no_grad():
            return [loaded(x)]

    return axes, run
