"""Slow-only 3D ResNets (issue 12): architecture, keys, inflation, plug-in placement, weights."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from gcnet import create_model, list_models
from gcnet.layers import GlobalContextBlock, NonLocalBlock, SimplifiedNonLocalBlock, SqueezeExcitation
from gcnet.layers.sync_bn import SyncBatchNorm, convert_sync_batchnorm
from gcnet.models import model_family
from gcnet.models.video import FrozenBatchNorm3d, ResNet3d, inflate_state_dict, load_video_pretrained

VIDEO_NAMES = [
    "slowonly_r18", "slowonly_r34", "slowonly_r50", "slowonly_r101", "gc_slowonly_r18", "gc_slowonly_r50",
    "gc_slowonly_r50_r4", "gc_slowonly_r101", "nl_slowonly_r50", "snl_slowonly_r50", "gc5_slowonly_r50",
    "se_slowonly_r50", "nl_slowonly_r18", "snl_slowonly_r18", "gc5_slowonly_r18", "se_slowonly_r18",
]  # fmt: skip


def _meta(name, **kw):
    """Build on the meta device: shapes and counts without initialising any tensor."""
    with torch.device("meta"):
        return create_model(name, **kw)


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _perturb_(model, plugin_std=0.1):
    """Non-trivial BatchNorm affine/statistics and plug-in weights (zero-init would hide bugs);
    the convs keep their (well-scaled) kaiming init."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and ".context_block" not in name:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if ".context_block." in name:
                p.normal_(0, plugin_std)
    return model


def _save(sd, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return str(path)


# -- registry, architecture ----------------------------------------------------------------------
def test_registered_names_and_family():
    assert set(VIDEO_NAMES) <= set(list_models("*slowonly*"))
    assert all(model_family(n) == "video" for n in VIDEO_NAMES)


def test_param_counts():
    # pytorchvideo's slow_r50 (400 classes): 32.45M
    assert _params(_meta("slowonly_r50")) == 32_454_096
    # by hand: torchvision resnet101 (44,549,160) - fc 1000 (2,049,000) + fc 400 (819,600)
    # + 2x the 1x1 first convs of res4 (512*256 + 22*1024*256) and res5 (1024*512 + 2*2048*512)
    assert _params(_meta("slowonly_r101")) == 44_549_160 - 2_049_000 + 819_600 + 2 * (5_898_240 + 2_621_440)
    # resnet18 (11,689,512) - fc + fc 400, + 2x its res4/res5 first 3x3 convs (3 temporal taps)
    r18_first = 128 * 256 * 9 + 256 * 256 * 9 + 256 * 512 * 9 + 512 * 512 * 9
    assert _params(_meta("slowonly_r18")) == 11_689_512 - 513_000 + 205_200 + 2 * r18_first
    both = _params(_meta("slowonly_r18", basic_temporal="both"))  # mmaction2's BasicBlock3d
    assert both - _params(_meta("slowonly_r18")) == 2 * (256 * 256 * 9 * 2 + 512 * 512 * 9 * 2)
    # GC r16 at c3-c5 adds what it adds to the 2D ResNet-50 (2.52M): it pools, never convolves T
    base = _params(_meta("slowonly_r50"))
    assert round((_params(_meta("gc_slowonly_r50")) - base) / 1e6, 2) == 2.52
    # +5 NL: 2 at 512 channels (g/theta/phi 512->256 with bias, W_z 256->512, BN) + 3 at 1024
    nl = lambda c: 3 * (c * (c // 2) + c // 2) + (c // 2) * c + 2 * c  # noqa: E731
    assert _params(_meta("nl_slowonly_r50")) - base == 2 * nl(512) + 3 * nl(1024)


def test_flops_match_pytorchvideo_slow_r50():
    from gcnet.tools.complexity import count_flops

    m = _meta("slowonly_r50").eval()
    # pytorchvideo's model zoo: slow_r50 8x8, 54.52 GFLOPs (multiply-adds) on 8x256x256
    macs = count_flops(m, torch.empty(1, 3, 8, 256, 256, device="meta")) / 2
    assert round(macs / 1e9, 2) == 54.52


@pytest.mark.parametrize("name,arch2d", [("slowonly_r18", "resnet18"), ("slowonly_r50", "resnet50")])
def test_keys_are_torchvision_2d_keys_with_temporal_kernels(name, arch2d):
    video = _meta(name).state_dict()
    with torch.device("meta"):
        tv = torchvision.models.get_model(arch2d, num_classes=400).state_dict()
    assert list(video) == list(tv)
    temporal = {}
    for k, v in video.items():
        if v.dim() == 5:
            assert tv[k].dim() == 4 and v.shape[:2] == tv[k].shape[:2] and v.shape[3:] == tv[k].shape[2:], k
            if v.shape[2] != 1:
                temporal[k] = v.shape[2]
        else:
            assert v.shape == tv[k].shape, k
    blocks = (2, 2) if name == "slowonly_r18" else (6, 3)
    expected = {f"layer{s}.{i}.conv1.weight": 3 for s, n in zip((3, 4), blocks) for i in range(n)}
    assert temporal == expected


def test_geometry_is_slow_only():
    m = _meta("slowonly_r50")
    assert (m.conv1.kernel_size, m.conv1.stride, m.conv1.padding) == ((1, 7, 7), (1, 2, 2), (0, 3, 3))
    assert (m.maxpool.kernel_size, m.maxpool.stride, m.maxpool.padding) == ((1, 3, 3), (1, 2, 2), (0, 1, 1))
    b = m.layer3[0]
    assert (b.conv1.kernel_size, b.conv1.padding) == ((3, 1, 1), (1, 0, 0))
    assert (b.conv2.kernel_size, b.conv2.stride, b.conv2.padding) == ((1, 3, 3), (1, 2, 2), (0, 1, 1))
    assert m.layer2[1].conv1.kernel_size == (1, 1, 1)
    assert b.downsample[0].stride == (1, 2, 2)
    assert all(c.stride[0] == 1 for c in m.modules() if isinstance(c, nn.Conv3d))  # no temporal stride
    assert not any(isinstance(c, nn.Conv2d) for n, c in m.named_modules() if "context_block" not in n)
    assert m.dropout.p == 0.5 and _meta("slowonly_r50", dropout=0.2).dropout.p == 0.2
    assert isinstance(m.avgpool, nn.AdaptiveAvgPool3d) and m.fc.out_features == 400


def test_forward_stages_shapes_and_out_indices():
    m = create_model("gc_slowonly_r18", out_indices=(1, 3)).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        feats = m.forward_stages(x)
        logits = m(x)
    assert [tuple(f.shape) for f in feats] == [(1, 128, 4, 4, 4), (1, 512, 4, 1, 1)]
    assert logits.shape == (1, 400)


def test_image_input_is_a_clear_one_line_error():
    m = _meta("slowonly_r18")
    with pytest.raises(
        ValueError, match=r"expects \(N, C, T, H, W\) clips, got a 4-D input of shape \(2, 3, 32, 32\)"
    ):
        m(torch.randn(2, 3, 32, 32, device="meta"))
    try:
        m(torch.randn(2, 3, 32, 32, device="meta"))
    except ValueError as e:
        assert "\n" not in str(e)


# -- plug-in placement ---------------------------------------------------------------------------
# mmaction2's non-local configs (Wang et al.): non_local=((0,0,0), (1,0,1,0), (1,0,1,0,1,0), (0,0,0))
MMACTION2_NON_LOCAL = ((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))
FIVE = {f"layer{s + 1}.{i}.context_block" for s, flags in enumerate(MMACTION2_NON_LOCAL)
        for i, on in enumerate(flags) if on}  # fmt: skip


FIVE_KINDS = [("nl_slowonly_r50", NonLocalBlock), ("snl_slowonly_r50", SimplifiedNonLocalBlock),
              ("gc5_slowonly_r50", GlobalContextBlock)]  # fmt: skip


@pytest.mark.parametrize("name,cls", FIVE_KINDS)
def test_five_blocks_where_mmaction2_puts_non_local(name, cls):
    m = _meta(name)
    blocks = m.context_blocks()
    assert set(blocks) == FIVE and all(type(b) is cls for b in blocks.values())
    assert {m.get_submodule(n.rsplit(".", 1)[0]).position for n in blocks} == {"after_block"}
    if cls is NonLocalBlock:  # mmaction2's non_local_cfg
        assert all(
            b.mode == "embedded_gaussian" and b.sub_sample and not b.use_scale for b in blocks.values()
        )
    if name == "gc5_slowonly_r50":
        assert all(b.ratio == 1 / 16 for b in blocks.values())


def test_gc_every_block_of_c3_c5_and_se_and_r18_variants():
    gc = _meta("gc_slowonly_r50").context_blocks()
    assert set(gc) == {f"layer{s}.{i}.context_block" for s, n in ((2, 4), (3, 6), (4, 3)) for i in range(n)}
    assert {b.channels for b in gc.values()} == {512, 1024, 2048}
    m = _meta("gc_slowonly_r50")
    assert {m.get_submodule(n.rsplit(".", 1)[0]).position for n in m.context_blocks()} == {"after_1x1"}
    assert all(b.ratio == 1 / 4 for b in _meta("gc_slowonly_r50_r4").context_blocks().values())
    se = _meta("se_slowonly_r18").context_blocks()
    assert len(se) == 8 and all(isinstance(b, SqueezeExcitation) for b in se.values())
    assert set(_meta("nl_slowonly_r18").context_blocks()) == {
        "layer2.0.context_block",
        "layer3.0.context_block",
    }
    assert len(_meta("gc_slowonly_r18").context_blocks()) == 6
    assert _meta("slowonly_r18").context_blocks() == {}


def test_plugin_overrides():
    m = _meta("slowonly_r18", plugin="gc", ratio=1 / 4, stages="c4-c5", position="after_3x3")
    blocks = m.context_blocks()
    assert set(blocks) == {f"layer{s}.{i}.context_block" for s in (3, 4) for i in (0, 1)}
    assert all(b.ratio == 1 / 4 for b in blocks.values()) and blocks["layer3.0.context_block"].channels == 256
    snl = _meta("gc_slowonly_r18", plugin="snl")  # another block: the registered ratio is dropped
    assert all(type(b) is SimplifiedNonLocalBlock for b in snl.context_blocks().values())
    nl = _meta("nl_slowonly_r50", sub_sample=False, mode="dot_product", indices={"c3": [1], "c4": [-1]})
    assert set(nl.context_blocks()) == {"layer2.1.context_block", "layer3.5.context_block"}
    assert all(b.mode == "dot_product" and not b.sub_sample for b in nl.context_blocks().values())
    assert _meta("gc_slowonly_r18", plugin=None).context_blocks() == {}
    with pytest.raises(ValueError, match="unknown option.*'gc_slowonly_r18'.*'ratoi'.*did you mean 'ratio'"):
        _meta("gc_slowonly_r18", ratoi=4)
    with pytest.raises(ValueError, match="position must be one of"):
        _meta("gc_slowonly_r18", position="before_everything")
    with pytest.raises(ValueError, match="temporal_kernel"):
        _meta("slowonly_r18", temporal_kernel=2)
    with pytest.raises(ValueError, match="unknown model 'slowonly_r5'.*slowonly_r50"):
        create_model("slowonly_r5")


def test_after_block_is_after_the_final_relu():
    m = _perturb_(create_model("nl_slowonly_r18", num_classes=0)).double().eval()
    blk = m.layer2[0]
    x = torch.randn(1, 64, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        out = blk(x)
        blk.position = None  # the block without its plug-in: the ReLU output
        plain = blk(x)
        blk.position = "after_block"
        assert plain.min() >= 0 and out.min() < 0  # the NL output is not clamped by a ReLU
        torch.testing.assert_close(out, blk.context_block(plain))


# -- inflation -----------------------------------------------------------------------------------
def _identical_frames(t, size=32):
    frame = torch.randn(1, 3, size, size, dtype=torch.float64)
    return frame, frame.unsqueeze(2).expand(-1, -1, t, -1, -1).contiguous()


def _inflated(name2d, name3d, tmp_path, **kw):
    m2d = _perturb_(create_model(name2d, num_classes=0, **kw)).double().eval()
    path = _save(m2d.state_dict(), tmp_path / "w2d.safetensors")
    m3d = create_model(name3d, num_classes=0, **kw).double().eval()  # float64 weights, then inflate
    load_video_pretrained(m3d, path, arch=m3d.arch)
    return m2d, m3d


@pytest.mark.parametrize(
    "name2d,name3d,t", [("resnet18", "slowonly_r18", 9), ("resnet50", "slowonly_r50", 19)]
)
def test_inflated_net_on_identical_frames_gives_2d_features_away_from_borders(name2d, name3d, t, tmp_path):
    m2d, m3d = _inflated(name2d, name3d, tmp_path)
    frame, clip = _identical_frames(t)
    with torch.no_grad():
        f2d, f3d = m2d.forward_stages(frame), m3d.forward_stages(clip)
    n_temporal = [0, 0, len(m3d.layer3), len(m3d.layer3) + len(m3d.layer4)]  # 3-tap convs up to c2..c5
    for stage, (a, b, k) in enumerate(zip(f2d, f3d, n_temporal)):
        assert b.shape[2] == t and a.abs().mean() > 0.1
        # each zero-padded 3-tap conv reaches one frame further in from each border
        for i in range(k, t - k):
            torch.testing.assert_close(b[:, :, i], a, msg=f"c{stage + 2} frame {i}")
        if k:  # the border frames do differ: the zero temporal padding
            assert (b[:, :, 0] - a).abs().max() > 1e-3


def test_inflated_context_blocks_pool_over_all_frames(tmp_path):
    # GC everywhere (c3-c5) with random weights; a C2D inflation (temporal_stages=()) so that
    # every frame sees identical neighbours: the T*H*W attention pooling of identical frames
    # is the 2D context, at every frame and every stage
    m2d, m3d = _inflated("gc_resnet18", "gc_slowonly_r18", tmp_path)
    m3d_c2d = create_model("gc_slowonly_r18", num_classes=0, temporal_stages=()).double().eval()
    m3d_c2d.load_state_dict(inflate_state_dict(m2d.state_dict(), m3d_c2d))
    frame, clip = _identical_frames(5)
    with torch.no_grad():
        f2d, f3d, fc2d = (
            m2d.forward_stages(frame),
            m3d.forward_stages(clip),
            m3d_c2d.forward_stages(clip),
        )
        shifts = [float(b.transform_add.conv_out.weight.abs().sum()) for b in m3d.context_blocks().values()]
    assert min(shifts) > 0  # the blocks are not the identity
    for a, b in zip(f2d, fc2d):
        torch.testing.assert_close(b, a.unsqueeze(2).expand_as(b))
    # slow-only: c2 and c3 (no temporal conv yet, GC in c3) match at every frame
    for a, b in zip(f2d[:2], f3d[:2]):
        torch.testing.assert_close(b, a.unsqueeze(2).expand_as(b))


def test_inflated_nl_on_identical_frames(tmp_path):
    # NL attends over T copies of every key: the same weighted average as in 2D
    kw = dict(plugin="nl", stages=("c3", "c4"), indices={"c3": [0], "c4": [0]}, position="after_add",
              sub_sample=True, use_scale=False)  # fmt: skip
    m2d = _perturb_(create_model("resnet18", num_classes=0, **kw)).double().eval()
    m3d = create_model("slowonly_r18", num_classes=0, temporal_stages=(), **kw).double().eval()
    m3d.load_state_dict(inflate_state_dict(m2d.state_dict(), m3d))
    frame, clip = _identical_frames(3)
    with torch.no_grad():
        for a, b in zip(m2d.forward_stages(frame), m3d.forward_stages(clip)):
            torch.testing.assert_close(b, a.unsqueeze(2).expand_as(b))


def test_inflation_divides_repeated_kernels_and_copies_the_rest(tmp_path):
    m2d = _perturb_(create_model("gc_resnet18"))
    m3d = ResNet3d(**_cfg("gc_slowonly_r18"))
    sd = inflate_state_dict(m2d.state_dict(), m3d)
    w2, w3 = m2d.state_dict()["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"]
    assert w3.shape == (256, 128, 3, 3, 3)
    torch.testing.assert_close(w3.sum(2), w2)
    torch.testing.assert_close(w3[:, :, 1], w2 / 3)
    torch.testing.assert_close(
        sd["layer1.0.conv1.weight"][:, :, 0], m2d.state_dict()["layer1.0.conv1.weight"]
    )
    for k in ("bn1.running_var", "layer2.0.context_block.pool.conv_mask.weight", "fc.weight"):
        assert torch.equal(sd[k], m2d.state_dict()[k])
    # a plug-in 1x1 conv stored 5-D (Conv3d) by another library is squeezed to our layout
    key = "layer2.0.context_block.pool.conv_mask.weight"
    assert inflate_state_dict({key: torch.ones(1, 128, 1, 1, 1)}, m3d)[key].shape == (1, 128, 1, 1)


def _cfg(name, **kw):
    from gcnet.models.video import video_model_config

    cfg = video_model_config(name, **kw)
    cfg.pop("_arch")
    return cfg


def test_torchvision_weights_inflate_and_drop_the_1000_class_fc(monkeypatch):
    import gcnet.models.video as video

    tv = torchvision.models.resnet18()
    seen = []
    fake = lambda arch, w: seen.append((arch, w)) or tv.state_dict()  # noqa: E731
    monkeypatch.setattr(video, "_torchvision_state_dict", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = create_model("gc_slowonly_r18", pretrained="torchvision:IMAGENET1K_V1")
    assert seen == [("resnet18", "IMAGENET1K_V1")]
    fc = [w for w in caught if "classifier fc (1000 classes)" in str(w.message)]
    assert len(fc) == 1 and "400-class" in str(fc[0].message)
    torch.testing.assert_close(m.layer4[1].conv1.weight.sum(2), tv.layer4[1].conv1.weight)
    assert torch.equal(m.conv1.weight[:, :, 0], tv.conv1.weight)
    # fresh GC blocks: add fusion, zero last conv -> the identity
    assert all(not b.transform_add.conv_out.weight.detach().any() for b in m.context_blocks().values())


def test_official_gcnet_mmdet_backbone_inflates(tmp_path):
    m2d = _perturb_(create_model("gc_resnet18"))
    rename = {"pool.conv_mask": "conv_mask", "transform_add.conv_in": "channel_add_conv.0",
              "transform_add.norm": "channel_add_conv.1",
              "transform_add.conv_out": "channel_add_conv.3"}  # fmt: skip
    mmdet = {}
    for k, v in m2d.state_dict().items():
        if k.startswith("fc."):
            continue
        for ours, theirs in rename.items():
            k = k.replace(f"context_block.{ours}.", f"context_block.{theirs}.")
        mmdet[f"backbone.{k}"] = v
    mmdet["neck.lateral_convs.0.conv.weight"] = torch.zeros(1)  # dropped: not the backbone
    path = tmp_path / "mmdet.pth"
    torch.save({"state_dict": mmdet, "meta": {}}, path)
    m3d = create_model("gc_slowonly_r18", pretrained=str(path))
    for k, v in m2d.state_dict().items():
        if ".context_block." in k:
            assert torch.equal(m3d.state_dict()[k], v), k
    torch.testing.assert_close(m3d.layer3[0].conv1.weight.sum(2), m2d.layer3[0].conv1.weight)


def test_own_3d_checkpoint_round_trip(tmp_path):
    m = _perturb_(create_model("nl_slowonly_r18", num_classes=7)).eval()
    sft = _save(m.state_dict(), tmp_path / "video.safetensors")
    pth = tmp_path / "run.pth"
    torch.save({"model": m.state_dict(), "epoch": 3}, pth)
    x = torch.randn(1, 3, 4, 32, 32)
    for path in (sft, str(pth)):
        m2 = create_model("nl_slowonly_r18", num_classes=7, pretrained=path).eval()
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
        with torch.no_grad():
            torch.testing.assert_close(m2(x), m(x))


def test_shape_mismatches_name_the_key(tmp_path):
    zeros = lambda name, **kw: {k: torch.zeros(v.shape) for k, v in _meta(name, **kw).state_dict().items()}  # noqa: E731
    sd = zeros("resnet18")
    sd["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight has shape \(64, 64, 5, 5\)") as e:
        _meta("slowonly_r18", pretrained=_save(sd, tmp_path / "bad.safetensors"))
    assert "\n" not in str(e.value)
    both = zeros("slowonly_r18", basic_temporal="both")  # 3x3x3 conv2 (mmaction2's): not ours
    with pytest.raises(ValueError, match=r"layer3\.0\.conv2\.weight has shape \(256, 256, 3, 3, 3\)"):
        _meta("slowonly_r18", pretrained=_save(both, tmp_path / "both.safetensors"))
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight has shape \(64, 64, 1, 1\)"):
        inflate_state_dict(_meta("resnet50").state_dict(), _meta("slowonly_r18"))  # not a ResNet-18
    part = _save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "part.safetensors")
    with pytest.raises(ValueError, match="missing keys"):
        _meta("slowonly_r18", pretrained=part)


# -- training machinery --------------------------------------------------------------------------
def test_gradients_flow_to_every_parameter():
    m = _perturb_(create_model("gc_slowonly_r18", num_classes=5, dropout=0.0)).train()
    loss = m(torch.randn(2, 3, 4, 32, 32)).logsumexp(1).sum()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert not missing
    zero = [n for n, p in m.named_parameters() if float(p.grad.abs().sum()) == 0]
    assert all(n.endswith("conv_mask.bias") for n in zero)  # the softmax is shift-invariant


def test_frozen_stages_norm_eval_and_norms():
    m = create_model("slowonly_r18", frozen_stages=2, norm_eval=True).train()
    frozen = [n for n, p in m.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1", "bn1", "layer1", "layer2")) for n in frozen)
    assert all(p.requires_grad for n, p in m.named_parameters() if n.startswith(("layer3", "layer4", "fc")))
    assert all(not b.training for b in m.modules() if isinstance(b, nn.BatchNorm3d))
    assert m.dropout.training
    x = torch.randn(1, 3, 2, 32, 32)
    frozen_bn = create_model("slowonly_r18", norm="frozen_bn").eval()
    assert isinstance(frozen_bn.bn1, FrozenBatchNorm3d) and isinstance(
        frozen_bn.layer4[1].bn2, FrozenBatchNorm3d
    )
    bn = create_model("slowonly_r18").eval()
    _perturb_(bn)
    frozen_bn.load_state_dict(bn.state_dict(), strict=False)
    sync = create_model("slowonly_r18", norm="syncbn").eval()
    assert isinstance(sync.layer3[0].bn1, SyncBatchNorm)
    sync.load_state_dict(bn.state_dict())
    converted = convert_sync_batchnorm(create_model("slowonly_r18")).eval()
    converted.load_state_dict(bn.state_dict())
    assert not any(isinstance(b, nn.BatchNorm3d) for b in converted.modules())
    with torch.no_grad():
        ref = bn(x)
        for other in (frozen_bn, sync, converted):
            torch.testing.assert_close(other(x), ref)
    sync.train()(x)  # outside a process group: a plain BatchNorm on 5-D input


def test_channels_last_3d_equals_contiguous():
    m = _perturb_(create_model("gc_slowonly_r18")).eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        ref = m(x)
        # the plug-ins' 4-D (Conv2d) 1x1 weights have no channels_last_3d layout: still works
        m = m.to(memory_format=torch.channels_last_3d)
        out = m(x.to(memory_format=torch.channels_last_3d))
    assert m.layer4[0].conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert m.layer4[0].context_block.pool.conv_mask.weight.shape == (1, 512, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_forward_on_cpu():
    m = create_model("gc5_slowonly_r18").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(torch.randn(1, 3, 4, 32, 32))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()


def test_dropout_in_train_mode_only():
    m = create_model("slowonly_r18", num_classes=3, dropout=0.9)
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        m.eval()
        a, b = m(x), m(x)
        torch.testing.assert_close(a, b)
        m.train()
        m.apply(lambda mod: mod.eval() if isinstance(mod, nn.modules.batchnorm._BatchNorm) else None)
        assert not torch.allclose(m(x), a)
