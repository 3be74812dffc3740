"""The optional dependencies (pyproject's extras), imported where a feature uses them.

``require("av", "video decoding")`` returns the module, or raises `MissingExtraError`
whose message is the one line to act on::

    video decoding needs PyAV: pip install 'gcnet[video]'

The command line prints it as ``gcnet <command>: error: ...`` (exit 2). Nothing here is
imported by ``import gcnet``; every feature calls `require` at the point of use, so a
core install (torch, torchvision, numpy, pyyaml, safetensors, tqdm, pillow) trains and
evaluates classification and segmentation models without any extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: top-level module -> (what users install, the gcnet extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "av": ("PyAV", "video"),
    "pycocotools": ("pycocotools", "detection"),
    "matplotlib": ("matplotlib", "viz"),
    "onnx": ("onnx", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "onnxruntime": ("onnxruntime", "onnx"),
    "timm": ("timm", "timm"),
    "huggingface_hub": ("huggingface_hub", "hub"),
}


class MissingExtraError(ImportError):
    """A feature's optional dependency is missing (or does not import); the message is one
    line naming the feature, the package and the ``pip install 'gcnet[EXTRA]'`` that adds it."""


def require(
    module: str, feature: str, extra: str | None = None, alternative: str | None = None
) -> ModuleType:
    """``module`` imported (``"matplotlib.pyplot"``, ``"pycocotools.cocoeval"``), or a
    `MissingExtraError` saying that ``feature`` needs it and which extra installs it
    (``extra``: default from `EXTRAS` by the top-level name); ``alternative``: another
    way out, appended as ``", or ..."`` (``"--set output.plot=false"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.partition(".")[0]
        package, default_extra = EXTRAS.get(root, (root, None))
        extra = extra or default_extra
        fix = f"pip install 'gcnet[{extra}]'" if extra else f"pip install {package}"
        fix += f", or {alternative}" if alternative else ""
        # not installed (or blocked: sys.modules[root] = None) -> the line alone; installed but
        # broken (a shared library FFmpeg needs) -> the line and the first line of why
        first = (str(e).splitlines() or [repr(e)])[0]
        reason = "" if e.name in (root, module) else f" (importing {module} failed: {first})"
        raise MissingExtraError(f"{feature} needs {package}: {fix}{reason}", name=module) from e
