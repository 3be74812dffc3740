"""Backbones and task models."""

from .registry import create_model, list_models, model_config, register_model
from .resnet import POSITIONS, STAGES, BasicBlock, Bottleneck, PluginSpec, ResNet
from .weights import load_checkpoint_file, load_pretrained, load_state_dict_checked

__all__ = [
    "POSITIONS",
    "STAGES",
    "BasicBlock",
    "Bottleneck",
    "PluginSpec",
    "ResNet",
    "create_model",
    "list_models",
    "load_checkpoint_file",
    "load_pretrained",
    "load_state_dict_checked",
    "model_config",
    "register_model",
]
