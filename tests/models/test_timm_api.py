"""timm's model API on gcnet's backbones: features_only / feature_info, forward_intermediates,
forward_features / forward_head, set_grad_checkpointing, list_models filters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gcnet
from gcnet import create_model
from gcnet.models.features import FeatureInfo, take_indices


def _perturb_(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and plug-in weights (fresh GC blocks are the identity)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if ".context_block." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


# -- feature_info, features_only ----------------------------------------------------------------
def test_take_indices_follows_timm():
    assert take_indices(5) == ([0, 1, 2, 3, 4], 4)
    assert take_indices(5, 2) == ([3, 4], 4)
    assert take_indices(5, (0, -1)) == ([0, 4], 4)
    for bad in (0, 6, (5,), (-6,), ()):
        with pytest.raises(ValueError):
            take_indices(5, bad)


def test_feature_info_accessors():
    info = FeatureInfo([dict(num_chs=8, reduction=2, module="a"), dict(num_chs=16, reduction=4, module="b")])
    assert info.channels() == [8, 16] and info.reduction(1) == 4 and info.module_name([0]) == ["a"]
    sub = info.from_other((1,))
    assert sub.channels() == [16] and sub.get_dicts(keys=["num_chs"]) == [{"num_chs": 16}]
    assert len(sub) == 2 and sub[0]["index"] == 0 and [d["module"] for d in sub] == ["a", "b"]
    with pytest.raises(ValueError):
        FeatureInfo([dict(num_chs=8, reduction=4, module="a"), dict(num_chs=8, reduction=2, module="b")])


@pytest.mark.parametrize(
    "name,channels,reductions,stem",
    [
        ("resnet18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32], "relu"),
        ("gc_resnet50_v1c", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32], "stem"),
        ("gc_slowonly_r18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32], "relu"),
    ],
)
def test_plain_model_feature_info(name, channels, reductions, stem):
    info = create_model(name).feature_info
    assert info.channels() == channels and info.reduction() == reductions
    assert info.module_name() == [stem, "layer1", "layer2", "layer3", "layer4"]
    assert [d["num_chs"] for d in info] == channels  # timm's plain models: a list of dicts


def test_feature_info_of_a_dilated_backbone():
    assert create_model("resnet18", output_stride=8).feature_info.reduction() == [2, 4, 8, 8, 8]


@pytest.mark.parametrize("name", ["resnet18", "gc_resnet18"])
def test_features_only_2d(name):
    x = torch.randn(2, 3, 64, 64)
    full = _perturb_(create_model(name)).eval()
    feats = create_model(name, features_only=True, out_indices=(0, 2, 3)).eval()
    assert feats.feature_info.channels() == [64, 128, 256]
    assert feats.feature_info.reduction() == [2, 8, 16]
    assert feats.feature_info.module_name() == ["relu", "layer2", "layer3"]
    # the kept modules keep their keys: the full model's weights load (less the dropped ones)
    sd = feats.state_dict()
    assert not any(k.startswith(("layer4.", "fc.")) for k in sd)
    assert set(sd) == {k for k in full.state_dict() if not k.startswith(("layer4.", "fc."))}
    feats.load_state_dict({k: v for k, v in full.state_dict().items() if k in sd})
    with torch.no_grad():
        out = feats(x)
        ref = full.forward_intermediates(x, indices=(0, 2, 3), intermediates_only=True)
    assert [tuple(o.shape) for o in out] == [(2, 64, 32, 32), (2, 128, 8, 8), (2, 256, 4, 4)]
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


def test_features_only_default_is_all_five_and_keeps_training_semantics():
    m = create_model("resnet18", features_only=True, frozen_stages=1, norm_eval=True)
    assert m.feature_info.out_indices == (0, 1, 2, 3, 4) and m.fc is None
    m.train()  # the ResNet's own train(): frozen stages and norm_eval hold
    assert not m.bn1.training and not m.layer4[0].bn1.training
    assert [o.shape[1] for o in m(torch.randn(1, 3, 32, 32))] == [64, 64, 128, 256, 512]
    assert not any(p.requires_grad for p in m.layer1.parameters())


def test_features_only_3d():
    m = create_model("gc_slowonly_r18", features_only=True, out_indices=(-2, -1)).eval()
    assert m.feature_info.channels() == [256, 512] and m.feature_info.reduction() == [16, 32]
    with torch.no_grad():
        out = m(torch.randn(1, 3, 4, 32, 32))
    assert [tuple(o.shape) for o in out] == [(1, 256, 4, 2, 2), (1, 512, 4, 1, 1)]


def test_features_only_refuses_a_model_without_feature_maps():
    with pytest.raises(ValueError, match="features_only"):
        create_model("fcn_tiny_s4", features_only=True)


def test_segmentor_and_detector_backbones_expose_feature_info():
    seg = create_model("gcnet_r18_d8")
    assert seg.backbone.feature_info.reduction() == [2, 4, 8, 8, 8]
    assert create_model("fcn_tiny_s4").backbone.feature_info.channels() == [32]
    det = create_model("maskrcnn_gc_r18_fpn", num_classes=3)
    assert det.backbone.body.feature_info.channels() == [64, 128, 256, 512]
    assert det.backbone.feature_info.reduction() == [4, 8, 16, 32, 64]
    assert det.backbone.feature_info.channels() == [256] * 5


# -- forward_intermediates / forward_features / forward_head ------------------------------------
@pytest.mark.parametrize(
    "name,shape", [("gc_resnet18", (2, 3, 64, 64)), ("gc_slowonly_r18", (1, 3, 4, 32, 32))]
)
def test_intermediates_features_head_agree_with_forward(name, shape):
    m = _perturb_(create_model(name, num_classes=10)).double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        final, inter = m.forward_intermediates(x)
        feats = m.forward_features(x)
        logits = m(x)
        torch.testing.assert_close(inter[-1], feats)
        torch.testing.assert_close(final, feats)
        torch.testing.assert_close(m.forward_head(feats), logits)
        pooled = m.forward_head(feats, pre_logits=True)
        assert pooled.shape == (shape[0], 512)
        torch.testing.assert_close(m.fc(pooled), logits)
        assert [o.shape[1] for o in inter] == m.feature_info.channels()
        # stage lists, last-n, stop_early
        last2 = m.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last2, inter[-2:])
        early, some = m.forward_intermediates(x, indices=[1, -3], stop_early=True)
        torch.testing.assert_close(some, [inter[1], inter[2]])
        torch.testing.assert_close(early, inter[2])
        torch.testing.assert_close(m.forward_stages(x), inter[1:])
    with pytest.raises(ValueError, match="output_fmt"):
        m.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers():
    m = create_model("resnet18").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = m.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        assert m.prune_intermediate_layers((1, 2)) == [1, 2]
        out = m.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
    assert m.fc is None and len(m.layer3) == 0 and len(m.layer4) == 0 and m.num_features == 128
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b)


def test_matches_timm_resnet50_on_the_same_weights():
    timm = pytest.importorskip("timm")
    ours = _perturb_(create_model("resnet50")).double().eval()
    ref = timm.create_model("resnet50", pretrained=False).double().eval()
    ref.load_state_dict(ours.state_dict())  # same key names (torchvision's)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        a_final, a = ours.forward_intermediates(x)
        b_final, b = ref.forward_intermediates(x)
        torch.testing.assert_close(a_final, b_final)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(ours.forward_features(x), ref.forward_features(x))
        torch.testing.assert_close(ours.forward_head(a_final), ref.forward_head(b_final))
        torch.testing.assert_close(ours(x), ref(x))
    assert ours.feature_info.channels() == [d["num_chs"] for d in ref.feature_info]
    assert ours.feature_info.reduction() == [d["reduction"] for d in ref.feature_info]
    tf = timm.create_model("resnet50", features_only=True, out_indices=(1, 4))
    gf = create_model("resnet50", features_only=True, out_indices=(1, 4))
    assert gf.feature_info.channels() == tf.feature_info.channels()
    assert gf.feature_info.reduction() == tf.feature_info.reduction()


# -- gradient checkpointing ----------------------------------------------------------------------
def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out.double() ** 2).sum().backward()
    return x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "name,shape",
    [("resnet18", (2, 3, 32, 32)), ("gc_resnet18", (2, 3, 32, 32)), ("gc_slowonly_r18", (2, 3, 2, 32, 32))],
)
def test_grad_checkpointing_gives_the_same_gradients(name, shape):
    # train mode (batch statistics): the recomputation sees the same batch, so the same
    # statistics; BN momentum 0 keeps the running statistics fixed, which the recomputation
    # would otherwise update a second time (forward + backward) and the two runs would differ
    m = _perturb_(create_model(name, num_classes=5)).double().train()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = 0.0
    if hasattr(m, "dropout"):
        m.dropout.p = 0.0
    x = torch.randn(shape, dtype=torch.float64)
    assert m.grad_checkpointing is False
    gx, gp = _grads(m, x)
    m.set_grad_checkpointing(True)
    assert m.grad_checkpointing is True
    running = m.layer1[0].bn1.running_mean.clone()
    cx, cp = _grads(m, x)
    torch.testing.assert_close(cx, gx)
    assert gp.keys() == cp.keys() and len(gp) == len(list(m.parameters()))
    for k in gp:
        torch.testing.assert_close(cp[k], gp[k], msg=k)
    torch.testing.assert_close(m.layer1[0].bn1.running_mean, running)


def test_grad_checkpointing_recomputes_blocks():
    m = create_model("resnet18", num_classes=2).eval()
    m.set_grad_checkpointing()
    calls = []
    m.layer2[0].conv1.register_forward_hook(lambda *a: calls.append(1))
    m(torch.randn(1, 3, 32, 32)).sum().backward()
    assert len(calls) == 2  # forward + recomputation in backward
    calls.clear()
    with torch.no_grad():
        m(torch.randn(1, 3, 32, 32))
    assert len(calls) == 1  # nothing to checkpoint without autograd


# -- list_models ---------------------------------------------------------------------------------
def test_list_models_filters():
    assert gcnet.list_models("resnext*") == ["resnext101_32x4d", "resnext101_64x4d", "resnext50_32x4d"]
    both = gcnet.list_models(["resnet18", "slowonly_r18"])
    assert both == ["resnet18", "slowonly_r18"]
    assert gcnet.list_models("resnext*", exclude="*64x4d") == ["resnext101_32x4d", "resnext50_32x4d"]
    assert gcnet.list_models("*", exclude=["*_*", "resnet*"]) == []
    assert gcnet.list_models(None) == gcnet.list_models() == gcnet.list_models("")
    pre = gcnet.list_models(pretrained=True)
    assert pre == [
        "resnet101",
        "resnet152",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnext101_64x4d",
        "resnext50_32x4d",
    ]
    assert gcnet.list_models("resnext*", pretrained=True) == ["resnext101_64x4d", "resnext50_32x4d"]
