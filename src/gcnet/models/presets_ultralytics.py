"""Where context blocks go in Ultralytics YOLO models: the finder of ``preset:ultralytics``.

Plain functions and data: nothing here imports ``ultralytics`` (the layers are recognised by
their class names and the attributes Ultralytics' ``parse_model`` gives every top-level
layer: ``i``, ``f``, ``type``), so gcnet never imports it unless given such a model.

Every CSP-style block of YOLOv5 / v8 / v9 / v10 / 11 / 12 / 26 (``C3``, ``C2f``, ``C3k2``,
``C2PSA``, ``A2C2f``, ...) ends in a 1x1 conv (+ BN + SiLU, an Ultralytics ``Conv``) that fuses
its split paths; the block goes after that conv, inside the layer (``model.4.cv2``), so the
top-level layer keeps the attributes ``_predict_once`` reads and ``model.fuse()`` still folds
the conv's BN (a block after the BN itself would be dropped by the fold).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["ULTRALYTICS_BLOCKS", "ULTRALYTICS_POSITIONS", "find_ultralytics_blocks"]

#: the layers' class names -> their last 1x1 conv (the block's output, or in ``A2C2f`` what
#: its scaled residual add receives)
ULTRALYTICS_BLOCKS: dict[str, str] = {
    "C2f": "cv2",  # YOLOv8
    "C3k2": "cv2",  # YOLO11, YOLO26
    "C2PSA": "cv2",  # YOLO11, YOLO26: the P5 block with self-attention
    "A2C2f": "cv2",  # YOLO12: area attention, before the layer-scaled residual add
    "C2fCIB": "cv2",  # YOLOv10
    "C2fPSA": "cv2",
    "PSA": "cv2",  # YOLOv10
    "C2fAttn": "cv2",  # YOLO-World
    "C2": "cv2",
    "C3": "cv3",  # YOLOv5
    "C3x": "cv3",
    "C3Ghost": "cv3",
    "C3TR": "cv3",
    "C3f": "cv3",
    "RepNCSPELAN4": "cv4",  # YOLOv9
    "ELAN1": "cv4",
}

#: ``preset:ultralytics:POSITION``: the backbone's blocks (the model YAML's ``backbone:``
#: list), the neck's (the ``head:`` list up to the detection / segmentation head), or both
ULTRALYTICS_POSITIONS = ("backbone", "neck", "all")


def _is_layer(m: Any) -> bool:
    """A top-level layer built by Ultralytics' ``parse_model`` (it sets ``i``, ``f``, ``type``)."""
    return isinstance(m, nn.Module) and isinstance(getattr(m, "i", None), int) and hasattr(m, "f")


def _layers(model: nn.Module) -> nn.Module | None:
    """``model.model``, the ``nn.Sequential`` of Ultralytics layers of a ``DetectionModel`` /
    ``SegmentationModel`` / ..., or None."""
    seq = model._modules.get("model")
    if isinstance(seq, nn.Sequential) and len(seq) and all(_is_layer(m) for m in seq):
        return seq
    return None


def _backbone_length(model: nn.Module, seq: nn.Module) -> int:
    """How many of the layers are the backbone: the YAML's ``backbone:`` list, else the layers
    before the first ``Concat`` / ``Upsample`` (where every YOLO neck starts)."""
    cfg = getattr(model, "yaml", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("backbone"), list):
        return len(cfg["backbone"])
    for k, m in enumerate(seq):
        if type(m).__name__ in ("Concat", "Upsample"):
            return k
    return len(seq)


def find_ultralytics_blocks(model: nn.Module, position: str) -> list[tuple[str, str, None]]:
    """[(layer name, its last 1x1 conv's name, None)] for ``position`` (`ULTRALYTICS_POSITIONS`)
    in an Ultralytics model (``yolo.model``); [] for another model. The stage (None) comes from
    the layer's output stride. Given the ``YOLO`` object instead of ``yolo.model``, raises."""
    if position not in ULTRALYTICS_POSITIONS:
        raise ValueError(f"position must be one of {ULTRALYTICS_POSITIONS}, got {position!r}")
    seq = _layers(model)
    if seq is None:
        inner = model._modules.get("model")
        if isinstance(inner, nn.Module) and _layers(inner) is not None:
            raise ValueError(
                f"add_context_blocks: pass the network, yolo.model ({type(inner).__name__}), "
                f"not the {type(model).__name__} object that holds it"
            )
        return []
    n_backbone = _backbone_length(model, seq)
    out = []
    for k, layer in enumerate(seq):
        part = "backbone" if k < n_backbone else "neck"
        child = ULTRALYTICS_BLOCKS.get(type(layer).__name__)
        if (
            child is None
            or position not in (part, "all")
            or not isinstance(layer._modules.get(child), nn.Module)
        ):
            continue
        out.append((f"model.{k}", child, None))
    return out
