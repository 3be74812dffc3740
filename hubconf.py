"""torch.hub entry points: one per registered gcnet model, plus ``from_pretrained``.

    import torch

    model = torch.hub.load("gcnet/gcnet", "gc_resnet50", pretrained="torchvision")
    model = torch.hub.load("gcnet/gcnet", "gcnet_r50_d8", num_classes=150)
    model = torch.hub.load("gcnet/gcnet", "from_pretrained", "hf-hub:ORG/NAME")
    torch.hub.list("gcnet/gcnet")  # every model name

Each entry is ``gcnet.create_model(NAME, pretrained=pretrained, **kwargs)``: see its docstring
(``torch.hub.help("gcnet/gcnet", NAME)``) and ``gcnet.create_model``'s for the options.
"""

import os as _os
import sys as _sys

dependencies = ["torch", "torchvision", "numpy", "yaml", "safetensors", "PIL", "tqdm"]

_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _os.path.isdir(_os.path.join(_SRC, "gcnet")) and _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)  # a checkout that is not installed: its own package

import gcnet as _gcnet  # noqa: E402

_TASKS = {
    "resnet": "image classification (ImageNet-style, 1000 classes by default)",
    "segmentor": "semantic segmentation (19 classes by default, Cityscapes)",
    "detector": "object detection / instance segmentation (81 classes by default: COCO + background)",
    "video": "video action recognition (400 classes by default, Kinetics-400)",
}

_DOC = """{name}: {what}.

    Returns ``gcnet.create_model({name!r}, pretrained=pretrained, **kwargs)``.

    Args:
        pretrained: False (fresh weights); "torchvision" / True for torchvision's ImageNet
            weights in the plain parts (context blocks fresh); or a checkpoint path (a gcnet
            run's, or an official GCNet / mmdetection one).
        **kwargs: the model's options, e.g. num_classes=10, ratio=0.25, stages="c4",
            context={{"block": "gc", ...}}; see gcnet.create_model.
    """


def _entry(name: str):
    def entry(pretrained=False, **kwargs):
        return _gcnet.create_model(name, pretrained=pretrained, **kwargs)

    from gcnet.models import model_family

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = _DOC.format(name=name, what=_TASKS.get(model_family(name), "a gcnet model"))
    return entry


for _name in _gcnet.list_models():
    globals()[_name] = _entry(_name)


def from_pretrained(name_or_path, **kwargs):
    """A saved gcnet model with its weights and pretrained config: ``"hf-hub:ORG/NAME"`` (a
    Hugging Face Hub repo), ``"local-dir:PATH"`` or a folder written by
    ``gcnet.hub.save_pretrained`` / ``gcnet export --format hf``.

    Args:
        name_or_path: the repo or folder.
        **kwargs: model options over the saved ones (those that keep the weights' shapes).
    """
    spec = str(name_or_path)
    if not spec.startswith(("hf-hub:", "local-dir:")):
        spec = f"local-dir:{spec}"
    return _gcnet.create_model(spec, **kwargs)
