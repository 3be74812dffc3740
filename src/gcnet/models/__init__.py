"""Backbones and task models."""

from .detection import DETECTORS, create_detector
from .external import create_external
from .features import FeatureInfo
from .plugins import PRESETS, ContextPlug, add_context_blocks, inserted_blocks, remove_context_blocks
from .registry import (
    create_model,
    did_you_mean_model,
    has_pretrained,
    list_models,
    model_config,
    model_family,
    register_family,
    register_model,
)
from .resnet import POSITIONS, STAGES, BasicBlock, Bottleneck, PluginSpec, ResNet
from .segmentation import SEGMENTORS, create_segmentor
from .video import VIDEO_MODELS, ResNet3d, create_video_model
from .weights import load_checkpoint_file, load_pretrained, load_state_dict_checked

register_family("segmentor", SEGMENTORS, create_segmentor)
register_family("detector", DETECTORS, create_detector)
register_family("video", VIDEO_MODELS, create_video_model)

__all__ = [
    "POSITIONS",
    "STAGES",
    "BasicBlock",
    "Bottleneck",
    "PRESETS",
    "ContextPlug",
    "FeatureInfo",
    "PluginSpec",
    "ResNet",
    "ResNet3d",
    "VIDEO_MODELS",
    "add_context_blocks",
    "create_external",
    "create_video_model",
    "create_model",
    "did_you_mean_model",
    "has_pretrained",
    "inserted_blocks",
    "list_models",
    "load_checkpoint_file",
    "load_pretrained",
    "load_state_dict_checked",
    "model_config",
    "model_family",
    "register_family",
    "register_model",
    "remove_context_blocks",
]
